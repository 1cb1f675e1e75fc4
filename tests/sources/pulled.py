"""What the vendor-pull tests share: reading a pulled raw file, a digest of a day's files, and serving a stand-in
under the Airflow connection `acsr_<system>` with ACSR_SOURCES pointing at it."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Callable
from pathlib import Path


def gz_lines(path) -> list[dict]:
    """The records of a gzipped JSON Lines file, as pulled."""
    with gzip.open(path, "rt") as fh:
        return [json.loads(x) for x in fh]


def tree_digest(root: Path) -> dict:
    """sha256 of every file below `root` but the manifest (which records when the pull ran)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "manifest.json"}


def serve(monkeypatch, started: list, system: str, stand_in, connection: Callable[[object], dict], **settings_kw):
    """Start `stand_in`, point `acsr_<system>` (from `connection(stand_in)`) and ACSR_SOURCES at it; return
    (stand_in, Settings). The fixture stops everything in `started` at teardown."""
    from feedback_loop.settings import Settings

    stand_in = stand_in.start()
    started.append(stand_in)
    monkeypatch.setenv(f"AIRFLOW_CONN_ACSR_{system.upper()}", json.dumps(connection(stand_in)))
    monkeypatch.setenv("ACSR_SOURCES", system)
    return stand_in, Settings.load(**settings_kw)
