"""Fine-tuning the reasoning model: validate a dataset version, submit a job through a pluggable backend,
poll it, and record it - the functions the DAG's tasks, its deferrable operator's trigger and
`acsr finetune` call.

Backends:
- `openai`: any OpenAI-compatible fine-tuning API. Upload the training (and validation) file
  (`POST /files`, purpose fine-tune), create the job (`POST /fine_tuning/jobs`, method supervised for the
  SFT set, dpo for the preference set), poll it (`GET /fine_tuning/jobs/{id}`), cancel it on timeout
  (`POST /fine_tuning/jobs/{id}/cancel`). The base URL and API key come from an Airflow connection; the
  key is masked in logs and never written anywhere.
- `command`: a training command run on this machine (or a container, `docker run ...`), detached in
  its own process group so the task can give its worker slot back; `feedback_loop.retrain.run_job`
  runs it and writes `status.json` when it ends. Placeholders: {train_file}, {validation_file},
  {output_dir}, {base_model}, {hyperparameters} (JSON), {python}. The default command is the bundled
  `feedback_loop.retrain.train_command`, a small but real trainer (TRL-format files in, a fitted model out).
- `dry_run`: validates everything and writes exactly what would be sent (requests, file names, sizes,
  hashes; the key shown as ***), and submits nothing.

Every job is a record `<lake>/finetune_jobs/<job key>.json` linked to the dataset version (job id,
status, history, trained tokens, cost where reported, resulting model id); the job key is a hash of the
dataset version, backend, base model and hyperparameters, so a retried task resumes the job it already
submitted instead of paying for a second one.

This module holds the request, the validation of the dataset version and the steps; the backends are in
`finetune_backends`, the job records in `finetune_jobs`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from datetime import UTC, datetime, timedelta

from feedback_loop.lake.files import Lake, file_sha256, join
from feedback_loop.retrain import store
from feedback_loop.retrain.finetune_backends import CommandBackend, FineTuneError, OpenAIBackend, backend_for
from feedback_loop.retrain.finetune_jobs import (
    TERMINAL,
    new_record,
    now,
    read_record,
    record_path,
    update_from_job,
    write_record,
)
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

BACKENDS = ("dry_run", "openai", "command")
DATASETS = ("sft", "preference")
VERSION_RE = re.compile(r"^(latest|v\d{8}-[0-9a-f]{10})$")
# Which files each backend family reads from a dataset version: (path, format, role).
FILES = {
    ("sft", "openai"): [("openai/train.jsonl", "openai_chat", "training_file"),
                        ("openai/validation.jsonl", "openai_chat", "validation_file")],
    ("sft", "command"): [("trl/train.jsonl", "trl_messages", "training_file"),
                         ("trl/validation.jsonl", "trl_messages", "validation_file")],
    ("preference", "openai"): [("openai_dpo/train.jsonl", "openai_dpo", "training_file"),
                               ("openai_dpo/validation.jsonl", "openai_dpo", "validation_file")],
    ("preference", "command"): [("trl/train.jsonl", "trl_preference", "training_file"),
                                ("trl/validation.jsonl", "trl_preference", "validation_file")],
}


# ------------------------------------------------------------------------------------------------ request


def resolve_request(settings: Settings, params: dict | None = None, asset_version: str | None = None,
                    asset_dataset: str | None = None) -> dict:
    """Trigger-form params / conf over Settings defaults; an Asset event names the version to use."""
    p = dict(params or {})
    dataset = p.get("dataset") or asset_dataset or settings.finetune_dataset
    version = p.get("dataset_version") or "latest"
    if version == "latest" and asset_version and (asset_dataset in (None, dataset)):
        version = asset_version
    backend = p.get("backend") or settings.finetune_backend
    if dataset not in DATASETS:
        raise FineTuneError(f"dataset {dataset!r}: one of {DATASETS}")
    if backend not in BACKENDS:
        raise FineTuneError(f"backend {backend!r}: one of {BACKENDS}")
    if not VERSION_RE.match(version):
        raise FineTuneError(f"dataset version {version!r} is not 'latest' or v<YYYYMMDD>-<10 hex>")
    dry = bool(p.get("dry_run")) or backend == "dry_run"
    return {
        "dataset": dataset, "dataset_version": version,
        "backend": "openai" if backend == "dry_run" else backend,  # a dry run shows what the API would get
        "dry_run": dry,
        "base_model": p.get("base_model") or settings.finetune_base_model,
        "connection_id": p.get("connection_id") or settings.finetune_connection_id,
        "hyperparameters": dict(p.get("hyperparameters") or {}),
        "suffix": p.get("suffix") or "acsr",
        "poll_seconds": float(p.get("poll_seconds") or settings.finetune_poll_seconds),
        "timeout_hours": float(p.get("timeout_hours") or settings.finetune_timeout_hours),
        "force": bool(p.get("force", False)),
        "reason": str(p.get("reason") or ("asset event: new dataset version" if asset_version else "manual")),
    }


def validate(settings: Settings, request: dict) -> dict:
    """Resolve the dataset version, check every file the backend will read with the dataset's own format
    validators (feedback_loop.datasets.formats), and return the job's plan: version, files, job key."""
    from feedback_loop.datasets import formats

    lake = Lake(settings.lake)
    name, version = request["dataset"], request["dataset_version"]
    if version == "latest":
        latest = lake.read_json("datasets", name, "latest.json")
        if not latest:
            raise FineTuneError(f"no published version of the {name} dataset yet")
        version = latest["version"]
    manifest = lake.read_json("datasets", name, version, "manifest.json")
    if manifest is None:
        raise FineTuneError(f"no {name} version {version}")
    folder = join(lake.root, "datasets", name, version)
    listed = {f["path"]: f for f in manifest["files"]}
    files = []
    for rel, fmt, role in FILES[(name, request["backend"])]:
        if rel not in listed:
            if role == "training_file":
                raise FineTuneError(f"{name} {version} has no {rel}: nothing to train on")
            continue
        path = join(folder, rel)
        with store.local_copy(path) as local:  # an S3 lake's file is checked on a local copy
            checked = formats.validate_file(local, fmt, settings.dataset_max_tokens)  # raises FormatError
            if file_sha256(local) != listed[rel]["sha256"]:
                raise FineTuneError(f"{path} does not match the sha256 in its manifest: the version was modified")
            size = os.path.getsize(local)
        files.append({"role": role, "path": path, "name": f"acsr-{name}-{version}-{os.path.basename(rel)}",
                      "format": fmt, "records": checked["records"], "bytes": size,
                      "sha256": listed[rel]["sha256"], "notes": checked["notes"]})
    key = job_key(name, version, request)
    return {"dataset": name, "dataset_version": version, "manifest": join(folder, "manifest.json"),
            "files": files, "job_key": key, "record": record_path(settings, key),
            "training_examples": files[0]["records"]}


