"""Validate: run one Great Expectations suite per source over a day's raw partition, then split it.

Rows that fail a row-level expectation go to `<lake>/quarantine/<source>/dt=...` with the failed
expectation(s) as the reason; the rest go to `<lake>/staged/<source>/dt=...`. Rows read = rows staged +
rows quarantined is asserted here, for every source and day, and written to the source's run summary.

Checks that span rows or tables (duplicates, references to other sources, the override triad, the time
window) are computed as columns in SQL first, so that GX can judge them row by row and name the rows.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from feedback_loop.ingest import contract
from feedback_loop.ingest.contract import Source
from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake, join
from feedback_loop.lake.sql import literal, literal_list
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

PARSE_ERROR = "parse_error"
TYPE_ERROR = "type_error"
# An unresolved reference while the referenced source's history is shorter than the lookback window: the
# row is held in quarantine (re-run the day once the history is backfilled) but is not counted as bad
# data towards ACSR_MAX_BAD_ROW_SHARE.
BEFORE_HISTORY = "reference_before_history"


class DataQualityError(RuntimeError):
    """A suite-level failure: too many bad rows, or data the stage cannot judge."""


@dataclass(frozen=True)
class Check:
    """One expectation of a suite: what GX checks and the quarantine reason when a row fails it."""

    kind: str  # not_null | in_set | between | null (a computed problem column must be empty)
    column: str
    reason: str
    description: str
    value_set: tuple | None = None
    min: float | None = None
    max: float | None = None


def checks_for(src: Source) -> list[Check]:
    """The suite of one source, generated from the contract (order = precedence of reasons)."""
    out = [
        Check("null", "_parse_error", PARSE_ERROR, "the record could be parsed (valid UTF-8, JSON object, CSV record)"),
        Check("null", "_type_errors", TYPE_ERROR, "every value fits its contract type"),
    ]
    for f in src.fields:
        if f.required:
            out.append(Check("not_null", f.name, f"missing_{f.name}", f"{f.name} is present"))
    for f in src.fields:
        if f.values is not None:
            out.append(Check("in_set", f.name, f"bad_{f.name}", f"{f.name} in {list(f.values)}", value_set=f.values))
        if f.min is not None or f.max is not None:
            out.append(
                Check("between", f.name, f"out_of_range_{f.name}", f"{f.name} within [{f.min}, {f.max}]",
                      min=f.min, max=f.max)
            )
    for col, reason, desc in _computed_checks(src):
        out.append(Check("null", col, reason, desc))
    return out


def _computed_checks(src: Source) -> list[tuple[str, str, str]]:
    out = [
        ("_duplicate_of", "duplicate_id", f"{src.id_column} is unique within the day (the first copy is kept)"),
        ("_time_problem", "timestamp_outside_interval",
         f"{src.time_column} inside the day, allowing for the lateness and clock-skew settings"),
    ]
    if _unique_across_days(src):
        out.append(("_seen_on_day", "duplicate_id_across_days", f"{src.id_column} not already staged on an earlier day"))
    for ref in src.references:
        out.append((f"_unknown_{ref.column}", f"unknown_{ref.column}", f"{ref.column} refers to a known {ref.target} row"))
        out.append((f"_before_history_{ref.column}", BEFORE_HISTORY,
                    f"{ref.column} refers to a {ref.target} row that may predate the lake's history"))
    if src.name == "surveys":
        out.append(("_scale_problem", "score_outside_scale", "csat scores are 1-5 and ces scores 1-7"))
    if src.name == "overrides":
        out.append(("_triad_missing", "incomplete_triad",
                    ("a corrected override has the agent's decision and confidence, the human's decision and "
                    "rationale, and a policy clause or evidence")))
    return out


def _unique_across_days(src: Source) -> bool:
    # Case snapshots and KB snapshots repeat their ids on purpose.
    return src.name not in ("crm_cases", "kb_articles")


def _dup_key(src: Source) -> str:
    return "case_id, updated_at" if src.name == "crm_cases" else src.id_column


def interval(dt: date | str) -> tuple[datetime, datetime]:
    d = date.fromisoformat(str(dt))
    start = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def candidate_sql(settings: Settings, src: Source, dt: str, lake: Lake) -> str:
    """The day's raw rows plus one computed column per cross-row check."""
    start, end = interval(dt)
    early = start - timedelta(hours=settings.lateness_hours)
    late = end + timedelta(minutes=settings.future_skew_minutes)
    t = f'"{src.time_column}"'
    raw = lake.partition_file("raw", src.name, dt)
    # Every copy of a key after the first (lowest _row_id) is a duplicate of that first row. Computed as an
    # aggregate of the repeated keys joined back (NULL keys match each other, as in a PARTITION BY), not as
    # a window: a window over the raw rows carries all their columns through its sort.
    keys = [k.strip() for k in _dup_key(src).split(",")]
    dup_keys = ", ".join(f"{k} AS _dk{i}" for i, k in enumerate(keys))
    joins = [
        f"LEFT JOIN (SELECT {dup_keys}, min(_row_id) AS _first FROM read_parquet({literal(raw)}) GROUP BY ALL "
        "HAVING count(*) > 1) dup ON " + " AND ".join(f"dup._dk{i} IS NOT DISTINCT FROM r.{k}" for i, k in enumerate(keys))
    ]
    cols = [
        "CASE WHEN r._row_id > dup._first THEN 'duplicate of row ' || dup._first END AS _duplicate_of",
        f"CASE WHEN {t} >= TIMESTAMPTZ '{late.isoformat()}' THEN 'after the interval (future)' "
        + ("" if src.snapshot else f"WHEN {t} < TIMESTAMPTZ '{early.isoformat()}' THEN 'before the interval beyond the lateness allowance' ")
        + "END AS _time_problem",
    ]
    lookback = [
        str(date.fromisoformat(dt) - timedelta(days=i)) for i in range(1, settings.reference_lookback_days + 1)
    ]
    # The earlier days are read for the day's own keys only (`IN` the raw partition's): a month of history
    # is ~30x the day, and grouping all of it (every id ever staged, every conversation ever opened) ran a
    # 2 M-event day out of its memory limit once 30 days were there; the day's keys are the hash side.
    if _unique_across_days(src):
        earlier = _existing(lake, "staged", src.name, lookback)
        if earlier:
            ids = f"{src.id_column} IN (SELECT {src.id_column} FROM read_parquet({literal(raw)}))"
            joins.append(
                f"LEFT JOIN (SELECT {src.id_column} AS _k, min(dt)::VARCHAR AS _seen_on_day FROM "
                f"read_parquet({earlier}, hive_partitioning=true) WHERE {ids} GROUP BY 1) seen "
                f"ON seen._k = r.{src.id_column}"
            )
            cols.append("seen._seen_on_day")
        else:
            cols.append("NULL::VARCHAR AS _seen_on_day")
    for i, ref in enumerate(src.references):
        files = _existing(lake, "raw", ref.target, [dt, *lookback])
        target_days = lake.days("raw", ref.target)
        window_start = str(date.fromisoformat(dt) - timedelta(days=settings.reference_lookback_days))
        history_complete = bool(target_days) and target_days[0] <= window_start
        ours = f"{ref.target_column} IN (SELECT {ref.column} FROM read_parquet({literal(raw)}))"
        where = f"WHERE ({ref.where}) AND {ours}" if ref.where else f"WHERE {ours}"
        known = (
            f"(SELECT DISTINCT {ref.target_column} AS _k FROM read_parquet({files}) {where})"
            if files else "(SELECT NULL::VARCHAR AS _k WHERE false)"
        )
        joins.append(f"LEFT JOIN {known} ref{i} ON ref{i}._k = r.{ref.column}")
        unresolved = f"r.{ref.column} IS NOT NULL AND ref{i}._k IS NULL"
        cols.append(f"CASE WHEN {unresolved} AND {history_complete} THEN r.{ref.column} END AS _unknown_{ref.column}")
        cols.append(
            f"CASE WHEN {unresolved} AND NOT {history_complete} THEN r.{ref.column} END AS _before_history_{ref.column}"
        )
    if src.name == "surveys":
        cols.append(
            "CASE WHEN kind = 'csat' AND score > 5 THEN 'csat score ' || score || ' above 5' END AS _scale_problem"
        )
    if src.name == "overrides":
        cols.append(_triad_sql())
    return f"SELECT r.*, {', '.join(cols)} FROM read_parquet({literal(raw)}) r {' '.join(joins)}"


