"""Command line: the same stage functions the DAGs call, for local runs, benchmarks and debugging.
(Sample landing data: `acsr-sample generate`, in the feedback_loop_sample package.)

    acsr run --date 2026-11-25                             # the nightly run of one day
    acsr run --start 2026-11-19 --end 2026-11-25           # ... or of a range
    acsr stage land --source surveys --date 2026-11-25     # one stage of one source
    acsr summary --start 2026-11-19 --end 2026-11-25       # the run summaries, as a table
    acsr gaps --date 2026-11-25 [--window-days 28]         # knowledge-base gaps of the trailing window
    acsr datasets --start 2026-11-01 --end 2026-11-25      # fine-tuning dataset versions for a window
    acsr signals --date 2026-11-25                         # signal metrics, action queue, HTML report
    acsr warehouse                                         # rebuild the DuckDB warehouse from the lake
    acsr decide --date 2026-11-25                          # the night's retraining decision and its reasons
    acsr retrain-intent [--dataset-version latest]         # champion/challenger retraining (docs/retraining.md)
    acsr finetune --backend dry_run|openai|command         # a reasoning-model fine-tuning job
    acsr contract docs/contract                            # export the input contract as JSON Schema
    acsr review-queue --date 2026-11-25                    # the night's review queue (docs/review.md)
    acsr import-reviews --date 2026-11-26                  # Label Studio exports -> override files
    acsr approvals                                         # the latest approval-gate decisions
    acsr pull zendesk --date 2026-11-25 [--map-only]       # pull a source system's day and map it (docs/sources.md)
"""

from __future__ import annotations

import json
import logging
from datetime import date
from pathlib import Path

import typer

from feedback_loop.settings import Settings

app = typer.Typer(help="ACSR feedback loop: the nightly stages on the command line.", no_args_is_help=True)


