"""How much each intent label is worth as evidence about a conversation's topic (issue 15).

The agent's predicted intent is not what the customer wrote: an agent that lacks knowledge about a topic
usually also lacks the class for it and answers with its nearest known class, confidently. So a label is
a feature weighted by trust, never the anchor:

- a person's label (a reviewer's intent correction, a case category): 1;
- the agent's label: its confidence (halved below `low_confidence`) times its *agreement*: how close the
  message is to what the conversations the agent answered under that label said (their text centroid),
  relative to how close those answered conversations are to it themselves. A message that reads unlike
  every conversation the label usually answers gets no label weight, whatever the confidence.
"""

from __future__ import annotations

import numpy as np

from feedback_loop.gaps.params import GapParams
from feedback_loop.gaps.topics import RepeatedRows

MISROUTED = "~"  # label prefix: routed to this intent by the agent, but the message reads unlike it


def answered_centroids(sem: np.ndarray, labels: list, answered: np.ndarray, min_count: int = 3) -> dict:
    """Per label: (text centroid, median member similarity) of the answered conversations that carry it."""
    by_label: dict[str, list[int]] = {}
    for i in np.flatnonzero(answered):
        if labels[i]:
            by_label.setdefault(labels[i], []).append(int(i))
    out = {}
    for label, idx in by_label.items():
        if len(idx) < min_count:
            continue
        c = sem[idx].mean(axis=0)
        c /= max(float(np.linalg.norm(c)), 1e-9)
        own = sem[idx] @ c
        out[label] = (c.astype(np.float32), max(float(np.median(own)), 1e-6))
    return out


def agreement(sem: np.ndarray, labels: list, cents: dict) -> np.ndarray:
    """Per row: similarity to its label's answered centroid over that label's own median (1 = typical).
    Rows held once per distinct text (`topics.RepeatedRows`) are scored once per (text, label)."""
    out = np.ones(len(labels), dtype=np.float32)
    if isinstance(sem, RepeatedRows):
        rows_of: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            if label in cents:
                rows_of.setdefault(label, []).append(i)
        for label, rows in rows_of.items():
            c, med = cents[label]
            texts, back = np.unique(sem.inverse[rows], return_inverse=True)
            # The same float32 dot product per row as below, once per distinct text of the label.
            scores = np.array([float(sem.unique[t] @ c) / med for t in texts.tolist()], dtype=np.float32)
            out[rows] = scores[back]
        return out
    for i, label in enumerate(labels):
        if label in cents:
            c, med = cents[label]
            out[i] = float(sem[i] @ c) / med
    return out


def weighted_labels(human_intent: list, human_category: list, final_intent: list, final_confidence: list,
                    agree: np.ndarray, p: GapParams) -> list[list[tuple[str, float]]]:
    """The (label, weight) pairs of each conversation, the most trusted first, from its columns (the window's
    rows and the previous window's columns alike)."""
    # The fit to the label of every row at once: the same values as row by row, in the dtype of `agree`.
    fits = np.clip((np.asarray(agree) - p.agreement_floor) / max(1e-6, 1.0 - p.agreement_floor), 0.0, 1.0).tolist()
    low, misroute = p.low_confidence, p.misroute_weight
    out = []
    for human_i, human_c, agent, confidence, fit in zip(human_intent, human_category, final_intent, final_confidence,
                                                         fits):
        labels: dict[str, float] = {}
        if human_i:
            labels[human_i] = 1.0
        if human_c:
            labels[human_c] = 1.0
        if agent and agent not in labels:
            conf = float(confidence or 0.0)
            conf = conf if conf >= low else 0.5 * conf
            w = conf * fit * (0.3 if labels else 1.0)
            if w > 0:
                labels[agent] = w
            # Routed to `agent` but reading unlike it: that is evidence too, about a different topic. A
            # classifier without a class for a request sends it to the same nearest class every time, so
            # "sent to X, not an X question" groups those requests apart from X's own.
            miss = conf * (1.0 - fit) * misroute * (0.3 if labels else 1.0)
            if miss > 0:
                labels[MISROUTED + agent] = miss
        out.append(sorted(labels.items(), key=_by_weight) if len(labels) > 1 else list(labels.items()))
    return out


def _by_weight(kv: tuple[str, float]) -> tuple[float, str]:
    return -kv[1], kv[0]


def label_shares(labels: list[list[tuple[str, float]]]) -> dict[str, float]:
    """Trust-weighted share of a topic's conversations behind each label (a row counts its main label)."""
    totals: dict[str, float] = {}
    for row in labels:
        if row:
            totals[row[0][0]] = totals.get(row[0][0], 0.0) + row[0][1]
    n = max(1, len(labels))
    return {k: v / n for k, v in sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))}


def anchor_shares(labels: list[list[tuple[str, float]]], min_weight: float = 0.2) -> dict[str, float]:
    """Share of a topic's conversations whose most trusted label is each one (and trusted at least
    `min_weight`): what a topic is anchored on, and which split topics are one."""
    counts: dict[str, int] = {}
    for row in labels:
        if row and row[0][1] >= min_weight:
            counts[row[0][0]] = counts.get(row[0][0], 0) + 1
    n = max(1, len(labels))
    return {k: v / n for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def routed_shares(rows: list[dict]) -> dict[str, float]:
    """Share of a topic's conversations the agent routed to each intent (its final label, trusted or not)."""
    counts: dict[str, int] = {}
    for r in rows:
        if r.get("final_intent"):
            counts[r["final_intent"]] = counts.get(r["final_intent"], 0) + 1
    n = max(1, len(rows))
    return {k: v / n for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