def _triad_sql() -> str:
    agent = " OR ".join(f"{c} IS NULL" for c in contract.OVERRIDE_TRIAD["agent"])
    human = " OR ".join(f"{c} IS NULL" for c in contract.OVERRIDE_TRIAD["human"])
    grounding = " AND ".join(f"{c} IS NULL" for c in contract.OVERRIDE_TRIAD["grounding_any"])
    return f"""CASE WHEN outcome = 'corrected' THEN nullif(concat_ws(', ',
            CASE WHEN {agent} THEN 'agent decision/confidence' END,
            CASE WHEN {human} THEN 'human decision/rationale' END,
            CASE WHEN {grounding} THEN 'policy clause or evidence' END), '') END AS _triad_missing"""


def _existing(lake: Lake, layer: str, name: str, days: list[str]) -> str | None:
    """A DuckDB list literal of the partition files of `days` that exist, or None."""
    have = set(lake.days(layer, name))
    files = [lake.partition_file(layer, name, d) for d in sorted(days) if d in have]
    return literal_list(files) if files else None


def gx_expectations(checks: list[Check]) -> list:
    """The GX 1.x expectation objects of a suite (imported lazily: GX costs seconds to import)."""
    import great_expectations as gx

    ex = gx.expectations
    out = []
    for c in checks:
        meta = {"reason": c.reason, "description": c.description}
        if c.kind == "null":
            out.append(ex.ExpectColumnValuesToBeNull(column=c.column, meta=meta))
        elif c.kind == "not_null":
            out.append(ex.ExpectColumnValuesToNotBeNull(column=c.column, meta=meta))
        elif c.kind == "in_set":
            out.append(ex.ExpectColumnValuesToBeInSet(column=c.column, value_set=list(c.value_set), meta=meta))
        elif c.kind == "between":
            out.append(ex.ExpectColumnValuesToBeBetween(column=c.column, min_value=c.min, max_value=c.max, meta=meta))
        else:  # pragma: no cover - guarded by Check.kind's documented values
            raise ValueError(f"unknown check kind {c.kind}")
    return out


