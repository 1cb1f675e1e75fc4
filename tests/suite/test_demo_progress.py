"""`make demo`'s terminal output (issue 14: it printed ~3,300 lines of task logs before its summary): a real
dag.test() of a two-task DAG with the demo's listener and log redirection, in a subprocess (it takes over
file descriptors 1 and 2), and the one-line-per-day summary."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

DAG_FILE = textwrap.dedent('''
    import pendulum
    from airflow.sdk import dag, task


    @dag(dag_id="demo_progress_probe", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC"))
    def probe():
        @task
        def land(source: str):
            print(f"landing {source}: a line for the log file only")
            return source

        @task(retries=0)
        def validate(source: str):
            print("validate: this line belongs to the excerpt")
            raise ValueError(f"42 of 50 rows of {source} are broken")

        land.expand(source=["a", "b"]) >> validate("a")


    probe()
''')

SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from feedback_loop_sample.demo_runner import DemoProgress, listening, load_dag, logs_to_file, run_dag

    log_path = Path(sys.argv[1])
    dag = load_dag("demo_progress_probe")
    with logs_to_file(log_path) as terminal, listening(DemoProgress(terminal, log_path)) as progress:
        print("stdout of the process goes to the log file")
        state = run_dag(dag, progress, "demo_progress_probe 2026-11-20")
    print("STATE", state)
''')


def test_progress_lines_on_the_terminal_logs_in_the_file_and_a_failure_excerpt(tmp_path, airflow_db):
    (tmp_path / "dags").mkdir()
    (tmp_path / "dags" / "probe.py").write_text(DAG_FILE)
    script = tmp_path / "probe.py"
    script.write_text(SCRIPT)
    log_path = tmp_path / "logs" / "demo.log"
    out = subprocess.run([sys.executable, str(script), str(log_path)], check=False, capture_output=True, text=True,
                         env={**os.environ, "AIRFLOW__CORE__DAGS_FOLDER": str(tmp_path / "dags")}, timeout=300,
                         cwd=ROOT)
    terminal = out.stdout.splitlines()
    assert terminal[-1] == "STATE failed", out.stdout + out.stderr
    assert "[demo] demo_progress_probe 2026-11-20: task validate failed: 42 of 50 rows of a are broken" in terminal
    assert "validate: this line belongs to the excerpt" in out.stdout  # the failing task's own log lines
    assert 'File "' not in out.stdout  # traceback frames stay in the file
    [day] = [line for line in terminal if line.startswith("[demo] demo_progress_probe 2026-11-20  ")]
    assert day.startswith("[demo] demo_progress_probe 2026-11-20  failed in ")
    assert "land×2 " in day and "FAILED" in day.split("validate", 1)[1]
    assert "landing a: a line for the log file only" not in out.stdout  # task logs are not on the terminal
    assert len(terminal) < 25, out.stdout
    log = log_path.read_text()
    assert "landing a: a line for the log file only" in log and "stdout of the process goes to the log file" in log
    assert 'File "' in log and "ValueError: 42 of 50 rows of a are broken" in log


def test_the_summary_is_one_line_per_day(settings):
    sys.path.insert(0, str(ROOT / "scripts"))
    from demo import day_lines
    from feedback_loop.lake.files import Lake

    lake = Lake(settings.lake)
    suite = {"statistics": {"successful_expectations": 9, "evaluated_expectations": 10}}
    lake.write_json({"dt": "2026-11-20", "status": "ok",
                     "totals": {"rows_read": 100, "rows_staged": 97, "rows_quarantined": 3},
                     "sources": {"a": {"quarantined_by_reason": {"bad_json": 2}, "suite": suite},
                                 "b": {"quarantined_by_reason": {"bad_json": 0, "duplicate_id": 1}, "suite": suite}}},
                    "runs", "dt=2026-11-20", "summary.json")
    lines = day_lines(lake, ["2026-11-20", "2026-11-21"]).splitlines()
    assert len(lines) == 2
    assert "read     100  staged      97  quarantined     3 (bad_json 2, duplicate_id 1" in lines[0]
    assert "GX 18/20 expectations passed in 2 suites" in lines[0]
    assert "2026-11-21  no summary" in lines[1]
