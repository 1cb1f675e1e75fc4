"""What a night costs through a real scheduler, LocalExecutor as `make airflow` runs it: the task processes
started from the preloaded forkserver (`feedback_loop.airflow_preload`, the project's setting) against
Airflow's default (`fork` from the scheduler, each task importing Airflow's and the stages' libraries itself).

For each way it starts the services (scheduler, dag-processor, triggerer, api-server, with the suite's
helper tests/integration/airflow_stack.py) on a fresh lake, runs two nights of one generated day (the
scheduled run, then the same day again by hand, which rewrites the same partitions), and adds up the CPU of
every process of the services while each night runs: live processes' own time plus what their ended
children (tasks, workers) used. The first night includes the forkserver's one-off imports.

    .venv/bin/python bench/scheduler_night.py                    # ~3 minutes on 2 cores
    .venv/bin/python bench/scheduler_night.py --json /tmp/night.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))

from airflow_stack import AirflowStack, latest_scheduled_day  # the suite's own service launcher

DAG = "acsr_nightly"
WAYS = {
    "preloaded_forkserver": {},  # the project's setting (AirflowStack sets it, as make airflow does)
    "fork": {"AIRFLOW__SCHEDULER__MP_START_METHOD": "fork", "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ""},
}


def stack_cpu(stack: AirflowStack) -> float:
    """CPU seconds of the services' processes and of every descendant, ended ones included once reaped."""
    total = 0.0
    roots = [psutil.Process(p.pid) for _, p in stack.processes.procs if p.poll() is None]
    seen = set()
    for root in roots:
        for proc in [root, *root.children(recursive=True)]:
            if proc.pid in seen:
                continue
            seen.add(proc.pid)
            try:
                t = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system + t.children_user + t.children_system
    return total


def one_way(name: str, env: dict, work: Path, conversations: int) -> dict:
    from feedback_loop_sample.generator import generate

    day = latest_scheduled_day()  # unpausing schedules its run
    generate(work / "data" / "landing", day, day, conversations_per_day=conversations)
    stack = AirflowStack(work / "airflow", work / "data", extra_env={"ACSR_EARLIER_DAYS_POKE_SECONDS": "5", **env})
    out = {"day": day.isoformat(), "nights": []}
    try:
        stack.start(pools={"duckdb_warehouse": 1})
        stack.wait_dag_parsed(DAG)
        for night in (1, 2):
            cpu, wall = stack_cpu(stack), time.perf_counter()
            if night == 1:
                stack.cli("dags", "unpause", DAG)
                [run] = stack.wait_runs(DAG, count=1, timeout=1800)
            else:
                queued = stack.api("POST", f"/api/v2/dags/{DAG}/dagRuns",
                                   {"logical_date": None, "conf": {"date": day.isoformat()}})
                [run] = stack.wait_runs(DAG, [queued["dag_run_id"]], timeout=1800)
            tis = stack.task_instances(DAG, run["dag_run_id"])
            out["nights"].append({"state": run["state"], "wall_s": round(time.perf_counter() - wall, 1),
                                  "cpu_s": round(stack_cpu(stack) - cpu, 1), "task_instances": len(tis)})
            print(f"{name:22s} night {night}: {out['nights'][-1]}", flush=True)
    finally:
        stack.stop()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations-per-day", type=int, default=60)
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    result = {"conversations_per_day": args.conversations_per_day, "ways": {}}
    for name, env in WAYS.items():
        with tempfile.TemporaryDirectory(prefix=f"acsr-bench-night-{name}-") as tmp:
            result["ways"][name] = one_way(name, env, Path(tmp), args.conversations_per_day)
    base, pre = result["ways"]["fork"]["nights"], result["ways"]["preloaded_forkserver"]["nights"]
    result["cpu_ratio_preloaded_to_fork"] = [round(p["cpu_s"] / b["cpu_s"], 2) for p, b in zip(pre, base, strict=True)]
    result["wall_ratio_preloaded_to_fork"] = [round(p["wall_s"] / b["wall_s"], 2) for p, b in zip(pre, base, strict=True)]
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    bad = [n for way in result["ways"].values() for n in way["nights"] if n["state"] != "success"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