def gx_root(settings: Settings) -> str:
    """Where GX keeps its suites, validation results and Data Docs (beside the lake when it is local)."""
    if "://" in settings.lake:
        return os.path.join(os.path.dirname(settings.warehouse) or ".", "gx")
    return join(settings.lake, "gx")


def validate_source(settings: Settings, source: str, dt: date | str) -> dict:
    """Validate one source's raw partition of one day; write staged, quarantine and the source summary."""
    from feedback_loop.ingest.gx_duckdb import run_suite

    src = contract.SOURCES[source]
    dt = str(dt)
    lake = Lake(settings.lake)
    if not lake.has_partition("raw", source, dt):
        raise DataQualityError(f"no raw partition for {source} on {dt}: run the land step first")
    checks = checks_for(src)
    raw = f"read_parquet({literal(lake.partition_file('raw', source, dt))})"  # the same read as candidate_sql's
    computed = [col for col, _, _ in _computed_checks(src)]
    # GX reads only the columns its expectations name: the candidate table holds those (and the row id),
    # not the wide text columns, which go from the raw Parquet straight to staged/quarantine below.
    narrow = ", ".join(f'"{c}"' for c in dict.fromkeys(["_row_id", *(c.column for c in checks)]))
    work = tempfile.mkdtemp(prefix=f"acsr-dq-{source}-")
    try:
        db = os.path.join(work, "candidate.duckdb")
        con = connect()
        con.execute(f"ATTACH {literal(db)} AS dq")
        con.execute(f"CREATE TABLE dq.candidate AS SELECT {narrow} FROM ({candidate_sql(settings, src, dt, lake)})")
        con.execute("DETACH dq")
        outcome = run_suite(db, "candidate", f"{source}", gx_expectations(checks),
                            row_id_column="_row_id", gx_root=gx_root(settings), run_name=f"{source}-{dt}")
        con.execute(f"ATTACH {literal(db)} AS dq (READ_ONLY)")
        failures = [(rid, i, o.meta.get("reason")) for i, o in enumerate(outcome.outcomes) for rid in o.failed_row_ids]
        con.execute("CREATE TABLE failures (_row_id BIGINT, _rank INTEGER, reason VARCHAR)")
        if failures:
            import pandas as pd

            frame = pd.DataFrame(failures, columns=["_row_id", "_rank", "reason"])  # noqa: F841 (read by name in SQL)
            con.execute("INSERT INTO failures SELECT * FROM frame")
        con.execute(
            """CREATE TABLE reasons AS SELECT _row_id, list(reason ORDER BY _rank) AS quarantine_reasons
               FROM (SELECT DISTINCT _row_id, _rank, reason FROM failures) GROUP BY _row_id"""
        )
        detail = _detail_sql(src, checks)
        # The candidate's columns, in its order: every raw column, then the computed ones.
        quarantine_sql = f"""SELECT r.*, {", ".join(f'c."{col}"' for col in computed)},
                   q.quarantine_reasons[1] AS quarantine_reason, q.quarantine_reasons,
                   {detail} AS quarantine_detail
            FROM {raw} r JOIN dq.candidate c ON c._row_id = r._row_id JOIN reasons q ON q._row_id = r._row_id
            ORDER BY r._row_id"""
        keep = ", ".join([f'"{c}"' for c in src.columns] + ["_extra", "_source_file", "_line", "_row_id"])
        staged_sql = f"SELECT {keep} FROM {raw} r {_staged_where(con, raw)}"
        rows_read = con.execute("SELECT count(*) FROM dq.candidate").fetchone()[0]
        rows_quarantined = con.execute("SELECT count(*) FROM reasons").fetchone()[0]
        # Counted with the staged write's own filter over the raw rows it reads (one column: cheap).
        rows_staged = con.execute(f"SELECT count(*) FROM ({staged_sql})").fetchone()[0]
        if rows_read != rows_staged + rows_quarantined:  # the pipeline's own accounting assertion
            raise DataQualityError(
                f"{source} {dt}: row accounting broken: read {rows_read} != staged {rows_staged} + "
                f"quarantined {rows_quarantined}"
            )
        by_reason = dict(
            con.execute(
                "SELECT quarantine_reasons[1], count(*) FROM reasons GROUP BY 1 ORDER BY 2 DESC, 1"
            ).fetchall()
        )
        lake.write_query(con, quarantine_sql, "quarantine", source, dt)
        bad = rows_quarantined - by_reason.get(BEFORE_HISTORY, 0)
        share = bad / rows_read if rows_read else 0.0
        failed = [
            {"expectation": o.expectation_type, "column": o.column, "reason": o.meta.get("reason"),
             "unexpected_count": o.unexpected_count}
            for o in outcome.outcomes if not o.success
        ]
        status = "ok" if share <= settings.max_bad_row_share else "failed"
        if status == "ok":
            lake.write_query(con, staged_sql, "staged", source, dt)
        else:
            _remove(lake.partition_file("staged", source, dt))
        con.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary = {
        "source": source,
        "dt": dt,
        "status": status,
        "rows_read": rows_read,
        "rows_staged": rows_staged if status == "ok" else 0,
        "rows_quarantined": rows_quarantined,
        "rows_held_back": rows_staged if status != "ok" else 0,
        "quarantined_by_reason": by_reason,
        "bad_row_share": round(share, 6),
        "suite": {
            "name": outcome.suite_name,
            "success": outcome.success,
            "statistics": outcome.statistics,
            "failed_expectations": failed,
            "result_json": outcome.result_json_path,
        },
    }
    lake.write_json(summary, "runs", f"dt={dt}", "sources", f"{source}.json")
    if status != "ok":
        from feedback_loop.ingest.data_docs import build_and_link

        names = ", ".join(f"{f['reason']} ({f['unexpected_count']})" for f in failed)
        docs = build_and_link(gx_root(settings), outcome.result_json_path, settings.data_docs_url)
        raise DataQualityError(
            f"suite '{outcome.suite_name}' failed for {source} on {dt}: {bad} of {rows_read} rows "
            f"({share:.1%}) quarantined, above the limit of {settings.max_bad_row_share:.0%}. Failed "
            f"expectations: {names}. Staged output withheld; quarantine at "
            f"{lake.partition_file('quarantine', source, dt)}; results in {outcome.result_json_path}; "
            f"Data Docs: {docs}"
        )
    return summary


