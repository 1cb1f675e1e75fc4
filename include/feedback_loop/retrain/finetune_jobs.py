"""The fine-tuning job records, one JSON per job under `<lake>/finetune_jobs/`, linked to its dataset version.

A record holds the job id, status, history, trained tokens, cost where reported and the resulting model id;
`feedback_loop.retrain.finetune` creates and updates it, the DAG and the nightly decision read it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from feedback_loop.lake.files import Lake, join
from feedback_loop.retrain import store
from feedback_loop.settings import Settings

JOBS = "finetune_jobs"
TERMINAL = ("succeeded", "failed", "cancelled")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ records


def record_path(settings: Settings, key: str) -> str:
    return join(settings.lake, JOBS, f"{key}.json")


def read_record(settings: Settings, key: str) -> dict | None:
    return Lake(settings.lake).read_json(JOBS, f"{key}.json")


def write_record(settings: Settings, record: dict) -> dict:
    record["updated_at"] = now()
    Lake(settings.lake).write_json(record, JOBS, f"{record['job_key']}.json")
    return record


def jobs_for_version(settings: Settings, dataset: str, version: str) -> list[dict]:
    """The job records that used a dataset version (any backend), on a local or an object-store lake."""
    folder = join(settings.lake, JOBS)
    out = []
    for name in store.listdir(folder):
        if name.endswith(".json") and name.startswith(f"{dataset}-{version}-"):
            doc = store.read_json(join(folder, name))
            if doc is not None:
                out.append(doc)
    return out


def same_backend(record: dict, backend: str) -> bool:
    """Whether a job record was made with `backend` as configured ('dry_run' = any dry run)."""
    if backend == "dry_run":
        return bool(record.get("dry_run"))
    return record.get("backend") == backend and not record.get("dry_run")


def new_record(request: dict, plan: dict, run_id: str | None = None) -> dict:
    return {"job_key": plan["job_key"], "dataset": plan["dataset"], "dataset_version": plan["dataset_version"],
            "dataset_manifest": plan["manifest"], "files": plan["files"], "backend": request["backend"],
            "dry_run": request["dry_run"], "base_model": request["base_model"],
            "hyperparameters": request["hyperparameters"], "suffix": request["suffix"], "reason": request["reason"],
            "training_examples": plan["training_examples"], "job_id": None, "status": "new", "result_model": None,
            "trained_tokens": None, "cost_usd": None, "error": None, "history": [], "airflow_run_id": run_id,
            "created_at": now()}


def update_from_job(record: dict, job: dict) -> dict:
    """Fold a backend's job view (status, model, tokens, cost, error) into the record."""
    status = job.get("status")
    if status and status != record.get("status"):
        record["history"].append({"at": now(), "status": status})
    record["status"] = status or record["status"]
    for src, dst in (("fine_tuned_model", "result_model"), ("result_model", "result_model"),
                     ("trained_tokens", "trained_tokens"), ("estimated_finish", "estimated_finish"),
                     ("finished_at", "finished_at")):
        if job.get(src) is not None:
            record[dst] = job[src]
    cost = job.get("cost_usd", job.get("cost", (job.get("usage") or {}).get("cost")))
    if cost is not None:
        record["cost_usd"] = float(cost)
    if job.get("error"):
        err = job["error"]
        record["error"] = err if isinstance(err, str) else {k: err.get(k) for k in ("code", "message", "param")}
    if job.get("metrics"):
        record["metrics"] = job["metrics"]
    return record
