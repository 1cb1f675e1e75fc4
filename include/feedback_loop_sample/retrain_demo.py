"""The retraining part of `make demo`: run both retraining DAGs once through Airflow (`dag.test()`), the
fine-tuning one as a dry run, and summarise the nightly decisions, the registered classifier and the job."""

from __future__ import annotations

from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings


def run_retraining_dags(progress=None) -> dict[str, str]:
    """dag.test() of the intent classifier DAG (bootstrap + challenger) and of the fine-tuning DAG (dry run)."""
    import os

    from feedback_loop_sample.demo_runner import load_dag, run_dag

    # dag.test() runs here with nobody at the Required Actions page: the approval gates auto-approve (and
    # record it) whatever the environment says, so the demo never waits (docs/review.md).
    for gate in ("PROMOTION", "FINETUNE"):
        if os.environ.get(f"ACSR_APPROVAL_{gate}_MODE", "auto") != "auto":
            print(f"[demo] ACSR_APPROVAL_{gate}_MODE ignored by the demo: its gate auto-approves", flush=True)
        os.environ[f"ACSR_APPROVAL_{gate}_MODE"] = "auto"
    states = {}
    for dag_id, conf in (("acsr_retrain_intent_classifier", {"reason": "make demo"}),
                         ("acsr_finetune_reasoning_model", {"backend": "dry_run", "dataset": "sft", "reason": "make demo"})):
        states[dag_id] = run_dag(load_dag(dag_id), progress, dag_id, run_conf=conf)
    return states


def retraining_summary(settings: Settings, days: list[str]) -> str:
    lake = Lake(settings.lake)
    lines = ["[demo] retraining decisions (marts/retrain_decisions; each night's reasons: `acsr decide --date D`)"]
    docs = {d: lake.read_json("runs", f"dt={d}", "retrain_decision.json") for d in days}
    ic = " ".join("R" if doc and doc["intent_classifier"]["retrain"] else ("-" if doc else "?") for doc in docs.values())
    rm = " ".join("F" if doc and doc["reasoning_model"]["finetune"] else ("-" if doc else "?") for doc in docs.values())
    lines.append(f"  nights {days[0]}..{days[-1]}  intent classifier: {ic}   reasoning model: {rm}"
                 "   (R retrain, F fine-tune, - keep, ? no decision)")
    last = docs[days[-1]]
    if last:
        i, r = last["intent_classifier"], last["reasoning_model"]
        lines.append(f"  {days[-1]}  intent classifier: {'RETRAIN' if i['retrain'] else 'keep'} - {'; '.join(i['reasons'])}")
        lines.append(f"              reasoning model: {'FINE-TUNE' if r['finetune'] else 'keep'} - {'; '.join(r['reasons'])}")
    from feedback_loop.retrain.registry import champion

    ptr = champion(settings)
    if ptr:
        lines.append(f"[demo] intent classifier champion: acsr-intent-classifier v{ptr['version']} (MLflow alias "
                     f"'champion', {ptr['model_uri']}), gold accuracy {ptr['gold']['accuracy']:.4f}, trained on "
                     f"{ptr['dataset_version'] or 'the base set'}; {'; '.join(ptr['reasons'])}")
        lines.append(f"  model card        {ptr['model_card']}")
        lines.append(f"  MLflow store      {settings.mlflow_tracking_uri or 'sqlite:///' + settings.lake + '/mlflow/mlflow.db'}")
    import glob
    import json
    import os

    outcomes = sorted(glob.glob(os.path.join(settings.lake, "retrain", "intent_classifier", "*", "outcome-v*.json")),
                      key=os.path.getmtime)
    if outcomes:
        with open(outcomes[-1]) as fh:
            last = json.load(fh)
        lines.append(f"[demo] last challenger v{last['version']}: {'PROMOTED' if last['promoted'] else 'not promoted'} - "
                     f"{'; '.join(last['reasons'])}")

    from feedback_loop.review.approvals import flywheel_rows

    for r in flywheel_rows(settings, 4):
        lines.append(f"[demo] approval gate {r['gate']}: {r['outcome']} by {r['decided_by']} ({r['what']}): "
                     f"{r['reason']}  (`acsr approvals`, view approval_decisions)")

    jobs = sorted(glob.glob(os.path.join(settings.lake, "finetune_jobs", "*.json")), key=os.path.getmtime)
    if jobs:
        with open(jobs[-1]) as fh:
            job = json.load(fh)
        create = next((r for r in job.get("would_send", []) if r.get("url", "").endswith("/fine_tuning/jobs")), None)
        lines.append(f"[demo] fine-tuning job {job['job_key']}: {job['status']} ({job['training_examples']} training "
                     f"examples of {job['dataset']} {job['dataset_version']}); would create: "
                     f"{json.dumps(create['json'])[:300] if create else '-'}")
        lines.append(f"  job record        {jobs[-1]}")
    return "\n".join(lines)
