"""The model registry: MLflow tracking and model registry, plus the deployed champion's pointer in the lake.

MLflow is the registry of record: every trained intent classifier is a version of the registered model
`acsr-intent-classifier` with its metrics, dataset version, training key and promotion decision, and the
aliases `champion` and `challenger` say which version serves and which was evaluated last. By default the
backend is SQLite under the lake (`<lake>/mlflow/mlflow.db`, artifacts in `<lake>/mlflow/artifacts`);
`Settings.mlflow_tracking_uri` points elsewhere (a tracking server).

The pointer `<lake>/models/intent_classifier/champion.json` is the deployment export of the `champion`
alias: the agent and the nightly decision read it without importing MLflow (a slow import). It is
written right after the alias moves, by the same task, so a failed run leaves both on the old champion.

MLflow is imported only inside these functions.
"""

from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager

from feedback_loop.lake.files import Lake, is_remote, join
from feedback_loop.retrain import store
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

INTENT_MODEL = "acsr-intent-classifier"
INTENT_EXPERIMENT = "acsr-intent-classifier"
FINETUNE_EXPERIMENT = "acsr-reasoning-model-finetune"
CHAMPION, CHALLENGER = "champion", "challenger"
POINTER = ("models", "intent_classifier", "champion.json")


def tracking_uri(settings: Settings) -> str:
    if settings.mlflow_tracking_uri:
        return settings.mlflow_tracking_uri
    if is_remote(settings.lake):
        raise ValueError(f"the lake {settings.lake} is remote and the default MLflow backend is SQLite under a local "
                         "lake: set ACSR_MLFLOW_TRACKING_URI to a tracking server (docs/operations.md)")
    os.makedirs(join(settings.lake, "mlflow"), exist_ok=True)
    return "sqlite:///" + os.path.abspath(join(settings.lake, "mlflow", "mlflow.db"))


def artifact_root(settings: Settings) -> str | None:
    """Where new experiments keep their artifacts: under the lake unless a tracking server decides."""
    if settings.mlflow_tracking_uri and not settings.mlflow_tracking_uri.startswith("sqlite:"):
        return None
    return join(settings.lake, "mlflow", "artifacts") if is_remote(settings.lake) else \
        "file://" + os.path.abspath(join(settings.lake, "mlflow", "artifacts"))


def _quiet():
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for name in ("mlflow.sklearn", "mlflow.pyfunc"):  # the cloudpickle notice: we load our own files
        logging.getLogger(name).setLevel(logging.ERROR)


@contextmanager
def mlflow_for(settings: Settings):
    """mlflow, pointed at this project's tracking and registry backend, for the duration of a block."""
    _quiet()
    import mlflow

    uri = tracking_uri(settings)
    before = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        yield mlflow
    finally:
        if before:
            mlflow.set_tracking_uri(before)


def experiment_id(mlflow, settings: Settings, name: str) -> str:
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    return mlflow.create_experiment(name, artifact_location=artifact_root(settings))


def _flat(prefix: str, metrics: dict) -> dict:
    out = {}
    for k in ("accuracy", "macro_f1", "ece", "mean_confidence", "n"):
        if metrics and metrics.get(k) is not None:
            out[f"{prefix}_{k}"] = float(metrics[k])
    return out


def find_version(settings: Settings, training_key: str) -> dict | None:
    """The registered version trained from exactly this training key (makes registration idempotent)."""
    with mlflow_for(settings) as mlflow:
        from mlflow.exceptions import MlflowException

        client = mlflow.MlflowClient()
        try:
            found = client.search_model_versions(f"name = '{INTENT_MODEL}' and tags.training_key = '{training_key}'")
        except MlflowException:  # the registered model does not exist yet
            return None
        if not found:
            return None
        mv = max(found, key=lambda v: int(v.version))
        return {"version": str(mv.version), "run_id": mv.run_id, "model_uri": f"models:/{INTENT_MODEL}/{mv.version}"}


def register_intent_model(settings: Settings, *, model, training_key: str, dataset_version: str | None,
                          params: dict, metrics: dict, artifacts: list[str], tags: dict) -> dict:
    """Log a training run (params, gold/holdout metrics, artifacts) and register its model as a new version
    with the alias `challenger`. Re-registering the same training key returns the existing version."""
    existing = find_version(settings, training_key)
    with mlflow_for(settings) as mlflow:
        client = mlflow.MlflowClient()
        if existing:
            client.set_registered_model_alias(INTENT_MODEL, CHALLENGER, existing["version"])
            return {**existing, "reused": True}
        exp = experiment_id(mlflow, settings, INTENT_EXPERIMENT)
        with mlflow.start_run(experiment_id=exp, run_name=f"intent-{training_key}") as run:
            mlflow.log_params({k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in params.items()})
            mlflow.log_metrics({**_flat("gold", metrics.get("gold")), **_flat("holdout", metrics.get("holdout"))})
            mlflow.set_tags({"training_key": training_key, "dataset_version": dataset_version or "none", **tags})
            for path in artifacts:  # lake files (local or s3://): logged by content, so any lake works
                if path and store.exists(path):
                    mlflow.log_text(store.read_bytes(path).decode(), path.rsplit("/", 1)[-1])
            info = _log_pyfunc(mlflow, model)
        version = str(info.registered_model_version)
        for k, v in {"training_key": training_key, "dataset_version": dataset_version or "none", **tags}.items():
            client.set_model_version_tag(INTENT_MODEL, version, k, str(v))
        client.set_registered_model_alias(INTENT_MODEL, CHALLENGER, version)
        return {"version": version, "run_id": run.info.run_id, "model_uri": f"models:/{INTENT_MODEL}/{version}",
                "reused": False}


