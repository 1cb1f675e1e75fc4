"""A night with a month of history at full daily size, fast: the stages that read a lookback window, measured
on a kept bench day with and without synthetic earlier days (issue 18).

`run_bench.py --steady-state` runs every earlier night for real, which at 2 M events a day takes hours. This
copies a lake kept by `run_bench.py --keep` and writes its day again as each earlier day, with the ids of
that day's rows suffixed (a new set of conversations, cases and events every day) and its times shifted,
plus a share of rows that keep the day's ids (a case with states on several days, a conversation active on
several days, an event id staged twice): the sizes and the key overlaps of a steady lake, not its
statistics. Then it runs validate (every source), model, signals and gaps of the kept day on the lake
without history and on the lake with it, each in a fresh process, and prints CPU, wall and peak RSS side by side.

    .venv/bin/python bench/run_bench.py --events 2000000 --keep --no-airflow   # once
    .venv/bin/python bench/steady_history.py bench/.cache/run-c215054-*/empty
    .venv/bin/python bench/steady_history.py bench/.cache/run-c215054-*/empty --stages gaps --distinct-texts

`--distinct-texts`: gaps with every first message made distinct (the generator's texts repeat far more than a
real team's, and gaps projects each distinct text once).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

DAY = "2026-11-20"
STAGES = ("validate", "model", "signals", "gaps")


def _history(lake: Path, day: str, days: int, facts_days: int) -> None:
    """Earlier days of staged and raw agent events and cases (`days`) and of conversation facts
    (`facts_days`), made from `day`'s partitions."""
    import duckdb

    con = duckdb.connect()
    d0 = date.fromisoformat(day)

    def write(layer: str, source: str, n: int, replace: dict[str, str]) -> None:
        today = glob.glob(f"{lake}/{layer}/{source}/dt={day}/*.parquet")[0]
        cols = {r[0] for r in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{today}', hive_partitioning=false)").fetchall()}
        sel = ", ".join(f"{expr} AS {col}" for col, expr in replace.items() if col in cols)
        for i in range(1, n + 1):
            folder = lake / layer / source / f"dt={d0 - timedelta(days=i)}"
            folder.mkdir(parents=True, exist_ok=True)
            con.execute(f"COPY (SELECT * REPLACE ({sel}) FROM read_parquet('{today}', hive_partitioning=false)) "
                        f"TO '{folder}/part.parquet' (FORMAT parquet, COMPRESSION zstd)", {"i": i})

    def moved(*columns: str) -> dict[str, str]:
        return {c: f"{c} - to_days($i::INTEGER)" for c in columns}

    def kept(column: str, share: int, key: str | None = None) -> str:
        """`column` suffixed with the day, except on 1/`share` of the rows (by `key`) for the first 2 days."""
        return (f"CASE WHEN $i <= 2 AND hash({key or column}) % {share} = 0 THEN {column} "
                f"ELSE {column} || '-d' || $i END")

    for layer in ("staged", "raw"):
        write(layer, "agent_events", days, {"event_id": kept("event_id", 100), "ts": "ts - to_days($i::INTEGER)",
                                            "conversation_id": kept("conversation_id", 50)})
        write(layer, "crm_cases", days, {"case_id": kept("case_id", 5), "conversation_id": kept("conversation_id", 5, "case_id"),
                                         **moved("created_at", "updated_at", "resolved_at", "last_reopened_at")})
    write("marts", "conversation_facts", facts_days, {
        "conversation_id": kept("conversation_id", 5, "case_id"), "case_id": kept("case_id", 5),
        "customer_id": "CASE WHEN hash(customer_id) % 3 = 0 THEN customer_id ELSE customer_id || '-d' || $i END",
        "fact_date": "fact_date - to_days($i::INTEGER)",
        **moved("started_at", "ended_at", "case_created_at", "resolved_at", "last_reopened_at")})


def _distinct_texts() -> None:
    """Gaps reads a window whose first messages never repeat: a made-up word per conversation appended to each
    (letters from its id's hash). The word occurs once, so the vocabulary (`min_df=2`) and the topics stay
    those of the data, but every text is distinct, as in real traffic; the generator's repeat far more."""
    from feedback_loop.gaps import detect

    load_window = detect.load_window

    def load(con, *args, **kwargs):
        meta = load_window(con, *args, **kwargs)
        con.execute("SET preserve_insertion_order = false")
        con.execute("""CREATE TEMP TABLE conv_distinct AS SELECT * REPLACE (text || ' z' || translate(
            substr(md5(conversation_id), 1, 8), '0123456789', 'ghijklmnop') AS text) FROM conv""")
        con.execute("DROP TABLE conv")
        con.execute("ALTER TABLE conv_distinct RENAME TO conv")
        return meta

    detect.load_window = load


def _child(stage: str, day: str, distinct_texts: bool = False) -> None:
    from feedback_loop import nightly
    from feedback_loop.ingest.contract import SOURCE_NAMES
    from feedback_loop.settings import Settings

    if distinct_texts:
        _distinct_texts()

    s = Settings.load(max_bad_row_share=1.0)  # the synthetic history resolves fewer references: not a failure here
    if stage == "validate":
        for source in SOURCE_NAMES:
            nightly.validate(s, source, day)
    elif stage == "model":
        nightly.model(s, day)
    elif stage == "gaps":
        nightly.detect_gaps(s, day)
    else:
        nightly.signals(s, day)


def _measure(root: Path, stage: str, day: str, distinct_texts: bool = False) -> dict:
    """One stage on a copy of `root` in a fresh process: wall, CPU (user + system) and peak RSS."""
    work = Path(tempfile.mkdtemp(prefix="acsr-steady-"))
    try:
        shutil.copytree(root, work, dirs_exist_ok=True)
        env = {**os.environ, "ACSR_DATA_DIR": str(work), "ACSR_LAKE": str(work / "lake"),
               "ACSR_WAREHOUSE": str(work / "warehouse.duckdb"), "PYTHONWARNINGS": "ignore"}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, __file__, "--child", stage, "--day", day,
                                 *(["--distinct-texts"] if distinct_texts else [])], env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        if status:
            return {"error": f"exit status {status}"}
        return {"wall_s": round(time.perf_counter() - start, 2), "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
                "peak_mib": usage.ru_maxrss // 1024}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", nargs="?", type=Path, help="a kept run folder holding lake/ (bench/.cache/run-*/empty)")
    ap.add_argument("--day", default=DAY)
    ap.add_argument("--days", type=int, default=30, help="earlier days of events and cases (default 30)")
    ap.add_argument("--facts-days", type=int, default=50, help="earlier days of conversation facts (default 50)")
    ap.add_argument("--stages", default=",".join(STAGES))
    ap.add_argument("--distinct-texts", action="store_true",
                    help="gaps: append a made-up word per conversation to every first message, so none repeats")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child == "history":
        _history(args.run_dir / "lake", args.day, args.days, args.facts_days)
        return 0
    if args.child:
        _child(args.child, args.day, args.distinct_texts)
        return 0
    if args.run_dir is None:
        ap.error("the kept run folder is required")
    with tempfile.TemporaryDirectory(prefix="acsr-steady-history-") as tmp:
        steady = Path(tmp) / "steady"
        shutil.copytree(args.run_dir, steady)
        started = time.perf_counter()
        # In a process of its own: a child forked from a parent that holds DuckDB's buffers would count
        # them in its peak RSS.
        subprocess.run([sys.executable, __file__, "--child", "history", "--day", args.day, "--days", str(args.days),
                        "--facts-days", str(args.facts_days), str(steady)], check=True)
        print(f"history: {args.days} days of events and cases, {args.facts_days} of facts, built in "
              f"{time.perf_counter() - started:.0f} s")
        out = {}
        for stage in args.stages.split(","):
            alone = _measure(args.run_dir, stage, args.day, args.distinct_texts)
            full = _measure(steady, stage, args.day, args.distinct_texts)
            out[stage] = {"day_alone": alone, "with_history": full}
            ratio = (f"{full['cpu_s'] / alone['cpu_s']:.2f}x in CPU" if "cpu_s" in full and "cpu_s" in alone
                     else "n/a")
            print(f"  {stage:9} alone {json.dumps(alone)}  with history {json.dumps(full)}  {ratio}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
