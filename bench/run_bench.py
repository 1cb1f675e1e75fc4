"""Benchmark of the nightly run against a bare DuckDB scan of the same day (`make bench`, docs/benchmark.md).

Every measurement runs in a fresh child process; wall time comes from this process's clock, CPU time
(user + system) and peak RSS from `os.wait4` on that child, so one stage's caches or imports never help
the next. The reference - DuckDB turning the day's agent_events files into Parquet, nothing else - is
measured in the same run (three times, its medians used), so ratios stay meaningful on a machine whose load
changes between runs.

    python bench/run_bench.py                              # ~2 M events (200,000 conversations)
    python bench/run_bench.py --events 10000000            # ~10 M events
    python bench/run_bench.py --sweep                      # 0.25x, 0.5x, 1x, 2x of the scale
    python bench/run_bench.py --conversations-per-day 300  # the smoke test's size
    python bench/run_bench.py --steady-state               # also the night after 28 days of history

Generated days are cached under bench/.cache/ by (conversations, seed); with --steady-state (or
--history-days N) the N earlier days are generated and run through the whole nightly run once, and that
lake is cached by (conversations, seed, N, the code's hash), so a second run measures straight away.
Figures go to bench/results/<timestamp>.json and bench/results/latest.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EVENTS_PER_CONVERSATION = 9.3  # measured: 200,000 conversations/day give about 1.86 M agent_events
DAY = "2026-11-20"
REFERENCE_RUNS = 3  # the bare scan is measured this many times per run and its medians used (--reference-runs)
# The stages of nightly.run_day, in its order; land and validate cover all six sources.
STAGES = ["land", "validate", "model", "summarize", "signals", "gaps", "datasets", "publish", "decide"]


# ----------------------------------------------------------------------------------------------- children
def _child(spec: dict) -> dict:
    """Runs inside the measured child process: one stage (or the reference, or the generator).

    With `preloaded` the child first imports what the deployments' forkserver and Celery worker import once
    for every task (`airflow_local.TASK_LIBRARIES`), then reports the stage's own wall and CPU beside the
    whole process's: a night as `make airflow` and the compose stack run it (docs/benchmark.md)."""
    if not spec.get("preloaded"):
        return _child_work(spec)
    from feedback_loop.airflow_local import preload_task_libraries

    preload_task_libraries()
    w0, c0 = time.perf_counter(), time.process_time()
    out = _child_work(spec)
    out["after_preload"] = {"wall_s": round(time.perf_counter() - w0, 3), "cpu_s": round(time.process_time() - c0, 3)}
    return out


def _child_work(spec: dict) -> dict:
    kind = spec["kind"]
    out: dict = {}
    if kind == "generate":
        from feedback_loop_sample.generator import generate

        d = date.fromisoformat(spec["dt"])
        first = d - timedelta(days=spec.get("history_days", 0))
        generate(spec["landing"], first, d, conversations_per_day=spec["conversations"], seed=spec["seed"])
        return out
    if kind == "history":  # the whole nightly run of every earlier day, in order (not measured per stage)
        from feedback_loop import nightly
        from feedback_loop.settings import Settings

        settings = Settings.load()
        for day in spec["days"]:
            t = time.perf_counter()
            nightly.run_day(settings, day, data_docs=False)
            print(f"history {day}: {time.perf_counter() - t:.1f} s", flush=True)
        return out
    if kind == "reference":
        import duckdb

        con = duckdb.connect()
        files = sorted(str(p) for p in Path(spec["folder"]).iterdir() if not p.name.startswith((".", "_")))
        fl = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(f"COPY (SELECT * FROM read_json([{fl}])) TO '{spec['target']}' (FORMAT parquet)")
        out["rows"] = con.execute(f"SELECT count(*) FROM '{spec['target']}'").fetchone()[0]
        return out

    from feedback_loop import nightly
    from feedback_loop.ingest import contract
    from feedback_loop.settings import Settings

    settings = Settings.load()
    dt = spec["dt"]
    per_source = {}
    if kind == "land":
        for source in contract.SOURCE_NAMES:
            t = time.perf_counter()
            r = nightly.land(settings, source, dt)
            per_source[source] = {"wall_s": round(time.perf_counter() - t, 3), "rows": r["rows_read"]}
    elif kind == "validate":
        for source in contract.SOURCE_NAMES:
            t = time.perf_counter()
            r = nightly.validate(settings, source, dt)
            per_source[source] = {"wall_s": round(time.perf_counter() - t, 3), "rows": r["rows_read"],
                                  "quarantined": r["rows_quarantined"]}
    elif kind == "model":
        out["counts"] = nightly.model(settings, dt)
    elif kind == "model_shard":  # bench/sharded_model.py: one shard of the model stage (issue 18)
        from feedback_loop.model.shards import build_facts_shard

        out.update(build_facts_shard(settings, dt, spec["shard"], spec["shards"]))
    elif kind == "model_combine":
        from feedback_loop.model.shards import combine_facts_shards

        out["counts"] = combine_facts_shards(settings, dt, spec["shards"])
    elif kind == "summarize":
        counts = json.loads(Path(spec["model_counts"]).read_text()) if spec.get("model_counts") else {}
        nightly.summarize(settings, dt, {"model": counts})
    elif kind == "signals":
        nightly.signals(settings, dt)
    elif kind == "gaps":
        nightly.detect_gaps(settings, dt)
    elif kind == "datasets":
        nightly.build_datasets(settings, dt)
    elif kind == "publish":
        nightly.publish_warehouse(settings)
    elif kind == "decide":
        nightly.decide_retraining(settings, dt)
    else:
        raise SystemExit(f"unknown measurement {kind}")
    if per_source:
        out["per_source"] = per_source
    return out


