"""Peak memory and CPU of the datasets stage, step by step, on a copy of a kept bench lake (issue 18).

`run_bench.py` gives one peak per stage; this says which step of `build_datasets` holds it. It copies a
lake kept by `run_bench.py --keep` (the day's `partials/` removed, so the night is the day's first, as in
the bench), then runs `build_datasets` in this process with a thread sampling RSS every 20 ms, each
sample labelled with the step running (the functions wrapped below); CPU is summed per step.

    .venv/bin/python bench/run_bench.py --events 2000000 --keep --no-airflow    # once: keeps bench/.cache/run-*/empty
    .venv/bin/python bench/datasets_memory.py bench/.cache/run-c215054-*/empty bench/.cache/c215054-s7/landing

Prints the peak RSS of each step in the order first seen, the CPU of each step, and each dataset's status,
example count and version id (the same ids from two versions of the code are an identity check of the
JSON Lines files). `--by-dataset` labels each step with the dataset it builds; `--files` removes the copy's
published versions first, so that every version is written again, and prints the sha256 of each of its
files from its manifest (Parquet included): the same lines from two versions of the code are an identity
check of every file.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from step_memory import StepMemory

DAY = "2026-11-20"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("lake_dir", type=Path, help="a kept run folder holding lake/ (bench/.cache/run-*/empty)")
    ap.add_argument("landing", type=Path, help="the day's landing folder (bench/.cache/c<N>-s<seed>/landing)")
    ap.add_argument("--day", default=DAY)
    ap.add_argument("--by-dataset", action="store_true", help="label each step with the dataset it builds")
    ap.add_argument("--files", action="store_true", help="publish every version again; print each file's sha256")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="acsr-datasets-memory-"))
    try:
        shutil.copytree(args.lake_dir, work, dirs_exist_ok=True)
        for p in (work / "lake" / "partials").glob(f"*/dt={args.day}"):
            shutil.rmtree(p)
        if args.files:
            shutil.rmtree(work / "lake" / "datasets", ignore_errors=True)
        os.environ.update(ACSR_DATA_DIR=str(work), ACSR_LANDING=str(args.landing), ACSR_LAKE=str(work / "lake"),
                          ACSR_WAREHOUSE=str(work / "warehouse.duckdb"), PYTHONWARNINGS="ignore")
        return _measure(args.day, args.by_dataset, args.files)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(day: str, by_dataset: bool = False, files: bool = False) -> int:
    from feedback_loop.datasets import build, candidates, curation, publish, redactions, token_store
    from feedback_loop.settings import Settings

    mem = StepMemory()
    wrap = mem.wrap
    wrap(build, "curate", "curate", on_call=(lambda a: setattr(mem, "suffix", f" [{a[0]}]")) if by_dataset else None)
    wrap(build, "_read", "_read: outcomes, stream, candidates")
    wrap(candidates._Ordered, "examples", "reading back candidates")
    wrap(redactions, "ensure", "the day's redaction partial")
    wrap(curation, "exact_duplicates", "curate: exact duplicates")
    wrap(curation, "near_duplicates", "curate: near duplicates")
    wrap(build, "_publish", "publish")
    wrap(publish, "_write_files", "publish: writing files")
    wrap(token_store, "save", "saving token counts")
    wrap(build.SignatureStore, "save", "saving signatures")
    wrap(build.ExampleValues, "save", "saving token counts and ids")
    wrap(build.ValidatedLines, "save", "saving validated lines")
    wrap(build.CandidateStore, "save", "saving candidates")
    wrap(publish, "_validate", "publish: checking files")
    wrap(publish, "_count_tokens", "token counts (CPU only)", labelled=False)
    wrap(publish, "_example_id", "content ids (CPU only)", labelled=False)

    from feedback_loop.nightly import stage  # the collector's thresholds the DAG's task runs with

    mem.start()
    t0 = time.process_time()
    result = stage(build.build_datasets)(Settings.load(), day)
    mem.report("datasets", time.process_time() - t0)
    for name, r in result["datasets"].items():
        print(f"  {name:20s} {r['status']:22s} {r['examples']:>8} examples  {r.get('version')}")
    if files:
        for name, r in result["datasets"].items():
            if r.get("manifest"):
                with open(r["manifest"]) as fh:
                    for f in json.load(fh)["files"]:
                        print(f"  {name}/{f['path']} {f['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
