"""The README, run as a newcomer types it (issue 14): the shell commands of its Quickstart and "Operating it"
sections, extracted from README.md itself so they cannot drift, run one by one in a scratch copy of the
project (the files git would check out, the venv linked, nothing activated, the venv's bin/ not on PATH,
HOME a scratch folder) against a real `make airflow` on a free port, which is then stopped as Ctrl-C does.

Only two substitutions: `make airflow` gets `PORT=<free port>` and `localhost:8080` becomes that port.
Every extracted command must be either run and checked here or skipped with its reason (SKIPPED): a new
command in those sections fails this test until someone says what it should do.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from airflow_stack import ROOT, free_port, wait_for

SECTIONS = ("Quickstart", "Operating it")
# Commands of those sections this test does not run, and why (each must still be in the README).
SKIPPED = {
    "make demo": "about 9.5 minutes of dag.test() nights; its output is checked by tests/suite/test_demo_progress.py",
    "make test": "this test is part of it",
}


# --- the README --------------------------------------------------------------------------------------------

def readme_commands(text: str, sections: tuple[str, ...] = SECTIONS) -> list[str]:
    """The commands of the ```bash blocks under the `## ` headings that start with one of `sections`, in
    order; continuation lines joined, comment-only lines dropped (trailing comments are left to bash)."""
    commands, current, in_block, keep = [], "", False, False
    for line in text.splitlines():
        if not in_block and line.startswith("## "):
            keep = line[3:].startswith(sections)
        elif line.strip().startswith("```"):
            in_block = not in_block and keep and line.strip() in ("```bash", "```sh")
        elif in_block:
            if current:
                line = current + " " + line.strip()
            if line.rstrip().endswith("\\") and "#" not in line:
                current = line.rstrip()[:-1].rstrip()
                continue
            current = ""
            if line.strip() and not line.strip().startswith("#"):
                commands.append(line.strip())
    return commands


def code_of(command: str) -> str:
    """The command without its trailing comment (a `#` after a space, outside quotes)."""
    out, quote = [], None
    for i, ch in enumerate(command):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or command[i - 1].isspace()):
            break
        out.append(ch)
    return "".join(out).rstrip()


def test_the_extraction_reads_blocks_continuations_and_comments():
    text = ("## Quickstart\n```bash\nmake demo   # the demo\n# only a comment\ncurl -X POST x \\\n"
            "     -d '{\"a\": 1}'   # a 'quoted' comment\n```\n## Other\n```bash\nnot this\n```\n"
            "## Operating it: more\nprose `not code`\n```bash\nexport A=$PWD/x   # here\n```\n")
    cmds = readme_commands(text)
    assert cmds == ["make demo   # the demo", "curl -X POST x -d '{\"a\": 1}'   # a 'quoted' comment",
                    "export A=$PWD/x   # here"]
    assert [code_of(c) for c in cmds] == ["make demo", "curl -X POST x -d '{\"a\": 1}'", "export A=$PWD/x"]


# --- the scratch project --------------------------------------------------------------------------------------

def scratch_copy(dest: Path) -> Path:
    """The files a clone would have (tracked and new, not ignored), mtimes in the past so make's venv target
    is up to date, and .venv linked to this checkout's venv."""
    venv = Path(sys.executable).parent.parent
    assert (venv / "bin" / "activate").exists(), f"{venv} has no bin/activate: make would rebuild the venv"
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(".venv"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    past = time.time() - 10 * 365 * 86400
    for path in dest.rglob("*"):
        os.utime(path, (past, past))
    (dest / ".venv").symlink_to(venv)
    return dest


def newcomer_env(project: Path) -> dict:
    """A fresh shell: no AIRFLOW_*/ACSR_* variable (but the log-server ports), no venv on PATH, HOME a scratch
    folder."""
    venv_bins = {str(Path(sys.executable).parent), str(Path(sys.executable).resolve().parent)}
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIRFLOW", "ACSR_", "VIRTUAL_ENV", "PYTEST", "MAKE")) and k != "MFLAGS"}
    env["PATH"] = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p not in venv_bins)
    env["HOME"] = str(project.parent / "home")
    env["PYTHONPATH"] = str(project / "include")  # the copy's code, not the checkout the venv was installed from
    env["PYTHONUNBUFFERED"] = "1"
    # Not the newcomer's business but this machine's: another Airflow (the suite's shared stack, a colleague's)
    # may hold the default log-server ports.
    env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(free_port())
    env["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] = str(free_port())
    Path(env["HOME"]).mkdir(exist_ok=True)
    return env


class Shell:
    """Runs README commands one at a time in the scratch project, carrying `export`/assignments along."""

    def __init__(self, project: Path, env: dict, port: int):
        self.project, self.env, self.port = project, env, port

    def adapt(self, command: str) -> str:
        return code_of(command).replace("make airflow", f"make airflow PORT={self.port}").replace(
            "localhost:8080", f"localhost:{self.port}")

    def run(self, command: str, timeout: float = 600) -> str:
        code = self.adapt(command)
        assign = re.match(r"^(?:export\s+)?([A-Z_][A-Z0-9_]*)=", code)
        script = f"{code}\nprintf '\\n__VALUE__%s' \"${assign.group(1)}\"" if assign else code
        out = subprocess.run(["bash", "-euo", "pipefail", "-c", script], check=False, cwd=self.project,
                             env=self.env, capture_output=True, text=True, timeout=timeout)
        assert out.returncode == 0, f"`{command}` failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
        if assign:
            out_text, value = out.stdout.rsplit("__VALUE__", 1)
            assert value, f"`{command}` left {assign.group(1)} empty:\n{out.stderr[-2000:]}"
            self.env[assign.group(1)] = value
            return out_text
        return out.stdout + out.stderr


class MakeAirflow:
    """`make airflow` in its own process group, as in a terminal; stop() sends SIGINT to the group (Ctrl-C)."""

    def __init__(self, shell: Shell, command: str):
        self.log = shell.project.parent / "make-airflow.log"
        self.proc = subprocess.Popen(
            ["bash", "-c", shell.adapt(command)], cwd=shell.project, env=shell.env, stdout=open(self.log, "wb"),  # noqa: SIM115
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            # a terminal's job gets Ctrl-C; a pytest-xdist worker may ignore SIGINT, which children inherit
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509 - resets one signal
        self.base = f"http://localhost:{shell.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def alive(self):
        """make airflow and each of its components still run (standalone itself goes on when one dies)."""
        assert self.proc.poll() is None, f"make airflow exited ({self.proc.returncode}):\n{self.output()[-4000:]}"
        running = subprocess.run(["ps", "-o", "stat=,args=", "-g", str(self.proc.pid)], check=False,
                                 capture_output=True, text=True).stdout.splitlines()
        running = [line.split(None, 1)[1] for line in running if not line.startswith("Z") and " " in line]
        if any("airflow standalone" in a for a in running):
            for name in ("scheduler", "dag-processor", "triggerer"):
                if self.started(name):
                    assert any(f"airflow {name}" in a for a in running), (
                        f"the {name} of make airflow died:\n" + "\n".join(
                            line for line in self.output().splitlines() if line.startswith(name))[-4000:])

    def started(self, name: str) -> bool:
        return f"{name} " in self.output() and "Airflow is ready" in self.output()

    def group_alive(self) -> bool:
        try:
            os.killpg(self.proc.pid, 0)
            return True
        except ProcessLookupError:
            return False

    def stop(self) -> list[str]:
        """Ctrl-C; then what was still running after a minute (killed)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            wait_for(lambda: self.proc.poll() is not None and not self.group_alive(), 90, interval=1,
                     what="make airflow to stop on Ctrl-C")  # poll() reaps make: a zombie still owns its group
            return []
        except TimeoutError:
            left = subprocess.run(["ps", "-o", "pid,args", "-g", str(self.proc.pid)], check=False, capture_output=True,
                                  text=True).stdout
            os.killpg(self.proc.pid, signal.SIGKILL)
            return left.splitlines()[1:]


def http(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, str]:
    """(status, body); a timeout or refused connection is tried again (2 cores shared with the whole suite)."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, method=method, headers=headers,
                                 data=json.dumps(body).encode() if body is not None else None)
    for attempt in range(4):
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")
        except (TimeoutError, ConnectionError, urllib.error.URLError):
            if attempt == 3 or method != "GET":
                raise
            time.sleep(5)
    raise AssertionError("unreachable")


# --- the test -------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    return scratch_copy(tmp_path_factory.mktemp("readme") / "acsr")


def test_every_readme_command_works_as_written(project):
    commands = readme_commands((project / "README.md").read_text())
    for skipped in SKIPPED:
        assert any(code_of(c).startswith(skipped) for c in commands), f"{skipped} is no longer in the README"
    port = free_port()
    shell = Shell(project, newcomer_env(project), port)
    stack: MakeAirflow | None = None
    seen: list[str] = []
    token = None
    try:
        for command in commands:
            code = code_of(command)
            if any(code.startswith(s) for s in SKIPPED):
                continue
            seen.append(code)
            if code.startswith("make airflow"):
                stack = MakeAirflow(shell, command)
                token = _airflow_is_up_with_the_printed_login(stack)
            elif code.startswith(".venv/bin/acsr-sample generate"):
                shell.run(command)
                assert list((project / ".data" / "landing").glob("*/dt=*")), "no landing data generated"
            elif re.match(r"^export AIRFLOW_HOME=", code):
                shell.run(command)
                assert shell.env["AIRFLOW_HOME"] == str(project / ".data" / "airflow")
            elif code.startswith(".venv/bin/airflow dags unpause"):
                dag = code.split()[-1]
                shell.run(command, timeout=300)
                _, body = http("GET", f"{stack.base}/api/v2/dags/{dag}", token=token)
                assert json.loads(body)["is_paused"] is False
            elif code.startswith(".venv/bin/airflow backfill create"):
                _backfill_finishes(shell, stack, token, command)
            elif code.startswith(".venv/bin/airflow dags trigger"):
                _trigger_finishes(shell, stack, token, command)
            elif code.startswith("TOKEN="):
                shell.run(command)
                status, _ = http("GET", f"{stack.base}/api/v2/dags", token=shell.env["TOKEN"])
                assert status == 200, "the README's token is not accepted"
            elif code.startswith("curl"):
                _curl(shell, stack, command)
            else:
                pytest.fail(f"the README test does not know what `{command}` should do: add it here")
        assert stack is not None, "the README no longer starts Airflow"
        flows = {"make airflow", "dags unpause", "backfill create", "dags trigger", "TOKEN=", "dagRuns"}
        missing = [f for f in flows if not any(f in s for s in seen)]
        assert not missing, f"the README's operating section no longer shows {missing}"
    finally:
        left = stack.stop() if stack else []
    assert not left, f"processes still running a minute after Ctrl-C: {left}"
    assert "Shutting down components" in stack.output()
    assert not (Path(shell.env["HOME"]) / "airflow").exists(), "a command used ~/airflow, not the project's home"


def _airflow_is_up_with_the_printed_login(stack: MakeAirflow) -> str:
    def banner():
        stack.alive()
        return re.search(r"Airflow UI: (\S+)\s+login: (\S+) / (\S+)", stack.output())

    m = wait_for(banner, 300, interval=1, what="make airflow's URL and login line")
    url, user, password = m.groups()
    assert url == stack.base

    def healthy():
        stack.alive()
        status, body = http("GET", f"{url}/api/v2/monitor/health")
        doc = json.loads(body) if status == 200 else {}
        return all(doc.get(c, {}).get("status") == "healthy"
                   for c in ("metadatabase", "scheduler", "triggerer", "dag_processor")) and doc

    wait_for(healthy, 600, interval=3, what=f"every component healthy at {url}/api/v2/monitor/health")
    status, body = http("POST", f"{url}/auth/token", {"username": user, "password": password})
    assert status in (200, 201), f"the printed login {user} / {password} was refused: {body}"
    token = json.loads(body)["access_token"]
    assert http("POST", f"{url}/auth/token", {"username": user, "password": password + "x"})[0] == 401

    def parsed():
        stack.alive()
        return http("GET", f"{url}/api/v2/dags/acsr_nightly", token=token)[0] == 200

    wait_for(parsed, 300, interval=3, what="the nightly DAG to be parsed")
    status, page = http("GET", f"{url}/flywheel/", token=token)
    assert status == 200 and "ACSR Flywheel" in page
    assert http("GET", f"{url}/flywheel/")[0] == 401
    return token


def _backfill_finishes(shell: Shell, stack: MakeAirflow, token: str, command: str) -> None:
    args = shlex.split(code_of(command))
    dag = args[args.index("--dag-id") + 1]
    before = {b["id"] for b in json.loads(http("GET", f"{stack.base}/api/v2/backfills?dag_id={dag}", token=token)[1])
              ["backfills"]}
    shell.run(command, timeout=300)
    backfills = json.loads(http("GET", f"{stack.base}/api/v2/backfills?dag_id={dag}", token=token)[1])["backfills"]
    [new] = [b for b in backfills if b["id"] not in before]

    def completed():
        stack.alive()
        doc = json.loads(http("GET", f"{stack.base}/api/v2/backfills/{new['id']}", token=token)[1])
        return doc if doc["completed_at"] else None

    wait_for(completed, 1200, interval=5, what=f"backfill {new['id']} ({command}) to complete")
    _, body = http("GET", f"{stack.base}/api/v2/dags/{dag}/dagRuns?limit=100", token=token)
    runs = [r for r in json.loads(body)["dag_runs"] if r["run_type"] == "backfill"
            and r["queued_at"] and r["queued_at"] >= new["created_at"]]
    days = sorted(r["partition_key"] for r in runs)
    first = args[args.index("--from-date") + 1][:10]
    last = args[args.index("--to-date") + 1][:10]
    assert days and days[0] == first and days[-1] == last, (command, days)
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], r["state"]) for r in runs]
    for day in days:
        assert (shell.project / ".data" / "lake" / "runs" / f"dt={day}" / "summary.json").is_file()


