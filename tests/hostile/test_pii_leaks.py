"""Personal data never leaks: seeded e-mail addresses, phone numbers of eleven countries (national and
international formats), card numbers and IBANs, written into every free-text field of every source, run
through the nightly DAG (dag.test(), in a child process so every line it logs is captured), and looked for
in every file the loop publishes, every log line and every XCom and rendered template.

Published = what leaves the lake's raw zone: the fine-tuning datasets, the reports and gap pages, the
marts built for the report, the gaps and the action queue, the run summaries and the GX results. The raw
zone (raw, staged and quarantine, and the conversation_facts / case_history marts, which keep the first
customer message and the escalation reason as exported) holds personal data by design; see
docs/reliability.md.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from datetime import date
from pathlib import Path

import duckdb
import pytest

from .airflow_env import private_airflow_env
from .pii_seed import ALL, FIELDS, find_leaks, seed_landing

DAY = "2026-11-20"
RAW_ZONE = ("raw", "staged", "quarantine", "marts/conversation_facts", "marts/case_history", "mlflow", "retrain")
PLACEHOLDERS = ("[EMAIL]", "[PHONE]", "[CARD]", "[IBAN]")


def _text(path: Path) -> str:
    if path.suffix == ".parquet":
        return repr(duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall())
    data = path.read_bytes()
    if path.suffix == ".gz":
        data = gzip.decompress(data)
    return data.decode("utf-8", errors="replace")


def _published(lake: Path) -> dict[str, str]:
    """Every file outside the raw zone, as text."""
    out = {}
    for path in sorted(p for p in lake.rglob("*") if p.is_file()):
        rel = path.relative_to(lake).as_posix()
        if rel.startswith(RAW_ZONE) or path.name.startswith((".", "_")) or path.suffix in (".duckdb", ".db", ".lock"):
            continue
        out[rel] = _text(path)
    return out


@pytest.fixture(scope="module")
def night(tmp_path_factory, airflow_db):
    """One generated day with personal data in every free-text field, through the nightly DAG."""
    from feedback_loop_sample.generator import generate

    root = tmp_path_factory.mktemp("pii")
    truth = generate(str(root / "data" / "landing"), date.fromisoformat(DAY), date.fromisoformat(DAY),
                     conversations_per_day=60, seed=5)
    seeded = seed_landing(str(root / "data" / "landing"))
    env = private_airflow_env(airflow_db, root, ACSR_DATA_DIR=str(root / "data"), ACSR_MAX_BAD_ROW_SHARE="1.0",
                              ACSR_DATASET_MIN_NEW_EXAMPLES="1", ACSR_EARLIER_DAYS_POKE_SECONDS="1")
    for var in ("ACSR_LANDING", "ACSR_LAKE", "ACSR_WAREHOUSE"):
        env.pop(var, None)
    code = ("from feedback_loop_sample.demo_runner import run_nightly_dag_for_days\n"
            f"print('STATES', run_nightly_dag_for_days([{DAY!r}]), flush=True)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=1800,
                          check=False)
    console = proc.stdout + proc.stderr
    assert f"'{DAY}': 'success'" in console, console[-5000:]
    home = Path(env["AIRFLOW_HOME"])
    con = sqlite3.connect(home / "airflow.db")
    try:
        stored = [str(r) for r in con.execute("SELECT dag_id, task_id, key, value FROM xcom")]
        stored += [str(r) for r in con.execute("SELECT dag_id, task_id, rendered_fields FROM rendered_task_instance_fields")]
    finally:
        con.close()
    logs = "\n".join(p.read_text(errors="replace") for p in (home / "logs").rglob("*") if p.is_file())
    return {"lake": root / "data" / "lake", "truth": truth, "seeded": seeded, "console": console,
            "task_logs": logs, "metadata": "\n".join(stored)}


def test_every_free_text_field_of_every_source_was_seeded(night):
    assert set(night["seeded"]) == set(FIELDS)
    for source, fields in FIELDS.items():
        for field in fields:
            assert night["seeded"][source].get(field, 0) > 0 or field == "action_args", (source, field)
    staged = "\n".join(_text(p) for p in (night["lake"] / "staged").rglob("*.parquet"))
    missing = [s for s in ALL if s not in find_leaks(staged)]
    assert not missing, f"seeded strings that never reached the staged lake: {missing}"


def test_no_seeded_personal_data_in_any_published_file(night):
    published = _published(night["lake"])
    assert any(k.startswith("datasets/") for k in published) and any(k.startswith("reports/") for k in published)
    assert any(k.startswith("marts/kb_gaps/") for k in published)
    generated = [p for p in night["truth"].get("pii", []) if len(p) >= 6]
    leaks = {}
    for rel, text in published.items():
        found = find_leaks(text) + [p for p in generated if p in text]
        if found:
            leaks[rel] = found
    assert not leaks, json.dumps(leaks, indent=1)[:5000]
    datasets = "\n".join(t for k, t in published.items() if k.startswith("datasets/"))
    assert all(ph in datasets for ph in PLACEHOLDERS)  # the texts got there, redacted


def test_no_seeded_personal_data_in_any_log_line_xcom_or_rendered_template(night):
    generated = [p for p in night["truth"].get("pii", []) if len(p) >= 6]
    for where in ("console", "task_logs", "metadata"):
        text = night[where]
        found = find_leaks(text) + [p for p in generated if p in text]
        assert not found, f"{where}: {found}"
    assert "[demo] acsr_nightly" in night["console"]  # the log really is the run's
    assert "return_value" in night["metadata"]  # and XComs were written