def _log_pyfunc(mlflow, model):
    """The model as a pyfunc (feedback_loop.retrain.pyfunc: text in, intent and confidence out), its fitted
    pipeline as the artifact `model`, registered as a new version of INTENT_MODEL."""
    import tempfile

    import joblib
    import mlflow.pyfunc

    from feedback_loop.retrain.pyfunc import IntentClassifierModel

    with tempfile.TemporaryDirectory(prefix="acsr-model-") as tmp:
        path = os.path.join(tmp, "model.joblib")
        joblib.dump(model, path)
        return mlflow.pyfunc.log_model(name="model", python_model=IntentClassifierModel(), artifacts={"model": path},
                                       pip_requirements=_requirements(), registered_model_name=INTENT_MODEL)


def _requirements() -> list[str]:
    from importlib.metadata import version

    return [f"scikit-learn=={version('scikit-learn')}", f"numpy=={version('numpy')}", f"scipy=={version('scipy')}",
            "acsr-feedback-loop"]


def record_decision(settings: Settings, version: str, decision: dict, card: str | None = None) -> None:
    """The promotion decision on the version: tags, the model card as its description, metrics on its run."""
    with mlflow_for(settings) as mlflow:
        client = mlflow.MlflowClient()
        client.set_model_version_tag(INTENT_MODEL, version, "promotion_decision",
                                     "promoted" if decision["promote"] else "kept_champion")
        client.set_model_version_tag(INTENT_MODEL, version, "promotion_reasons", "; ".join(decision["reasons"])[:4900])
        if card:
            client.update_model_version(INTENT_MODEL, version, description=card[:60000])
        mv = client.get_model_version(INTENT_MODEL, version)
        if mv.run_id:
            client.set_tag(mv.run_id, "promotion_decision", "promoted" if decision["promote"] else "kept_champion")
            if card:
                client.log_text(mv.run_id, card, "model_card.md")


def promote(settings: Settings, version: str, pointer: dict) -> dict:
    """Move the `champion` alias to `version`, then the lake pointer (the same task, in that order)."""
    with mlflow_for(settings) as mlflow:
        mlflow.MlflowClient().set_registered_model_alias(INTENT_MODEL, CHAMPION, version)
    Lake(settings.lake).write_json(pointer, *POINTER)
    log.info("intent classifier version %s is the champion", version)
    return pointer


def alias_version(settings: Settings, alias: str) -> str | None:
    """The version an alias points at in MLflow (None when unset)."""
    with mlflow_for(settings) as mlflow:
        from mlflow.exceptions import MlflowException

        try:
            return str(mlflow.MlflowClient().get_model_version_by_alias(INTENT_MODEL, alias).version)
        except MlflowException:  # no such model or alias yet
            return None


def champion(settings: Settings) -> dict | None:
    """The deployed champion's pointer (no MLflow import): version, model path, training data, metrics."""
    return Lake(settings.lake).read_json(*POINTER)


def load_champion_model(settings: Settings):
    """The champion's fitted pipeline from its file in the lake, or None before the first promotion."""
    ptr = champion(settings)
    if not ptr:
        return None
    return store.load_model(ptr["model_path"])


def log_finetune_job(settings: Settings, record: dict) -> str:
    """A fine-tuning job as an MLflow run: dataset version, backend, base model, job id, status, cost, result."""
    with mlflow_for(settings) as mlflow:
        exp = experiment_id(mlflow, settings, FINETUNE_EXPERIMENT)
        client = mlflow.MlflowClient()
        existing = client.search_runs([exp], f"tags.job_key = '{record['job_key']}'", max_results=1)
        run_id = existing[0].info.run_id if existing else client.create_run(exp, run_name=record["job_key"]).info.run_id
        params = {"dataset": record["dataset"], "dataset_version": record["dataset_version"],
                  "backend": record["backend"], "base_model": record.get("base_model") or "",
                  "training_file_sha256": (record.get("files") or [{}])[0].get("sha256", "")}
        logged = client.get_run(run_id).data.params
        for k, v in params.items():
            if k not in logged:  # params are immutable: a re-log of the same job keeps the first values
                client.log_param(run_id, k, str(v))
        for k in ("trained_tokens", "cost_usd", "training_examples"):
            if record.get(k) is not None:
                client.log_metric(run_id, k, float(record[k]))
        tags = {"job_key": record["job_key"], "job_id": record.get("job_id") or "", "status": record["status"],
                "result_model": record.get("result_model") or "", "dataset_version": record["dataset_version"]}
        for k, v in tags.items():
            client.set_tag(run_id, k, str(v))
        client.log_text(run_id, json.dumps(record, indent=2, sort_keys=True, default=str), "job.json")
        client.set_terminated(run_id, "FINISHED" if record["status"] in ("succeeded", "dry_run") else "FAILED")
        return run_id
