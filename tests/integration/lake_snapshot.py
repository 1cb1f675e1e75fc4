"""What a nightly run wrote for one day, as comparable values: the contents of every Parquet partition
of the day (order-independent) and its JSON run documents."""

from __future__ import annotations

import json
from pathlib import Path

# Pointers to per-attempt artefacts (a GX validation result is stored under its run time): they name a
# new file on every run by design, so they are left out of the comparison.
VOLATILE_KEYS = {"result_json"}

# Outputs that depend on the loop's state at the time of the run rather than on the day's data: the
# nightly retraining decision reads the latest relabel dataset version and the current champion, so
# re-running an earlier day after later days gives another decision (see the issue 7 notes). They are
# checked to exist, not to be identical.
STATE_DEPENDENT = ("marts/retrain_decisions/", "/retrain_decision.json")


def state_dependent(path: str) -> bool:
    return any(marker in path for marker in STATE_DEPENDENT)


# What one attempt did: the dataset stage's run note says whether this attempt published a version or
# found the same content-addressed version published already (another status, reason, set of keys). What
# the day produced is compared: each dataset's version id, example count and window.
def _dataset_outputs(doc: dict) -> dict:
    return {"window": doc.get("window"),
            "datasets": {name: {k: d.get(k) for k in ("version", "examples", "window_end")}
                         for name, d in (doc.get("datasets") or {}).items()}}


NORMALISE = {"datasets.json": _dataset_outputs}


def _strip(doc):
    if isinstance(doc, dict):
        return {k: _strip(v) for k, v in doc.items() if k not in VOLATILE_KEYS}
    if isinstance(doc, list):
        return [_strip(v) for v in doc]
    return doc


def parquet_digest(con, path: Path) -> tuple[int, str]:
    """(row count, digest of the sorted rows): equal for equal contents whatever the row order."""
    return con.execute(
        f"SELECT count(*), md5(coalesce(string_agg(h, ',' ORDER BY h), '')) FROM "
        f"(SELECT md5(t::VARCHAR) AS h FROM read_parquet('{path}', hive_partitioning=false) t)"
    ).fetchone()


def day_outputs(lake: Path, day: str) -> dict[str, object]:
    """Every partition and run document of `day` under `lake`, by path relative to the lake."""
    import duckdb

    con = duckdb.connect()
    out: dict[str, object] = {}
    for path in sorted(lake.rglob(f"dt={day}/**/*")):
        if not path.is_file() or path.name.startswith("."):
            continue
        rel = str(path.relative_to(lake))
        if path.suffix == ".parquet":
            out[rel] = parquet_digest(con, path)
        elif path.suffix == ".json":
            out[rel] = _strip(NORMALISE.get(path.name, lambda d: d)(json.loads(path.read_text())))
    con.close()
    return out


def mtimes(lake: Path, day: str) -> dict[str, int]:
    return {str(p.relative_to(lake)): p.stat().st_mtime_ns for p in lake.rglob(f"dt={day}/**/*.parquet")}