def _staged_where(con, raw: str) -> str:
    """WHERE (and ORDER BY) that keep the raw rows without a quarantine reason, in _row_id order.

    Land writes raw partitions in _row_id order. When a partition is (checked here on one column), the
    quarantined row ids become one constant bitstring that the Parquet scan filters on: no join and no
    sort of the wide rows, and the scan keeps the file's order. Otherwise an anti-join and an ORDER BY.
    """
    lo, hi, unordered = con.execute(
        f"""SELECT min(_row_id), max(_row_id), count(*) FILTER (WHERE _row_id IS NULL OR _row_id <= _prev)
            FROM (SELECT _row_id, lag(_row_id) OVER () AS _prev FROM {raw})"""
    ).fetchone()
    if unordered or (lo is not None and hi - lo >= 2**31 - 1):
        return "WHERE NOT EXISTS (SELECT 1 FROM reasons q WHERE q._row_id = r._row_id) ORDER BY _row_id"
    if con.execute("SELECT count(*) FROM reasons").fetchone()[0] == 0:
        return ""
    con.execute(f"SET VARIABLE dq_quarantined = (SELECT bitstring_agg(_row_id, {lo}, {hi}) FROM reasons)")
    return f"WHERE get_bit(getvariable('dq_quarantined'), (_row_id - {lo})::INTEGER) = 0"


