"""Intent classifier retraining: the promotion rule, and champion/challenger through the real MLflow registry."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from retrain_helpers import mlflow_db, write_relabel_version

POLICY = {"mode": "evidence", "margin": 0.005, "alpha": 0.05, "max_intent_regression": 0.1,
          "max_ece_increase": 0.03, "protected": ["lost_or_stolen_card"]}


def _ev(correct, truth, pred, ece=0.05):
    from feedback_loop.retrain.intent_model import per_intent_f1

    truth, pred = np.array(truth), np.array(pred)
    return {"gold": {"n": len(truth), "accuracy": float(np.mean(correct)), "ece": ece,
                     "per_intent": per_intent_f1(truth, pred), "correct": list(correct)}}


def _pair(n_right_champion, n_right_challenger, n=400, protected_drop=False):
    """Two evaluations on the same n gold examples (intents a/b/lost_or_stolen_card)."""
    truth = (["a", "b"] * n)[: n - 40] + ["lost_or_stolen_card"] * 40
    def preds(k, hurt):
        p = list(truth)
        for i in range(n - k):  # the first n-k examples wrong
            p[i] = "b" if truth[i] == "a" else "a"
        if hurt:
            for i in range(n - 40, n - 20):
                p[i] = "a"
        return p
    pc, pn = preds(n_right_champion, False), preds(n_right_challenger, protected_drop)
    return (_ev([int(x == y) for x, y in zip(truth, pc)], truth, pc),
            _ev([int(x == y) for x, y in zip(truth, pn)], truth, pn))


def test_a_better_challenger_is_promoted_with_its_evidence():
    from feedback_loop.retrain.intent_model import compare

    champion, challenger = _pair(300, 340)
    d = compare(champion, challenger, POLICY)
    assert d["promote"] is True
    assert d["mcnemar"]["only_challenger_right"] == 40 and d["mcnemar"]["p_value"] < 1e-9
    assert all(c["passed"] for c in d["checks"].values())


@pytest.mark.parametrize("right,why", [(300, "margin"), (299, "margin"), (303, "significance")])
def test_a_worse_or_not_significantly_better_challenger_is_not_promoted(right, why):
    from feedback_loop.retrain.intent_model import compare

    champion, challenger = _pair(300, right)
    d = compare(champion, challenger, POLICY)
    assert d["promote"] is False
    assert not d["checks"][why]["passed"]
    assert d["reasons"] and all("gold accuracy" not in r or "below" in r for r in d["reasons"])


def test_a_protected_intent_regression_blocks_an_otherwise_better_challenger():
    from feedback_loop.retrain.intent_model import compare

    champion, challenger = _pair(300, 360, protected_drop=True)
    d = compare(champion, challenger, POLICY)
    assert challenger["gold"]["accuracy"] - champion["gold"]["accuracy"] >= 0.09
    assert d["promote"] is False
    assert d["checks"]["protected_intents"]["regressed"] == ["lost_or_stolen_card"]
    assert d["worse_intents"][0]["intent"] == "lost_or_stolen_card" and d["worse_intents"][0]["protected"]


def test_calibration_metrics():
    from feedback_loop.retrain.intent_model import expected_calibration_error, mcnemar

    assert expected_calibration_error([0.9] * 10, [1] * 9 + [0]) == pytest.approx(0.0)
    assert expected_calibration_error([0.9] * 10, [0] * 10) == pytest.approx(0.9)
    assert mcnemar([1, 1, 0, 0], [1, 1, 0, 0])["p_value"] == 1.0


# ------------------------------------------------------------------------------- real models and registry

BANKING = Path(__file__).resolve().parents[2] / "include" / "feedback_loop" / "data" / "banking77" / "train.csv"


def _extra_examples(per_intent: int, skip: int, wrong: bool = False) -> list[dict]:
    """Banking77 train rows beyond the base selection (as production relabels would be), optionally mislabelled."""
    with open(BANKING, newline="") as fh:
        rows = [{"text": " ".join(r["text"].split()), "label": r["category"]} for r in csv.DictReader(fh)]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    labels = sorted(by)
    out = []
    for j, label in enumerate(labels):
        picked = sorted(by[label], key=lambda r: hashlib.sha1(r["text"].encode()).hexdigest())[skip: skip + per_intent]
        for i, r in enumerate(picked):
            lbl = labels[(j + 1 + i) % len(labels)] if wrong else label
            out.append({"example_id": hashlib.sha1(f"{label}{i}{wrong}".encode()).hexdigest()[:20], "text": r["text"],
                        "label": lbl, "source": "override"})
    return out


@pytest.fixture
def retrain_settings(data_dir, tmp_path_factory):
    from feedback_loop.settings import Settings

    s = Settings.load(retrain_base_per_intent=3)
    mlflow_db(s, tmp_path_factory.getbasetemp() / "mlflow-template")
    return s


def test_champion_challenger_through_the_registry(retrain_settings):
    """Bootstrap a baseline; a better challenger moves the alias; a worse one is registered and kept out."""
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.retrain import registry

    s = retrain_settings
    first = ir.run(s, ir.resolve_request(s, {"dataset_version": "none"}))
    assert first["bootstrap"]["bootstrapped"] and first["skipped"].startswith("the champion v1")
    assert registry.alias_version(s, "champion") == "1" == registry.champion(s)["version"]

    good = _extra_examples(8, skip=3)
    held = good[::8]  # one per intent, as a split by conversation hash spreads them
    v_good = write_relabel_version(s, "2026-11-18", {"train": [r for r in good if r not in held], "test": held},
                                   tag="good")
    out = ir.run(s, ir.resolve_request(s, {"reason": "test"}))
    assert out["outcome"]["promoted"] is True, out["outcome"]["reasons"]
    assert registry.alias_version(s, "champion") == "2" == registry.alias_version(s, "challenger")
    ptr = registry.champion(s)
    assert ptr["version"] == "2" and ptr["dataset_version"] == v_good and ptr["previous_version"] == "1"
    assert ptr["gold"]["accuracy"] > 0.5
    card = Path(out["outcome"]["model_card"]).read_text()
    assert "promoted to champion" in card and v_good in card and "McNemar" in card

    bad = _extra_examples(8, skip=3, wrong=True)
    write_relabel_version(s, "2026-11-25", {"train": bad}, tag="bad")
    out = ir.run(s, ir.resolve_request(s, {"reason": "test"}))
    assert out["outcome"]["promoted"] is False
    assert any("below the margin" in r for r in out["outcome"]["reasons"])
    assert registry.alias_version(s, "champion") == "2" == registry.champion(s)["version"]
    assert registry.alias_version(s, "challenger") == "3"
    with registry.mlflow_for(s) as mlflow:
        mv = mlflow.MlflowClient().get_model_version(registry.INTENT_MODEL, "3")
        assert mv.tags["promotion_decision"] == "kept_champion" and "margin" in mv.tags["promotion_reasons"]
        assert "not promoted" in mv.description
        run = mlflow.get_run(mv.run_id)
        assert run.data.metrics["gold_accuracy"] < ptr["gold"]["accuracy"]
        assert run.data.tags["dataset_version"].startswith("v20261125-")

    again = ir.run(s, ir.resolve_request(s, {}))  # same data as the last challenger: registered once only
    assert again["registered"]["reused"] is True and again["registered"]["version"] == "3"


def test_the_champion_model_classifies_for_the_sample_agent(retrain_settings):
    from feedback_loop.retrain import intent_model, registry
    from feedback_loop.retrain import intent_retrain as ir

    s = retrain_settings
    ir.ensure_champion(s, ir.resolve_request(s, {}))
    classify = intent_model.as_classifier(registry.load_champion_model(s))
    out = classify(["I lost my card yesterday", "my top up failed"])
    assert len(out) == 2 and all(isinstance(label, str) and 0 < conf <= 1 for label, conf in out)
