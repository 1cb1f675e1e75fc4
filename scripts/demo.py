"""`make demo`: sample data for the last N days, the nightly DAG run for each day through Airflow
(`dag.test()`, SQLite metadata DB), then where the outputs are and a summary per day."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import date, timedelta


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

    print("[demo] preparing the Airflow metadata DB (SQLite) in", os.environ.get("AIRFLOW_HOME"), flush=True)
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-m", "airflow", "pools", "set", "duckdb_warehouse", "1",
                    "single writer of the DuckDB warehouse file"], check=True, stdout=subprocess.DEVNULL)

    from feedback_loop_sample.demo_runner import run_nightly_dag_for_days

    days = [(start + timedelta(days=i)).isoformat() for i in range(args.days)]
    if args.source.strip():  # the night pulls from local stand-ins of the vendors' APIs and OTLP files (docs/sources.md)
        from feedback_loop.sources.systems import ALIASES
        from feedback_loop_sample.vendor_payloads import vendor_night

        systems = [ALIASES.get(s, s) for s in args.source.replace(",", "+").split("+") if s.strip()]
        print(f"[demo] vendor stand-ins for {'+'.join(systems)}: sample days {start}..{end} as vendor payloads",
              flush=True)
        data_dir = os.path.dirname(str(settings.landing).rstrip("/"))
        with vendor_night(data_dir, days, systems, conversations_per_day=args.conversations_per_day,
                          seed=args.seed) as info:
            if info["stand_in"]:
                print(f"[demo] Zendesk stand-in at {info['stand_in'].url}", flush=True)
            states = run_nightly_dag_for_days(days)
        print(f"  raw vendor pulls  {settings.landing}/_vendor/<system>/dt=YYYY-MM-DD/{{manifest.json,pull-*/}}")
    else:
        states = run_nightly_dag_for_days(days)

    from feedback_loop_sample.retrain_demo import retraining_summary, run_retraining_dags

    states.update(run_retraining_dags())  # the classifier champion/challenger and a dry-run fine-tuning job

    from feedback_loop.lake.files import Lake
    from feedback_loop.signals.report_text import summary_table

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
    print("\n[demo] run summary per day")
    print(summary_table(Lake(settings.lake), days))
    print("\n" + retraining_summary(settings, days))
    failed = {d: s for d, s in states.items() if s != "success"}
    if failed:
        print(f"\n[demo] runs that did not succeed: {failed}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