def measure(spec: dict, env: dict | None = None, log: Path | None = None) -> dict:
    """Run one measurement in a fresh interpreter: wall, CPU and peak RSS of that child alone."""
    with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as fh:
        result_file = fh.name
    spec = dict(spec, result_file=result_file)
    with open(log or os.devnull, "ab") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                                env=env or os.environ.copy(), stdout=out, stderr=out)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    detail = {}
    try:
        detail = json.loads(Path(result_file).read_text() or "{}")
    except (OSError, ValueError):
        pass
    finally:
        Path(result_file).unlink(missing_ok=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{spec['kind']} failed (exit {proc.returncode}); see {log}")
    figures = {"wall_s": round(wall, 3), "cpu_s": round(ru.ru_utime + ru.ru_stime, 3)}
    after = detail.pop("after_preload", None)
    if after is not None:  # the stage as a preloaded task runs it; the whole child (imports included) beside it
        figures = {**after, "process": figures}
    return {**figures, "peak_rss_mib": round(ru.ru_maxrss / 1024, 1), **detail}


# ----------------------------------------------------------------------------------------------- the day
def cached_day(conversations: int, seed: int, log: Path, history_days: int = 0) -> tuple[Path, dict | None]:
    """The generated landing folder for this scale and seed, generating it once (under bench/.cache/).

    With `history_days` the folder also holds that many days before DAY (one generator run, so the
    earlier days' cases, reopens and surveys carry over into DAY as they do in a real export)."""
    suffix = f"-h{history_days}" if history_days else ""
    base = HERE / ".cache" / f"c{conversations}-s{seed}{suffix}"
    landing = base / "landing"
    if (landing / ".complete").exists():
        return landing, None
    shutil.rmtree(landing, ignore_errors=True)
    landing.mkdir(parents=True)
    print(f"generating {conversations:,} conversations/day x {history_days + 1} day(s) (seed {seed}) "
          f"into {landing} ...", flush=True)
    gen = measure({"kind": "generate", "landing": str(landing), "dt": DAY, "conversations": conversations,
                   "seed": seed, "history_days": history_days}, log=log)
    (landing / ".complete").write_text(json.dumps(gen))
    return landing, gen


def code_hash() -> str:
    """A hash of the pipeline's code: a cached history lake is rebuilt when the code that wrote it changed."""
    h = hashlib.sha256()
    for path in sorted((ROOT / "include").rglob("*")):
        if path.is_file() and path.suffix in (".py", ".sql") and "__pycache__" not in path.parts:
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def stage_env(work: Path, landing: Path) -> dict:
    """The environment of every measured child: the lake, warehouse and landing of this run only."""
    env = os.environ.copy()
    env.update({"ACSR_DATA_DIR": str(work), "ACSR_LANDING": str(landing), "ACSR_LAKE": str(work / "lake"),
                "ACSR_WAREHOUSE": str(work / "warehouse.duckdb"), "PYTHONWARNINGS": "ignore"})
    for var in ("ACSR_EXTRA", "ACSR_GAP_PARAMS", "ACSR_SOURCES"):
        env.pop(var, None)
    return env


def cached_history(conversations: int, seed: int, history_days: int, log: Path) -> tuple[Path, Path, dict]:
    """(landing, data folder with the lake after the `history_days` nights before DAY, how it was built).

    Built once per (conversations, seed, history_days, code hash): every earlier day goes through
    `nightly.run_day` in order (Data Docs off), so each window of DAY's night is full, with the partitions
    the current code writes."""
    landing, _ = cached_day(conversations, seed, log, history_days)
    data = landing.parent / f"history-{code_hash()}"
    done = data / ".complete"
    if done.exists():
        return landing, data, json.loads(done.read_text())
    for stale in landing.parent.glob("history-*"):  # lakes written by older code
        shutil.rmtree(stale, ignore_errors=True)
    data.mkdir(parents=True)
    day = date.fromisoformat(DAY)
    days = [str(day - timedelta(days=i)) for i in range(history_days, 0, -1)]
    print(f"building the history lake: {len(days)} nights of {conversations:,} conversations "
          f"({days[0]} .. {days[-1]}) into {data} ...", flush=True)
    built = measure({"kind": "history", "days": days}, stage_env(data, landing), log)
    built["days"] = days
    print(f"  history built in {built['wall_s']:.0f} s wall, peak {built['peak_rss_mib']:.0f} MiB", flush=True)
    done.write_text(json.dumps(built))
    return landing, data, built


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def measure_reference(events_dir: Path, work: Path, env: dict, log: Path, runs: int = REFERENCE_RUNS,
                      preloaded: bool = False) -> dict:
    """The bare scan `runs` times: the median wall and the median CPU, each run's figures beside them.

    Why: DuckDB's parallel scan on two cores varied by up to 16 % between runs of the same day (the ratio of
    a stage moved more with its reference than with a change); the median of three holds still."""
    spec = {"kind": "reference", "folder": str(events_dir), "target": str(work / "reference.parquet"),
            "preloaded": preloaded}
    each = [measure(spec, env, log) for _ in range(max(1, runs))]
    ref = {"wall_s": statistics.median(r["wall_s"] for r in each), "cpu_s": statistics.median(r["cpu_s"] for r in each),
           "peak_rss_mib": max(r["peak_rss_mib"] for r in each), "events": each[0]["rows"],
           "runs": [{k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mib", "process") if k in r} for r in each]}
    cpus = ", ".join(f"{r['cpu_s']:.2f}" for r in each)
    spread = "" if len(each) == 1 else f" (median of {len(each)}; CPU {cpus} s)"
    print(f"  reference (DuckDB read_json -> Parquet, {ref['events']:,} events): {ref['wall_s']:.2f} s wall, "
          f"{ref['cpu_s']:.2f} s CPU, {ref['peak_rss_mib']:.0f} MiB{spread}", flush=True)
    return ref


def measure_night(landing: Path, work: Path, stages: list[str], log: Path, ref: dict | None = None,
                  progress=None, label: str = "", reference_runs: int = REFERENCE_RUNS, preloaded: bool = False) -> dict:
    """The reference (unless given), then every stage of DAY's night in order, each in a fresh process,
    on the lake in `work` (empty, or a copy of a history lake); `preloaded`: see `_child`."""
    events_dir = landing / "agent_events" / f"dt={DAY}"
    work.mkdir(parents=True, exist_ok=True)
    env = stage_env(work, landing)
    if ref is None:
        ref = measure_reference(events_dir, work, env, log, reference_runs, preloaded)
    results = {}
    counts_file = work / "model_counts.json"
    for stage in stages:
        spec = {"kind": stage, "dt": DAY, "preloaded": preloaded}
        if stage == "summarize" and counts_file.exists():
            spec["model_counts"] = str(counts_file)
        r = measure(spec, env, log)
        if stage == "model" and "counts" in r:
            counts_file.write_text(json.dumps(r["counts"]))
        r["ratio"] = round(r["wall_s"] / ref["wall_s"], 2)
        r["cpu_ratio"] = round(r["cpu_s"] / ref["cpu_s"], 2) if ref["cpu_s"] else None
        results[stage] = r
        print(f"  {label}{stage:<10} {r['wall_s']:8.2f} s wall {r['cpu_s']:8.2f} s CPU {r['peak_rss_mib']:7.0f} MiB "
              f"  {r['ratio']:6.2f}x reference ({r['cpu_ratio']}x in CPU)", flush=True)
        if progress:  # a long run leaves its figures so far even if it is stopped
            progress({"reference": ref, "stages": results, "partial": True})
    total_wall = sum(r["wall_s"] for r in results.values())
    total_cpu = sum(r["cpu_s"] for r in results.values())
    events = ref["events"]
    return {
        "reference": ref, "stages": results,
        "whole_run": {"wall_s": round(total_wall, 2), "cpu_s": round(total_cpu, 2),
                      "ratio": round(total_wall / ref["wall_s"], 2),
                      "cpu_ratio": round(total_cpu / ref["cpu_s"], 2) if ref["cpu_s"] else None,
                      "events_per_s": round(events / total_wall) if total_wall else None,
                      "peak_rss_mib": max((r["peak_rss_mib"] for r in results.values()), default=0)},
    }


def run_scale(conversations: int, seed: int, stages: list[str], log: Path, keep: bool = False,
              progress=None, history_days: int = 0, reference_runs: int = REFERENCE_RUNS,
              preloaded: bool = False) -> dict:
    """DAY's night on an empty lake; with `history_days`, also the same night after that many earlier
    nights (every window full), beside it, with the same reference."""
    if history_days:
        landing, history, built = cached_history(conversations, seed, history_days, log)
        gen = None
    else:
        landing, gen = cached_day(conversations, seed, log)
    events_dir = landing / "agent_events" / f"dt={DAY}"
    work = Path(tempfile.mkdtemp(prefix=f"run-c{conversations}-", dir=HERE / ".cache"))
    try:
        def report(part: str):
            return (lambda figures: progress({"conversations_per_day": conversations, part: figures})) \
                if progress else None
        if history_days:
            print("  -- empty lake: only DAY's input --", flush=True)
        night = measure_night(landing, work / "empty", stages, log, progress=report("empty_lake"),
                              reference_runs=reference_runs, preloaded=preloaded)
        ref = night["reference"]
        run = {"conversations_per_day": conversations, "seed": seed, "events": ref["events"],
               "agent_events_bytes": _bytes(events_dir), "landing_bytes": _bytes(landing), "generate": gen,
               **night}
        if history_days:
            print(f"  -- steady state: after {history_days} nights of history --", flush=True)
            steady_work = work / "steady"
            shutil.copytree(history, steady_work, ignore=shutil.ignore_patterns(".complete"))
            steady = measure_night(landing, steady_work, stages, log, ref=ref, progress=report("steady_state"),
                                   label="steady ", preloaded=preloaded)
            steady["history_days"] = history_days
            steady["history_build"] = built
            steady["vs_empty_lake"] = {
                **{s: round(steady["stages"][s]["wall_s"] / night["stages"][s]["wall_s"], 2)
                   for s in stages if night["stages"][s]["wall_s"]},
                "whole_run": round(steady["whole_run"]["wall_s"] / night["whole_run"]["wall_s"], 2),
                "whole_run_cpu": round(steady["whole_run"]["cpu_s"] / night["whole_run"]["cpu_s"], 2)}
            run["steady_state"] = steady
            w = steady["whole_run"]
            print(f"  steady-state whole run: {w['wall_s']:.1f} s wall = {w['ratio']:.2f}x reference "
                  f"({w['cpu_ratio']}x in CPU), {steady['vs_empty_lake']['whole_run']:.2f}x the empty-lake night "
                  f"({steady['vs_empty_lake']['whole_run_cpu']:.2f}x in CPU); peak {w['peak_rss_mib']:.0f} MiB",
                  flush=True)
        return run
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- Airflow
def dag_parse_times(log: Path) -> dict:
    """Each DAG file parsed alone by DagBag in a fresh interpreter (Airflow's import excluded and reported)."""
    code = (
        "import json, sys, time\n"
        "t0 = time.perf_counter()\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "t1, c1 = time.perf_counter(), time.process_time()\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "t2, c2 = time.perf_counter(), time.process_time()\n"
        "print(json.dumps({'parse_ms': round((t2 - t1) * 1000, 1), 'parse_cpu_ms': round((c2 - c1) * 1000, 1),"
        " 'airflow_import_ms': round((t1 - t0) * 1000, 1),"
        " 'dags': sorted(bag.dag_ids), 'errors': {k: str(v)[:300] for k, v in bag.import_errors.items()}}))\n"
    )
    out = {}
    env = os.environ.copy()
    env.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    for path in sorted((ROOT / "dags").glob("*.py")):
        p = subprocess.run([sys.executable, "-c", code, str(path)], check=False, capture_output=True, text=True,
                           cwd=ROOT, env=env)
        line = (p.stdout.strip().splitlines() or ["{}"])[-1]
        try:
            out[path.name] = json.loads(line)
        except ValueError:
            out[path.name] = {"error": (p.stderr or p.stdout)[-500:]}
        with open(log, "a") as fh:
            fh.write(p.stderr)
    return out


NOOP_DAG = '''
from airflow.sdk import dag, task


@task
def noop(i: int) -> int:
    return i


@dag(dag_id="bench_noop_{n}", schedule=None, catchup=False)
def bench_noop():
    for i in range({n}):
        noop.override(task_id=f"noop_{{i}}")(i)


bench_noop()
'''


def task_overhead(log: Path) -> dict:
    """Airflow's cost per task: dag.test() of 1 and of 11 no-op tasks; the difference / 10 is per task."""
    home = HERE / ".cache" / "airflow_home"
    dags = home / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    for n in (1, 11):
        (dags / f"bench_noop_{n}.py").write_text(NOOP_DAG.format(n=n))
    env = os.environ.copy()
    env.update({"AIRFLOW_HOME": str(home), "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db"})
    if not (home / ".migrated").exists():
        with open(log, "a") as err:
            subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True,
                           stdout=subprocess.DEVNULL, stderr=err)
        (home / ".migrated").write_text("ok")
    # One process: a warm-up dag.test() pays the one-off imports and DB connection, then each DAG is timed.
    code = (
        "import json, sys, time\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=sys.argv[1])\n"
        "bag.dags['bench_noop_1'].test()\n"
        "out = {}\n"
        "for n in (1, 11):\n"
        "    t, c = time.perf_counter(), time.process_time()\n"
        "    run = bag.dags[f'bench_noop_{n}'].test()\n"
        "    out[f'dag_test_{n}_tasks'] = {'wall_s': round(time.perf_counter() - t, 3),"
        " 'cpu_s': round(time.process_time() - c, 3), 'state': str(run.state)}\n"
        "print(json.dumps(out))\n"
    )
    p = subprocess.run([sys.executable, "-c", code, str(dags)], env=env, check=False, capture_output=True, text=True)
    with open(log, "a") as fh:
        fh.write(p.stderr[-20000:])
    try:
        out = json.loads(p.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": p.stderr[-500:]}
    one, eleven = out["dag_test_1_tasks"], out["dag_test_11_tasks"]
    out["per_task_s"] = round((eleven["wall_s"] - one["wall_s"]) / 10, 3)
    out["per_task_cpu_s"] = round((eleven["cpu_s"] - one["cpu_s"]) / 10, 3)
    out["direct_call_s"] = 0.0  # calling the no-op function itself costs microseconds
    return out


# ----------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--conversations-per-day", type=int, help="conversations in the day (default 200,000)")
    g.add_argument("--events", type=int, help="approximate agent events in the day (up to ~10 M)")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the day's size (e.g. 5 for ~10 M events)")
    ap.add_argument("--sweep", action="store_true", help="also run 0.25x, 0.5x and 2x of the scale")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset of " + ",".join(STAGES))
    ap.add_argument("--no-airflow", action="store_true", help="skip DAG parse times and per-task overhead")
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON figures")
    ap.add_argument("--keep", action="store_true", help="keep each run's lake (under bench/.cache/run-*)")
    ap.add_argument("--reference-runs", type=int, default=REFERENCE_RUNS,
                    help=f"times the bare scan is measured; its medians are the reference (default {REFERENCE_RUNS})")
    ap.add_argument("--preloaded", action="store_true",
                    help="measure each stage (and the reference) after the libraries the deployments' task "
                         "processes inherit are imported, as make airflow and the compose stack run a night")
    h = ap.add_mutually_exclusive_group()
    h.add_argument("--steady-state", action="store_true",
                   help="also measure the night after 28 earlier nights (every window full): --history-days 28")
    h.add_argument("--history-days", type=int, default=0, help="earlier nights run before the measured night")
    args = ap.parse_args(argv)

    if args.child:
        spec = json.loads(args.child)
        result = _child(spec)
        Path(spec["result_file"]).write_text(json.dumps(result, default=str))
        return 0

    if args.events:
        base = max(1, round(args.events / EVENTS_PER_CONVERSATION))
    else:
        base = args.conversations_per_day or 200_000
    base = max(1, round(base * args.scale))
    stages = [s for s in args.stages.split(",") if s]
    history_days = 28 if args.steady_state else args.history_days
    if history_days < 0:
        ap.error("--history-days must be 0 or more")
    unknown = set(stages) - set(STAGES)
    if unknown:
        ap.error(f"unknown stage(s): {', '.join(sorted(unknown))}")
    args.out.mkdir(parents=True, exist_ok=True)
    (HERE / ".cache").mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = HERE / ".cache" / f"bench-{stamp}.log"
    doc = {"started": stamp, "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()},
           "day": DAY, "history_days": history_days, "preloaded": args.preloaded, "runs": []}
    scales = [0.25, 0.5, 1.0, 2.0] if args.sweep else [1.0]
    partial_file = args.out / f"{stamp}.partial.json"

    def progress(run: dict) -> None:
        partial_file.write_text(json.dumps(dict(doc, runs=[*doc["runs"], run]), indent=1, default=str))
    for factor in scales:
        n = max(1, round(base * factor))
        print(f"== {n:,} conversations/day ({factor}x){', after the preload' if args.preloaded else ''} ==",
              flush=True)
        run = run_scale(n, args.seed, stages, log, keep=args.keep, progress=progress, history_days=history_days,
                        reference_runs=args.reference_runs, preloaded=args.preloaded)
        run["factor"] = factor
        run["load_avg_after"] = os.getloadavg()
        doc["runs"].append(run)
        w = run["whole_run"]
        print(f"  whole run: {w['wall_s']:.1f} s wall = {w['ratio']:.2f}x reference ({w['cpu_ratio']}x in CPU); "
              f"{w['events_per_s']:,} events/s; "
              f"peak {w['peak_rss_mib']:.0f} MiB", flush=True)
    if len(doc["runs"]) > 1:
        first = doc["runs"][0]
        doc["sweep"] = [
            {"factor": r["factor"], "events": r["events"], "reference_s": r["reference"]["wall_s"],
             "whole_run_s": r["whole_run"]["wall_s"], "ratio": r["whole_run"]["ratio"],
             "peak_rss_mib": r["whole_run"]["peak_rss_mib"],
             "time_per_event_vs_smallest": round((r["whole_run"]["wall_s"] / r["events"])
                                                 / (first["whole_run"]["wall_s"] / first["events"]), 2)}
            for r in doc["runs"]
        ]
        print("sweep:", json.dumps(doc["sweep"], indent=1))
    if not args.no_airflow:
        doc["dag_parse"] = dag_parse_times(log)
        for name, r in doc["dag_parse"].items():
            print(f"  parse {name}: {r.get('parse_ms')} ms wall, {r.get('parse_cpu_ms')} ms CPU "
                  f"(+{r.get('airflow_import_ms')} ms importing Airflow)"
                  f"{'  ERRORS ' + str(r.get('errors') or r.get('error')) if r.get('errors') or r.get('error') else ''}")
        doc["task_overhead"] = task_overhead(log)
        o = doc["task_overhead"]
        print(f"  Airflow per-task overhead (dag.test, 11 vs 1 no-op tasks): {o.get('per_task_s')} s wall, "
              f"{o.get('per_task_cpu_s')} s CPU{'  ERROR ' + o['error'] if 'error' in o else ''}")
    doc["load_avg_at_end"] = os.getloadavg()
    text = json.dumps(doc, indent=1, default=str)
    (args.out / f"{stamp}.json").write_text(text)
    (args.out / "latest.json").write_text(text)
    partial_file.unlink(missing_ok=True)
    print(f"figures: {args.out / (stamp + '.json')} (and latest.json); log: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
