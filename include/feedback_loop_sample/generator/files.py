"""The landing files: layout per source and format, the malformed rows planted (with their ground truth)
and `_Writer`, which writes a source's day.
"""

from __future__ import annotations

import csv
import io
import json
import os
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
from feedback_loop.ingest.contract import SOURCE_NAMES, SOURCES

from feedback_loop_sample.generator.common import GZIP_LEVEL, S_MAL, WRITE_SLICE, _rng, _ymd

# ----------------------------------------------------------------------------- malformed rows

KINDS = {  # which planted defects make sense for each source (invalid_json only in JSON Lines files)
    "agent_events": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                     "ts_out_of_interval", "duplicate_id", "unknown_conversation"),
    "crm_cases": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                  "ts_out_of_interval", "duplicate_id"),
    "surveys": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                "ts_out_of_interval", "duplicate_id", "unknown_case"),
    "overrides": ("null_required", "bad_value", "out_of_range", "bad_type", "invalid_json", "ts_no_offset",
                  "ts_out_of_interval", "duplicate_id", "unknown_conversation", "incomplete_triad"),
    "outcome_checks": ("null_required", "bad_type", "invalid_json", "ts_no_offset", "ts_out_of_interval",
                       "duplicate_id", "unknown_case"),
    "kb_articles": ("null_required", "bad_value", "invalid_json", "duplicate_id"),
}
_NULL_FIELD = {"agent_events": "customer_id", "crm_cases": "customer_id", "surveys": "score",
               "overrides": "reviewer_id", "outcome_checks": "action", "kb_articles": "title"}
_BAD_VALUE = {"agent_events": ("event_type", "message_sent"), "crm_cases": ("status", "resolved"),
              "surveys": ("kind", "nps"), "overrides": ("stage", "routing"), "kb_articles": ("status", "deleted")}
_BAD_TYPE = {"agent_events": ("turn", "three"), "crm_cases": ("reopen_count", "two"), "surveys": ("score", "five"),
             "overrides": ("agent_confidence", "high"), "outcome_checks": ("verified", "maybe")}


def _shift_ts(value: str, days: int = 0, keep_offset: bool = True) -> str:
    t = datetime.fromisoformat(value) - timedelta(days=days)
    spec = "milliseconds" if "." in value else "seconds"
    if not keep_offset:
        return t.replace(tzinfo=None).isoformat(timespec=spec)
    out = t.isoformat(timespec=spec)
    return out[:-6] + "Z" if value.endswith("Z") else out


def _mutate(source: str, kind: str, row: dict, k: int, ymd: str) -> dict:
    """Give a copy of a valid row exactly one defect of `kind` (and a fresh id, so only that defect counts)."""
    spec = SOURCES[source]
    row[spec.id_column] = f"{row[spec.id_column]}-bad{k:05d}"
    if kind == "null_required":
        row[_NULL_FIELD[source]] = None
    elif kind == "bad_value":
        f, val = _BAD_VALUE[source]
        row[f] = val
    elif kind == "bad_type":
        f, val = _BAD_TYPE[source]
        row[f] = val
    elif kind == "out_of_range":
        if source == "agent_events":
            if row.get("confidence") not in (None, ""):
                row["confidence"] = 1.7
            else:
                row["turn"] = -1
        else:
            f, val = {"crm_cases": ("reopen_count", -1), "surveys": ("score", 9),
                      "overrides": ("agent_confidence", 1.7)}[source]
            row[f] = val
    elif kind in ("ts_no_offset", "ts_out_of_interval"):
        f = spec.time_column
        row[f] = _shift_ts(row[f], keep_offset=False) if kind == "ts_no_offset" else _shift_ts(row[f], days=10)
    elif kind == "unknown_conversation":
        row["conversation_id"] = f"CONV-{ymd}-Z{k:05d}"
        row["case_id"] = None
    elif kind == "unknown_case":
        row["case_id"] = f"CASE-{ymd}-Z{k:05d}"
        if "conversation_id" in row:
            row["conversation_id"] = None
    elif kind == "incomplete_triad":
        row["outcome"] = "corrected"
        row["rationale" if k % 2 else "human_decision"] = None
    return row


def _csv_cell(v) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (list, dict)):
        return json.dumps(v, separators=(",", ":"))
    return str(v)


# ----------------------------------------------------------------------------- writing files


