"""The intent classifier and how two of them are compared: a scikit-learn pipeline, its metrics, and the
champion/challenger promotion rule.

Why these choices:
- TF-IDF over words (1-2 grams) and characters (2-4 grams within words) + a linear SVM: strong on short
  banking messages (Banking77 test accuracy ~0.91 with the full train set), trains in seconds on 2 cores,
  and needs no network or GPU.
- Probabilities by temperature scaling of the SVM's scores, fitted on out-of-fold scores: one parameter,
  so it cannot overfit rare intents, and unlike scikit-learn's CalibratedClassifierCV it accepts intents
  with fewer examples than folds (a brand-new human label may have one).
- Promotion on evidence: the challenger must beat the champion on the frozen gold set by a margin AND
  the difference must be significant in an exact one-sided McNemar test on the same examples (paired: the
  same texts scored by both), with no protected intent losing more than a limit of F1 and calibration not
  getting materially worse. Anything else keeps the champion, with the reasons written down.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline, make_union
from sklearn.svm import LinearSVC

ECE_BINS = 15


class TemperatureScaledSVC(ClassifierMixin, BaseEstimator):
    """A linear SVM whose class scores become probabilities through softmax(score / T), T fitted on
    out-of-fold scores (weighted negative log-likelihood)."""

    def __init__(self, C: float = 0.5, folds: int = 3, random_state: int = 0):
        self.C = C
        self.folds = folds
        self.random_state = random_state

    def _svm(self):
        return LinearSVC(C=self.C, random_state=self.random_state)

    def fit(self, X, y, sample_weight=None):
        y = np.asarray(y)
        w = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=float)
        self.model_ = self._svm().fit(X, y, sample_weight=w)
        self.classes_ = self.model_.classes_
        scores = np.full((len(y), len(self.classes_)), np.nan)
        for train, held in KFold(self.folds, shuffle=True, random_state=self.random_state).split(X):
            if len(np.unique(y[train])) < 2:
                continue
            m = self._svm().fit(X[train], y[train], sample_weight=w[train])
            scores[np.ix_(held, np.searchsorted(self.classes_, m.classes_))] = _scores(m, X[held])
        # An intent a fold never saw cannot be predicted there: the lowest score.
        scores = np.where(np.isnan(scores), np.nanmin(scores) - 1.0, scores)
        truth = np.searchsorted(self.classes_, y)
        self.temperature_ = _fit_temperature(scores, truth, w)
        return self

    def decision_function(self, X):
        return _scores(self.model_, X)

    def predict_proba(self, X):
        return _softmax(self.decision_function(X) / self.temperature_)

    def predict(self, X):
        return self.classes_[np.argmax(self.decision_function(X), axis=1)]


def _scores(model, X) -> np.ndarray:
    s = model.decision_function(X)
    return np.column_stack([-s, s]) if s.ndim == 1 else s


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_temperature(scores: np.ndarray, truth: np.ndarray, w: np.ndarray) -> float:
    from scipy.optimize import minimize_scalar

    def nll(log_t):
        p = _softmax(scores / math.exp(log_t))[np.arange(len(truth)), truth]
        return float(-(w * np.log(np.clip(p, 1e-12, 1.0))).sum() / w.sum())

    return float(math.exp(minimize_scalar(nll, bounds=(-5.0, 3.0), method="bounded").x))


def build_pipeline(C: float = 0.5, random_state: int = 0):
    """Text in, intent out: word and character TF-IDF features, a temperature-scaled linear SVM."""
    features = make_union(
        TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), lowercase=True),
        TfidfVectorizer(sublinear_tf=True, analyzer="char_wb", ngram_range=(2, 4), min_df=2, lowercase=True),
    )
    return make_pipeline(features, TemperatureScaledSVC(C=C, random_state=random_state))


def load_step(spec: str):
    """The model step named by `Settings.retrain_model`: "module:function", a function of no arguments that
    returns an unfitted scikit-learn-style classifier of raw texts with `classes_` and `predict_proba` (for
    example a sentence-embedding encoder + logistic regression). Imported only when configured."""
    import importlib

    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"retrain_model {spec!r}: expected 'module:function'")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"retrain_model {spec!r}: cannot import it ({exc})") from exc
    return factory


def model_step_name(spec: str) -> str:
    return spec.strip()


def train(texts: list[str], labels: list[str], weights: list[float] | None = None, *, C: float = 0.5,
          random_state: int = 0, step: str = ""):
    """Fit the pipeline (deterministic for the same inputs); `step` swaps in a configured model step."""
    if step:
        model = load_step(step)()
        if weights is not None:
            w = np.asarray(weights, dtype=float)
            # A scikit-learn Pipeline routes weights to its last step by name.
            kw = {f"{model.steps[-1][0]}__sample_weight": w} if hasattr(model, "steps") else {"sample_weight": w}
            try:
                return model.fit(list(texts), np.asarray(labels), **kw)
            except TypeError:  # a step that takes no sample weights: fitted unweighted
                import logging

                logging.getLogger(__name__).warning("model step %s takes no sample weights: fitted unweighted", step)
        return model.fit(list(texts), np.asarray(labels))
    pipe = build_pipeline(C=C, random_state=random_state)
    kw = {} if weights is None else {"temperaturescaledsvc__sample_weight": np.asarray(weights, dtype=float)}
    return pipe.fit(list(texts), np.asarray(labels), **kw)


def predict(model, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(predicted intents, their probabilities)."""
    proba = model.predict_proba(list(texts))
    idx = proba.argmax(axis=1)
    return model.classes_[idx], proba[np.arange(len(idx)), idx]