def job_key(dataset: str, version: str, request: dict) -> str:
    shaping = {k: request[k] for k in ("backend", "base_model", "hyperparameters", "suffix")}
    h = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:8]
    return f"{dataset}-{version}-{request['backend']}{'-dryrun' if request['dry_run'] else ''}-{h}"


# ------------------------------------------------------------------------------------------------ steps


def dry_run(settings: Settings, request: dict, plan: dict, run_id: str | None = None, backend=None) -> dict:
    """Record exactly what would be sent, submit nothing."""
    backend = backend or (CommandBackend(settings) if request["backend"] == "command" else
                          OpenAIBackend("https://api.openai.com/v1", "", timeout=60))
    record = new_record(request, plan, run_id)
    record.update(status="dry_run", would_send=backend.plan(request, plan))
    record["history"].append({"at": now(), "status": "dry_run"})
    write_record(settings, record)
    log.info("dry run of %s: would send %s", plan["job_key"], json.dumps(record["would_send"], default=str)[:2000])
    return record


def start(settings: Settings, request: dict, plan: dict, backend, run_id: str | None = None) -> dict:
    """Submit the job unless this exact job is running already (resume) or succeeded (reuse, unless forced)."""
    existing = read_record(settings, plan["job_key"])
    if existing and existing.get("job_id") and not request["force"]:
        if existing["status"] == "succeeded":
            existing["reused"] = True
            return existing
        if existing["status"] not in TERMINAL + ("timed_out",):
            return existing  # submitted by an earlier try: keep polling it, do not pay twice
    record = new_record(request, plan, run_id)
    if existing:
        record["history"] = existing.get("history", []) + [{"at": now(), "status": "resubmitted",
                                                            "previous_job_id": existing.get("job_id")}]
    write_record(settings, record)  # before submitting: a crash right after leaves a trace
    try:
        job = backend.submit(request, plan)
    except Exception as exc:
        record.update(status="submit_failed", error=str(exc)[:500])
        record["history"].append({"at": now(), "status": "submit_failed"})
        write_record(settings, record)
        raise
    record["job_id"] = job["job_id"]
    record["submitted_at"] = now()
    record["backend_details"] = {k: job[k] for k in ("uploaded_files", "pid", "command") if k in job}
    update_from_job(record, job)
    write_record(settings, record)
    log.info("submitted %s job %s for %s %s", request["backend"], record["job_id"], plan["dataset"],
             plan["dataset_version"])
    return record


def finish(settings: Settings, key: str, event: dict, backend=None) -> dict:
    """Fold the final poll result into the record; a timeout cancels the job. Raises unless it succeeded."""
    record = read_record(settings, key)
    if event.get("job"):
        update_from_job(record, event["job"])
    if event["status"] == "timed_out":
        if backend is not None:
            try:
                backend.cancel(record["job_id"])
            except Exception as exc:  # noqa: BLE001 - the timeout is the news; a failed cancel is noted
                record["cancel_error"] = str(exc)[:300]
        record["status"] = "timed_out"
        record["history"].append({"at": now(), "status": "timed_out"})
    write_record(settings, record)
    if record["status"] != "succeeded":
        raise FineTuneError(f"fine-tuning job {record['job_id']} {record['status']}: {record.get('error') or ''}")
    return record


def poll_until_done(backend, job_id: str, poll_seconds: float, timeout_hours: float) -> dict:
    """Blocking poll (the CLI; the DAG defers to a trigger instead). {'status', 'job'}."""
    deadline = time.monotonic() + timeout_hours * 3600
    while True:
        job = backend.retrieve(job_id)
        if job.get("status") in TERMINAL:
            return {"status": job["status"], "job": job}
        if time.monotonic() >= deadline:
            return {"status": "timed_out", "job": job}
        time.sleep(min(poll_seconds, max(0.0, deadline - time.monotonic())))


def deadline_iso(hours: float) -> str:
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def run(settings: Settings, request: dict, *, backend=None, wait: bool = True) -> dict:
    """Every step in this process (the CLI's `acsr finetune`)."""
    plan = validate(settings, request)
    if request["dry_run"]:
        return dry_run(settings, request, plan)
    backend = backend or backend_for(settings, request)
    record = start(settings, request, plan, backend)
    if not wait or record["status"] in TERMINAL:
        return record
    return finish(settings, plan["job_key"], poll_until_done(backend, record["job_id"], request["poll_seconds"],
                                                               request["timeout_hours"]), backend)