def _day(text: str) -> date:
    """A YYYY-MM-DD option as a date: the command line's one parse of a day."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a day (YYYY-MM-DD)") from None


def _days(day: str | None, start: str | None, end: str | None) -> list[date]:
    from feedback_loop.nightly import days_between

    if day:
        return [_day(day)]
    if start and end:
        return days_between(_day(start), _day(end))
    raise typer.BadParameter("give --date, or --start and --end")


@app.command()
def run(
    date_: str = typer.Option(None, "--date", help="one day, YYYY-MM-DD"),
    start: str = typer.Option(None, help="first day of a range"),
    end: str = typer.Option(None, help="last day of a range"),
    data_docs: bool = typer.Option(True, help="rebuild GX Data Docs at the end"),
):
    """Run the nightly stages for one day or a range of days, in this process."""
    from feedback_loop.nightly import run_day

    settings = Settings.load()
    for d in _days(date_, start, end):
        s = run_day(settings, d, data_docs=data_docs)
        typer.echo(f"{d}: {s['status']} {json.dumps(s['totals'])}")


@app.command()
def stage(
    name: str = typer.Argument(..., help="land | validate | model | summarize"),
    date_: str = typer.Option(..., "--date", help="YYYY-MM-DD"),
    source: str = typer.Option(None, help="source, for land and validate (default: all)"),
):
    """Run a single stage of the nightly run (for debugging)."""
    from feedback_loop import nightly
    from feedback_loop.ingest import contract

    settings = Settings.load()
    day = _day(date_)
    if name in ("land", "validate"):
        for s in [source] if source else contract.SOURCE_NAMES:
            typer.echo(json.dumps(getattr(nightly, name)(settings, s, day), default=str))
    elif name == "model":
        typer.echo(json.dumps(nightly.model(settings, day)))
    elif name == "summarize":
        typer.echo(json.dumps(nightly.summarize(settings, day)["totals"]))
    else:
        raise typer.BadParameter(f"unknown stage {name}")


@app.command()
def summary(
    date_: str = typer.Option(None, "--date"),
    start: str = typer.Option(None),
    end: str = typer.Option(None),
):
    """Print the run summary of each day: rows in, staged, quarantined by reason, GX suite results."""
    from feedback_loop.lake.files import Lake
    from feedback_loop.signals.report_text import summary_table

    settings = Settings.load()
    lake = Lake(settings.lake)
    days = [str(d) for d in _days(date_, start, end)] if (date_ or start) else lake.days_with_file("runs", "summary.json")
    typer.echo(summary_table(lake, days))


@app.command()
def gaps(
    date_: str = typer.Option(..., "--date", help="last day of the window, YYYY-MM-DD"),
    window_days: int = typer.Option(None, help="trailing window in days (default: Settings.gap_window_days)"),
):
    """Find and rank knowledge-base gaps over the trailing window ending on --date (docs/gaps.md)."""
    from feedback_loop.nightly import detect_gaps

    out = detect_gaps(Settings.load(), _day(date_), window_days)
    typer.echo(f"{out['dt']}: window {out['window_start']}..{out['window_end']}, {out['n_signals']} gap signals "
               f"in {out['n_conversations']} conversations, {out['n_topics']} topics; open gaps "
               f"{json.dumps(out['gaps_by_kind'])}, closed {out['gaps_closed']}")
    for i, g in enumerate(out["top"], 1):
        typer.echo(f"  {i}. {g['gap_id']} {g['kind']:<15} impact {g['impact']:>7.1f}  {g['label']}")
    typer.echo(f"mart: {out['mart']}\npage: {out['page']}")


@app.command()
def datasets(
    start: str = typer.Option(None, help="first day of the window, YYYY-MM-DD"),
    end: str = typer.Option(None, help="last day of the window, YYYY-MM-DD"),
    date_: str = typer.Option(None, "--date", help="last day of a trailing window (with --window-days)"),
    window_days: int = typer.Option(None, help="trailing window in days (default: Settings.dataset_window_days)"),
    min_new_examples: int = typer.Option(None, help="publish only with at least this many new examples"),
):
    """Build, validate and publish fine-tuning dataset versions for a window (docs/datasets.md)."""
    from feedback_loop.datasets.build import build_datasets

    if not (end or date_):
        raise typer.BadParameter("give --start and --end, or --date [--window-days N]")
    settings = Settings.load(dataset_min_new_examples=min_new_examples, dataset_min_new_pairs=min_new_examples)
    out = build_datasets(settings, date_, window_days, start=start, end=end or date_)
    w = out["window"]
    typer.echo(f"window {w['start']}..{w['end']}: {out['conversations']} conversations")
    for name, r in out["datasets"].items():
        typer.echo(f"  {name:<16} {r['status']:<20} {r['examples']:>6} examples, {r.get('new_examples') or 0:>6} new  "
                   f"{r.get('version') or ''} {r.get('reason') or ''}".rstrip())
    typer.echo(f"datasets: {settings.lake}/datasets/<name>/latest.json -> <version>/manifest.json, README.md")


@app.command()
def signals(
    date_: str = typer.Option(None, "--date", help="one day, YYYY-MM-DD"),
    start: str = typer.Option(None, help="first day of a range (run in order: baselines read earlier days)"),
    end: str = typer.Option(None, help="last day of a range"),
):
    """Signal metrics, A/B tests, the improvement-action queue and the HTML report of a day (docs/signals.md)."""
    from feedback_loop.nightly import signals as run

    settings = Settings.load()
    for d in _days(date_, start, end):
        out = run(settings, d)
        typer.echo(f"{d}: {out['metric_rows']} metric rows ({out['provisional_rows']} provisional), "
                   f"{out['ab_tests']} A/B tests, {out['actions']} actions {json.dumps(out['actions_by_component'])}")
        typer.echo(f"  queue:  {out['action_queue']}\n  report: {out['report']}")


@app.command()
def warehouse():
    """Rebuild the DuckDB warehouse (views over the lake)."""
    from feedback_loop.lake.warehouse import publish

    out = publish(Settings.load())
    typer.echo(f"{out['warehouse']}: {len(out['views'])} views: {', '.join(out['views'])}")


@app.command()
def pull(
    system: str = typer.Argument(..., help="zendesk | otlp | ... (docs/sources.md)"),
    date_: str = typer.Option(None, "--date", help="one day, YYYY-MM-DD"),
    start: str = typer.Option(None, help="first day of a range"),
    end: str = typer.Option(None, help="last day of a range"),
    map_only: bool = typer.Option(False, "--map-only", help="map the raw pull again (after changing a mapping)"),
):
    """Pull a source system's day(s) into the landing area and map them into the contract (docs/sources.md)."""
    from feedback_loop.sources.systems import ALIASES, map_system, pull_system

    settings = Settings.load()
    system = ALIASES.get(system, system)
    for d in _days(date_, start, end):
        out = map_system(settings, system, d) if map_only else pull_system(settings, system, d)["mapped"]
        typer.echo(f"{d} {system}: {json.dumps(out['sources'])}")


@app.command()
def contract(out: Path = typer.Argument(Path("docs/contract"), help="folder for the JSON Schema files")):  # noqa: B008 (Typer idiom)
    """Export the input contract as JSON Schema, one file per source."""
    from feedback_loop.ingest import contract as c

    out.mkdir(parents=True, exist_ok=True)
    for src in c.SOURCES.values():
        (out / f"{src.name}.schema.json").write_text(json.dumps(c.json_schema(src), indent=2) + "\n")
    typer.echo(f"wrote {len(c.SOURCES)} schemas to {out}")


# Retraining (feedback_loop.retrain.commands): the functions the retraining DAGs call, in this process.
from feedback_loop.retrain import commands as _retrain

app.command("decide")(_retrain.decide)
app.command("retrain-intent")(_retrain.retrain_intent)
app.command("finetune")(_retrain.finetune)

# People in the loop (feedback_loop.review.commands): the review queue, Label Studio answers, approvals.
from feedback_loop.review import commands as _review

app.command("review-queue")(_review.review_queue)
app.command("import-reviews")(_review.import_reviews)
app.command("approvals")(_review.approvals)


def main():  # pragma: no cover - console entry point
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