def _trigger_finishes(shell: Shell, stack: MakeAirflow, token: str, command: str) -> None:
    args = shlex.split(code_of(command))
    dag = args[args.index("trigger") + 1]
    conf = json.loads(args[args.index("--conf") + 1]) if "--conf" in args else {}
    shell.run(command, timeout=300)
    status, body = http("GET", f"{stack.base}/api/v2/dags/{dag}/dagRuns?limit=100&order_by=-id", token=token)
    assert status == 200, body  # order_by takes the API's own sort fields (id, run_after, ...), not queued_at
    run = next(r for r in json.loads(body)["dag_runs"] if r["run_type"] == "manual" and r["conf"] == conf)

    def finished():
        stack.alive()
        doc = json.loads(http("GET", f"{stack.base}/api/v2/dags/{dag}/dagRuns/{run['dag_run_id']}", token=token)[1])
        return doc if doc["state"] in ("success", "failed") else None

    done = wait_for(finished, 900, interval=5, what=f"the run of `{command}`")
    assert done["state"] == "success", f"`{command}` -> {done['state']}"
    if "date" in conf:
        xcom = (f"{stack.base}/api/v2/dags/{dag}/dagRuns/{run['dag_run_id']}/taskInstances/resolve_day/"
                "xcomEntries/return_value?deserialize=true")
        assert json.loads(http("GET", xcom, token=token)[1])["value"] == conf["date"]


def _curl(shell: Shell, stack: MakeAirflow, command: str) -> None:
    out = shell.run(command, timeout=120)
    code = code_of(command)
    if "/api/v2/monitor/health" in code:
        assert json.loads(out)["scheduler"]["status"] == "healthy"
    elif "/flywheel/api/sections" in code:
        sections = json.loads(out)
        assert sections["kb_gaps"]["status"] == "ok" and sections["action_queue"]["status"] == "ok", sections
    elif "/dagRuns" in code and "-w" in shlex.split(code):
        # a refused conf: the README shows the HTTP status after the body (-w '\n%{http_code}')
        body, status = out.rstrip().rsplit("\n", 1)
        assert status == "400", out
        assert "Invalid input for param promotion_policy" in body and "'sometimes' is not one of" in body, body
    elif "/dagRuns" in code:
        run = json.loads(out)
        sent = json.loads(shlex.split(code)[shlex.split(code).index("-d") + 1])
        assert run["conf"] == sent["conf"] and run["state"] == "queued", run
    else:
        pytest.fail(f"the README test does not know what `{command}` should show: add it here")
