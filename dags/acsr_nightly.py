"""
### ACSR nightly feedback loop

Processes exactly one day per run: land the day's exports of every source into the Parquet lake,
validate each with its Great Expectations suite (bad rows to quarantine with a reason), model the
conversation facts and case history, write the run summary, compute the feedback signals and the
improvement-action queue (with the daily HTML report), find the knowledge-base gaps of the trailing
window, pick the review queue for people to label, build the fine-tuning dataset versions (an Asset
event per newly published dataset, see feedback_loop.assets), and republish the DuckDB warehouse.

The day is the run's partition key for scheduled runs and backfills (the calendar day before the run),
or the `date` field of the trigger form for a manual run. Logic lives in `include/feedback_loop`.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronPartitionTimetable, Param, dag, task
from feedback_loop.alerts import WebhookNotifier, nightly_deadline
from feedback_loop.assets import DATASET_ASSETS
from feedback_loop.ingest.contract import SOURCE_NAMES
from feedback_loop.settings import parse_time

# How often a day of a backfill checks whether the earlier days are done (ACSR_EARLIER_DAYS_POKE_SECONDS).
EARLIER_DAYS_POKE_S = parse_time().earlier_days_poke_seconds

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "on_failure_callback": WebhookNotifier(kind="task_failed"),  # data-quality failures say so (alerts.py)
}


@dag(
    dag_id="acsr_nightly",
    schedule=CronPartitionTimetable("0 2 * * *", timezone="UTC", run_offset=-1, key_format="%Y-%m-%d"),
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=3,
    default_args=DEFAULT_ARGS,
    on_failure_callback=WebhookNotifier(kind="dag_failed"),
    deadline=nightly_deadline(),
    tags=["acsr", "feedback-loop", "nightly"],
    params={
        "date": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Day to process",
            description="YYYY-MM-DD. Leave empty for scheduled runs and backfills (they carry their day).",
        )
    },
    doc_md=__doc__,
)
def acsr_nightly():
    @task
    def resolve_day(params=None, dag_run=None, logical_date=None) -> str:
        """The day this run processes (see feedback_loop.nightly.partition_day), as YYYY-MM-DD text in XCom."""
        from feedback_loop.nightly import partition_day

        return partition_day(
            (params or {}).get("date"),
            getattr(dag_run, "partition_key", None),
            logical_date,
            getattr(dag_run, "run_after", None),
        ).isoformat()

    @task.sensor(poke_interval=EARLIER_DAYS_POKE_S, timeout=timedelta(hours=12), mode="reschedule")
    def wait_for_earlier_days(day: str):
        """Concurrent days (a backfill) validate in day order: see nightly.earlier_days_pending."""
        from airflow.sdk import PokeReturnValue
        from feedback_loop.nightly import earlier_days_pending
        from feedback_loop.settings import Settings

        pending = earlier_days_pending(Settings.load(), day)
        if pending:
            print(f"waiting for earlier days to be summarized first: {pending}")
        return PokeReturnValue(is_done=not pending)

    @task
    def source_systems() -> list[str]:
        """The systems named in ACSR_SOURCES (docs/sources.md): one pull task each, none for files only."""
        from feedback_loop.settings import Settings
        from feedback_loop.sources.systems import configured

        return configured(Settings.load())

    @task(map_index_template="{{ system }}")
    def pull(system: str, day: str, task_state_store=None) -> dict:
        """Fetch the day's interval from the system, keep it raw, map it into the contract's landing files.
        The task state store keeps the last page's cursor, so a retry resumes (feedback_loop.sources.pull)."""
        from feedback_loop.settings import Settings
        from feedback_loop.sources.systems import pull_system

        out = pull_system(Settings.load(), system, day, state=task_state_store)
        return {"system": system, "dt": day, "streams": {k: v["records"] for k, v in out["streams"].items()},
                "mapped": out["mapped"]["sources"], "retries": out["retries"]}

    # A day without configured systems maps no pull task (skipped): land still runs on the files.
    @task(map_index_template="{{ source }}", trigger_rule="none_failed")
    def land(source: str, day: str) -> dict:
        from feedback_loop.nightly import land
        from feedback_loop.settings import Settings

        return land(Settings.load(), source, day)

    @task(map_index_template="{{ source }}")
    def validate(source: str, day: str) -> dict:
        """A data-quality failure is not retried: the same rows would fail again (AirflowFailException)."""
        from airflow.sdk.exceptions import AirflowFailException
        from feedback_loop.ingest.quality import DataQualityError
        from feedback_loop.nightly import validate
        from feedback_loop.settings import Settings

        try:
            return validate(Settings.load(), source, day)
        except DataQualityError as exc:
            raise AirflowFailException(str(exc)) from exc

    @task
    def model(day: str) -> dict:
        from feedback_loop.nightly import model
        from feedback_loop.settings import Settings

        return model(Settings.load(), day)

    @task
    def summarize(day: str, model_counts: dict) -> dict:
        from feedback_loop.nightly import summarize
        from feedback_loop.settings import Settings

        summary = summarize(Settings.load(), day, {"model": model_counts})
        return {"dt": summary["dt"], "status": summary["status"], "totals": summary["totals"]}

    @task
    def detect_gaps(day: str) -> dict:
        """Knowledge-base gaps of the trailing window ending on the day (see docs/gaps.md)."""
        from feedback_loop.nightly import detect_gaps
        from feedback_loop.settings import Settings

        out = detect_gaps(Settings.load(), day)
        return {k: out[k] for k in ("dt", "gaps_open", "gaps_by_kind", "gaps_closed", "page")}

    @task
    def signals(day: str) -> dict:
        """Signal metrics, A/B tests, improvement-action queue and the daily report (see docs/signals.md)."""
        from feedback_loop.nightly import signals
        from feedback_loop.settings import Settings

        out = signals(Settings.load(), day)
        return {k: out[k] for k in ("dt", "metric_rows", "actions", "actions_by_component", "report")}

    @task
    def build_datasets(day: str) -> dict:
        """Fine-tuning dataset versions of the trailing window ending on the day (see docs/datasets.md)."""
        from feedback_loop.nightly import build_datasets
        from feedback_loop.settings import Settings

        out = build_datasets(Settings.load(), day)
        keep = ("status", "version", "path", "examples", "new_examples", "supersedes", "reason")
        datasets = {n: {k: r.get(k) for k in keep} for n, r in out["datasets"].items()}
        return {"window": out["window"], "datasets": datasets}

    @task
    def announce_dataset(built: dict, name: str, outlet_events=None) -> str:
        """Emit the dataset's Asset event only for a newly published version (a skipped task emits none)."""
        from airflow.sdk.exceptions import AirflowSkipException

        r = built["datasets"][name]
        if r["status"] != "published":
            raise AirflowSkipException(f"{name}: {r['status']} ({r.get('reason') or r.get('version')})")
        outlet_events[DATASET_ASSETS[name]].extra = {"version": r["version"], "path": r["path"],
                                                     "examples": r["examples"], "new_examples": r["new_examples"],
                                                     "supersedes": r["supersedes"], **built["window"]}
        return r["version"]

    @task(pool="duckdb_warehouse")
    def publish_warehouse() -> dict:
        from feedback_loop.nightly import publish_warehouse
        from feedback_loop.settings import Settings

        return publish_warehouse(Settings.load())

    @task(pool="duckdb_warehouse")
    def build_data_docs() -> str:
        from feedback_loop.nightly import build_data_docs
        from feedback_loop.settings import Settings

        return build_data_docs(Settings.load())

    @task
    def review_queue(day: str) -> dict:
        """Conversations for people to label tonight, with the reason for each (docs/review.md)."""
        from feedback_loop.nightly import review_queue as build
        from feedback_loop.settings import Settings

        out = build(Settings.load(), day)
        return {k: out[k] for k in ("dt", "picked", "candidates", "by_reason", "tasks")}

    day = resolve_day()
    pulled = pull.partial(day=day).expand(system=source_systems())
    landed = land.partial(day=day).expand(source=list(SOURCE_NAMES))
    pulled >> landed
    validated = validate.partial(day=day).expand(source=list(SOURCE_NAMES))
    [landed, wait_for_earlier_days(day)] >> validated
    counts = model(day)
    validated >> counts
    summary = summarize(day, counts)
    gaps = detect_gaps(day)
    counts >> gaps
    built = build_datasets(day)
    summary >> built  # after summarize: each manifest records the day's data-quality results
    for name, asset in DATASET_ASSETS.items():
        announce_dataset.override(task_id=f"announce_{name}", outlets=[asset])(built, name)
    published = publish_warehouse()
    built >> published
    summary >> [published, build_data_docs()]
    gaps >> published
    signal_run = signals(day)
    summary >> signal_run  # after model (via summarize): the report shows the run summary
    signal_run >> published
    signal_run >> gaps  # gaps after signals: each gap row lists the night's action-queue rows that point at it
    signal_run >> built  # datasets after signals: the night's heavier stages run one after the other

    queue = review_queue(day)
    [signal_run, gaps] >> queue >> published

    # Retraining decision, every night, after everything it reads; a positive one starts the retraining DAG
    # through Airflow, with the reasons in the run's conf (docs/retraining.md).
    @task
    def decide_retraining(day: str) -> dict:
        """Evaluate the retraining triggers; record the decision and its reasons (marts/retrain_decisions)."""
        from feedback_loop.nightly import decide_retraining as decide
        from feedback_loop.settings import Settings

        d = decide(Settings.load(), day)
        return {t: {"go": bool(d[t].get("retrain", d[t].get("finetune"))), "reasons": d[t]["reasons"],
                    "conf": d[t]["conf"]} for t in ("intent_classifier", "reasoning_model")}

    @task.short_circuit
    def retraining_conf(decision: dict, target: str) -> dict | None:
        """The triggered run's conf when the decision is positive; otherwise skip the trigger."""
        print(f"{target}: {'; '.join(decision[target]['reasons'])}")
        return decision[target]["conf"] if decision[target]["go"] else None

    decision = decide_retraining(day)
    [built, signal_run, published] >> decision
    for target, dag_id in (("intent_classifier", "acsr_retrain_intent_classifier"),
                           ("reasoning_model", "acsr_finetune_reasoning_model")):
        TriggerDagRunOperator(
            task_id=f"trigger_{target}_retraining", trigger_dag_id=dag_id,
            conf=retraining_conf.override(task_id=f"decide_{target}")(decision, target),
            trigger_run_id="nightly_decision__{{ ti.xcom_pull(task_ids='resolve_day') }}",
            logical_date=None, skip_when_already_exists=True,  # a re-run of the day does not retrain twice
        )


acsr_nightly()
