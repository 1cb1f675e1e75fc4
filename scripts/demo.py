"""`make demo`: sample data for the last N days, the nightly DAG run for each day through Airflow
(`dag.test()`, SQLite metadata DB), then where the outputs are and a summary per day.

The terminal gets one progress line per day (its stages and their seconds) and the summary; the Airflow
task logs go to <data dir>/logs/demo-<time>.log, whose path is printed first. A failed task prints its
error and the end of its log."""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--conversations-per-day", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--no-agent", action="store_true",
                    help="land the generator's agent_events/overrides as they are, not through the sample agent")
    ap.add_argument("--source", default="", help="pull from vendor stand-ins instead of sample files, e.g. "
                    "zendesk+otlp (docs/sources.md)")
    args = ap.parse_args()

    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    settings = Settings.load()
    end = date.today() - timedelta(days=1)
    start = end - timedelta(days=args.days - 1)
    if not args.source.strip():
        print(f"[demo] generating sample exports {start}..{end} into {settings.landing}", flush=True)
        generate(settings.landing, start, end, conversations_per_day=args.conversations_per_day, seed=args.seed,
                 malformed_share=0.01)
        if not args.no_agent:  # the adopter's path: instrumented agent -> OTLP JSON files -> pull -> landing
            from pathlib import Path

            from feedback_loop_sample.agent import through_instrumentation

            traces = Path(settings.landing).parent / "traces"
            for i in range(args.days):
                r = through_instrumentation(settings.landing, (start + timedelta(days=i)).isoformat(), traces)
                if r.get("skipped"):
                    print(f"[demo] {r['day']}: {r['skipped']}", flush=True)
                    continue
                print(f"[demo] {r['day']}: sample agent, {r['conversations']} conversations -> {r['spans_exported']} spans "
                      f"in {r['traces']} -> pulled {r['rows']['agent_events'][r['day']]} agent_events and "
                      f"{r['rows'].get('overrides', {}).get(r['day'], 0)} overrides rows "
                      f"({sum(r['unreplayable'].values())} planted defects kept aside)", flush=True)

    log_path = Path(settings.landing).parent / "logs" / f"demo-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    print("[demo] preparing the Airflow metadata DB (SQLite) in", os.environ.get("AIRFLOW_HOME"), flush=True)
    with open(log_path, "ab") as log:
        for cmd in (["db", "migrate"], ["pools", "set", "duckdb_warehouse", "1", "single writer of the DuckDB warehouse file"]):
            if subprocess.run([sys.executable, "-m", "airflow", *cmd], check=False, stdout=log, stderr=log).returncode:
                print(f"[demo] `airflow {' '.join(cmd)}` failed: see {log_path}", flush=True)
                return 1

    from feedback_loop_sample.demo_runner import (
        DemoProgress,
        listening,
        logs_to_file,
        run_nightly_dag_for_days,
    )
    from feedback_loop_sample.retrain_demo import retraining_summary, run_retraining_dags

    days = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    print(f"[demo] running the nightly DAG for {len(days)} days, then the retraining DAGs; Airflow's logs go to\n"
          f"       {log_path}", flush=True)
    with contextlib.ExitStack() as stack:
        if args.source.strip():  # the night pulls from local stand-ins of the vendors' APIs and OTLP files (docs/sources.md)
            from feedback_loop.sources.systems import ALIASES
            from feedback_loop_sample.vendor_payloads import vendor_night

            systems = [ALIASES.get(s, s) for s in args.source.replace(",", "+").split("+") if s.strip()]
            print(f"[demo] vendor stand-ins for {'+'.join(systems)}: sample days {start}..{end} as vendor payloads",
                  flush=True)
            data_dir = os.path.dirname(str(settings.landing).rstrip("/"))
            info = stack.enter_context(vendor_night(data_dir, days, systems,
                                                    conversations_per_day=args.conversations_per_day, seed=args.seed))
            if info["stand_in"]:
                print(f"[demo] Zendesk stand-in at {info['stand_in'].url}", flush=True)
            print(f"  raw vendor pulls  {settings.landing}/_vendor/<system>/dt=YYYY-MM-DD/{{manifest.json,pull-*/}}")
        terminal = stack.enter_context(logs_to_file(log_path))
        progress = stack.enter_context(listening(DemoProgress(terminal, log_path)))
        states = run_nightly_dag_for_days(days, progress=progress)
        # the classifier champion/challenger and a dry-run fine-tuning job
        states.update(run_retraining_dags(progress=progress))

    from feedback_loop.lake.files import Lake

    print("\n[demo] outputs")
    print(f"  landing area      {settings.landing}")
    print(f"  lake (Parquet)    {settings.lake}/{{raw,staged,quarantine,marts}}/<source>/dt=YYYY-MM-DD/part.parquet")
    print(f"  run summaries     {settings.lake}/runs/dt=YYYY-MM-DD/summary.json")
    print(f"  GX Data Docs      {settings.lake}/gx/gx/uncommitted/data_docs/local_site/index.html")
    print(f"  warehouse         {settings.warehouse}  (duckdb {settings.warehouse} -c 'SHOW TABLES')")
    print(f"  KB gaps           {settings.lake}/reports/dt={end}/gaps.html  ({settings.gap_window_days}-day window; "
          f"`acsr gaps --date {end}`, docs/gaps.md)")
    print(f"  signals report    {settings.lake}/reports/dt={end}/index.html  (one per day: signals vs baseline, "
          f"action queue, A/B, shadow; `acsr signals --date {end}`, docs/signals.md)")
    versions = ", ".join(f"{n} {(Lake(settings.lake).read_json('datasets', n, 'latest.json') or {}).get('version', '-')}"
                         for n in ("intent_relabels", "sft", "preference", "kto"))
    print(f"  datasets          {settings.lake}/datasets/<name>/<version>/  (latest: {versions}; manifest.json, "
          f"README.md; `acsr datasets --start D1 --end D2`, docs/datasets.md)")
    print(f"\n[demo] run summary per day (per source: `acsr summary --start {days[0]} --end {days[-1]}`)")
    print(day_lines(Lake(settings.lake), days))
    print("\n" + retraining_summary(settings, days))
    failed = {d: s for d, s in states.items() if s != "success"}
    if failed:
        print(f"\n[demo] runs that did not succeed: {failed}; Airflow's logs: {log_path}")
        return 1
    return 0


def day_lines(lake, days: list[str]) -> str:
    """One line per day: rows read, staged and quarantined (by reason, all sources), GX expectations passed."""
    from collections import Counter

    lines = []
    for d in days:
        s = lake.read_json("runs", f"dt={d}", "summary.json")
        if s is None:
            lines.append(f"  {d}  no summary (not run yet, or failed before summarizing)")
            continue
        t, reasons, passed, evaluated = s["totals"], Counter(), 0, 0
        for src in s["sources"].values():
            reasons.update(src["quarantined_by_reason"])
            stats = src["suite"].get("statistics") or {}
            passed += stats.get("successful_expectations") or 0
            evaluated += stats.get("evaluated_expectations") or 0
        why = ", ".join(f"{k} {v}" for k, v in reasons.most_common()) or "-"
        lines.append(f"  {d}  {s['status'].upper():6} read {t['rows_read']:>7}  staged {t['rows_staged']:>7}  "
                     f"quarantined {t['rows_quarantined']:>5} ({why})  GX {passed}/{evaluated} expectations passed "
                     f"in {len(s['sources'])} suites")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
