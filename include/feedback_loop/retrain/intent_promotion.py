"""Champion against challenger: evaluation on the same sets, registration, and the one step that promotes.

`finalize` is the only function that moves the `champion` alias and the lake pointer, and only on evidence.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from feedback_loop.lake.files import join
from feedback_loop.retrain import registry, store
from feedback_loop.retrain.intent_assembly import DATASET, MODEL_CONFIG
from feedback_loop.retrain.intent_model_card import model_card
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ evaluate


def _evaluate_on(model, sets: dict[str, list[dict]]) -> dict:
    from feedback_loop.retrain import intent_model

    return {name: intent_model.evaluate(model, [r["text"] for r in rows], [r["label"] for r in rows])
            for name, rows in sets.items()}


def evaluate(settings: Settings, assembly: dict, request: dict, trained: dict | None = None) -> dict:
    """Champion and challenger on the same gold and held-out sets, and the promotion decision."""
    from feedback_loop.retrain import intent_model

    folder = assembly["folder"]
    ptr = registry.champion(settings)
    sets = {"gold": store.read_parquet_rows(assembly["files"]["gold"]),
            "holdout": store.read_parquet_rows(assembly["files"]["holdout"])}
    ch_model = store.load_model(join(folder, "model.joblib"))
    cp_model = store.load_model(ptr["model_path"]) if ptr else None
    change = taxonomy_change(ch_model, cp_model, sets)
    if cp_model is not None:  # the paired comparison is on the classes both models know
        shared = set(change["shared"])
        sets = {k: [r for r in rows if r["label"] in shared] for k, rows in sets.items()}
    challenger = _evaluate_on(ch_model, sets)
    champion = _evaluate_on(cp_model, sets) if cp_model is not None else None
    if ptr and ptr.get("training_key") == assembly["training_key"]:
        decision = {"promote": False, "reasons": ["the challenger is the champion (same training key)"],
                    "checks": {}, "worse_intents": [], "mcnemar": None}
    elif champion is not None and not challenger["gold"]["n"]:
        # A new taxonomy: no gold example of a class both models know, so there is no paired evidence.
        always = request["policy"]["mode"] == "always"
        decision = {"promote": always, "checks": {}, "worse_intents": [], "mcnemar": None, "reasons": [
            "no gold example of a class both the champion and the challenger know (a taxonomy change): no paired "
            "comparison is possible; " + ("promoted by promotion policy 'always'" if always else
                                          "kept the champion; review and retrain with promotion_policy 'always'")]}
    else:
        policy = request["policy"]
        decision = intent_model.compare(champion, challenger, policy)
        if policy["mode"] == "always" and champion is not None:
            decision["reasons"].insert(0, f"promotion policy 'always' (manual override): promoted whatever the "
                                          f"evidence; evidence said {'promote' if decision['promote'] else 'keep'}")
            decision["promote"] = True
    doc = {
        "training_key": assembly["training_key"], "dataset_version": assembly["dataset_version"],
        "champion": {"version": ptr["version"], "training_key": ptr.get("training_key")} if ptr else None,
        "metrics": {"challenger": _summary(challenger), "champion": _summary(champion) if champion else None},
        "decision": decision, "request": request, "dry_run": request["dry_run"],
        "taxonomy_change": {k: v for k, v in change.items() if k != "shared"} | {"shared_classes": len(change["shared"])},
    }
    name = f"evaluation-vs-{ptr['version'] if ptr else 'none'}.json"
    path = store.write_json(join(folder, name), {**doc, "correct": {
        "challenger": {k: v["correct"] for k, v in challenger.items()},
        "champion": {k: v["correct"] for k, v in champion.items()} if champion else None}})
    log.info("evaluated %s vs champion %s: %s", assembly["training_key"], ptr and ptr["version"],
             "; ".join(decision["reasons"]))
    return {**doc, "path": path, "folder": folder, "model_path": join(folder, "model.joblib"),
            "assembly": join(folder, "assembly.json")}


def taxonomy_change(challenger_model, champion_model, sets: dict) -> dict:
    """Classes the challenger adds or drops against the champion, and the added classes' own held-out figures
    (challenger's recall on gold and held-out examples of each: the champion cannot be compared there)."""
    from feedback_loop.retrain import intent_model

    ch = {str(c) for c in challenger_model.classes_}
    cp = {str(c) for c in champion_model.classes_} if champion_model is not None else set(ch)
    added, retired = sorted(ch - cp), sorted(cp - ch)
    figures = {}
    for intent in added:
        rows = [r for name in ("gold", "holdout") for r in sets[name] if r["label"] == intent]
        if rows:
            pred, _ = intent_model.predict(challenger_model, [r["text"] for r in rows])
            right = int(sum(str(p) == intent for p in pred))
            figures[intent] = {"held_out": len(rows), "recall": round(right / len(rows), 4)}
        else:
            figures[intent] = {"held_out": 0, "recall": None}
    excluded = {name: sum(r["label"] not in (ch & cp) for r in rows) for name, rows in sets.items()}
    return {"shared": sorted(ch & cp), "added": added, "retired": retired, "added_held_out": figures,
            "excluded_from_paired_test": excluded}


def _summary(ev: dict) -> dict:
    return {name: {k: v for k, v in m.items() if k != "correct"} for name, m in ev.items()}


# ------------------------------------------------------------------------------------------------ register


def register(settings: Settings, evaluation: dict, run_id: str | None = None) -> dict:
    """Register the challenger in MLflow (metrics, dataset version, training key), alias `challenger`."""
    assembly = store.read_json(evaluation["assembly"])
    ch = evaluation["metrics"]["challenger"]
    metrics = {"gold": ch["gold"], "holdout": ch.get("holdout")}
    per_intent = store.write_json(join(evaluation["folder"], "per_intent_f1.json"),
                             {k: v.get("per_intent") for k, v in ch.items()})
    out = registry.register_intent_model(
        settings, model=store.load_model(evaluation["model_path"]), training_key=evaluation["training_key"],
        dataset_version=evaluation["dataset_version"],
        params={"dataset_version": evaluation["dataset_version"] or "none", "base_per_intent": assembly["base"]["per_intent"],
                "train_rows": assembly["counts"]["train"], "holdout_rows": assembly["counts"]["holdout"],
                "gold_rows": assembly["counts"]["gold"], **{f"model_{k}": v for k, v in MODEL_CONFIG.items()}},
        metrics=metrics, artifacts=[evaluation["assembly"], evaluation["path"], per_intent],
        tags={"airflow_run_id": run_id or "", "champion_at_evaluation": (evaluation["champion"] or {}).get("version") or "none"})
    store.write_json(join(evaluation["folder"], "registration.json"), out)
    return {**out, "training_key": evaluation["training_key"], "evaluation": evaluation["path"]}


def finalize(settings: Settings, evaluation: dict, registered: dict, run_id: str | None = None) -> dict:
    """Write the model card, record the decision in MLflow and, if the decision is to promote, move the
    `champion` alias and the lake pointer. The only step that changes the champion."""
    decision = evaluation["decision"]
    assembly = store.read_json(evaluation["assembly"])
    version = registered["version"]
    current = registry.champion(settings)
    promote = decision["promote"] and not (current and current.get("version") == version)
    card = model_card(version, assembly, evaluation, promoted=promote, previous=current)
    card_path = join(evaluation["folder"], "model_card.md")
    store.write_bytes(card_path, card.encode())
    registry.record_decision(settings, version, decision, card)
    outcome = {"version": version, "promoted": promote, "reasons": decision["reasons"],
               "champion_before": current and current.get("version"), "model_card": card_path,
               "training_key": evaluation["training_key"]}
    if promote:
        ch = evaluation["metrics"]["challenger"]
        pointer = {
            "model": registry.INTENT_MODEL, "version": version, "model_uri": registered["model_uri"],
            "mlflow_run_id": registered.get("run_id"), "model_path": evaluation["model_path"],
            "training_key": evaluation["training_key"], "dataset": DATASET,
            "dataset_version": evaluation["dataset_version"], "dataset_window": assembly.get("dataset_window"),
            "train_file": assembly["files"]["train"], "label_distribution": assembly["label_distribution"],
            "reference_distribution": assembly.get("reference_distribution"),
            "gold": {k: ch["gold"][k] for k in ("accuracy", "macro_f1", "ece", "n")},
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "promoted_by_run": run_id,
            "reasons": decision["reasons"], "previous_version": current and current.get("version"),
            "model_card": card_path,
        }
        registry.promote(settings, version, pointer)
    outcome["champion_after"] = version if promote else (current and current.get("version"))
    store.write_json(join(evaluation["folder"], f"outcome-v{version}.json"), outcome)
    log.info("intent classifier v%s: %s (%s)", version, "PROMOTED" if promote else "kept the champion",
             "; ".join(decision["reasons"]))
    return outcome
