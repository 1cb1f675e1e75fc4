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
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
END = date(2026, 11, 20)  # a fixed day: the figures do not depend on when the evaluation runs


# Labelling regimes (feedback_loop_sample.gap_regimes): name -> GapRegime fields. Every regime has human
# replies after escalations (the draft material). The unlabelled ones have nobody's labels: no case
# category, no overrides; the non-builtin routings also carry 10 % out-of-scope requests and chit-chat.
REGIMES = {
    "labelled": {"human_labels": True, "routing": "builtin"},
    "unlabelled": {"human_labels": False, "routing": "builtin"},
    "labelled-fixed-oos": {"human_labels": True, "routing": "fixed", "out_of_scope_share": 0.1},
    "unlabelled-fixed-oos": {"human_labels": False, "routing": "fixed", "out_of_scope_share": 0.1},
    "unlabelled-random-oos": {"human_labels": False, "routing": "random", "out_of_scope_share": 0.1},
    "unlabelled-lowconf-oos": {"human_labels": False, "routing": "low_confidence", "out_of_scope_share": 0.1},
}
# A regime that differs from another only in its human labels has byte-identical agent events, surveys,
# checks and KB exports: its lake reuses that sibling's raw/staged partitions of those (checked file by file).
SIBLING = {"unlabelled": "labelled", "labelled-fixed-oos": "unlabelled-fixed-oos"}


def lake_dir(workdir: Path, seed: int, days: int, cpd: int, gap_share: float, regime: str = "default",
             staging: str = "gx") -> Path:
    tail = ("" if regime == "default" else f"-regime={regime}") + ("" if staging == "gx" else f"-staging={staging}")
    return workdir / f"seed={seed}-days={days}-cpd={cpd}-gaps={gap_share}{tail}"


def build(args: tuple) -> str:
    """Generate and run land/validate/model for every day of one seed and regime (in its own process)."""
    workdir, seed, days, cpd, gap_share, regime, staging = args
    d = lake_dir(Path(workdir), seed, days, cpd, gap_share, regime, staging)
    done = d / "BUILT"
    if done.exists():
        return str(d)
    import shutil

    sibling = None
    if regime in SIBLING:
        sibling = lake_dir(Path(workdir), seed, days, cpd, gap_share, SIBLING[regime], staging)
        while not (sibling / "BUILT").exists():  # built by the other worker: wait for it
            time.sleep(10)
    shutil.rmtree(d, ignore_errors=True)
    os.environ["ACSR_DATA_DIR"] = str(d)
    import logging

    logging.disable(logging.INFO)
    from feedback_loop import nightly
    from feedback_loop.ingest import contract
    from feedback_loop.settings import Settings
    from feedback_loop_sample.gap_regimes import GapRegime
    from feedback_loop_sample.generator import generate

    # Surveys of the first day answer cases from before the generated range: the evaluation is about
    # gaps, so quality thresholds must not stop it (every bad row is still quarantined as usual).
    settings = Settings.load(max_bad_row_share=1.0)
    start = END - timedelta(days=days - 1)
    kw = {} if regime == "default" else {"gap_regime": GapRegime(human_replies=True, **REGIMES[regime])}
    generate(settings.landing, start, END, conversations_per_day=cpd, seed=seed, kb_gap_share=gap_share, **kw)
    reused = 0
    for i in range(days):
        dt = (start + timedelta(days=i)).isoformat()
        todo = []
        for src in contract.SOURCE_NAMES:
            if sibling is not None and _same_landing(settings.landing, sibling / "landing", src, dt):
                _copy_partitions(sibling / "lake", Path(settings.lake), src, dt)
                reused += 1
            else:
                todo.append(src)
        for src in todo:
            nightly.land(settings, src, dt)
        for src in todo:
            if staging == "gx":
                nightly.validate(settings, src, dt)
            else:
                _stage_direct(settings, src, dt)
        nightly.model(settings, dt)
    done.write_text(f"ok; {reused} source-days reused from {sibling}\n" if sibling else "ok\n")
    return str(d)