def as_classifier(model):
    """The callable the sample generator's agent uses: texts -> [(intent, confidence)]."""
    def classify(texts: list[str]) -> list[tuple[str, float]]:
        if not texts:
            return []
        labels, conf = predict(model, texts)
        return [(str(lbl), float(c)) for lbl, c in zip(labels, conf)]

    return classify


# ------------------------------------------------------------------------------------------------ metrics


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Share-weighted gap between confidence and accuracy over equal-width confidence bins."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, bool)
    if not len(confidence):
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = which == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def per_intent_f1(truth: np.ndarray, pred: np.ndarray) -> dict[str, dict]:
    """F1, precision, recall and support of every intent present in the truth or the predictions."""
    out = {}
    for c in sorted(set(truth.tolist()) | set(pred.tolist())):
        tp = int(np.sum((pred == c) & (truth == c)))
        fp = int(np.sum((pred == c) & (truth != c)))
        fn = int(np.sum((pred != c) & (truth == c)))
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        out[c] = {"f1": 2 * p * r / (p + r) if p + r else 0.0, "precision": p, "recall": r, "support": tp + fn}
    return out


def evaluate(model, texts: list[str], truth: list[str]) -> dict:
    """Accuracy, macro-F1 (over intents with support), per-intent F1, ECE, and the per-example correctness
    vector (kept for the paired test)."""
    truth = np.asarray(truth)
    if not len(truth):
        return {"n": 0, "accuracy": None, "macro_f1": None, "ece": None, "per_intent": {}, "correct": []}
    pred, conf = predict(model, texts)
    correct = pred == truth
    per = per_intent_f1(truth, pred)
    supported = [v["f1"] for v in per.values() if v["support"]]
    return {"n": len(truth), "accuracy": float(correct.mean()), "macro_f1": float(np.mean(supported)),
            "ece": expected_calibration_error(conf, correct), "mean_confidence": float(conf.mean()),
            "per_intent": per, "correct": correct.astype(int).tolist()}


def mcnemar(champion_correct: list[int], challenger_correct: list[int]) -> dict:
    """Exact McNemar test on paired outcomes, one-sided for 'the challenger is better'.

    b = examples only the challenger gets right, c = only the champion; under H0 b ~ Binomial(b + c, 1/2)."""
    from scipy.stats import binomtest

    a, b = np.asarray(champion_correct, bool), np.asarray(challenger_correct, bool)
    only_challenger, only_champion = int(np.sum(b & ~a)), int(np.sum(a & ~b))
    n = only_challenger + only_champion
    p = binomtest(only_challenger, n, 0.5, alternative="greater").pvalue if n else 1.0
    return {"only_challenger_right": only_challenger, "only_champion_right": only_champion,
            "discordant": n, "p_value": float(p), "test": "exact McNemar (binomial), one-sided"}


