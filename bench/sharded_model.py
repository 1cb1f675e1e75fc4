"""The model stage run sharded by conversation, as a day too large for one worker would run on Airflow's
distributed executors (issue 18), against the one-process build of the same day.

On a bench day (bench/run_bench.py's cached generated landing), land and validate once, build the day's
facts in one process (`build_model`), then run the shards as concurrent child processes (the mapped task
instances, one per worker), combine, and check the combined partitions are the one-process ones: row
counts, schema, EXCEPT ALL both ways empty, same row order. Every measurement is run_bench's `measure`: a
fresh child, wall from here, CPU and peak RSS from os.wait4.

    python bench/sharded_model.py                                # 20,000 conversations, 4 shards
    python bench/sharded_model.py --conversations-per-day 200000 --shards 8

Figures go to bench/results/sharded-<timestamp>.json; exits 1 when the outputs are not identical.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

from run_bench import DAY, HERE, cached_day, measure, stage_env

MARTS = ("conversation_facts", "case_history")
ORDER_KEY = {"conversation_facts": "conversation_id", "case_history": "case_id, updated_at, state_seq"}


def identity(one: str, sharded: str, key: str) -> dict:
    """How the sharded partition file compares with the one-process one (the files' own columns only)."""
    import duckdb

    con = duckdb.connect()
    a, b = (f"read_parquet('{p}', hive_partitioning=false)" for p in (one, sharded))

    def count(query: str) -> int:
        return con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]

    numbered = "SELECT file_row_number AS n, ({k}) AS k FROM read_parquet('{p}', hive_partitioning=false, file_row_number=true)"
    out = {
        "rows_one_process": count(f"SELECT * FROM {a}"),
        "rows_sharded": count(f"SELECT * FROM {b}"),
        "same_schema": con.execute(f"DESCRIBE SELECT * FROM {a}").fetchall()
        == con.execute(f"DESCRIBE SELECT * FROM {b}").fetchall(),
        "one_process_except_all_sharded": count(f"SELECT * FROM {a} EXCEPT ALL SELECT * FROM {b}"),
        "sharded_except_all_one_process": count(f"SELECT * FROM {b} EXCEPT ALL SELECT * FROM {a}"),
        # rows at the same position whose order key differs (or that only one file has)
        "rows_out_of_order": count(f"SELECT * FROM ({numbered.format(k=key, p=one)}) x "
                                   f"FULL JOIN ({numbered.format(k=key, p=sharded)}) y USING (n) "
                                   "WHERE x.k IS DISTINCT FROM y.k"),
    }
    out["identical"] = (out["rows_one_process"] == out["rows_sharded"] and out["same_schema"]
                        and out["one_process_except_all_sharded"] == 0 and out["sharded_except_all_one_process"] == 0
                        and out["rows_out_of_order"] == 0)
    return out


