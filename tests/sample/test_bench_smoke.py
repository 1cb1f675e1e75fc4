"""The benchmark runs end to end at a tiny scale and writes its JSON (no timing assertions: see bench/)."""

import json
import subprocess
import sys
from datetime import date
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
    # the bare scan measured three times, its medians the reference the ratios divide by
    ref = run["reference"]
    assert len(ref["runs"]) == 3
    assert ref["cpu_s"] == sorted(r["cpu_s"] for r in ref["runs"])[1]
    assert ref["wall_s"] == sorted(r["wall_s"] for r in ref["runs"])[1]
    assert run["stages"]["land"]["cpu_ratio"] == round(run["stages"]["land"]["cpu_s"] / ref["cpu_s"], 2)


def test_bench_preloaded_reports_the_stage_after_the_task_libraries_beside_the_whole_process(tmp_path):
    """--preloaded: each child imports what the deployments' task processes inherit first; the stage's figures
    are what follows, the whole child's (imports included) beside them, and the ratios divide the former."""
    out = tmp_path / "results"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_bench.py"), "--conversations-per-day", "40", "--stages", "land",
         "--reference-runs", "1", "--no-airflow", "--preloaded", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "after the preload" in p.stdout
    doc = json.loads((out / "latest.json").read_text())
    assert doc["preloaded"] is True
    run = doc["runs"][0]
    for figures in (run["reference"]["runs"][0], run["stages"]["land"]):
        assert 0 < figures["cpu_s"] < figures["process"]["cpu_s"]
        assert 0 < figures["wall_s"] < figures["process"]["wall_s"]
        # the preload (Great Expectations, scikit-learn, Airflow's task runner...) is the most of a tiny run
        assert figures["process"]["cpu_s"] - figures["cpu_s"] > 1.0
    land = run["stages"]["land"]
    assert land["cpu_ratio"] == round(land["cpu_s"] / run["reference"]["cpu_s"], 2)


def test_bench_steady_state_measures_the_night_after_its_history(tmp_path):
    """--history-days: the earlier nights are run once (cached by size, seed, days and code), then the same
    night is measured on the empty lake and on the lake with history, with one reference."""
    out = tmp_path / "results"
    p = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_bench.py"), "--conversations-per-day", "40", "--history-days", "1",
         "--stages", "land,validate,model,summarize,datasets", "--no-airflow", "--out", str(out)],
        check=False, capture_output=True, text=True, timeout=900,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    assert "the empty-lake night" in p.stdout
    doc = json.loads((out / "latest.json").read_text())
    assert doc["history_days"] == 1
    run = doc["runs"][0]
    steady = run["steady_state"]
    assert steady["history_build"]["days"] == ["2026-11-19"]
    assert set(steady["stages"]) == set(run["stages"]) == {"land", "validate", "model", "summarize", "datasets"}
    assert steady["reference"] == run["reference"]
    for figures in steady["stages"].values():
        assert figures["wall_s"] > 0 and figures["peak_rss_mib"] > 0
    assert steady["vs_empty_lake"]["whole_run"] > 0


def test_steady_history_measures_the_lookback_stages_with_and_without_history(tmp_path, monkeypatch):
    """bench/steady_history.py on a tiny landed, validated and modelled day: each stage measured on the day
    alone and with synthetic earlier days, in fresh processes, figures printed as JSON."""
    from feedback_loop import nightly
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    run = tmp_path / "run"
    monkeypatch.setenv("ACSR_DATA_DIR", str(run))
    settings = Settings.load()
    generate(settings.landing, date(2026, 11, 20), date(2026, 11, 20), conversations_per_day=40, seed=3)
    nightly.land_validate_model(settings, "2026-11-20")
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "steady_history.py"), str(run), "--days", "2",
                        "--facts-days", "3"], check=False, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    figures = json.loads(p.stdout.strip().splitlines()[-1])
    assert set(figures) == {"validate", "model", "signals", "gaps"}
    for stage in figures.values():
        for side in ("day_alone", "with_history"):
            assert stage[side]["cpu_s"] > 0 and stage[side]["peak_mib"] > 0
    # Gaps on the same lake with every first message made distinct (none repeats, as in real traffic).
    p = subprocess.run([sys.executable, str(ROOT / "bench" / "steady_history.py"), str(run), "--days", "2",
                        "--facts-days", "3", "--stages", "gaps", "--distinct-texts"],
                       check=False, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    gaps = json.loads(p.stdout.strip().splitlines()[-1])["gaps"]
    assert gaps["day_alone"]["cpu_s"] > 0 and gaps["with_history"]["cpu_s"] > 0
