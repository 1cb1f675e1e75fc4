"""
### Retrain the intent classifier (champion / challenger)

Trains a challenger on the base labelled set plus the people's relabels, evaluates it and the champion on
the same frozen gold set (Banking77 test) and held-out recent relabels, registers it in MLflow (alias
`challenger`), and moves the alias `champion` only when the challenger is better by the margin with a
significant paired McNemar test, no protected intent regressed beyond the limit and calibration held,
and a person approved (`approve_promotion`: the evidence in Browse > Required Actions; auto-approved
unless `ACSR_APPROVAL_PROMOTION_MODE=required`, docs/review.md).
The first run ever promotes a baseline trained on the base set.

Runs when the nightly DAG publishes a new `intent_relabels` dataset version (its Asset), when the nightly
retraining decision triggers it (the reasons are in the run's conf), or by hand (trigger form below).
Logic: `feedback_loop.retrain.intent_retrain` (the steps), `intent_assembly` (the sets), `intent_promotion`
(evaluation, registration, promotion); docs/retraining.md.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import dag, task
from feedback_loop.alerts import WebhookNotifier
from feedback_loop.assets import DATASET_ASSETS
from feedback_loop.retrain.params import asset_event_version, intent_classifier_params
from feedback_loop.review.operators import ApprovalGate

RELABELS = DATASET_ASSETS["intent_relabels"]


@dag(
    dag_id="acsr_retrain_intent_classifier",
    schedule=[RELABELS],
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,  # one promotion decision at a time
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(minutes=2),
                  "on_failure_callback": WebhookNotifier(kind="task_failed")},
    on_failure_callback=WebhookNotifier(kind="dag_failed"),
    params=intent_classifier_params(),
    tags=["acsr", "feedback-loop", "retraining"],
    doc_md=__doc__,
)
def acsr_retrain_intent_classifier():
    @task
    def resolve_request(params=None, triggering_asset_events=None) -> dict:
        """The run's request: form/conf values over Settings; an Asset event names its dataset version."""
        from feedback_loop.retrain.intent_retrain import resolve_request as resolve
        from feedback_loop.settings import Settings

        return resolve(Settings.load(), dict(params or {}), asset_event_version(triggering_asset_events, RELABELS))

    @task
    def ensure_champion(request: dict, run_id=None) -> dict:
        """First run ever: train, register and promote a baseline on the base set."""
        from feedback_loop.retrain.intent_retrain import ensure_champion as ensure
        from feedback_loop.settings import Settings

        return ensure(Settings.load(), request, run_id)

    @task.short_circuit
    def anything_new(request: dict, champion: dict) -> bool:
        """Stop here (skipping the rest) when the champion was trained on exactly this data, unless forced."""
        from feedback_loop.retrain.intent_retrain import should_train
        from feedback_loop.settings import Settings

        check = should_train(Settings.load(), request)
        print(f"training key {check['training_key']}: {check['reason']}")
        return check["train"]

    @task
    def assemble_training_set(request: dict) -> dict:
        from feedback_loop.retrain.intent_assembly import assemble
        from feedback_loop.settings import Settings

        a = assemble(Settings.load(), request)
        return {k: a[k] for k in ("training_key", "folder", "dataset_version", "counts", "files")}

    @task
    def train_challenger(assembly: dict) -> dict:
        from feedback_loop.retrain.intent_retrain import train_challenger as train
        from feedback_loop.settings import Settings

        return train(Settings.load(), assembly)

    @task
    def evaluate(assembly: dict, trained: dict, request: dict) -> dict:
        """Champion and challenger on the same sets, and the promotion decision with its reasons."""
        from feedback_loop.retrain.intent_promotion import evaluate as run_evaluation
        from feedback_loop.settings import Settings

        ev = run_evaluation(Settings.load(), assembly, request, trained)
        keep = ("training_key", "dataset_version", "champion", "decision", "path", "folder", "model_path",
                "assembly", "dry_run")
        out = {k: ev[k] for k in keep}
        out["metrics"] = {who: {s: {k: v for k, v in m.items() if k != "per_intent"} for s, m in (sets or {}).items()}
                          for who, sets in ev["metrics"].items() if sets}
        return out

    @task.short_circuit
    def not_a_dry_run(evaluation: dict) -> bool:
        print("decision:", "; ".join(evaluation["decision"]["reasons"]))
        return not evaluation["dry_run"]

    @task
    def register_challenger(evaluation: dict, run_id=None) -> dict:
        """MLflow: the run (params, metrics, artifacts) and a new model version, alias `challenger`."""
        from feedback_loop.retrain.intent_promotion import register
        from feedback_loop.settings import Settings

        return register(Settings.load(), evaluation, run_id)

    @task
    def promote_or_keep(evaluation: dict, registered: dict, approval: dict, run_id=None) -> dict:
        """The only task that can change the champion: alias and lake pointer move on evidence, and only
        when the approval gate did not reject (its answer is recorded in MLflow and the model card)."""
        from feedback_loop.retrain.intent_promotion import finalize
        from feedback_loop.review.approvals import apply_to_promotion
        from feedback_loop.settings import Settings

        return finalize(Settings.load(), apply_to_promotion(evaluation, approval), registered, run_id)

    request = resolve_request()
    champion = ensure_champion(request)
    assembly = assemble_training_set(request)
    anything_new(request, champion) >> assembly
    trained = train_challenger(assembly)
    evaluation = evaluate(assembly, trained, request)
    registered = register_challenger(evaluation)
    not_a_dry_run(evaluation) >> registered
    # A person approves before the alias moves (Settings.approval_promotion_*; auto-approve by default).
    approval = ApprovalGate(task_id="approve_promotion", gate="promotion",
                            evidence={"evaluation": evaluation, "registered": registered})
    promote_or_keep(evaluation, registered, approval.output)


acsr_retrain_intent_classifier()
