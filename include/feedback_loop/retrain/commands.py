"""The retraining commands of the `acsr` CLI (registered in feedback_loop.cli): the same functions the DAGs
call, in this process, with the same Param schemas validating the options.

    acsr decide --date 2026-11-25
    acsr retrain-intent [--dataset-version latest|none|vYYYYMMDD-xxxxxxxxxx] [--policy evidence|never|always]
                        [--margin 0.005] [--alpha 0.05] [--base-per-intent N] [--force] [--dry-run]
    acsr finetune [--dataset sft|preference] [--dataset-version latest|v...] [--backend dry_run|openai|command]
                  [--dry-run] [--base-model M] [--hyperparameters '{"n_epochs": 3}'] [--no-wait]
"""

from __future__ import annotations

import json

import typer


def _validated(params_factory, values: dict) -> dict:
    """The values checked by the DAG's own trigger-form schema (a bad value fails like in the UI)."""
    from airflow.sdk import ParamsDict
    from airflow.sdk.definitions.param import ParamValidationError

    params = ParamsDict(params_factory())
    try:
        for k, v in values.items():
            if v is not None:
                params[k] = v
        return params.validate()
    except ParamValidationError as exc:
        raise typer.BadParameter(str(exc)) from exc


def decide(date_: str = typer.Option(..., "--date", help="the night's day, YYYY-MM-DD")):
    """Evaluate the retraining triggers for a day and record the decision (marts/retrain_decisions)."""
    from feedback_loop.retrain.decide import decide as run_decide
    from feedback_loop.settings import Settings

    d = run_decide(Settings.load(), date_)
    for target, key in (("intent_classifier", "retrain"), ("reasoning_model", "finetune")):
        typer.echo(f"{target}: {'YES' if d[target][key] else 'no'} - {'; '.join(d[target]['reasons'])}")
    for c in d["checks"]:
        value = "-" if c["value"] is None else f"{c['value']:.4g}"
        typer.echo(f"  {'*' if c['fired'] else ' '} {c['target']:<17} {c['trigger']:<17} {c['scope']:<30} "
                   f"{value:>8} (threshold {c['threshold']})")


def retrain_intent(
    dataset_version: str = typer.Option("latest", help="relabel dataset version: latest, none or a version id"),
    policy: str = typer.Option("evidence", help="promotion policy: evidence | never | always"),
    margin: float = typer.Option(None, help="accuracy gain required on the gold set (default: Settings)"),
    alpha: float = typer.Option(None, help="McNemar significance level (default: Settings)"),
    base_per_intent: int = typer.Option(None, help="base examples per intent, 0 = all (default: Settings)"),
    force: bool = typer.Option(False, help="train even if the champion was trained on exactly this data"),
    dry_run: bool = typer.Option(False, help="train and evaluate; register and promote nothing"),
    reason: str = typer.Option("command line", help="why (recorded with the model version)"),
):
    """Retrain the intent classifier: challenger vs champion, MLflow registry, promotion on evidence."""
    from feedback_loop.retrain.intent_retrain import resolve_request, run
    from feedback_loop.retrain.params import intent_classifier_params
    from feedback_loop.settings import Settings

    values = _validated(intent_classifier_params, {
        "dataset_version": dataset_version, "promotion_policy": policy, "margin": margin, "alpha": alpha,
        "base_per_intent": base_per_intent, "force": force, "dry_run": dry_run, "reason": reason})
    settings = Settings.load()
    out = run(settings, resolve_request(settings, values), run_id="cli")
    if out["bootstrap"].get("bootstrapped"):
        typer.echo(f"baseline v{out['bootstrap']['champion']} trained on the base set and promoted to champion")
    if "skipped" in out:
        typer.echo(f"nothing to train: {out['skipped']}")
    elif out.get("dry_run"):
        typer.echo("dry run: " + "; ".join(out["decision"]["reasons"]) + f"\nevaluation: {out['evaluation']}")
    else:
        o = out["outcome"]
        typer.echo(f"challenger v{o['version']}: {'PROMOTED' if o['promoted'] else 'not promoted'} "
                   f"(champion now v{o['champion_after']})")
        for r in o["reasons"]:
            typer.echo(f"  - {r}")
        typer.echo(f"model card: {o['model_card']}")


def finetune(
    dataset: str = typer.Option("sft", help="sft | preference"),
    dataset_version: str = typer.Option("latest", help="latest or a version id"),
    backend: str = typer.Option("dry_run", help="dry_run | openai | command"),
    dry_run: bool = typer.Option(False, help="with openai/command: show what would be sent, submit nothing"),
    base_model: str = typer.Option(None, help="base model (default: Settings.finetune_base_model)"),
    hyperparameters: str = typer.Option("{}", help='JSON, e.g. {"n_epochs": 3}'),
    suffix: str = typer.Option("acsr", help="fine-tuned model name suffix"),
    poll_seconds: float = typer.Option(60, help="poll interval"),
    timeout_hours: float = typer.Option(24, help="give up (and cancel) after this long"),
    force: bool = typer.Option(False, help="submit again even if this exact job succeeded"),
    wait: bool = typer.Option(True, help="wait for the job to end"),
):
    """Fine-tune the reasoning model. The openai backend reads ACSR_FINETUNE_BASE_URL and ACSR_FINETUNE_API_KEY."""
    from feedback_loop.retrain.finetune import resolve_request, run
    from feedback_loop.retrain.params import finetune_params
    from feedback_loop.settings import Settings

    try:
        hp = json.loads(hyperparameters)
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"--hyperparameters is not JSON: {exc}") from exc
    values = _validated(finetune_params, {
        "dataset": dataset, "dataset_version": dataset_version, "backend": backend, "dry_run": dry_run,
        "base_model": base_model, "hyperparameters": hp, "suffix": suffix, "poll_seconds": poll_seconds,
        "timeout_hours": timeout_hours, "force": force, "reason": "command line"})
    settings = Settings.load()
    record = run(settings, resolve_request(settings, values), wait=wait)
    typer.echo(f"{record['job_key']}: {record['status']} (job {record['job_id'] or '-'}, model "
               f"{record['result_model'] or '-'}, trained tokens {record['trained_tokens'] or '-'}, "
               f"cost {record['cost_usd'] if record['cost_usd'] is not None else '-'})")
    if record.get("would_send"):
        typer.echo(json.dumps(record["would_send"], indent=2, default=str))
    typer.echo(f"record: {settings.lake}/finetune_jobs/{record['job_key']}.json")
