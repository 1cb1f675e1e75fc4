"""PostgreSQL and Redis from Debian's packages, started by the tests on loopback (the compose deployment's
metadata DB and Celery broker). Each runs in its own process group, stopped by that group's id.

PostgreSQL refuses to run as root: when the tests run as root (CI), the cluster belongs to the `postgres`
system user that Debian's package creates, and its folder is made for that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from airflow_stack import Processes, free_port, wait_for


def postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def redis_bin() -> str | None:
    return shutil.which("redis-server")


class Postgres:
    """A throw-away cluster on 127.0.0.1:<free port> with database `airflow` (trust auth, loopback only)."""

    def __init__(self, processes: Processes, log_dir: Path):
        bindir = postgres_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL is not installed (scripts/ci_system_deps.sh postgresql)")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="acsr-pg-"))
        data = self.root / "data"
        user = None
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)

        def as_owner(cmd: list[str]) -> list[str]:
            return ["runuser", "-u", "postgres", "--", *cmd] if user else cmd

        subprocess.run(as_owner([str(bindir / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust",
                                 "-E", "UTF8", "--no-sync"]), check=True, capture_output=True)
        self.proc = processes.start("postgres", as_owner([
            str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(self.port),
            "-k", str(self.root), "-c", "fsync=off", "-c", "max_connections=200"]), dict(os.environ), log_dir)
        psql = [str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "airflow", "-d", "postgres"]
        wait_for(lambda: subprocess.run([*psql, "-c", "select 1"], check=False, capture_output=True).returncode == 0, 60,
                 interval=0.5, what="PostgreSQL to accept connections")
        subprocess.run([*psql, "-c", "CREATE DATABASE airflow"], check=True, capture_output=True)
        self.url = f"postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"
        # SQLAlchemy 2.1 defaults postgresql:// to psycopg 3: name the installed driver.
        self.celery_result_backend = f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.port}/airflow"

    def cleanup(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


class Redis:
    def __init__(self, processes: Processes, log_dir: Path):
        binary = redis_bin()
        if binary is None:
            raise RuntimeError("Redis is not installed (scripts/ci_system_deps.sh redis-server)")
        self.port = free_port()
        self.proc = processes.start("redis", [binary, "--bind", "127.0.0.1", "--port", str(self.port),
                                              "--save", "", "--appendonly", "no"], dict(os.environ), log_dir)
        wait_for(lambda: subprocess.run([shutil.which("redis-cli") or "redis-cli", "-p", str(self.port), "ping"], check=False,
                                        capture_output=True, text=True).stdout.strip() == "PONG",
                 30, interval=0.3, what="Redis to answer PING")
        self.url = f"redis://127.0.0.1:{self.port}/0"
