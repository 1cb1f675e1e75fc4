"""Retraining the intent classifier, step by step: the functions the DAG's tasks and `acsr retrain-intent` call.

    request = resolve_request(settings, params)        # dataset version, policy, margin, dry run, force
    ensure_champion(settings, request)                 # first run ever: train, register, promote a baseline
    assembly = assemble(settings, request)             # training set, frozen gold set, held-out relabels
    trained = train_challenger(settings, assembly)     # the challenger's pipeline, in the run folder
    evaluation = evaluate(settings, assembly, request) # champion and challenger on the same sets + decision
    registered = register(settings, evaluation)        # MLflow run + model version, alias `challenger`
    outcome = finalize(settings, evaluation, registered)  # alias `champion` moves only here, on evidence

Everything a step produces is a file in the run folder `<lake>/retrain/intent_classifier/<training key>/`;
steps pass that folder's path, never data. The training key is a hash of everything that shapes the model
(dataset version, base-set selection, model settings), so re-running the same inputs reuses the same folder
and gives the same model. The champion changes only in `finalize`, the last step: a run that fails
anywhere before leaves the champion (MLflow alias and lake pointer) where it was.

The steps live where their subject is: the sets and the run folder in `intent_assembly`, the evaluation,
registration and promotion in `intent_promotion`, the model card in `intent_model_card`; this module holds
the request, the training step and the order of the steps.
"""

from __future__ import annotations

import logging
import re

from feedback_loop.lake.files import join
from feedback_loop.retrain import intent_assembly, intent_promotion, registry, store
from feedback_loop.retrain.intent_assembly import MODEL_CONFIG, RetrainError
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

POLICIES = ("evidence", "never", "always")
VERSION_RE = re.compile(r"^v\d{8}-[0-9a-f]{10}$")


# ------------------------------------------------------------------------------------------------ request


def resolve_request(settings: Settings, params: dict | None = None, asset_version: str | None = None) -> dict:
    """The request of one run: trigger-form params / conf over Settings defaults. A run started by the
    relabel dataset's Asset trains on the version the event announced."""
    p = dict(params or {})
    version = p.get("dataset_version") or "latest"
    if version == "latest" and asset_version:
        version = asset_version
    policy = p.get("promotion_policy") or "evidence"
    if policy not in POLICIES:
        raise RetrainError(f"unknown promotion policy {policy!r}: one of {POLICIES}")
    if version not in ("latest", "none") and not VERSION_RE.match(version):
        raise RetrainError(f"dataset version {version!r} is not 'latest', 'none' or v<YYYYMMDD>-<10 hex>")
    pick = (lambda k, default: default if p.get(k) is None else p[k])
    return {
        "dataset_version": version,
        "force": bool(p.get("force", False)),
        "dry_run": bool(p.get("dry_run", False)),
        "policy": {
            "mode": policy,
            "margin": float(pick("margin", settings.retrain_promotion_margin)),
            "alpha": float(pick("alpha", settings.retrain_promotion_alpha)),
            "max_intent_regression": float(pick("max_intent_regression", settings.retrain_max_intent_regression)),
            "max_ece_increase": float(pick("max_ece_increase", settings.retrain_max_ece_increase)),
            "protected": sorted(x.strip() for x in settings.retrain_protected_intents.split(",") if x.strip()),
        },
        "base_per_intent": int(pick("base_per_intent", settings.retrain_base_per_intent)),
        "reason": str(p.get("reason") or ("asset event: new relabel dataset version" if asset_version else "manual")),
        "decision": p.get("decision"),  # the nightly decision's reasons, when it triggered this run
    }


# ------------------------------------------------------------------------------------------------ train


def train_challenger(settings: Settings, assembly: dict) -> dict:
    """Fit the pipeline on the run's training set and store it as `model.joblib` (kept if it exists)."""
    from feedback_loop.retrain import intent_model

    path = join(assembly["folder"], "model.joblib")
    if not store.exists(path):
        rows = store.read_parquet_rows(assembly["files"]["train"])
        if not rows:
            raise RetrainError("empty training set")
        model = intent_model.train([r["text"] for r in rows], [r["label"] for r in rows],
                                   [r["weight"] for r in rows], C=MODEL_CONFIG["C"],
                                   random_state=MODEL_CONFIG["random_state"], step=settings.retrain_model)
        store.dump_model(model, path)
    return {"training_key": assembly["training_key"], "folder": assembly["folder"], "model_path": path}


# ------------------------------------------------------------------------------------------------ bootstrap


def ensure_champion(settings: Settings, request: dict, run_id: str | None = None) -> dict:
    """Before the first promotion there is nothing to compare with: train a baseline on the base set only,
    register it and make it the champion. Later runs return the current champion untouched."""
    current = registry.champion(settings)
    if current:
        return {"bootstrapped": False, "champion": current["version"], "training_key": current.get("training_key")}
    if request["dry_run"]:
        return {"bootstrapped": False, "champion": None, "note": "dry run: no baseline registered"}
    assembly = intent_assembly.assemble(settings, request, dataset_version=None)
    train_challenger(settings, assembly)
    evaluation = intent_promotion.evaluate(settings, assembly,
                                           {**request, "policy": {**request["policy"], "mode": "evidence"}})
    registered = intent_promotion.register(settings, evaluation, run_id)
    outcome = intent_promotion.finalize(settings, evaluation, registered, run_id)
    return {"bootstrapped": True, "champion": outcome["champion_after"], "training_key": assembly["training_key"]}


def should_train(settings: Settings, request: dict) -> dict:
    """Whether this run has anything new: a challenger identical to the champion is skipped unless forced."""
    manifest = intent_assembly.resolve_dataset(settings, request["dataset_version"])
    key = intent_assembly.training_key(manifest["version"] if manifest else None, request["base_per_intent"],
                                       intent_assembly.shaping(settings))
    current = registry.champion(settings)
    same = bool(current and current.get("training_key") == key)
    return {"train": request["force"] or not same, "training_key": key,
            "reason": ("forced" if request["force"] and same else
                       f"the champion v{current['version']} was trained on exactly this data" if same else "new data")}


def run(settings: Settings, request: dict, run_id: str | None = None) -> dict:
    """Every step in this process (the CLI's `acsr retrain-intent`)."""
    boot = ensure_champion(settings, request, run_id)
    check = should_train(settings, request)
    if not check["train"]:
        return {"bootstrap": boot, "skipped": check["reason"]}
    assembly = intent_assembly.assemble(settings, request)
    train_challenger(settings, assembly)
    evaluation = intent_promotion.evaluate(settings, assembly, request)
    if request["dry_run"]:
        return {"bootstrap": boot, "dry_run": True, "decision": evaluation["decision"], "evaluation": evaluation["path"]}
    registered = intent_promotion.register(settings, evaluation, run_id)
    return {"bootstrap": boot, "registered": registered,
            "outcome": intent_promotion.finalize(settings, evaluation, registered, run_id)}
