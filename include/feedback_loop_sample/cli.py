"""`acsr-sample`: sample landing data for the demo, tests and benchmarks (not part of the product).

    acsr-sample generate --start 2026-11-19 --end 2026-11-25 --conversations-per-day 300
    acsr-sample agent --date 2026-11-25      # that day through the instrumented sample agent
"""

from __future__ import annotations

from datetime import date, timedelta

import typer
from feedback_loop.settings import Settings

app = typer.Typer(help="ACSR feedback loop sample data.", no_args_is_help=True)


@app.command()
def generate(
    start: str = typer.Option(None, help="first day (default: 7 days before today)"),
    end: str = typer.Option(None, help="last day (default: yesterday)"),
    conversations_per_day: int = typer.Option(300, help="conversations per day"),
    seed: int = typer.Option(7, help="random seed; the same seed gives the same files"),
    malformed_share: float = typer.Option(0.0, help="share of malformed rows of each kind"),
    landing: str = typer.Option(None, help="landing folder (default: the configured one)"),
):
    """Write seeded, realistic sample exports to the landing area."""
    from feedback_loop_sample.generator import generate as gen

    today = date.today()
    start_d = date.fromisoformat(start) if start else today - timedelta(days=7)
    end_d = date.fromisoformat(end) if end else today - timedelta(days=1)
    target = landing or Settings.load().landing
    truth = gen(target, start_d, end_d, conversations_per_day=conversations_per_day, seed=seed,
                malformed_share=malformed_share)
    typer.echo(f"wrote {start_d}..{end_d} to {target}; gaps planted: {len(truth.get('gap_intents', []))}")


@app.command()
def agent(
    date_: str = typer.Option(..., "--date", help="the generated day the sample agent replays"),
    landing: str = typer.Option(None, help="landing folder (default: the configured one)"),
    traces: str = typer.Option(None, help="where the OTLP JSON files go (default: <landing>/../traces)"),
):
    """Replay a generated day through the instrumented sample agent: OTLP JSON files, then the pull into the
    landing area in place of the generator's agent_events and overrides (docs/instrumentation.md)."""
    import json
    from pathlib import Path

    from feedback_loop_sample.agent import through_instrumentation

    target = landing or Settings.load().landing
    report = through_instrumentation(target, date_, traces or Path(target).parent / "traces")
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command()
def version() -> None:
    """The sample package's version (a second command keeps `generate` a named sub-command)."""
    typer.echo("feedback_loop_sample")


def main() -> None:
    app()
