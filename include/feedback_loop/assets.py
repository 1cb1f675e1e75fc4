"""Airflow Assets that this project's DAGs produce, importable at DAG-parse time (no heavy imports).

A retraining DAG schedules on a dataset with `schedule=[DATASET_ASSETS["sft"]]` (or any mix): the nightly
DAG emits an event for a dataset only when it published a new version of it, with the version, its
folder and its counts in the event's `extra`.
"""

from __future__ import annotations

from airflow.sdk import Asset

from feedback_loop.datasets import DATASETS

DATASET_ASSETS: dict[str, Asset] = {
    name: Asset(f"acsr://datasets/{name}", group="acsr-datasets")
    for name in DATASETS
}
