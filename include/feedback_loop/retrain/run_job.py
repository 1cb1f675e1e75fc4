"""Supervise one local training command: run it, then write `<job dir>/status.json` with how it ended.

    python -m feedback_loop.retrain.run_job --job-dir DIR -- <command ...>

Started detached by the command backend (its own session), so the Airflow task that launched it can
defer and free its worker slot; the trigger polls status.json. SIGTERM (a cancel or a timeout) is passed
on to the command and recorded as `cancelled`. If the command writes `<output>/result.json`, its `model`,
`trained_tokens` and `metrics` become the job's result.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write(path: str, doc: dict) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(doc, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--job-dir", required=True)
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    status_path = os.path.join(args.job_dir, "status.json")
    started = _now()
    proc = subprocess.Popen(cmd, cwd=args.job_dir)
    cancelled = []

    def on_term(signum, frame):
        cancelled.append(signum)
        proc.terminate()

    signal.signal(signal.SIGTERM, on_term)
    code = proc.wait()
    doc = {"status": "cancelled" if cancelled else ("succeeded" if code == 0 else "failed"), "exit_code": code,
           "started_at": started, "finished_at": _now(), "command": cmd}
    result = os.path.join(args.job_dir, "output", "result.json")
    if code == 0 and os.path.exists(result):
        with open(result) as fh:
            r = json.load(fh)
        doc.update(result_model=r.get("model"), trained_tokens=r.get("trained_tokens"), metrics=r.get("metrics"))
    elif code != 0 and not cancelled:
        doc["error"] = f"the training command exited with code {code} (see job.log)"
    _write(status_path, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