def _layout(source: str, formats: str) -> tuple[str, str, bool]:
    """(file name, format, gzip) of a source: 'mixed' mimics real exports, 'jsonl' keeps it uniform."""
    if formats == "jsonl":
        return "part-0000.jsonl", "jsonl", False
    return {"agent_events": ("part-0000.jsonl.gz", "jsonl", True), "kb_articles": ("part-0000.parquet", "parquet", False),
            "crm_cases": ("part-0000.csv", "csv", False), "surveys": ("part-0000.csv", "csv", False),
            "overrides": ("part-0000.jsonl", "jsonl", False),
            "outcome_checks": ("part-0000.jsonl", "jsonl", False)}[source]


class _Writer:
    """Serialises Arrow tables with DuckDB, appends planted rows, and swaps each file in atomically."""

    def __init__(self, landing: Path, formats: str, malformed_share: float, seed: int):
        import duckdb

        self.landing, self.formats, self.share, self.seed = landing, formats, malformed_share, seed
        self.con = duckdb.connect()
        # One DuckDB thread: an ordered COPY gains little from more, and under CPU contention extra
        # threads cost 2-4x wall time (measured). The second core compresses in parallel instead.
        self.con.execute("SET threads = 1")
        self.con.execute("SET memory_limit = '1GB'")  # its buffer pool would otherwise grow to 80 % of RAM
        self.con.execute("SET preserve_insertion_order = true")

    def _select(self, table: pa.Table, fmt: str, frac: bool) -> str:
        pattern = "%Y-%m-%dT%H:%M:%S.%g" if frac else "%Y-%m-%dT%H:%M:%S"
        repl = []
        for f in table.schema:
            name = f.name
            if name.startswith("_"):
                continue
            if name in ("ts", "created_at", "updated_at", "resolved_at", "last_reopened_at", "submitted_at",
                        "checked_at"):
                repl.append(f"strftime(make_timestamp(({name} + _off * 60000) * 1000), '{pattern}') || _tz AS {name}")
            elif name == "action_args":
                repl.append(f"{name}::JSON AS {name}")
            elif fmt == "csv" and pa.types.is_list(f.type):
                repl.append(f"to_json({name})::VARCHAR AS {name}")
        helpers = ", ".join(f.name for f in table.schema if f.name.startswith("_"))
        return f"SELECT * EXCLUDE ({helpers}) REPLACE ({', '.join(repl)}) FROM src" if repl else \
            f"SELECT * EXCLUDE ({helpers}) FROM src"

    def _render(self, table: pa.Table, fmt: str, frac: bool, path: Path, header: bool) -> None:
        self.con.register("src", table)
        try:
            opts = f"FORMAT csv, HEADER {'true' if header else 'false'}" if fmt == "csv" else "FORMAT json"
            target = path.as_posix().replace("'", "''")
            self.con.execute(f"COPY ({self._select(table, fmt, frac)}) TO '{target}' ({opts})")
        finally:
            self.con.unregister("src")

    def _plant(self, source: str, day: date, table: pa.Table, fmt: str, frac: bool, tmp: Path, fname: str):
        """Copies of valid rows, each given one defect; returned as text lines plus their ground truth."""
        kinds = [k for k in KINDS[source] if fmt != "csv" or k != "invalid_json"]
        if self.share <= 0 or table.num_rows == 0:
            return [], []
        rng = _rng(self.seed, day, S_MAL + 100 * SOURCE_NAMES.index(source))
        n_bad = max(len(kinds), int(np.ceil(self.share * table.num_rows)))
        kinds = [kinds[i] for i in rng.permutation(len(kinds))]
        clean = np.flatnonzero(table.column("_clean").to_numpy(zero_copy_only=False))
        pool = clean if len(clean) else np.arange(table.num_rows)
        src_rows = rng.choice(pool, n_bad, replace=n_bad > len(pool))
        sample = table.take(pa.array(src_rows, pa.int64()))
        lines = self._lines(sample, fmt, frac, tmp)
        header = table.schema.names
        header = [h for h in header if not h.startswith("_")]
        out, truth = [], []
        for k in range(n_bad):
            kind, line = kinds[k % len(kinds)], lines[k]
            if fmt == "csv":
                row = dict(zip(header, next(csv.reader([line]))))
            else:
                row = json.loads(line)
            rid = row[SOURCES[source].id_column]
            if kind == "duplicate_id":
                text = line
            elif kind == "invalid_json":
                text = line[: max(10, len(line) // 2)].rstrip("\\")
                rid = None
            else:
                row = _mutate(source, kind, row, k, _ymd(day))
                rid = row[SOURCES[source].id_column]
                if fmt == "csv":
                    buf = io.StringIO()
                    csv.writer(buf, lineterminator="\n").writerow([_csv_cell(row[h]) for h in header])
                    text = buf.getvalue().rstrip("\n")
                else:
                    text = json.dumps(row, separators=(",", ":"), ensure_ascii=False)
            out.append(text)
            truth.append({"source": source, "dt": day.isoformat(), "kind": kind, "id": rid, "file": fname})
        for i, t in enumerate(truth):
            if t["id"] is None:
                t["id"] = f"line:{table.num_rows + i + 1}"
        return out, truth

    def _render_bytes(self, table: pa.Table, fmt: str, frac: bool, tmp: Path, header: bool) -> bytes:
        path = tmp.with_name(tmp.name + ".body")
        try:
            self._render(table, fmt, frac, path, header=header)
            return path.read_bytes()
        finally:
            path.unlink(missing_ok=True)

    def _lines(self, table: pa.Table, fmt: str, frac: bool, tmp: Path) -> list[str]:
        return self._render_bytes(table, fmt, frac, tmp, header=False).decode("utf-8").splitlines()

    def write(self, source: str, day: date, table: pa.Table, *, frac: bool = False) -> tuple[int, list]:
        """Write one source's file for `day`; returns (data rows written, malformed ground truth)."""
        fname, fmt, gz = _layout(source, self.formats)
        folder = self.landing / source / f"dt={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        final = folder / fname
        tmp = folder / f".{fname}.{os.getpid()}.{threading.get_ident()}.tmp"
        if fmt == "parquet":
            rows, truth = self._write_parquet(source, day, table, tmp, fname)
        else:
            planted, truth = self._plant(source, day, table, fmt, frac, tmp, fname)
            extra = "".join(line + "\n" for line in planted).encode("utf-8")
            comp = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31) if gz else None  # gzip header, mtime 0

            def sink(data: bytes) -> None:
                out.write(comp.compress(data) if comp else data)

            # Fixed-size slices bound DuckDB's memory; each slice is compressed in a worker thread while
            # DuckDB renders the next one (zlib and DuckDB both release the GIL).
            with open(tmp, "wb") as out, ThreadPoolExecutor(1) as pool:
                pending = None
                for k, first in enumerate(range(0, max(table.num_rows, 1), WRITE_SLICE)):
                    data = self._render_bytes(table.slice(first, WRITE_SLICE), fmt, frac, tmp,
                                              header=fmt == "csv" and k == 0)
                    if pending is not None:
                        pending.result()
                    pending = pool.submit(sink, data)
                    del data
                if pending is not None:
                    pending.result()
                sink(extra)
                if comp:
                    out.write(comp.flush())
            rows = table.num_rows + len(planted)
        os.replace(tmp, final)
        for other in folder.iterdir():  # the dt folder holds exactly this export
            if other.name != fname and not other.name.startswith("."):
                other.unlink()
        return rows, truth

    def _write_parquet(self, source: str, day: date, table: pa.Table, tmp: Path, fname: str):
        """The KB snapshot as Parquet, typed timestamps; planted rows are appended as Python rows."""
        import pyarrow.parquet as pq

        ms = table.column("updated_at").to_numpy()
        rows = table.drop_columns([c for c in table.column_names if c.startswith("_")]).to_pylist()
        for r, t in zip(rows, ms):
            r["updated_at"] = datetime.fromtimestamp(int(t) / 1000, tz=UTC)
        truth = []
        if self.share > 0 and rows:
            rng = _rng(self.seed, day, S_MAL + 100 * SOURCE_NAMES.index(source))
            kinds = [k for k in KINDS[source] if k != "invalid_json"]
            n_bad = max(len(kinds), int(np.ceil(self.share * len(rows))))
            kinds = [kinds[i] for i in rng.permutation(len(kinds))]
            pool = [i for i, r in enumerate(rows) if r["status"] == "published"] or list(range(len(rows)))
            src_rows = rng.choice(pool, n_bad)
            for k in range(n_bad):
                kind, row = kinds[k % len(kinds)], dict(rows[int(src_rows[k])])
                row["intents"] = list(row["intents"])
                if kind != "duplicate_id":
                    row = _mutate(source, kind, row, k, _ymd(day))
                rows.append(row)
                truth.append({"source": source, "dt": day.isoformat(), "kind": kind, "id": row["article_id"],
                              "file": fname})
        schema = pa.schema([("article_id", pa.string()), ("title", pa.string()), ("body", pa.string()),
                            ("intents", pa.list_(pa.string())), ("status", pa.string()),
                            ("updated_at", pa.timestamp("ms", tz="UTC"))])
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        return len(rows), truth