def _line(label: str, r: dict) -> str:
    return f"  {label:<22} {r['wall_s']:7.2f} s wall {r['cpu_s']:7.2f} s CPU {r['peak_rss_mib']:6.0f} MiB"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--conversations-per-day", type=int, default=20_000)
    ap.add_argument("--shards", type=int, default=4)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON figures")
    ap.add_argument("--keep", action="store_true", help="keep the run's lake (under bench/.cache/sharded-*)")
    args = ap.parse_args(argv)
    if args.shards < 1:
        ap.error("--shards must be 1 or more")
    args.out.mkdir(parents=True, exist_ok=True)
    (HERE / ".cache").mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log = HERE / ".cache" / f"sharded-{stamp}.log"
    n, shards = args.conversations_per_day, args.shards

    landing, _ = cached_day(n, args.seed, log)
    work = Path(tempfile.mkdtemp(prefix=f"sharded-c{n}-", dir=HERE / ".cache"))
    env = stage_env(work, landing)
    lake = work / "lake"
    doc = {"started": stamp, "day": DAY, "conversations_per_day": n, "seed": args.seed, "shards": shards,
           "machine": {"cpus": os.cpu_count(), "load_avg_at_start": os.getloadavg()}}
    try:
        print(f"== model of {DAY}, {n:,} conversations: one process vs {shards} shards + combine ==", flush=True)
        for stage in ("land", "validate"):
            r = measure({"kind": stage, "dt": DAY}, env, log)
            doc[stage] = {k: r[k] for k in ("wall_s", "cpu_s", "peak_rss_mib")}
            print(_line(stage, r), flush=True)

        one = measure({"kind": "model", "dt": DAY}, env, log)
        doc["one_process"] = one
        print(_line("one-process model", one) + f"  {one['counts']}", flush=True)
        kept = work / "one_process"
        for name in MARTS:  # the combine publishes the same partitions: keep the one-process ones aside
            (kept / name).mkdir(parents=True)
            shutil.copy(lake / "marts" / name / f"dt={DAY}" / "part.parquet", kept / name / "part.parquet")

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=shards) as pool:  # each thread waits on its own child process
            runs = list(pool.map(lambda k: measure({"kind": "model_shard", "dt": DAY, "shard": k, "shards": shards},
                                                   env, log), range(shards)))
        shards_wall = time.perf_counter() - t0
        doc["shards_run"] = [{k: r[k] for k in ("shard", "rows", "wall_s", "cpu_s", "peak_rss_mib")} for r in runs]
        for r in runs:
            print(_line(f"shard {r['shard']} of {shards}", r) + f"  {r['rows']:,} rows", flush=True)
        print(f"  {shards} shards concurrently: {shards_wall:.2f} s wall", flush=True)

        combine = measure({"kind": "model_combine", "dt": DAY, "shards": shards}, env, log)
        doc["combine"] = combine
        print(_line("combine", combine) + f"  {combine['counts']}", flush=True)

        doc["sharded"] = {
            "shards_wall_s": round(shards_wall, 3),
            "wall_s": round(shards_wall + combine["wall_s"], 3),
            "cpu_s": round(sum(r["cpu_s"] for r in runs) + combine["cpu_s"], 3),
            "peak_rss_mib_per_process": max([r["peak_rss_mib"] for r in runs] + [combine["peak_rss_mib"]]),
            "rows_per_shard": [r["rows"] for r in runs],
        }
        doc["sharded"]["wall_vs_one_process"] = round(doc["sharded"]["wall_s"] / one["wall_s"], 2)
        doc["sharded"]["cpu_vs_one_process"] = round(doc["sharded"]["cpu_s"] / one["cpu_s"], 2)
        doc["identity"] = {name: identity(str(kept / name / "part.parquet"),
                                          str(lake / "marts" / name / f"dt={DAY}" / "part.parquet"), ORDER_KEY[name])
                           for name in MARTS}
        doc["identity"]["counts_equal"] = combine["counts"] == one["counts"]
        doc["identity"]["shard_rows_sum_equal"] = sum(r["rows"] for r in runs) == one["counts"]["conversation_facts"]
        doc["identical"] = (all(doc["identity"][name]["identical"] for name in MARTS)
                            and doc["identity"]["counts_equal"] and doc["identity"]["shard_rows_sum_equal"])
        shard_dir = lake / "shards" / "conversation_facts" / f"dt={DAY}"
        doc["shard_files_left"] = sorted(p.name for p in shard_dir.iterdir()) if shard_dir.exists() else []
    finally:
        doc["load_avg_at_end"] = os.getloadavg()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    s = doc["sharded"]
    print(f"  sharded: {s['wall_s']:.2f} s wall ({s['wall_vs_one_process']}x one process), {s['cpu_s']:.2f} s CPU "
          f"({s['cpu_vs_one_process']}x); identical: {doc['identical']}", flush=True)
    for name in MARTS:
        print(f"  {name}: {json.dumps(doc['identity'][name])}", flush=True)
    target = args.out / f"sharded-{stamp}.json"
    target.write_text(json.dumps(doc, indent=1, default=str))
    print(f"figures: {target}; log: {log}")
    return 0 if doc["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
