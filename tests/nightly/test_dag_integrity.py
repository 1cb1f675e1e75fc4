"""DAG integrity: every DAG imports, has an owner, retries and tags, and parses without heavy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

DAGS = sorted(p for p in (Path(__file__).resolve().parents[2] / "dags").glob("*.py") if not p.name.startswith("_"))
HEAVY = ("great_expectations", "pandas", "duckdb", "sklearn", "pyarrow.parquet", "mlflow")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS[0].parent))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert "acsr_nightly" in dagbag.dag_ids


def test_every_dag_has_owner_retries_and_tags(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id} has no owner"
            assert t.retries >= 1, f"{dag_id}.{t.task_id} has no retries"


@pytest.mark.parametrize("dag_file", DAGS, ids=lambda p: p.name)
def test_dag_file_parses_without_heavy_imports(dag_file):
    """Parse cost is dominated by imports: a DAG file must not pull the data stack in at parse time."""
    code = (
        "import importlib.util, json, sys;"
        f"spec = importlib.util.spec_from_file_location('d', {str(dag_file)!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        f"print(json.dumps([h for h in {HEAVY!r} if h in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
