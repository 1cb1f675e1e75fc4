"""The nightly run of one day, as plain functions: the DAG's tasks and the command line call these.

Order: land every source -> validate every source -> model -> summarize -> signals -> detect KB gaps -> build the
fine-tuning datasets -> publish the warehouse.

The day is a `datetime.date`. It is parsed once, at the edge: `partition_day` (the DAG's resolve_day, from
the trigger form, the partition key or the logical date), the command line, or `as_day` at the top of each
function here for the ISO text a task gets through XCom (XCom keeps the day as text: the Flywheel page, the
REST API and the retraining trigger's run id read it). Lake paths and documents format it as YYYY-MM-DD.
"""

from __future__ import annotations

import functools
import gc
import logging
from datetime import UTC, date, datetime, timedelta

from feedback_loop.ingest import contract
from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)


# CPython starts a collection every 700 net allocations of container objects, and a full one (every live
# object visited) each time the long-lived heap has grown by a quarter. A stage builds millions of
# long-lived objects and almost no cyclic garbage (datasets' candidates and examples, gaps' rows, GX's
# models): at the defaults the collector took ~9 % of datasets' CPU and ~7 % of validate's on the 2 M day
# (docs/benchmark.md, "Fewer garbage collections"). Raised while a stage runs, restored when it returns.
STAGE_GC_THRESHOLDS = (50_000, 50, 50)


def stage(fn):
    """A stage of the night: runs with STAGE_GC_THRESHOLDS, the caller's thresholds restored afterwards."""
    @functools.wraps(fn)
    def run(*args, **kwargs):
        before = gc.get_threshold()
        gc.set_threshold(*STAGE_GC_THRESHOLDS)
        try:
            return fn(*args, **kwargs)
        finally:
            gc.set_threshold(*before)

    return run


class AccountingError(RuntimeError):
    """Rows read != rows staged + rows quarantined for some source and day."""


def as_day(day: date | str) -> date:
    """The day as a date; ISO text (XCom, tests) is parsed here, once per call from outside."""
    if isinstance(day, datetime):
        return day.date()
    if isinstance(day, date):
        return day
    return date.fromisoformat(day)


def partition_day(conf_date: str | None = None, partition_key: str | None = None,
                  logical_date: datetime | None = None, run_after: datetime | None = None) -> date:
    """The day a nightly run processes, the same for scheduled, backfilled and manual runs.

    An explicit date (the trigger form's `date` param) wins; then the run's partition key (scheduled runs
    and backfills of the partitioned timetable carry the day itself); otherwise the day before the run's
    logical date or, for a manual run without one, before the moment it was triggered.
    """
    for candidate in (conf_date, partition_key):
        if candidate:
            return date.fromisoformat(str(candidate)[:10])
    moment = logical_date or run_after or datetime.now(UTC)
    return moment.date() - timedelta(days=1)


def earlier_days_pending(settings: Settings, day: date | str) -> list[str]:
    """Earlier days this day's results depend on that have landing data but no run summary yet.

    Validation resolves references and cross-day duplicates against earlier days, and the gap, dataset and
    signal stages read trailing windows: a day processed before the days it reads would give different
    results. So when a backfill runs several days at once, each day waits (a reschedule-mode sensor) until
    the earlier days that exist in the landing area are summarized; days without landing data are not
    waited for. Landing files of later days never matter.
    """
    from feedback_loop.ingest.land import landing_dir
    from feedback_loop.lake.files import filesystem_for

    lookback = max(settings.reference_lookback_days, settings.gap_window_days, settings.dataset_window_days,
                   settings.signals_baseline_days)
    lake = Lake(settings.lake)
    done = set(lake.days_with_file("runs", "summary.json"))
    day = as_day(day)
    pending = []
    for i in range(lookback, 0, -1):
        earlier = (day - timedelta(days=i)).isoformat()
        if earlier in done or day_failed(lake, earlier):
            continue
        for source in contract.SOURCE_NAMES:
            fs, path = filesystem_for(landing_dir(settings, source, earlier))
            if fs.exists(path):
                pending.append(earlier)
                break
    return pending