def _stage_direct(settings, source: str, dt: str) -> None:
    """Bench shortcut for `--staging direct`: staged = the raw rows that parsed and typed cleanly.

    Great Expectations costs ~85 % of a lake's build on this machine (about 6 CPU-s a day against 1 for
    land and model) and the evaluation is about gaps, not data quality. The generated data has no planted
    defects (malformed_share 0); the rows GX would still quarantine are a few natural incomplete
    override triads and first-day rows that refer to days before the range. `--staging gx` runs the real
    validate stage instead (docs/gaps.md compares the two)."""
    from feedback_loop.ingest import contract
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake

    lake = Lake(settings.lake)
    raw = lake.partition_file("raw", source, dt)
    con = connect()
    try:
        have = {r[0] for r in con.execute("DESCRIBE SELECT * FROM read_parquet($f)", {"f": raw}).fetchall()}
        keep = ", ".join(f'"{c}"' for c in [*contract.SOURCES[source].columns, "_extra", "_source_file", "_line",
                                             "_row_id"] if c in have)
        order = "ORDER BY _row_id" if "_row_id" in have else "ORDER BY _line"
        lake.write_query(con, f"SELECT {keep} FROM read_parquet('{raw}') WHERE _parse_error IS NULL "
                              f"AND (_type_errors IS NULL OR _type_errors IN ('', '[]', '{{}}')) {order}",
                         "staged", source, dt)
    finally:
        con.close()


def _same_landing(landing: str, other: Path, src: str, dt: str) -> bool:
    """True when the day's export of `src` is byte for byte the one the sibling lake was built from."""
    a, b = Path(landing) / src / f"dt={dt}", other / src / f"dt={dt}"
    if not (a.is_dir() and b.is_dir()):
        return False
    fa, fb = sorted(p.name for p in a.iterdir()), sorted(p.name for p in b.iterdir())
    return fa == fb and all((a / f).read_bytes() == (b / f).read_bytes() for f in fa)


def _copy_partitions(src_lake: Path, dst_lake: Path, source: str, dt: str) -> None:
    """Land and validate are deterministic functions of the export: the sibling's partitions are ours."""
    import shutil

    for layer in ("raw", "staged", "quarantine"):
        part = src_lake / layer / source / f"dt={dt}"
        if part.is_dir():
            shutil.copytree(part, dst_lake / layer / source / f"dt={dt}", dirs_exist_ok=True)
    summary = src_lake / "runs" / f"dt={dt}" / "sources" / f"{source}.json"
    if summary.exists():
        (dst_lake / "runs" / f"dt={dt}" / "sources").mkdir(parents=True, exist_ok=True)
        shutil.copy2(summary, dst_lake / "runs" / f"dt={dt}" / "sources" / f"{source}.json")


def true_intents(con, lake: str) -> dict[str, str]:
    """conversation_id -> the hidden label of its first customer message."""
    rows = con.execute(f"""
        SELECT conversation_id, arg_min(json_extract_string(_extra, '$.true_intent'), ts)
        FROM read_parquet('{lake}/staged/agent_events/dt=*/part.parquet')
        WHERE event_type = 'customer_message' GROUP BY conversation_id""").fetchall()
    return dict(rows)


def score(rows: list[dict], truth: dict[str, str], removed: set[str], k: int, routed_to: dict | None = None,
          article_of: dict | None = None) -> dict:
    """Recall, precision, right-kind share and purity of the top-k open gaps against the removed intents."""
    top = [r for r in rows if r["status"] == "open"][:k]
    found, tp, tp_all, purities, details, right, judged, misrouted_ok = set(), 0, 0, [], [], 0, 0, 0
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
            want = (article_of or {}).get((routed_to or {}).get(major))
            misrouted_ok += bool(want) and r.get("misrouted_to") == want
        if r["kind"] == "missing_article":
            purities.append(purity if purity is not None else 0.0)
        tp_all += hit
        # The right kind: a removed intent is a missing article, an out-of-scope request is out of scope, a
        # covered intent's topic is an article to revise (stale and contradictory rows are not judged).
        if r["kind"] in ("missing_article", "revise_article", "out_of_scope") and major:
            judged += 1
            oos = major.startswith(("out_of_scope", "chit_chat"))
            right += (r["kind"] == "missing_article" and major in removed) or (r["kind"] == "out_of_scope" and oos) \
                or (r["kind"] == "revise_article" and not oos and major not in removed)
        details.append({"rank": r["rank"], "kind": r["kind"], "label": r["label"], "major": major,
                        "purity": None if purity is None else round(purity, 3), "n": len(r["conversation_ids"] or []),
                        "hit": hit, "removed": major in removed, "misrouted_to": r.get("misrouted_to")})
    n_missing = sum(r["kind"] == "missing_article" for r in top)
    open_rows = [r for r in rows if r["status"] == "open"]
    return {
        "recall": len(found) / max(1, len(removed)),
        "precision": tp / n_missing if n_missing else 1.0,
        "precision_all": tp_all / len(top) if top else 1.0,
        "right_kind": right / judged if judged else 1.0,
        "misrouted_recorded": misrouted_ok / tp if (tp and routed_to) else None,
        "purity_mean": statistics.mean(purities) if purities else None,
        "purity_min": min(purities) if purities else None,
        "n_reported": len(open_rows),
        "n_out_of_scope": sum(r["kind"] == "out_of_scope" for r in open_rows),
        "n_missing_in_top": n_missing,
        "missed": sorted(removed - found),
        "top": details,
    }


