"""What the vendor-pull tests share: reading a pulled raw file, a digest of a day's files, serving stand-ins
under the Airflow connection `acsr_<system>` with ACSR_SOURCES pointing at them, and the checks every pull
must pass (a re-pull is identical, a timeout leaves the day incomplete, no credential in logs or files)."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def gz_lines(path) -> list[dict]:
    """The records of a gzipped JSON Lines file, as pulled."""
    with gzip.open(path, "rt") as fh:
        return [json.loads(x) for x in fh]


def tree_digest(root: Path) -> dict:
    """sha256 of every file below `root` but the manifest (which records when the pull ran)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


@contextmanager
def serving(monkeypatch, system: str) -> Iterator[Callable]:
    """Yield serve(stand_in, connection, **settings_kw) -> (stand_in, Settings), which starts `stand_in` and
    points `acsr_<system>` (from `connection(stand_in)`) and ACSR_SOURCES at it. A fixture yields from inside
    the block: every stand-in started is stopped when the test is over."""
    from feedback_loop.settings import Settings

    started: list = []

    def serve(stand_in, connection: Callable[[object], dict], **settings_kw):
        stand_in = stand_in.start()
        started.append(stand_in)
        monkeypatch.setenv(f"AIRFLOW_CONN_ACSR_{system.upper()}", json.dumps(connection(stand_in)))
        monkeypatch.setenv("ACSR_SOURCES", system)
        return stand_in, Settings.load(**settings_kw)

    try:
        yield serve
    finally:
        for s in started:
            s.stop()


def assert_repull_identical(start: Callable, system: str, day: str, landing: Path, faults: dict) -> None:
    """A second pull of `day` through other faults (429s, 500s, retried) writes the landing files of a clean one."""
    from feedback_loop.sources.systems import pull_system

    _, settings = start()
    pull_system(settings, system, day)
    first = tree_digest(landing)
    _, settings = start(faults=faults)
    pull_system(settings, system, day)
    assert tree_digest(landing) == first


def assert_timeout_leaves_day_incomplete(start: Callable, system: str, day: str, source: str, faults: dict,
                                         match: str = "timed out") -> None:
    """A pull that hangs past its timeout fails, and land refuses `source` for the incomplete day."""
    from feedback_loop.nightly import land
    from feedback_loop.sources.pull import IncompleteDayError, PullError
    from feedback_loop.sources.systems import pull_system

    _, settings = start(faults=faults, sources_timeout_seconds=0.3, sources_max_retries=0)
    with pytest.raises(PullError, match=match):
        pull_system(settings, system, day)
    with pytest.raises(IncompleteDayError):
        land(settings, source, day)


def assert_kept_out(secrets: tuple[str, ...], texts: tuple[str, ...], folder: Path) -> None:
    """None of `secrets` in `texts` (logs, output, error messages) nor in any file below `folder` (a gzip
    file read unzipped)."""
    for text in texts:
        for secret in secrets:
            assert secret not in text
    for p in folder.rglob("*"):
        if p.is_file():
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            for secret in secrets:
                assert secret.encode() not in raw