def day_failed(lake: Lake, dt: str) -> bool:
    """A day whose land or validate step failed (it will not be summarized until someone re-runs it):
    later days go on without it rather than waiting for a run that is not coming."""
    for step in ("land", "sources"):
        for source in contract.SOURCE_NAMES:
            doc = lake.read_json("runs", f"dt={dt}", step, f"{source}.json")
            if doc and doc.get("status") == "failed":
                return True
    return False


@stage
def land(settings: Settings, source: str, day: date | str) -> dict:
    from feedback_loop.ingest.land import LandingError, land_source
    from feedback_loop.sources.pull import IncompleteDayError
    from feedback_loop.sources.systems import check_source_day

    dt = as_day(day).isoformat()  # ingest/ works on the partition's text (its documents carry it)
    try:
        if source == "overrides":  # completed reviews (Label Studio exports) become override files first
            from feedback_loop.review.label_studio import ReviewImportError, convert_exports

            try:
                convert_exports(settings, dt)
            except ReviewImportError as exc:
                raise LandingError(str(exc)) from exc
        check_source_day(settings, source, dt)  # a source fed by a pull whose day is not complete (issue 16)
        result = land_source(settings, source, dt).as_dict()
    except (LandingError, IncompleteDayError) as exc:  # recorded, so the day counts as settled (failed) for later days
        Lake(settings.lake).write_json({"source": source, "dt": dt, "status": "failed", "error": str(exc)},
                                       "runs", f"dt={dt}", "land", f"{source}.json")
        raise
    log.info("landed %s %s: %s rows from %s files", source, dt, result["rows_read"], len(result["files"]))
    Lake(settings.lake).write_json(result, "runs", f"dt={dt}", "land", f"{source}.json")
    return {k: result[k] for k in ("source", "dt", "rows_read", "parse_errors", "missing_folder")}


@stage
def validate(settings: Settings, source: str, day: date | str) -> dict:
    from feedback_loop.ingest.quality import validate_source

    dt = as_day(day).isoformat()
    s = validate_source(settings, source, dt)
    log.info("validated %s %s: %s read, %s staged, %s quarantined %s", source, dt, s["rows_read"],
             s["rows_staged"], s["rows_quarantined"], s["quarantined_by_reason"])
    return {k: s[k] for k in ("source", "dt", "status", "rows_read", "rows_staged", "rows_quarantined")}


@stage
def model(settings: Settings, day: date | str) -> dict:
    from feedback_loop.model.conversations import build_model

    return build_model(settings, as_day(day))


def land_validate_model(settings: Settings, day: date | str, *, summarize_day: bool = True) -> dict:
    """The base of every night, one stage runner for the DAG-less callers (the command line, the benchmarks,
    the evaluations): land every source, validate every source, model the day and (by default) write its
    run summary. Returns {"model": counts, "summary": the summary or None}."""
    day = as_day(day)
    for source in contract.SOURCE_NAMES:
        land(settings, source, day)
    for source in contract.SOURCE_NAMES:
        validate(settings, source, day)
    counts = model(settings, day)
    return {"model": counts, "summary": summarize(settings, day, {"model": counts}) if summarize_day else None}


def summarize(settings: Settings, day: date | str, extra: dict | None = None) -> dict:
    """Combine the per-source summaries into `<lake>/runs/dt=<dt>/summary.json`; assert the accounting."""
    dt = as_day(day).isoformat()
    lake = Lake(settings.lake)
    sources = {}
    for name in contract.SOURCE_NAMES:
        s = lake.read_json("runs", f"dt={dt}", "sources", f"{name}.json")
        landed = lake.read_json("runs", f"dt={dt}", "land", f"{name}.json") or {}
        if s is None:
            raise AccountingError(f"{dt}: no validation summary for {name}")
        if s["rows_read"] != s["rows_staged"] + s["rows_quarantined"] + s.get("rows_held_back", 0):
            raise AccountingError(f"{dt} {name}: rows read {s['rows_read']} != staged + quarantined")
        if landed and landed.get("rows_read") != s["rows_read"]:
            raise AccountingError(f"{dt} {name}: landed {landed.get('rows_read')} rows but validated {s['rows_read']}")
        s["files"] = landed.get("files", [])
        s["missing_folder"] = landed.get("missing_folder", False)
        s["missing_folder_policy"] = settings.missing_source
        sources[name] = s
    totals = {
        k: sum(s[k] for s in sources.values()) for k in ("rows_read", "rows_staged", "rows_quarantined")
    }
    summary = {
        "dt": dt,
        "status": "ok" if all(s["status"] == "ok" for s in sources.values()) else "failed",
        "totals": totals,
        "sources": sources,
        "outputs": {
            "lake": settings.lake,
            "warehouse": settings.warehouse,
            "summary": f"{settings.lake}/runs/dt={dt}/summary.json",
        },
        **(extra or {}),
    }
    lake.write_json(summary, "runs", f"dt={dt}", "summary.json")
    return summary


