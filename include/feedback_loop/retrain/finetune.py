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
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

from feedback_loop.lake.files import Lake, file_sha256, filesystem_for, is_remote, join, process_alive
from feedback_loop.retrain import store
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

BACKENDS = ("dry_run", "openai", "command")
DATASETS = ("sft", "preference")
JOBS = "finetune_jobs"
TERMINAL = ("succeeded", "failed", "cancelled")
OPENAI_RUNNING = ("validating_files", "queued", "running", "pending")
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
DEFAULT_COMMAND = ("{python} -m feedback_loop.retrain.train_command --train {train_file} "
                   "--validation {validation_file} --output {output_dir} --base-model {base_model}")


class FineTuneError(RuntimeError):
    """A job that cannot be submitted, or one that failed, was cancelled or timed out."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


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


# ------------------------------------------------------------------------------------------------ records


def record_path(settings: Settings, key: str) -> str:
    return join(settings.lake, JOBS, f"{key}.json")


def read_record(settings: Settings, key: str) -> dict | None:
    return Lake(settings.lake).read_json(JOBS, f"{key}.json")


def write_record(settings: Settings, record: dict) -> dict:
    record["updated_at"] = _now()
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
            "created_at": _now()}


def update_from_job(record: dict, job: dict) -> dict:
    """Fold a backend's job view (status, model, tokens, cost, error) into the record."""
    status = job.get("status")
    if status and status != record.get("status"):
        record["history"].append({"at": _now(), "status": status})
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


# ------------------------------------------------------------------------------------------------ backends


def api_body(request: dict, plan: dict, file_ids: dict[str, str]) -> dict:
    """The fine-tuning job creation body (OpenAI fine_tuning.jobs.create)."""
    method = "dpo" if plan["dataset"] == "preference" else "supervised"
    body = {"model": request["base_model"], "training_file": file_ids["training_file"],
            "suffix": request["suffix"][:64],
            "method": {"type": method, method: {"hyperparameters": request["hyperparameters"]}},
            "metadata": {"acsr_dataset": plan["dataset"], "acsr_dataset_version": plan["dataset_version"],
                         "acsr_job_key": plan["job_key"]}}
    if "validation_file" in file_ids:
        body["validation_file"] = file_ids["validation_file"]
    return body


class OpenAIBackend:
    """An OpenAI-compatible fine-tuning API over HTTP (httpx). `base_url` ends in /v1 (or the API's root)."""

    def __init__(self, base_url: str, api_key: str, *, organization: str | None = None, project: str | None = None,
                 timeout: float = 60.0):
        self.base_url = base_url.rstrip("/")
        self._key = api_key
        self.organization, self.project, self.timeout = organization, project, timeout

    def headers(self, shown: bool = False) -> dict:
        h = {"Authorization": "Bearer ***" if shown else f"Bearer {self._key}"}
        if self.organization:
            h["OpenAI-Organization"] = self.organization
        if self.project:
            h["OpenAI-Project"] = self.project
        return h

    def plan(self, request: dict, plan: dict) -> list[dict]:
        """Exactly what `submit` sends, with the key masked and file ids as the upload responses would fill."""
        uploads = [{"method": "POST", "url": f"{self.base_url}/files", "headers": self.headers(shown=True),
                    "multipart": {"purpose": "fine-tune",
                                  "file": {k: f[k] for k in ("name", "path", "bytes", "sha256", "records", "format")}}}
                   for f in plan["files"]]
        ids = {f["role"]: f"<id returned by upload of {f['name']}>" for f in plan["files"]}
        create = {"method": "POST", "url": f"{self.base_url}/fine_tuning/jobs", "headers": self.headers(shown=True),
                  "json": api_body(request, plan, ids)}
        poll = {"method": "GET", "url": f"{self.base_url}/fine_tuning/jobs/<job id>", "every_seconds":
                request["poll_seconds"], "until": list(TERMINAL), "timeout_hours": request["timeout_hours"]}
        return [*uploads, create, poll]

    def submit(self, request: dict, plan: dict) -> dict:
        import httpx

        with httpx.Client(timeout=self.timeout, headers=self.headers()) as client:
            ids = {}
            for f in plan["files"]:
                fs, path = filesystem_for(f["path"])  # streamed from the lake, local or S3
                with fs.open(path, "rb") as fh:
                    r = client.post(f"{self.base_url}/files", data={"purpose": "fine-tune"},
                                    files={"file": (f["name"], fh, "application/jsonl")})
                _raise(r, "file upload")
                ids[f["role"]] = r.json()["id"]
            r = client.post(f"{self.base_url}/fine_tuning/jobs", json=api_body(request, plan, ids))
            _raise(r, "job creation")
            job = r.json()
        return {**job, "job_id": job["id"], "uploaded_files": ids}

    def retrieve(self, job_id: str) -> dict:
        import httpx

        r = httpx.get(f"{self.base_url}/fine_tuning/jobs/{job_id}", headers=self.headers(), timeout=self.timeout)
        _raise(r, "job status")
        return r.json()

    async def aretrieve(self, job_id: str) -> dict:
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout, headers=self.headers()) as client:
            r = await client.get(f"{self.base_url}/fine_tuning/jobs/{job_id}")
        _raise(r, "job status")
        return r.json()

    def cancel(self, job_id: str) -> dict:
        import httpx

        r = httpx.post(f"{self.base_url}/fine_tuning/jobs/{job_id}/cancel", headers=self.headers(),
                       timeout=self.timeout)
        _raise(r, "job cancel")
        return r.json()


