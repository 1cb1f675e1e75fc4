"""The fine-tuning backends a job is submitted to: an OpenAI-compatible API over HTTP, or a local command.

Both answer `plan` (what would be sent, for a dry run), `submit`, `retrieve` / `aretrieve` (the trigger polls
with the async one) and `cancel`; `backend_for` picks one for a request (docs in `feedback_loop.retrain.finetune`).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

from feedback_loop.lake.files import file_sha256, filesystem_for, is_remote, join, process_alive
from feedback_loop.retrain import store
from feedback_loop.retrain.finetune_jobs import JOBS, TERMINAL
from feedback_loop.settings import Settings

DEFAULT_COMMAND = ("{python} -m feedback_loop.retrain.train_command --train {train_file} "
                   "--validation {validation_file} --output {output_dir} --base-model {base_model}")


class FineTuneError(RuntimeError):
    """A job that cannot be submitted, or one that failed, was cancelled or timed out."""


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