def evaluate(lakes: list[tuple[str, str]], windows: list[int], volumes: list[float], k: int, extra: dict) -> list[dict]:
    """Gap detection on each (regime, lake) for the last day, every window and volume, in this process."""
    import logging

    logging.disable(logging.INFO)
    from feedback_loop.gaps.detect import detect_gaps
    from feedback_loop.lake.duck import connect
    from feedback_loop.settings import Settings

    out = []
    for regime, lake_path in lakes:
        os.environ["ACSR_DATA_DIR"] = lake_path
        gt = json.loads((Path(lake_path) / "landing" / "_ground_truth.json").read_text())
        removed = set(gt["gap_intents"])
        article_of = {intents[0]: a for a, v in gt["kb_articles"].items() if v["status"] == "published"
                      for intents in [v["intents"]]}
        con = connect()
        truth = true_intents(con, f"{lake_path}/lake")
        for window in windows:
            for volume in volumes:
                # Each setting starts from an empty mart: ids must not chain across settings.
                settings = Settings.load(gap_params={**extra, "sample_share": volume}, lake=f"{lake_path}/lake")
                _clear_gap_outputs(settings.lake)
                t = time.perf_counter()
                summary = detect_gaps(settings, END.isoformat(), window_days=window)
                seconds = time.perf_counter() - t
                cur = con.execute(f"SELECT * FROM read_parquet('{summary['mart']}') ORDER BY rank NULLS LAST")
                names = [d[0] for d in cur.description]
                rows = [dict(zip(names, r)) for r in cur.fetchall()]
                s = score(rows, truth, removed, k, gt.get("routed_to"), article_of)
                out.append({"seed": gt["seed"], "regime": regime, "window": window, "volume": volume,
                            "conversations": summary["n_conversations"], "signals": summary["n_signals"],
                            "topics": summary["n_topics"], "drafts": summary.get("drafts"),
                            "misrouted_actions": summary.get("misrouted_actions"), "seconds": round(seconds, 2),
                            "k": k, "removed": len(removed), **s})
        con.close()
    return out


def _clear_gap_outputs(lake: str) -> None:
    import shutil

    shutil.rmtree(Path(lake) / "marts" / "kb_gaps", ignore_errors=True)
    shutil.rmtree(Path(lake) / "marts" / "action_queue", ignore_errors=True)