def compare(champion: dict | None, challenger: dict, policy: dict) -> dict:
    """The promotion decision from two evaluations on the same sets (dicts from `evaluate`, per set name).

    `policy`: margin, alpha, max_intent_regression, max_ece_increase, protected (list of intents), mode
    ("evidence" or "never"). Returns {promote, reasons, checks, worse_intents, ...}."""
    gold_ch = challenger["gold"]
    if champion is None:
        return {"promote": policy.get("mode") != "never", "checks": {},
                "reasons": ["no champion yet: the baseline becomes the champion"
                            if policy.get("mode") != "never" else "promotion policy 'never': registered only"],
                "worse_intents": [], "mcnemar": None}
    gold_cp = champion["gold"]
    gain = gold_ch["accuracy"] - gold_cp["accuracy"]
    test = mcnemar(gold_cp["correct"], gold_ch["correct"])
    worse = []
    for intent, m in gold_cp["per_intent"].items():
        if not m["support"]:
            continue
        new = gold_ch["per_intent"].get(intent, {"f1": 0.0})["f1"]
        if new < m["f1"]:
            worse.append({"intent": intent, "champion_f1": round(m["f1"], 4), "challenger_f1": round(new, 4),
                          "drop": round(m["f1"] - new, 4), "protected": intent in policy["protected"]})
    worse.sort(key=lambda w: -w["drop"])
    protected_bad = [w for w in worse if w["protected"] and w["drop"] > policy["max_intent_regression"]]
    ece_increase = gold_ch["ece"] - gold_cp["ece"]
    checks = {
        "margin": {"passed": gain >= policy["margin"], "gain": round(gain, 4), "required": policy["margin"]},
        "significance": {"passed": test["p_value"] < policy["alpha"], "p_value": float(f"{test['p_value']:.3g}"),
                         "alpha": policy["alpha"]},
        "protected_intents": {"passed": not protected_bad, "limit": policy["max_intent_regression"],
                              "regressed": [w["intent"] for w in protected_bad]},
        "calibration": {"passed": ece_increase <= policy["max_ece_increase"], "ece_increase": round(ece_increase, 4),
                        "limit": policy["max_ece_increase"]},
    }
    hold_ch, hold_cp = challenger.get("holdout") or {}, champion.get("holdout") or {}
    if hold_ch.get("n") and hold_cp.get("n"):
        # Reported, and a guard only against a significant loss: the held-out relabels over-represent the
        # champion's own mistakes (they were corrected because it was wrong), so they cannot measure a gain.
        back = mcnemar(hold_ch["correct"], hold_cp["correct"])
        checks["holdout_not_worse"] = {"passed": back["p_value"] >= policy["alpha"],
                                       "challenger_accuracy": round(hold_ch["accuracy"], 4),
                                       "champion_accuracy": round(hold_cp["accuracy"], 4),
                                       "p_value_champion_better": float(f"{back['p_value']:.3g}")}
    failed = [k for k, v in checks.items() if not v["passed"]]
    reasons = []
    if policy.get("mode") == "never":
        reasons.append("promotion policy 'never': the challenger is registered, the champion stays")
    if not failed:
        reasons.append(f"gold accuracy {gold_cp['accuracy']:.4f} -> {gold_ch['accuracy']:.4f} "
                       f"(+{gain:.4f} >= margin {policy['margin']}), McNemar p={test['p_value']:.2g} < {policy['alpha']}, "
                       "no protected intent regressed beyond the limit, calibration held")
    for k in failed:
        c = checks[k]
        reasons.append({
            "margin": f"gain on gold accuracy {c.get('gain')} below the margin {c.get('required')}",
            "significance": f"not significant: McNemar p={c.get('p_value')} >= alpha {c.get('alpha')}",
            "protected_intents": f"protected intents regressed by more than {c.get('limit')} F1: {c.get('regressed')}",
            "calibration": f"calibration error rose by {c.get('ece_increase')} (limit {c.get('limit')})",
            "holdout_not_worse": "significantly worse than the champion on the held-out recent relabels",
        }[k])
    return {"promote": not failed and policy.get("mode") != "never", "checks": checks, "reasons": reasons,
            "worse_intents": worse, "mcnemar": test}
