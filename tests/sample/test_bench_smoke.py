"""The benchmark runs end to end at a tiny scale and writes its JSON (no timing assertions: see bench/)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_and_writes_its_figures(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_bench.py"), "--conversations-per-day", "40",
         "--stages", "land,validate,model,summarize", "--no-airflow", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "x reference" in p.stdout
    doc = json.loads((out / "latest.json").read_text())
    run = doc["runs"][0]
    assert run["events"] > 0
    assert set(run["stages"]) == {"land", "validate", "model", "summarize"}
    for figures in [run["reference"], *run["stages"].values()]:
        assert figures["wall_s"] > 0 and figures["peak_rss_mib"] > 0
    assert run["whole_run"]["ratio"] > 0
    assert len(list(out.glob("2*.json"))) == 1
