"""Run nightly stages in a child process, optionally SIGKILLing it in the middle of its N-th atomic write.

    python tests/hostile/crash.py [--kill MODE:N] DAY STAGE [STAGE ...]

STAGE is `land`, `validate`, `model`, `summarize` or `publish` (land/validate: every source). The
settings come from the environment (ACSR_DATA_DIR, ...), as in a task. Kill modes, at the N-th write
(counting partitions, JSON documents and the warehouse file, in the order the stages make them):

- `before_rename`: the temp file is complete, the rename into place has not happened;
- `half_written`:  the temp file holds only its first half (a crash while bytes were still being written);
- `in_views`:      the warehouse publisher has created N views in its temp database.

The process kills itself with SIGKILL: no `finally` block, no atexit handler runs, as with the OOM killer
or `kill -9` from a supervisor.
"""

from __future__ import annotations

import argparse
import os
import signal

_count = 0


def _hit(n: int) -> bool:
    global _count
    _count += 1
    return _count == n


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _is_tmp(path) -> bool:
    return os.path.basename(str(path)).startswith(".tmp-")


def arm(mode: str, n: int) -> None:
    if mode == "before_rename":
        real_replace = os.replace

        def replace(src, dst, *args, **kwargs):
            if _is_tmp(src) and _hit(n):
                _die()
            return real_replace(src, dst, *args, **kwargs)

        os.replace = replace
    elif mode == "half_written":
        real_fsync = os.fsync

        def fsync(fd):
            path = os.readlink(f"/proc/self/fd/{fd}")
            if _is_tmp(path) and _hit(n):
                os.truncate(path, os.fstat(fd).st_size // 2)
                _die()
            return real_fsync(fd)

        os.fsync = fsync
    elif mode == "in_views":
        from feedback_loop.lake import warehouse

        real_view_sql = warehouse.view_sql

        def view_sql(*args, **kwargs):
            if _hit(n + 1):  # n views exist; die while making the next one
                _die()
            return real_view_sql(*args, **kwargs)

        warehouse.view_sql = view_sql
    else:
        raise SystemExit(f"unknown kill mode {mode}")


def run(day: str, stages: list[str]) -> None:
    from feedback_loop import nightly
    from feedback_loop.ingest import contract
    from feedback_loop.settings import Settings

    settings = Settings.load()
    for stage in stages:
        if stage in ("land", "validate"):
            for source in contract.SOURCE_NAMES:
                getattr(nightly, stage)(settings, source, day)
        elif stage == "model":
            nightly.model(settings, day)
        elif stage == "summarize":
            nightly.summarize(settings, day)
        elif stage == "publish":
            nightly.publish_warehouse(settings)
        else:
            raise SystemExit(f"unknown stage {stage}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--kill", default=None, help="MODE:N")
    parser.add_argument("day")
    parser.add_argument("stages", nargs="+")
    args = parser.parse_args()
    if args.kill:
        mode, n = args.kill.split(":")
        arm(mode, int(n))
    run(args.day, args.stages)
