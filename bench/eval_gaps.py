"""Evaluate knowledge-base gap detection on Banking77 with planted gaps (docs/gaps.md, "Evaluation").

For each seed: the generator removes a seeded random share of the 77 Banking77 intents from the knowledge
base (`kb_gap_share`, default 0.15 -> 12 intents) and writes `--days` days of traffic; the real nightly
stages (land, validate with GX, model) build the lake; then gap detection runs for the last day with each
window of `--windows` and each traffic share of `--volumes` (a share < 1 keeps that fraction of the
conversations, chosen by a hash of the conversation id, i.e. a lower-volume desk with the same KB).

Scores, against the generator's answer key (`gap_intents`, and the hidden `true_intent` of every message):
  recall@K     share of removed intents that some missing-article gap in the top K matches
  precision@K  share of the missing-article gaps in the top K that match a removed intent not matched by a
               higher-ranked gap (a duplicate counts as a false positive)
  precision_all@K  the same over every gap kind in the top K (revise/stale count as misses)
  purity       per reported gap, the share of its conversations whose true intent is its majority intent
A gap matches intent I when I is the true intent of most of its conversations.

    .venv/bin/python bench/eval_gaps.py                      # 3 seeds, 28 days x 300 conversations/day
    .venv/bin/python bench/eval_gaps.py --quick              # one seed, 14 days: about a minute
    .venv/bin/python bench/eval_gaps.py --json out.json      # also write every figure as JSON

Built lakes are kept under --workdir (one per seed, days and volume) and reused by the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
END = date(2026, 11, 20)  # a fixed day: the figures do not depend on when the evaluation runs


def lake_dir(workdir: Path, seed: int, days: int, cpd: int, gap_share: float) -> Path:
    return workdir / f"seed={seed}-days={days}-cpd={cpd}-gaps={gap_share}"


def build(args: tuple) -> str:
    """Generate and run land/validate/model for every day of one seed (in its own process)."""
    workdir, seed, days, cpd, gap_share = args
    d = lake_dir(Path(workdir), seed, days, cpd, gap_share)
    done = d / "BUILT"
    if done.exists():
        return str(d)
    import shutil

    shutil.rmtree(d, ignore_errors=True)
    os.environ["ACSR_DATA_DIR"] = str(d)
    import logging

    logging.disable(logging.INFO)
    from feedback_loop import nightly
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    # Surveys of the first day answer cases from before the generated range: the evaluation is about
    # gaps, so quality thresholds must not stop it (every bad row is still quarantined as usual).
    settings = Settings.load(max_bad_row_share=1.0)
    start = END - timedelta(days=days - 1)
    generate(settings.landing, start, END, conversations_per_day=cpd, seed=seed, kb_gap_share=gap_share)
    for i in range(days):
        nightly.land_validate_model(settings, start + timedelta(days=i), summarize_day=False)
    done.write_text("ok\n")
    return str(d)


def true_intents(con, lake: str) -> dict[str, str]:
    """conversation_id -> the hidden label of its first customer message."""
    rows = con.execute(f"""
        SELECT conversation_id, arg_min(json_extract_string(_extra, '$.true_intent'), ts)
        FROM read_parquet('{lake}/staged/agent_events/dt=*/part.parquet')
        WHERE event_type = 'customer_message' GROUP BY conversation_id""").fetchall()
    return dict(rows)


def score(rows: list[dict], truth: dict[str, str], removed: set[str], k: int) -> dict:
    """Recall, precision and purity of the top-k open gaps against the removed intents."""
    top = [r for r in rows if r["status"] == "open"][:k]
    found, tp, tp_all, purities, details = set(), 0, 0, [], []
    for r in top:
        labels = [truth.get(c) for c in r["conversation_ids"] or [] if truth.get(c)]
        if labels:
            major = max(sorted(set(labels)), key=labels.count)
            purity = labels.count(major) / len(labels)
        else:
            major, purity = None, None
        hit = r["kind"] == "missing_article" and major in removed and major not in found
        if hit:
            found.add(major)
            tp += 1
        if r["kind"] == "missing_article":
            purities.append(purity if purity is not None else 0.0)
        tp_all += hit
        details.append({"rank": r["rank"], "kind": r["kind"], "label": r["label"], "major": major,
                        "purity": None if purity is None else round(purity, 3), "n": len(r["conversation_ids"] or []),
                        "hit": hit, "removed": major in removed})
    n_missing = sum(r["kind"] == "missing_article" for r in top)
    return {
        "recall": len(found) / max(1, len(removed)),
        "precision": tp / n_missing if n_missing else 1.0,
        "precision_all": tp_all / len(top) if top else 1.0,
        "purity_mean": statistics.mean(purities) if purities else None,
        "purity_min": min(purities) if purities else None,
        "n_reported": len([r for r in rows if r["status"] == "open"]),
        "n_missing_in_top": n_missing,
        "missed": sorted(removed - found),
        "top": details,
    }


def evaluate(lake_path: str, windows: list[int], volumes: list[float], k: int, extra: dict) -> list[dict]:
    os.environ["ACSR_DATA_DIR"] = lake_path
    import logging

    logging.disable(logging.INFO)
    from feedback_loop.gaps.detect import detect_gaps
    from feedback_loop.lake.duck import connect
    from feedback_loop.settings import Settings

    gt = json.loads((Path(lake_path) / "landing" / "_ground_truth.json").read_text())
    removed = set(gt["gap_intents"])
    con = connect()
    truth = true_intents(con, f"{lake_path}/lake")
    out = []
    for window in windows:
        for volume in volumes:
            # Each setting writes to its own lake copy of the mart: ids must not chain across settings.
            settings = Settings.load(gap_params={**extra, "sample_share": volume},
                                     lake=f"{lake_path}/lake")
            _clear_gap_outputs(settings.lake)
            t = time.perf_counter()
            summary = detect_gaps(settings, END.isoformat(), window_days=window)
            seconds = time.perf_counter() - t
            cur = con.execute(f"SELECT * FROM read_parquet('{summary['mart']}') ORDER BY rank NULLS LAST")
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r)) for r in cur.fetchall()]
            s = score(rows, truth, removed, k)
            out.append({"seed": gt["seed"], "window": window, "volume": volume,
                        "conversations": summary["n_conversations"], "signals": summary["n_signals"],
                        "topics": summary["n_topics"], "seconds": round(seconds, 2), "k": k,
                        "removed": len(removed), **s})
    con.close()
    return out


def _clear_gap_outputs(lake: str) -> None:
    import shutil

    shutil.rmtree(Path(lake) / "marts" / "kb_gaps", ignore_errors=True)


def table(results: list[dict], k: int) -> str:
    lines = [(f"| window (days) | traffic/day | seeds | conversations | recall@{k} | precision@{k} | "
             f"precision_all@{k} | purity (mean / min) | missing gaps in top {k} |"),
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    keys = sorted({(r["window"], r["volume"]) for r in results}, key=lambda t: (-t[1], t[0]))
    for window, volume in keys:
        rs = [r for r in results if r["window"] == window and r["volume"] == volume]

        def mean(key, rs=rs):
            vals = [r[key] for r in rs if r[key] is not None]
            return statistics.mean(vals) if vals else float("nan")

        lo = min(r["recall"] for r in rs), min(r["precision"] for r in rs)
        lines.append(
            f"| {window} | {rs[0]['cpd'] * volume:.0f} | {len(rs)} | {mean('conversations'):.0f} | "
            f"{mean('recall'):.1%} (min {lo[0]:.0%}) | {mean('precision'):.1%} (min {lo[1]:.0%}) | "
            f"{mean('precision_all'):.1%} | {mean('purity_mean'):.2f} / {min(r['purity_min'] or 0 for r in rs):.2f} | "
            f"{mean('n_missing_in_top'):.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--days", type=int, default=28, help="days of traffic generated (the longest window)")
    ap.add_argument("--conversations-per-day", type=int, default=300)
    ap.add_argument("--windows", type=int, nargs="+", default=[7, 14, 28])
    ap.add_argument("--volumes", type=float, nargs="+", default=[1.0, 0.5, 0.25],
                    help="shares of the traffic kept (1.0 = --conversations-per-day)")
    ap.add_argument("--kb-gap-share", type=float, default=0.15)
    ap.add_argument("-k", type=int, default=15, help="K of recall@K and precision@K")
    ap.add_argument("--workdir", default=str(ROOT / ".data" / "eval_gaps"))
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--params", default="{}", help='JSON overrides of GapParams, e.g. \'{"algorithm": "hdbscan"}\'')
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--verbose", action="store_true", help="print the top K of each run")
    ap.add_argument("--quick", action="store_true", help="one seed, 14 days, windows 7 and 14, full volume")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.days, args.windows, args.volumes = [1], 14, [7, 14], [1.0]
    if max(args.windows) > args.days:
        ap.error("a window longer than --days")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    jobs = [(str(workdir), s, args.days, args.conversations_per_day, args.kb_gap_share) for s in args.seeds]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        lakes = list(pool.map(build, jobs))
    print(f"[eval_gaps] lakes built in {time.perf_counter() - t0:.0f} s: {', '.join(lakes)}", flush=True)
    extra = json.loads(args.params)
    ev_args = [(lk, args.windows, args.volumes, args.k, extra) for lk in lakes]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        per_seed = list(pool.map(_evaluate_star, ev_args))
    results = [dict(r, cpd=args.conversations_per_day) for rs in per_seed for r in rs]
    if args.verbose:
        for r in results:
            print(f"\nseed {r['seed']} window {r['window']} volume {r['volume']}: recall {r['recall']:.0%} "
                  f"precision {r['precision']:.0%} missed {r['missed']}")
            for d in r["top"]:
                print(f"   {d['rank']:>3} {d['kind']:<16} {'HIT ' if d['hit'] else ('dup ' if d['removed'] else '    ')}"
                      f"{d['major']!s:<40} purity {d['purity']} n={d['n']}  {d['label']}")
    print(f"\nK = {args.k}; {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); "
          f"{args.days} days generated; {args.kb_gap_share:.0%} of 77 intents removed from the KB; params {extra or 'default'}")
    print(table(results, args.k))
    print(f"\n[eval_gaps] total {time.perf_counter() - t0:.0f} s; detection "
          f"{statistics.mean(r['seconds'] for r in results):.1f} s per run on average")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


def _evaluate_star(a):
    return evaluate(*a)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "include"))
    sys.exit(main())
