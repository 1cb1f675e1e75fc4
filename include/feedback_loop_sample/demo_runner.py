"""Run the nightly DAG through Airflow for given days, in this process (`dag.test()`), as the demo does.

`make demo` used to print every task's Airflow log (about 3,300 lines) before its summary. Here the logs
of the runs go to a file (`logs_to_file`: the process's stdout and stderr descriptors, so task output,
Airflow's loggers and child processes all land there) and the terminal gets one progress line per day
(`DemoProgress`, an Airflow listener told of each task as it finishes); a failed task prints its error and
the end of its log on the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

from airflow.listeners import hookimpl

EXCERPT_LINES = 15


def load_dag(dag_id: str = "acsr_nightly"):
    from airflow.dag_processing.dagbag import DagBag
    from feedback_loop.settings import PROJECT_ROOT

    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", str(PROJECT_ROOT / "dags"))
    bag = DagBag(dag_folder=folder)
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    return bag.get_dag(dag_id)


def mask_secrets_in_logs() -> None:
    """Log through the Task SDK's logging, whose processors redact every secret the masker knows.

    Tasks run by a scheduler log through their supervisor, which masks connection passwords, sensitive
    extra fields and whatever was passed to `mask_secret`. dag.test() runs them in this process with the
    logging the `airflow` import set up, which does not mask (a fine-tuning API key was printed in clear):
    configure the SDK's logging (cached: calling it again is free). docs/reliability.md."""
    from airflow.sdk.log import configure_logging

    configure_logging()


@contextlib.contextmanager
def logs_to_file(path: Path) -> Iterator[TextIO]:
    """Send file descriptors 1 and 2 to `path` (appending) and yield a stream to the real terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    terminal = os.fdopen(os.dup(saved[0]), "w", buffering=1)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for d in saved:
            os.close(d)
        terminal.close()


class DemoProgress:
    """One line per day (or DAG run) listing its stages as they finish, with their seconds.

    On a terminal the line is rewritten as each stage finishes; elsewhere (a pipe, CI) it is printed once,
    when the run ends. A task that fails prints its error and the last lines it logged (from the log file)."""

    def __init__(self, out: TextIO, log_path: Path | None):
        self.out, self.log_path = out, log_path
        self.live = out.isatty()
        self.label = ""
        self.stages: dict[str, list] = {}  # task_id -> [map indexes seen, seconds, failed]
        self.started: dict[tuple, tuple[float, int]] = {}
        self.failures: list[str] = []
        self.t0 = time.monotonic()

    # --- runs ----------------------------------------------------------------------------------------
    def begin(self, label: str) -> None:
        self.label, self.stages, self.failures, self.t0 = label, {}, [], time.monotonic()
        if self.live:
            self.out.write(f"[demo] {label}  starting...")
            self.out.flush()

    def end(self, state: str) -> None:
        if self.live:
            self.out.write("\r\033[K")
        self.out.write(f"{self._line(state)}\n")
        self.out.flush()

    def _line(self, state: str) -> str:
        """One line a person can read at a glance: the stages that took a second or more, failed or fanned
        out (land×6), and how many others finished in under a second (the full timings are in the log)."""
        shown = [(tid, n, sec, failed) for tid, (n, sec, failed) in self.stages.items()
                 if round(sec) >= 1 or failed or len(n) > 1]
        quick = len(self.stages) - len(shown)
        stages = " · ".join(f"{tid}{'×' + str(len(n)) if len(n) > 1 else ''} {sec:.0f}s{' FAILED' if failed else ''}"
                            for tid, n, sec, failed in shown)
        if quick:
            stages += f"{' · ' if shown else ''}{quick} more under 1s"
        return f"[demo] {self.label}  {state} in {time.monotonic() - self.t0:.0f}s  {stages}"

    # --- Airflow listener hooks (called in this process by dag.test()'s task runner) -----------------
    @hookimpl
    def on_task_instance_running(self, previous_state, task_instance):
        self.started[self._key(task_instance)] = (time.monotonic(), self._log_size())

    @hookimpl
    def on_task_instance_success(self, previous_state, task_instance):
        self._finished(task_instance, failed=False)

    @hookimpl
    def on_task_instance_skipped(self, previous_state, task_instance):
        self._finished(task_instance, failed=False)

    @hookimpl
    def on_task_instance_failed(self, previous_state, task_instance, error):
        offset = self._finished(task_instance, failed=True)
        index = getattr(task_instance, "rendered_map_index", None) or getattr(task_instance, "map_index", -1)
        name = task_instance.task_id + (f"[{index}]" if index not in (None, -1) else "")
        lines = [f"[demo] {self.label}: task {name} failed: {error}"]
        excerpt = self._log_since(offset)
        if excerpt:
            lines.append(f"[demo] last {len(excerpt)} lines of its log (all of it: {self.log_path}):")
            lines += ["    " + x for x in excerpt]
        if self.live:
            self.out.write("\r\033[K")
        self.out.write("\n".join(lines) + "\n")
        self.out.flush()
        self.failures.append(name)

    def _key(self, ti) -> tuple:
        return ti.task_id, getattr(ti, "map_index", -1)

    def _finished(self, ti, failed: bool) -> int:
        began, offset = self.started.pop(self._key(ti), (time.monotonic(), 0))
        stage = self.stages.setdefault(ti.task_id, [set(), 0.0, False])
        stage[0].add(getattr(ti, "map_index", -1))  # a retry is the same instance again
        stage[1] += time.monotonic() - began
        stage[2] = stage[2] or failed
        if self.live:
            self.out.write("\r\033[K" + self._line("running")[: os.get_terminal_size(self.out.fileno()).columns - 1])
            self.out.flush()
        return offset

    def _log_size(self) -> int:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            return self.log_path.stat().st_size if self.log_path else 0
        except OSError:
            return 0

    def _log_since(self, offset: int) -> list[str]:
        if not self.log_path:
            return []
        sys.stdout.flush()
        sys.stderr.flush()
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            text = fh.read().decode(errors="replace")
        return excerpt(text)


def excerpt(text: str, lines: int = EXCERPT_LINES) -> list[str]:
    """The last lines a task logged, without the traceback's frames (the error itself stays)."""
    kept, skip_code = [], False
    for line in text.splitlines():
        stripped = line.strip()
        if skip_code:
            skip_code = False
            continue
        if stripped.startswith('File "'):
            skip_code = True  # the frame's source line follows
            continue
        if not stripped or set(stripped) <= set("^~ "):
            continue
        kept.append(line)
    return kept[-lines:]


