"""Prove that the feedback loop makes the agent better: a week of traffic classified by the champion, the
nightly pipeline turning the week's human overrides into relabels, a retrain with champion/challenger
promotion, and the next week's traffic classified by the new champion.

    .venv/bin/python bench/prove_loop.py                       # 7 + 7 days x 300 conversations: a few minutes
    .venv/bin/python bench/prove_loop.py --json bench/results/prove_loop.json

How it measures, honestly:
- The starting champion is trained on a small seed of the base labelled set (`--base-per-intent`, default
  10 of Banking77 train per intent). The sample traffic draws its customers' messages from Banking77 train,
  so a champion trained on all of it would have seen almost every message already.
- Week 1 (days 1-7): the sample agent classifies with champion v1 (the generator's classifier hook). The
  nightly stages (land, GX validation, conversation facts, summary, datasets, retraining decision) run for
  each night with only the data exported by that night; the retrain then uses the latest relabel version.
- Week 2 (days 8-14) is generated twice from the same seed, so the customers, messages and reviewer draws
  are identical: once classified by the promoted champion, once by v1 (the counterfactual "no retrain").
  The difference between the two is the effect of the loop, on traffic no model was trained on.
- Figures per week, from the landing files (the sample's hidden `true_intent`, the agent's first
  `intent_classified` event, the intent corrections in the override log, including reviews exported up to
  two days after the week): accuracy on traffic, intent-override rate, the same on the conversations whose
  opening message is in neither model's training set (unseen), and accuracy on the frozen gold set
  (Banking77 test, never trained on) with the McNemar test the promotion used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = date(2026, 11, 2)  # fixed days: the figures do not depend on when the proof runs
REVIEW_LAG = 2  # days after a conversation its review can still be exported (generator OVERRIDE_LOOKBACK)


def _days(first: date, n: int) -> list[str]:
    return [str(first + timedelta(days=i)) for i in range(n)]


def nightly(settings, day: str) -> dict:
    """The nightly stages the loop needs (gaps, signals and the warehouse are left out: they feed people)."""
    from feedback_loop import nightly as n

    n.land_validate_model(settings, day)
    built = n.build_datasets(settings, day)
    decision = n.decide_retraining(settings, day)
    return {"relabels": built["datasets"]["intent_relabels"], "decision": decision["intent_classifier"]}


def measure(landing: Path, days: list[str], trained_texts: set[str]) -> dict:
    """Accuracy and intent-override rate of the conversations of `days`, from the landing files."""
    import duckdb
    from feedback_loop.retrain.intent_retrain import normalise

    last = str(date.fromisoformat(days[-1]) + timedelta(days=REVIEW_LAG))
    events = [str(landing / "agent_events" / f"dt={d}" / "part-0000.jsonl.gz") for d in days]
    reviews = [str(p) for p in sorted((landing / "overrides").glob("dt=*/part-0000.jsonl"))
               if days[0] <= p.parent.name[3:] <= last]
    con = duckdb.connect()
    rows = con.execute(f"""
        WITH ev AS (SELECT * FROM read_json({events!r}, format='newline_delimited', union_by_name=true,
                                             columns={{'conversation_id': 'VARCHAR', 'ts': 'VARCHAR', 'turn': 'BIGINT',
                                                      'event_type': 'VARCHAR', 'text': 'VARCHAR', 'intent': 'VARCHAR',
                                                      'true_intent': 'VARCHAR', 'mode': 'VARCHAR'}})),
        conv AS (
            SELECT conversation_id,
                arg_min(text, ts) FILTER (event_type = 'customer_message') AS text,
                arg_min(true_intent, ts) FILTER (event_type = 'customer_message') AS truth,
                arg_min(intent, ts) FILTER (event_type = 'intent_classified') AS predicted
            FROM ev GROUP BY conversation_id),
        fixed AS (SELECT DISTINCT conversation_id FROM read_json({reviews!r}, format='newline_delimited',
                      union_by_name=true, columns={{'conversation_id': 'VARCHAR', 'stage': 'VARCHAR', 'outcome': 'VARCHAR'}})
                  WHERE stage = 'intent' AND outcome = 'corrected')
        SELECT c.text, c.truth = c.predicted, f.conversation_id IS NOT NULL, c.conversation_id
        FROM conv c LEFT JOIN fixed f USING (conversation_id)
        WHERE c.truth IS NOT NULL AND c.predicted IS NOT NULL ORDER BY c.conversation_id""").fetchall()
    con.close()

    def stats(subset):
        n = len(subset)
        return {"conversations": n, "accuracy": round(sum(r[1] for r in subset) / n, 4) if n else None,
                "override_rate": round(sum(r[2] for r in subset) / n, 4) if n else None}

    unseen = [r for r in rows if normalise(r[0]) not in trained_texts]
    return {"all": stats(rows), "unseen": stats(unseen),
            "_paired": {scope: {r[3]: (bool(r[1]), bool(r[2])) for r in subset}
                        for scope, subset in (("all", rows), ("unseen", unseen))}}


def paired(before: dict, after: dict) -> dict:
    """Exact McNemar tests on the same conversations (week 2 without vs with the retrain): accuracy (is the
    new champion right more often) and intent overrides (are they rarer)."""
    from feedback_loop.retrain.intent_model import mcnemar

    out = {}
    for scope in ("all", "unseen"):
        ids = sorted(set(before["_paired"][scope]) & set(after["_paired"][scope]))
        b = [before["_paired"][scope][i] for i in ids]
        a = [after["_paired"][scope][i] for i in ids]
        out[scope] = {"conversations": len(ids),
                      "accuracy": mcnemar([x[0] for x in b], [x[0] for x in a]),
                      "no_override": mcnemar([not x[1] for x in b], [not x[1] for x in a])}
    return out


def run_proof(workdir: Path, days: int, cpd: int, base_per_intent: int, seed: int) -> dict:
    os.environ["ACSR_DATA_DIR"] = str(workdir / "loop")
    os.environ["ACSR_RETRAIN_BASE_PER_INTENT"] = str(base_per_intent)
    os.environ.setdefault("ACSR_MAX_BAD_ROW_SHARE", "0.5")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import pyarrow.parquet as pq
    from feedback_loop.retrain import intent_model, registry
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    settings = Settings.load()
    t0 = time.monotonic()
    timings = {}

    def champion_classifier():
        return intent_model.as_classifier(registry.load_champion_model(settings))

    ir.ensure_champion(settings, ir.resolve_request(settings, {"reason": "proof: baseline"}), "proof")
    v1 = registry.champion(settings)
    classify_v1 = champion_classifier()
    timings["baseline"] = time.monotonic() - t0

    week1, week2 = _days(START, days), _days(START + timedelta(days=days), days)
    tail = _days(START + timedelta(days=days), REVIEW_LAG)  # reviews of week 1 exported after it
    print(f"[proof] week 1 {week1[0]}..{week1[-1]}: the agent classifies with champion v{v1['version']}", flush=True)
    generate(settings.landing, START, date.fromisoformat(tail[-1]), conversations_per_day=cpd, seed=seed,
             classifier=classify_v1)
    week1_landing = Path(settings.landing)
    timings["generate_week1"] = time.monotonic() - t0 - sum(timings.values())
    nights = {}
    for d in week1:
        nights[d] = nightly(settings, d)
        r, dec = nights[d]["relabels"], nights[d]["decision"]
        print(f"[proof] night {d}: relabels {r['status']} ({r['examples']} examples); retrain decision "
              f"{'YES' if dec['retrain'] else 'no'}: {'; '.join(dec['reasons'])}", flush=True)
    timings["nightly_week1"] = time.monotonic() - t0 - sum(timings.values())

    outcome = ir.run(settings, ir.resolve_request(settings, {"reason": "proof: after week 1"}), "proof")
    v2 = registry.champion(settings)
    print(f"[proof] retrain: {json.dumps(outcome.get('outcome', outcome), default=str)[:600]}", flush=True)
    timings["retrain"] = time.monotonic() - t0 - sum(timings.values())

    end2 = date.fromisoformat(week2[-1]) + timedelta(days=REVIEW_LAG)
    arms = {"after_retrain": champion_classifier(), "no_retrain": classify_v1}
    landings = {}
    for arm, classify in arms.items():
        landings[arm] = workdir / f"week2-{arm}"
        generate(landings[arm], date.fromisoformat(week2[0]), end2, conversations_per_day=cpd, seed=seed,
                 classifier=classify)
    timings["generate_week2"] = time.monotonic() - t0 - sum(timings.values())

    def texts(ptr):
        return {ir.normalise(t) for t in pq.read_table(ptr["train_file"], columns=["text"]).column("text").to_pylist()}

    # "Unseen": week 1 against what v1 was trained on (all it knew then); week 2 against both models'
    # training sets, so that both arms are scored on the same conversations that neither model saw.
    seen1, seen_both = texts(v1), texts(v1) | texts(v2)
    figures = {
        "week1_v1": measure(week1_landing, week1, seen1),
        "week2_no_retrain": measure(landings["no_retrain"], week2, seen_both),
        "week2_after_retrain": measure(landings["after_retrain"], week2, seen_both),
    }
    tests = paired(figures["week2_no_retrain"], figures["week2_after_retrain"])
    for f in figures.values():
        f.pop("_paired")
    ev = json.loads(Path(outcome["outcome"]["model_card"]).with_name(f"evaluation-vs-{v1['version']}.json").read_text()) \
        if outcome.get("outcome") else None
    result = {
        "params": {"days": days, "conversations_per_day": cpd, "base_per_intent": base_per_intent, "seed": seed,
                   "week1": [week1[0], week1[-1]], "week2": [week2[0], week2[-1]]},
        "champion_v1": {"version": v1["version"], "gold_accuracy": v1["gold"]["accuracy"], "gold_ece": v1["gold"]["ece"],
                        "train_rows": len(pq.read_table(v1["train_file"]))},
        "champion_after": {"version": v2["version"], "gold_accuracy": v2["gold"]["accuracy"], "gold_ece": v2["gold"]["ece"],
                           "train_rows": len(pq.read_table(v2["train_file"])), "dataset_version": v2.get("dataset_version")},
        "promotion": outcome.get("outcome", {}).get("reasons") if outcome.get("outcome") else outcome.get("skipped"),
        "mcnemar_gold": (ev or {}).get("decision", {}).get("mcnemar"),
        "holdout": (ev or {}).get("metrics", {}),
        "traffic": figures,
        "week2_paired_tests": tests,
        "nights": {d: {"retrain": n["decision"]["retrain"], "reasons": n["decision"]["reasons"],
                       "relabels": n["relabels"]["examples"]} for d, n in nights.items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    if ev:
        result["holdout"] = {who: (m or {}).get("holdout", {}) and {k: m["holdout"].get(k) for k in ("n", "accuracy", "macro_f1")}
                             for who, m in ev["metrics"].items()}
    return result


def table(r: dict) -> str:
    t = r["traffic"]
    lines = ["| measure | week 1 (champion v{a}) | week 2, no retrain (v{a}) | week 2 after retrain (v{b}) |".format(
        a=r["champion_v1"]["version"], b=r["champion_after"]["version"]), "| --- | ---: | ---: | ---: |"]
    for scope, label in (("all", "all conversations"), ("unseen", "opening message never trained on")):
        for k, name in (("accuracy", "intent accuracy"), ("override_rate", "intent-override rate")):
            lines.append(f"| {name}, {label} | {t['week1_v1'][scope][k]:.3f} | {t['week2_no_retrain'][scope][k]:.3f} | "
                         f"{t['week2_after_retrain'][scope][k]:.3f} |")
        lines.append(f"| conversations, {label} | {t['week1_v1'][scope]['conversations']} | "
                     f"{t['week2_no_retrain'][scope]['conversations']} | {t['week2_after_retrain'][scope]['conversations']} |")
    lines.append(f"| gold accuracy (Banking77 test, 3080) | {r['champion_v1']['gold_accuracy']:.4f} | "
                 f"{r['champion_v1']['gold_accuracy']:.4f} | {r['champion_after']['gold_accuracy']:.4f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--conversations-per-day", type=int, default=300)
    ap.add_argument("--base-per-intent", type=int, default=10)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", default=None, help="kept if given; a temporary folder otherwise")
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="acsr-proof-"))
    if (workdir / "loop").exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        r = run_proof(workdir, args.days, args.conversations_per_day, args.base_per_intent, args.seed)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    r["elapsed_s"] = round(time.monotonic() - start, 1)
    print("\n" + table(r))
    m = r["mcnemar_gold"] or {}
    for scope, t in r["week2_paired_tests"].items():
        a, o = t["accuracy"], t["no_override"]
        print(f"week 2 paired ({scope}, {t['conversations']} conversations): right only after the retrain "
              f"{a['only_challenger_right']}, only without it {a['only_champion_right']}, p = {a['p_value']:.2g}; "
              f"overridden only without the retrain {o['only_challenger_right']}, only after it "
              f"{o['only_champion_right']}, p = {o['p_value']:.2g}")
    print(f"\npromotion: {r['promotion']}\nMcNemar on gold: only the new champion right {m.get('only_challenger_right')}, "
          f"only v1 right {m.get('only_champion_right')}, p = {m.get('p_value')}\nheld-out relabels: {r['holdout']}"
          f"\nelapsed {r['elapsed_s']} s {r['timings_s']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "include"))
    sys.exit(main())
