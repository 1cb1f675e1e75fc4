"""A real Airflow deployment for tests: scheduler, dag-processor, triggerer and api-server as subprocesses.

Every process is started in its own session (process group) and stopped by that group's id, first with
SIGTERM and then SIGKILL, from a pytest finalizer and an atexit hook, so a failing test never leaves an
Airflow process behind. Nothing here is matched by name.
"""

from __future__ import annotations

import atexit
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
JWT_SECRET = "acsr-integration-tests-only"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, interval: float = 1.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; the value, or TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # noqa: BLE001 - a service still starting answers with errors
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_exc})")


class Processes:
    """Subprocesses started in their own process groups; stop() ends each group it started."""

    def __init__(self):
        self.procs: list[tuple[str, subprocess.Popen]] = []
        atexit.register(self.stop)
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:  # a killed test run still cleans up
            signal.signal(signal.SIGTERM, _exit_on_sigterm)

    def start(self, name: str, cmd: list[str], env: dict, log_dir: Path, cwd: str | None = None):
        log_dir.mkdir(parents=True, exist_ok=True)
        log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - the child owns it until stop()
        proc = subprocess.Popen(cmd, env=env, cwd=cwd or str(ROOT), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check_alive(self, log_dir: Path) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                tail = (log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            _signal_group(proc.pid, signal.SIGKILL)  # leftovers of the group (task processes, workers)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


SCHEDULE_UTC_HOUR = 2  # dags/acsr_nightly.py: CronPartitionTimetable("0 2 * * *", timezone="UTC")


def latest_scheduled_day() -> date:
    """The day of the latest scheduled interval: the nightly runs at 02:00 UTC for the day before, so
    between midnight and 02:00 the latest run is still the one for the day before yesterday."""
    return (datetime.now(UTC) - timedelta(hours=SCHEDULE_UTC_HOUR)).date() - timedelta(days=1)


def cmdline(proc) -> str:
    """A psutil process's command line (its title, for processes that set one); "" once it has ended."""
    import psutil

    try:
        return " ".join(proc.cmdline())
    except psutil.Error:  # ended: a task process that has just finished, a zombie not reaped yet
        return ""


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class AirflowStack:
    """Airflow 3 services on this project, with their own AIRFLOW_HOME, metadata DB and ports."""

    def __init__(self, home: Path, data_dir: Path, *, executor: str = "LocalExecutor",
                 sql_alchemy_conn: str | None = None, extra_env: dict | None = None,
                 services: tuple[str, ...] = ("scheduler", "dag-processor", "triggerer", "api-server")):
        self.home = home
        self.data_dir = data_dir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.services = services
        self.logs = home / "service-logs"
        self.processes = Processes()
        self._token = None
        home.mkdir(parents=True, exist_ok=True)
        (home / "passwords.json").write_text(json.dumps({"admin": "admin"}))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "ACSR_"))}
        env.update({
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__PARALLELISM": "4",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn or f"sqlite:///{home}/airflow.db",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": JWT_SECRET,
            "AIRFLOW__API_AUTH__JWT_EXPIRATION_TIME": "3600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "600",
            # as `make airflow` (scripts/airflow_standalone.sh): LocalExecutor tasks forked from a preloaded forkserver
            "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
            "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": "feedback_loop.airflow_preload",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "ACSR_DATA_DIR": str(data_dir),
            "ACSR_MISSING_SOURCE": "fail",
            "PYTHONUNBUFFERED": "1",
        })
        env.update(extra_env or {})
        self.env = env

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self, pools: dict[str, int] | None = None) -> AirflowStack:
        self.cli("db", "migrate", timeout=600)
        for name, slots in (pools or {"duckdb_warehouse": 1}).items():
            self.cli("pools", "set", name, str(slots), "single writer of the DuckDB warehouse file")
        for service in self.services:
            cmd = [AIRFLOW, service]
            if service == "api-server":
                cmd += ["--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"]
            self.processes.start(service, cmd, self.env, self.logs)
        wait_for(self._healthy, timeout=180, what=f"the api-server on {self.base_url}")
        return self

    def start_worker(self, name: str, cmd: list[str], extra_env: dict | None = None):
        return self.processes.start(name, cmd, {**self.env, **(extra_env or {})}, self.logs)

    def stop(self) -> None:
        self.processes.stop()

    def _healthy(self) -> bool:
        self.processes.check_alive(self.logs)
        with urllib.request.urlopen(f"{self.base_url}/api/v2/monitor/health", timeout=5) as resp:
            return json.loads(resp.read()).get("metadatabase", {}).get("status") == "healthy"

    # --- CLI -------------------------------------------------------------------------------------
    def cli(self, *args: str, timeout: float = 180) -> str:
        out = subprocess.run([AIRFLOW, *args], check=False, env=self.env, cwd=str(ROOT), capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out.stdout

    # --- REST API --------------------------------------------------------------------------------
    def token(self) -> str:
        """A JWT from the SimpleAuthManager's /auth/token, as a REST client logs in."""
        if self._token is None:
            req = urllib.request.Request(
                f"{self.base_url}/auth/token", data=json.dumps({"username": "admin", "password": "admin"}).encode(),
                headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=30) as resp:
                self._token = json.loads(resp.read())["access_token"]
        return self._token

    def api(self, method: str, path: str, body: dict | None = None, *, auth: bool = True,
            raw: bool = False, timeout: float = 60):
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        req = urllib.request.Request(f"{self.base_url}{path}", method=method, headers=headers,
                                     data=json.dumps(body).encode() if body is not None else None)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                data = resp.read()
                return (resp.status, data.decode(errors="replace")) if raw else json.loads(data or b"null")
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")
            if raw:
                return exc.code, detail
            raise RuntimeError(f"{method} {path} -> {exc.code}: {detail}") from exc

    def dag_runs(self, dag_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=-run_after")["dag_runs"]

    def wait_dag_parsed(self, dag_id: str, timeout: float = 180) -> dict:
        def parsed():
            self.processes.check_alive(self.logs)
            status, body = self.api("GET", f"/api/v2/dags/{dag_id}", raw=True)
            return json.loads(body) if status == 200 else None

        return wait_for(parsed, timeout, interval=2, what=f"the dag-processor to parse {dag_id}")

    def wait_runs(self, dag_id: str, run_ids: list[str] | None = None, *, count: int | None = None,
                  timeout: float = 600, allow_failed: bool = False) -> list[dict]:
        """Wait until the named runs (or `count` runs) are finished; fail fast when one fails."""

        def done():
            self.processes.check_alive(self.logs)
            runs = self.dag_runs(dag_id)
            chosen = [r for r in runs if r["dag_run_id"] in run_ids] if run_ids else runs
            if count is not None and len(chosen) < count:
                return None
            if run_ids and len(chosen) < len(run_ids):
                return None
            failed = [r for r in chosen if r["state"] == "failed"]
            if failed and not allow_failed:
                raise AssertionError(f"runs failed: {[r['dag_run_id'] for r in failed]}\n"
                                     + self.failure_logs(dag_id, failed[0]["dag_run_id"]))
            if all(r["state"] in ("success", "failed") for r in chosen):
                return chosen
            return None

        return wait_for(done, timeout, interval=3, what=f"runs of {dag_id} to finish")

    def process(self, name: str):
        """The psutil process of the service (or worker) started as `name`."""
        import psutil

        [proc] = [p for n, p in self.processes.procs if n == name]
        return psutil.Process(proc.pid)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        return self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=200")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1):
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/return_value"
        return self.api("GET", f"{path}?map_index={map_index}&deserialize=true")["value"]

    def failure_logs(self, dag_id: str, run_id: str, limit: int = 3) -> str:
        """The ends of the log files of a run's failed task instances, for assertion messages."""
        out = []
        for path in sorted((self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}").rglob("*.log")):
            text = path.read_text(errors="replace")
            if "error" in text.lower() and len(out) < limit:
                out.append(f"--- {path.relative_to(self.home)}:\n{text[-3000:]}")
        return "\n".join(out) or "(no failed task logs found)"