@contextlib.contextmanager
def listening(progress: DemoProgress) -> Iterator[DemoProgress]:
    from airflow.sdk.listener import get_listener_manager

    manager = get_listener_manager()
    manager.add_listener(progress)
    try:
        yield progress
    finally:
        manager.pm.unregister(progress)


def run_dag(dag, progress: DemoProgress | None, label: str, **test_kwargs) -> str:
    """dag.test() with its progress line; an exception outside the tasks counts as a failed run."""
    if progress:
        progress.begin(label)
    try:
        run = dag.test(**test_kwargs)
        state = str(getattr(run, "state", run))
    except Exception as exc:
        logging.getLogger(__name__).exception("dag.test() of %s failed", label)
        state = f"error ({type(exc).__name__}: {exc})"
    if progress:
        progress.end(state)
    else:
        print(f"[demo] {label}: {state}", flush=True)
    return state


def run_nightly_dag_for_days(days: list[str], dag_id: str = "acsr_nightly",
                             progress: DemoProgress | None = None) -> dict[str, str]:
    """dag.test() once per day with the day in the run's conf; returns {day: final state}."""
    mask_secrets_in_logs()
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    dag = load_dag(dag_id)
    # Airflow 3.3.2's dag.test() passes DeadlineAlert objects where the scheduler passes their ids
    # (DagRun.update_state -> DeadlineAlertModel.get_by_id) and crashes on success. Deadlines only mean
    # something to a running scheduler, so the in-process test run goes without them.
    dag.deadline = None
    states = {}
    for d in days:
        logical = datetime.fromisoformat(d).replace(tzinfo=UTC)
        states[d] = run_dag(dag, progress, f"{dag_id} {d}", logical_date=logical, run_conf={"date": d})
    return states