def _detail_sql(src: Source, checks: list[Check]) -> str:
    """A human-readable explanation of the first failure of a quarantined row, with the offending value."""
    whens = []
    for c in checks:
        col = f'c."{c.column}"'
        desc = c.description.replace("'", "''")
        if c.kind == "null":
            text = {"_seen_on_day": f"'already staged on ' || {col}", "_triad_missing": f"'missing ' || {col}"}.get(
                c.column, f"{col}::VARCHAR")
            if c.column.startswith("_unknown_"):
                text = f"'{desc}: ' || {col} || ' not found'"
            if c.column.startswith("_before_history_"):
                text = f"'{desc}: ' || {col} || ' not found, and the history starts within the lookback window'"
        elif c.kind == "not_null":
            text = f"'{c.column} is missing'"
        else:
            text = f"'{c.column} = ' || {col}::VARCHAR || ' violates: {desc}'"
        whens.append(f"WHEN '{c.reason}' THEN {text}")
    return f"CASE q.quarantine_reasons[1] {' '.join(whens)} END"


def _remove(path: str) -> None:
    if "://" in path:
        import fsspec

        fs, p = fsspec.core.url_to_fs(path)
        if fs.exists(p):
            fs.rm(p)
    elif os.path.exists(path):
        os.remove(path)
