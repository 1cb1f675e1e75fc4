"""Peak memory and CPU of the gaps stage, step by step, on a copy of a kept bench lake (issue 18).

The gaps stage's counterpart of `datasets_memory.py`: copies a lake kept by `run_bench.py --keep`, runs
`detect_gaps` for the day in this process with a thread sampling RSS every 20 ms, each sample labelled
with the step running (the functions wrapped below), and prints the peak and CPU of each step, then a
digest of the mart's rows (the same digest from two versions of the code is an identity check).

    .venv/bin/python bench/run_bench.py --events 10000000 --keep --no-airflow   # once: keeps bench/.cache/run-*/empty
    .venv/bin/python bench/gaps_memory.py bench/.cache/run-c1075269-*/empty
"""

from __future__ import annotations

import argparse
import hashlib
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
    ap.add_argument("--day", default=DAY)
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="acsr-gaps-memory-"))
    try:
        shutil.copytree(args.lake_dir, work, dirs_exist_ok=True)
        os.environ.update(ACSR_DATA_DIR=str(work), ACSR_LAKE=str(work / "lake"),
                          ACSR_WAREHOUSE=str(work / "warehouse.duckdb"), PYTHONWARNINGS="ignore")
        return _measure(args.day)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _measure(day: str) -> int:
    import duckdb
    from feedback_loop.gaps import classify, detect, drafts, topics, trust
    from feedback_loop.settings import Settings

    mem = StepMemory()
    wrap = mem.wrap
    wrap(detect, "load_window", "the window's conversation table (DuckDB)")
    wrap(detect, "find_gaps", "find_gaps: rows, vectors, topics")
    wrap(topics, "fit_text_space", "find_gaps: TF-IDF and LSA")
    wrap(topics, "label_features", "find_gaps: label features")
    wrap(topics, "combine", "find_gaps: text + label vectors")
    wrap(topics, "cluster", "find_gaps: clustering")
    wrap(topics, "assign", "find_gaps: assigning the rest")
    wrap(classify, "_describe", "find_gaps: describing topics")
    wrap(trust, "weighted_labels", "find_gaps: label trust")
    wrap(drafts, "attach_drafts", "draft replies")
    wrap(detect, "write_gaps", "writing the mart")

    from feedback_loop.nightly import stage  # the collector's thresholds the DAG's task runs with

    mem.start()
    t0 = time.process_time()
    result = stage(detect.detect_gaps)(Settings.load(), day)
    mem.report("gaps", time.process_time() - t0, width=50)
    rows = duckdb.sql(f"SELECT * FROM read_parquet('{result['mart']}') ORDER BY ALL").fetchall()
    print(f"  {result['n_signals']} signals, {result['n_topics']} topics, {len(rows)} mart rows, digest "
          f"{hashlib.md5(str(rows).encode()).hexdigest()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
