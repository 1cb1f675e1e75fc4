"""Trust-weighted labels: the labels of a whole window, computed with the fit of every row at once, are
exactly those of the rule applied row by row (`_one_row` below states it as docs/gaps.md does)."""

from __future__ import annotations

import random

import numpy as np
from feedback_loop.gaps import trust
from feedback_loop.gaps.params import GapParams


def _one_row(r: dict, a, p: GapParams) -> list[tuple[str, float]]:
    labels: dict[str, float] = {}
    for human in (r.get("human_intent"), r.get("human_category")):
        if human:
            labels[human] = 1.0
    agent = r.get("final_intent")
    if agent and agent not in labels:
        conf = float(r.get("final_confidence") or 0.0)
        conf = conf if conf >= p.low_confidence else 0.5 * conf
        fit = float(np.clip((a - p.agreement_floor) / max(1e-6, 1.0 - p.agreement_floor), 0.0, 1.0))
        w = conf * fit * (0.3 if labels else 1.0)
        if w > 0:
            labels[agent] = w
        miss = conf * (1.0 - fit) * p.misroute_weight * (0.3 if labels else 1.0)
        if miss > 0:
            labels[trust.MISROUTED + agent] = miss
    return sorted(labels.items(), key=lambda kv: (-kv[1], kv[0]))


def test_weighted_labels_of_a_window_are_the_row_by_row_rule():
    rng = random.Random(11)
    intents = [None, "", "card_arrival", "lost_card", "refund", "top_up"]
    rows = [{"human_intent": rng.choice(intents + [None] * 6), "human_category": rng.choice(intents + [None] * 6),
             "final_intent": rng.choice(intents), "final_confidence": rng.choice([None, 0.0, 0.2, 0.5, 0.9, 1.0])}
            for _ in range(3000)]
    # A floor whose arithmetic rounds (0.5 is exact in float32 and float64 alike).
    p = GapParams(agreement_floor=0.37, low_confidence=0.6)
    # Agreements below the floor, between, at 1 and above, in the float32 the window computes them in.
    agree = np.array([rng.choice([-0.3, 0.0, p.agreement_floor, 0.41, 0.77, 1.0, 1.6]) + rng.random() * 1e-3
                      for _ in rows], dtype=np.float32)
    got = trust.weighted_labels(*([r[c] for r in rows] for c in (
        "human_intent", "human_category", "final_intent", "final_confidence")), agree, p)
    want = [_one_row(r, a, p) for r, a in zip(rows, agree)]
    assert got == want
    assert any(len(g) == 3 for g in got) and any(lab.startswith(trust.MISROUTED) for g in got for lab, _ in g)
    assert any(g == [] for g in got)


def test_agreement_of_rows_held_once_per_text_equals_that_of_the_expanded_rows():
    from feedback_loop.gaps.topics import RepeatedRows

    rng = np.random.default_rng(4)
    unique = rng.standard_normal((9, 16)).astype(np.float32)
    inverse = rng.integers(0, 9, 400)
    labels = [rng.choice(["refund", "card", "login", None, ""]) for _ in range(400)]
    cents = {lab: (rng.standard_normal(16).astype(np.float32), float(rng.random()) + 0.1) for lab in ("refund", "card")}
    expanded = trust.agreement(unique[inverse], labels, cents)
    held = trust.agreement(RepeatedRows(unique, inverse), labels, cents)
    assert held.dtype == expanded.dtype and np.array_equal(held, expanded)
    assert (expanded != 1.0).sum() > 100