@stage
def detect_gaps(settings: Settings, day: date | str, window_days: int | None = None) -> dict:
    """Knowledge-base gaps over the trailing window ending on the day (marts/kb_gaps, reports/.../gaps.html)."""
    from feedback_loop.gaps.detect import detect_gaps as detect

    return detect(settings, as_day(day), window_days)


@stage
def build_datasets(settings: Settings, day: date | str, window_days: int | None = None) -> dict:
    """Fine-tuning dataset versions over the trailing window ending on dt (<lake>/datasets/, docs/datasets.md).

    Runs after summarize: each version's manifest records the data-quality results of its days."""
    from feedback_loop.datasets.build import build_datasets as build

    return build(settings, as_day(day), window_days)


@stage
def signals(settings: Settings, day: date | str) -> dict:
    """Signal metrics, A/B tests, the improvement-action queue and the day's HTML report (docs/signals.md)."""
    from feedback_loop.signals.metrics import run_signals
    from feedback_loop.signals.report import write_report

    day = as_day(day)
    out = run_signals(settings, day)
    out["report"] = write_report(settings, day)
    return out


@stage
def review_queue(settings: Settings, day: date | str) -> dict:
    """The day's review queue: marts/review_queue, Label Studio tasks and config (docs/review.md).

    Runs after signals and gaps: it reads the day's facts and the gaps first seen that night."""
    from feedback_loop.review.queue import build_queue

    return build_queue(settings, as_day(day).isoformat())


@stage
def publish_warehouse(settings: Settings) -> dict:
    from feedback_loop.lake.warehouse import publish

    return publish(settings)


@stage
def build_data_docs(settings: Settings) -> str:
    from feedback_loop.ingest.gx_duckdb import build_data_docs as build
    from feedback_loop.ingest.quality import gx_root

    return build(gx_root(settings))


@stage
def decide_retraining(settings: Settings, day: date | str) -> dict:
    """The night's retraining decision and its reasons (marts/retrain_decisions, runs/dt=/retrain_decision.json).

    Runs last: it reads the day's facts, the latest relabel dataset and the action queue."""
    from feedback_loop.retrain.decide import decide

    return decide(settings, as_day(day).isoformat())


def run_day(settings: Settings, day: date | str, *, data_docs: bool = True) -> dict:
    """Every stage of the nightly run for one day, in one process (the CLI's `acsr run`)."""
    day = as_day(day)
    from feedback_loop.sources.systems import configured, pull_system

    for system in configured(settings):  # ACSR_SOURCES: pull and map each system's day first (issue 16)
        pull_system(settings, system, day.isoformat())
    summary = land_validate_model(settings, day)["summary"]
    signals(settings, day)
    detect_gaps(settings, day)  # after signals: gap rows link the night's action queue
    review_queue(settings, day)  # after gaps: members of new gap topics are candidates
    build_datasets(settings, day)
    publish_warehouse(settings)
    if data_docs:
        build_data_docs(settings)
    decide_retraining(settings, day)  # recorded only: the DAG also starts the retraining runs it decides on
    return summary


def days_between(start: date | str, end: date | str) -> list[date]:
    a, b = as_day(start), as_day(end)
    return [a + timedelta(days=i) for i in range((b - a).days + 1)]