def table(results: list[dict], k: int) -> str:
    lines = [(f"| regime | window | traffic/day | seeds | recall@{k} | precision@{k} | right kind | "
              f"misrouted_to right | purity (mean / min) | missing in top {k} | out-of-scope rows |"),
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = {r: i for i, r in enumerate([*REGIMES, "default"])}
    keys = sorted({(r["regime"], r["window"], r["volume"]) for r in results}, key=lambda t: (order[t[0]], -t[2], t[1]))
    for regime, window, volume in keys:
        rs = [r for r in results if (r["regime"], r["window"], r["volume"]) == (regime, window, volume)]

        def mean(key, rs=rs):
            vals = [r[key] for r in rs if r[key] is not None]
            return statistics.mean(vals) if vals else float("nan")

        lo = min(r["recall"] for r in rs), min(r["precision"] for r in rs)
        mis = mean("misrouted_recorded")
        lines.append(
            f"| {regime} | {window} | {rs[0]['cpd'] * volume:.0f} | {len(rs)} | "
            f"{mean('recall'):.1%} (min {lo[0]:.0%}) | {mean('precision'):.1%} (min {lo[1]:.0%}) | "
            f"{mean('right_kind'):.1%} | {'–' if math.isnan(mis) else f'{mis:.0%}'} | "
            f"{mean('purity_mean'):.2f} / {min(r['purity_min'] or 0 for r in rs):.2f} | "
            f"{mean('n_missing_in_top'):.1f} | {mean('n_out_of_scope'):.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=[*REGIMES, "default"],
                    help="labelling regimes (default: all); 'default' = the generator's defaults, no regime")
    ap.add_argument("--days", type=int, default=28, help="days of traffic generated (the longest window)")
    ap.add_argument("--conversations-per-day", type=int, default=300)
    ap.add_argument("--windows", type=int, nargs="+", default=[28])
    ap.add_argument("--volumes", type=float, nargs="+", default=[1.0],
                    help="shares of the traffic kept (1.0 = --conversations-per-day)")
    ap.add_argument("--kb-gap-share", type=float, default=0.10)
    ap.add_argument("-k", type=int, default=10, help="K of recall@K and precision@K")
    ap.add_argument("--workdir", default=str(ROOT / "bench" / ".cache" / "eval_gaps"))
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--params", default="{}", help='JSON overrides of GapParams, e.g. \'{"algorithm": "hdbscan"}\'')
    ap.add_argument("--json", help="write every figure to this file")
    ap.add_argument("--verbose", action="store_true", help="print the top K of each run")
    ap.add_argument("--build-only", action="store_true", help="build (or reuse) the lakes and stop")
    ap.add_argument("--staging", choices=("direct", "gx"), default="direct",
                    help="how raw rows become staged: 'gx' = the real validate stage (Great Expectations, ~6x "
                         "the CPU), 'direct' = the rows that parsed cleanly (see _stage_direct)")
    ap.add_argument("--quick", action="store_true", help="one seed, 14 days, two regimes")
    args = ap.parse_args()
    if args.quick:
        args.seeds, args.days, args.windows = [1], 14, [14]
        args.regimes = ["labelled", "unlabelled-fixed-oos"]
    if max(args.windows) > args.days:
        ap.error("a window longer than --days")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    # Seed by seed, each regime's own build before the ones that reuse a sibling's partitions.
    order = sorted(((s, r) for s in args.seeds for r in args.regimes), key=lambda t: (t[0], t[1] in SIBLING))
    for s, r in order:  # a regime that reuses a sibling needs that sibling in the run
        if r in SIBLING and SIBLING[r] not in args.regimes:
            order.insert(order.index((s, r)), (s, SIBLING[r]))
    jobs = [(str(workdir), s, args.days, args.conversations_per_day, args.kb_gap_share, r, args.staging)
            for s, r in order]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        built = dict(zip(order, pool.map(build, jobs)))
    print(f"[eval_gaps] {len(built)} lakes ready in {time.perf_counter() - t0:.0f} s", flush=True)
    if args.build_only:
        return 0
    extra = json.loads(args.params)
    # One process per seed evaluates every regime of that seed (imports and the text model load once).
    ev_args = [([(r, built[(s, r)]) for r in args.regimes], args.windows, args.volumes, args.k, extra)
               for s in args.seeds]
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        per_seed = list(pool.map(_evaluate_star, ev_args))
    results = [dict(r, cpd=args.conversations_per_day) for rs in per_seed for r in rs]
    if args.verbose:
        for r in results:
            print(f"\nseed {r['seed']} {r['regime']} window {r['window']} volume {r['volume']}: recall {r['recall']:.0%} "
                  f"precision {r['precision']:.0%} missed {r['missed']}")
            for d in r["top"]:
                print(f"   {d['rank']:>3} {d['kind']:<16} {'HIT ' if d['hit'] else ('dup ' if d['removed'] else '    ')}"
                      f"{d['major']!s:<40} purity {d['purity']} n={d['n']} misrouted_to={d['misrouted_to']}  {d['label']}")
    print(f"\nK = {args.k}; {len(args.seeds)} seeds ({', '.join(map(str, args.seeds))}); {args.days} days x "
          f"{args.conversations_per_day} conversations; {args.kb_gap_share:.0%} of 77 intents removed from the KB; "
          f"params {extra or 'default'}")
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
