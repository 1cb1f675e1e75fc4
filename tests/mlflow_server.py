"""A real MLflow tracking server for tests: `mlflow server` from this venv (mlflow-skinny ships the command,
and Airflow already brings its Flask/FastAPI/uvicorn/SQLAlchemy/alembic), run exactly as docker-compose.yaml's
`mlflow` service runs it (tests/test_compose.py compares the two), with its artifacts proxied to an S3 bucket.

Started in its own process group and stopped by that group's id (also at exit, and at the end of a `with`
block: a fixture yields from inside one).
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Self

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
ARTIFACTS = "s3://acsr-mlflow/artifacts"


def server_args(*, host: str, port: int, backend_store_uri: str, artifacts_destination: str,
                allowed_hosts: str) -> list[str]:
    """The arguments of `mlflow server` for this project: one uvicorn worker, the registry in the backend
    store, artifacts proxied by the server to the object store (clients need no S3 credentials)."""
    return ["server", f"--host={host}", f"--port={port}", "--workers=1", f"--backend-store-uri={backend_store_uri}",
            "--serve-artifacts", f"--artifacts-destination={artifacts_destination}", f"--allowed-hosts={allowed_hosts}"]


class MLflowServer:
    def __init__(self, root: Path, s3_env: dict, artifacts_destination: str = ARTIFACTS, timeout: float = 240):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        args = server_args(host="127.0.0.1", port=self.port, backend_store_uri=f"sqlite:///{root}/mlflow.db",
                           artifacts_destination=artifacts_destination,
                           allowed_hosts=f"127.0.0.1:{self.port},localhost:{self.port}")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "ACSR_"))}
        # The server writes artifacts with boto3: the S3 stand-in's endpoint and credentials.
        env.update(s3_env, MLFLOW_S3_ENDPOINT_URL=s3_env["AWS_ENDPOINT_URL"],
                   MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        log = open(root / "mlflow-server.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([MLFLOW, *args], cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        atexit.register(self.stop)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if urllib.request.urlopen(f"{self.uri}/health", timeout=3).read().strip() == b"OK":
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = (root / "mlflow-server.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"mlflow server did not start:\n{tail}")
            time.sleep(1)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