def _raise(response, what: str) -> None:
    if response.status_code >= 400:
        try:
            detail = response.json().get("error", response.text)
        except ValueError:
            detail = response.text
        raise FineTuneError(f"{what} failed: HTTP {response.status_code}: {str(detail)[:500]}")


def openai_from_connection(conn) -> OpenAIBackend:
    """The backend configured by an Airflow connection: host = base URL (or host/port/schema), password =
    API key, extra `organization` / `project` / `base_url`. The key is registered with the log masker."""
    extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else json.loads(conn.extra or "{}")
    host = extra.get("base_url") or conn.host or ""
    if "://" not in host:
        port = f":{conn.port}" if conn.port else ""
        host = f"{conn.schema or 'https'}://{host}{port}/v1"
    key = conn.password or extra.get("api_key") or ""
    if key:
        try:
            from airflow.sdk.log import mask_secret

            mask_secret(key)
        except ImportError:  # pragma: no cover - outside Airflow nothing logs it either
            pass
    return OpenAIBackend(host, key, organization=extra.get("organization"), project=extra.get("project"))


class CommandBackend:
    """A local training command, detached (own session) and supervised by `feedback_loop.retrain.run_job`,
    which writes `<job dir>/status.json` when the command exits; the job id is the job dir's name.

    The job dir is under the lake when the lake is a local folder, else under `Settings.finetune_local_dir`
    (a local folder the triggerer can read too: the compose file's shared data volume), with the
    dataset's files copied into its `inputs/` folder before the command starts."""

    def __init__(self, settings: Settings, command: str | None = None):
        self.settings = settings
        self.command = command or settings.finetune_command or DEFAULT_COMMAND

    def job_dir(self, key: str) -> str:
        if is_remote(self.settings.lake):
            if is_remote(self.settings.finetune_local_dir):
                raise FineTuneError(f"the command backend runs a local process: finetune_local_dir "
                                    f"{self.settings.finetune_local_dir!r} must be a local folder")
            return join(self.settings.finetune_local_dir, key)
        return join(self.settings.lake, JOBS, key)

    def input_path(self, key: str, path: str) -> str:
        """The file the command reads: the lake file itself when local, else its copy in the job dir."""
        if not is_remote(path):
            return path
        return join(self.job_dir(key), "inputs", path.rstrip("/").rsplit("/", 1)[-1])

    def argv(self, request: dict, plan: dict, out: str) -> list[str]:
        files = {f["role"]: self.input_path(plan["job_key"], f["path"]) for f in plan["files"]}
        values = {"train_file": files["training_file"], "validation_file": files.get("validation_file", ""),
                  "output_dir": out, "base_model": request["base_model"],
                  "hyperparameters": json.dumps(request["hyperparameters"], sort_keys=True), "python": sys.executable}
        return [part.format(**values) for part in shlex.split(self.command)]

    def plan(self, request: dict, plan: dict) -> list[dict]:
        out = self.job_dir(plan["job_key"])
        return [{"run": self.argv(request, plan, join(out, "output")), "cwd": out, "detached": True,
                 "status_file": join(out, "status.json"), "poll_every_seconds": request["poll_seconds"],
                 "timeout_hours": request["timeout_hours"]}]

    def submit(self, request: dict, plan: dict) -> dict:
        out = self.job_dir(plan["job_key"])
        os.makedirs(join(out, "output"), exist_ok=True)
        status = join(out, "status.json")
        if os.path.exists(status):
            os.remove(status)  # a resubmission starts clean
        for f in plan["files"]:
            local = self.input_path(plan["job_key"], f["path"])
            if local != f["path"]:
                store.download(f["path"], local)
                if file_sha256(local) != f["sha256"]:
                    raise FineTuneError(f"{f['path']} changed since it was validated (sha256 differs)")
        argv = self.argv(request, plan, join(out, "output"))
        with open(join(out, "job.log"), "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "feedback_loop.retrain.run_job", "--job-dir", out, "--", *argv],
                                    cwd=out, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        with open(join(out, "pid"), "w") as fh:
            fh.write(str(proc.pid))
        return {"job_id": plan["job_key"], "status": "running", "pid": proc.pid, "command": argv}

    def retrieve(self, job_id: str) -> dict:
        out = self.job_dir(job_id)
        status = join(out, "status.json")
        if os.path.exists(status):
            with open(status) as fh:
                return json.load(fh)
        pid = _read_pid(out)
        if pid and process_alive(pid):
            return {"status": "running", "pid": pid}
        # The supervisor writes status.json before it exits; gone without one means it was killed.
        return {"status": "failed", "error": "the training process ended without writing status.json"}

    async def aretrieve(self, job_id: str) -> dict:
        return self.retrieve(job_id)

    def cancel(self, job_id: str) -> dict:
        pid = _read_pid(self.job_dir(job_id))
        if pid and process_alive(pid):
            os.killpg(pid, signal.SIGTERM)  # the group we started (start_new_session): nothing else
        return {"status": "cancelled"}


def _read_pid(folder: str) -> int | None:
    try:
        with open(join(folder, "pid")) as fh:
            return int(fh.read().strip())
    except (OSError, ValueError):
        return None


def backend_for(settings: Settings, request: dict, connection=None):
    if request["backend"] == "command":
        return CommandBackend(settings)
    if connection is None:
        return OpenAIBackend(settings.finetune_base_url, settings.finetune_api_key)
    return openai_from_connection(connection)


# ------------------------------------------------------------------------------------------------ steps


def dry_run(settings: Settings, request: dict, plan: dict, run_id: str | None = None, backend=None) -> dict:
    """Record exactly what would be sent, submit nothing."""
    backend = backend or (CommandBackend(settings) if request["backend"] == "command" else
                          OpenAIBackend("https://api.openai.com/v1", "", timeout=60))
    record = new_record(request, plan, run_id)
    record.update(status="dry_run", would_send=backend.plan(request, plan))
    record["history"].append({"at": _now(), "status": "dry_run"})
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
        record["history"] = existing.get("history", []) + [{"at": _now(), "status": "resubmitted",
                                                            "previous_job_id": existing.get("job_id")}]
    write_record(settings, record)  # before submitting: a crash right after leaves a trace
    try:
        job = backend.submit(request, plan)
    except Exception as exc:
        record.update(status="submit_failed", error=str(exc)[:500])
        record["history"].append({"at": _now(), "status": "submit_failed"})
        write_record(settings, record)
        raise
    record["job_id"] = job["job_id"]
    record["submitted_at"] = _now()
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
        record["history"].append({"at": _now(), "status": "timed_out"})
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
