"""What the review queue's picks are worth: the intent classifier's gain from N conversations reviewed
because the nightly queue chose them (active learning) against N chosen at random, on generated traffic.

    .venv/bin/python bench/review_queue_value.py                      # 7 days x 300 conversations, ~5-10 min
    .venv/bin/python bench/review_queue_value.py --json bench/results/review_queue_value.json

Method:
- The champion v1 is trained on a small seed of the base set (`--base-per-intent`, default 10 of Banking77
  train per intent), as in bench/prove_loop.py; the sample agent classifies the generated traffic with it
  (the generator's classifier hook), so the agent's confidence is v1's.
- The pool days (`--days`) go through the real nightly stages (land, validate, model); each night the real
  queue selection (feedback_loop.review.queue.select, the configured caps) picks `B` conversations of that
  day's conversation facts; the random arm picks `B` of the same day's conversations that no person had
  reviewed yet (the queue's own eligibility), for `--seeds` seeds.
- A "review" gives the conversation's true intent (the generator's hidden `true_intent`): a perfect
  reviewer, the same for both arms. The picked first messages (minus any text in the gold set) are added to
  v1's training set with weight 1.0 and the classifier is retrained (the product's recipe).
- Scored on the frozen gold set (Banking77 test) and on held-out traffic: the conversations of the days
  after the pool (`--eval-days`), generated the same way and never picked by either arm.
- The `new_gap_topic` reason is not exercised here (the gap stage is not run: it needs weeks of traffic).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = date(2026, 11, 2)


def _days(first: date, n: int) -> list[str]:
    return [str(first + timedelta(days=i)) for i in range(n)]


def conversations(settings, day: str) -> list[dict]:
    """The day's conversation facts with the hidden true intent of each conversation's first message."""
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake
    from feedback_loop.review.queue import FACT_COLUMNS

    lake = Lake(settings.lake)
    con = connect()
    try:
        facts = lake.partition_file("marts", "conversation_facts", day)
        raw = lake.partition_file("raw", "agent_events", day)
        cur = con.execute(f"""
            WITH truth AS (
                SELECT conversation_id, arg_min(json_extract_string(_extra, '$.true_intent'), ts) AS true_intent
                FROM read_parquet('{raw}') WHERE event_type = 'customer_message' GROUP BY conversation_id)
            SELECT {', '.join('f.' + c for c in FACT_COLUMNS)}, t.true_intent
            FROM read_parquet('{facts}') f JOIN truth t USING (conversation_id)
            WHERE t.true_intent IS NOT NULL AND f.first_customer_text IS NOT NULL ORDER BY f.conversation_id""")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]
    finally:
        con.close()


def retrain_and_score(base: list[dict], picked: list[dict], gold: list[dict], held: list[dict]) -> dict:
    from feedback_loop.retrain import intent_model
    from feedback_loop.retrain.intent_assembly import normalise

    gold_texts = {normalise(r["text"]) for r in gold}
    added = [r for r in picked if normalise(r["first_customer_text"]) not in gold_texts]
    texts = [r["text"] for r in base] + [r["first_customer_text"] for r in added]
    labels = [r["label"] for r in base] + [r["true_intent"] for r in added]
    model = intent_model.train(texts, labels, [1.0] * len(texts))
    g = intent_model.evaluate(model, [r["text"] for r in gold], [r["label"] for r in gold])
    h = intent_model.evaluate(model, [r["first_customer_text"] for r in held], [r["true_intent"] for r in held])
    return {"gold_accuracy": round(g["accuracy"], 4), "held_accuracy": round(h["accuracy"], 4),
            "labels_added": len(added),
            "agent_was_wrong": round(sum(r["final_intent"] != r["true_intent"] for r in picked) / max(1, len(picked)), 4)}


def run(workdir: Path, days: int, eval_days: int, cpd: int, base_per_intent: int, budgets: list[int],
        seeds: int, seed: int) -> dict:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    from feedback_loop import nightly
    from feedback_loop.ingest import contract
    from feedback_loop.retrain import intent_model
    from feedback_loop.retrain.intent_assembly import base_set, gold_set
    from feedback_loop.review.queue import select
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    t0 = time.monotonic()
    settings = Settings.load(landing=str(workdir / "landing"), lake=str(workdir / "lake"),
                             warehouse=str(workdir / "warehouse.duckdb"), max_bad_row_share=0.5)
    base, gold = base_set(base_per_intent), gold_set()
    v1 = intent_model.train([r["text"] for r in base], [r["label"] for r in base], [1.0] * len(base))
    pool_days = _days(START, days)
    eval_span = _days(START + timedelta(days=days), eval_days)
    print(f"[bench] generating {days}+{eval_days} days x {cpd} conversations classified by v1", flush=True)
    generate(settings.landing, START, date.fromisoformat(eval_span[-1]), conversations_per_day=cpd, seed=seed,
             classifier=intent_model.as_classifier(v1))
    facts = {}
    for d in pool_days + eval_span:
        for source in contract.SOURCE_NAMES:
            nightly.land(settings, source, d)
        for source in contract.SOURCE_NAMES:
            nightly.validate(settings, source, d)
        nightly.model(settings, d)
        facts[d] = conversations(settings, d)
        print(f"[bench] night {d}: {len(facts[d])} conversations ({time.monotonic() - t0:.0f} s)", flush=True)
    held = [r for d in eval_span for r in facts[d]]
    baseline = retrain_and_score(base, [], gold, held)
    results = {"baseline_v1": baseline, "budgets": {}}
    for b in budgets:
        queue, per_day = [], {}
        for d in pool_days:
            picked, _ = select(facts[d], b, settings.review_max_intent_share, settings.review_max_channel_share,
                               settings.review_low_confidence)
            queue += picked
            per_day[d] = len(picked)  # the random arm reviews exactly as many of the same day
        q = retrain_and_score(base, queue, gold, held)
        rnd = []
        for s in range(seeds):
            rng = random.Random(1000 * b + s)
            picked = []
            for d in pool_days:
                eligible = [r for r in facts[d] if not (r.get("n_overrides") or 0)]
                picked += rng.sample(eligible, per_day[d])
            rnd.append(retrain_and_score(base, picked, gold, held))

        def agg(key, runs=rnd):
            vals = [r[key] for r in runs]
            return {"mean": round(statistics.mean(vals), 4), "sd": round(statistics.pstdev(vals), 4),
                    "min": min(vals), "max": max(vals)}

        results["budgets"][b] = {
            "reviews": len(queue), "queue": q,
            "random": {k: agg(k) for k in ("gold_accuracy", "held_accuracy", "agent_was_wrong", "labels_added")},
            "gain_queue": {k: round(q[k] - baseline[k], 4) for k in ("gold_accuracy", "held_accuracy")},
            "gain_random": {k: round(agg(k)["mean"] - baseline[k], 4) for k in ("gold_accuracy", "held_accuracy")},
        }
        r = results["budgets"][b]
        print(f"[bench] {b}/day = {len(queue)} reviews: held-out gain queue {r['gain_queue']['held_accuracy']:+.4f} "
              f"vs random {r['gain_random']['held_accuracy']:+.4f}; gold gain queue {r['gain_queue']['gold_accuracy']:+.4f}"
              f" vs random {r['gain_random']['gold_accuracy']:+.4f}; agent wrong on {q['agent_was_wrong']:.0%} of the "
              f"queue's picks vs {r['random']['agent_was_wrong']['mean']:.0%} of random ones", flush=True)
    return {"params": {"days": days, "eval_days": eval_days, "conversations_per_day": cpd,
                       "base_per_intent": base_per_intent, "budgets_per_day": budgets, "random_seeds": seeds,
                       "seed": seed, "pool": [pool_days[0], pool_days[-1]], "held_out": [eval_span[0], eval_span[-1]],
                       "caps": {"intent": settings.review_max_intent_share, "channel": settings.review_max_channel_share},
                       "low_confidence": settings.review_low_confidence},
            "held_out_conversations": len(held), "gold_examples": len(gold), **results,
            "seconds": round(time.monotonic() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--days", type=int, default=7)
    p.add_argument("--eval-days", type=int, default=2)
    p.add_argument("--conversations-per-day", type=int, default=300)
    p.add_argument("--base-per-intent", type=int, default=10)
    p.add_argument("--budgets", default="5,10,20", help="reviews per day, comma-separated")
    p.add_argument("--seeds", type=int, default=5, help="random arms per budget")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--workdir", help="keep the generated data here (default: a temporary folder)")
    a = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "include"))
    budgets = [int(x) for x in a.budgets.split(",") if x.strip()]
    with tempfile.TemporaryDirectory(prefix="acsr-review-bench-") as tmp:
        work = Path(a.workdir) if a.workdir else Path(tmp)
        out = run(work, a.days, a.eval_days, a.conversations_per_day, a.base_per_intent, budgets, a.seeds, a.seed)
    text = json.dumps(out, indent=2)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
