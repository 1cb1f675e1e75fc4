"""The review commands of the `acsr` CLI (registered in feedback_loop.cli): the functions the nightly DAG
and the approval gates use, in this process.

    acsr review-queue --date 2026-11-25      # the night's review queue: mart, Label Studio tasks and config
    acsr import-reviews --date 2026-11-26    # Label Studio exports of the day -> override files (before land)
    acsr approvals [--limit 20]              # the latest approval-gate decisions: who, when, what, why
"""

from __future__ import annotations

import json

import typer


def review_queue(date_: str = typer.Option(..., "--date", help="the night's day, YYYY-MM-DD")):
    """Pick the day's conversations for people to review and write the Label Studio tasks."""
    from feedback_loop.review.queue import build_queue
    from feedback_loop.settings import Settings

    out = build_queue(Settings.load(), date_)
    typer.echo(f"{out['picked']} of {out['candidates']} candidates (budget {out['budget']}), by reason "
               f"{json.dumps(out['by_reason'])}, by channel {json.dumps(out['by_channel'])}")
    typer.echo(f"mart: {out['mart']}\ntasks: {out['tasks']}\nlabelling config: {out['config']}")


def import_reviews(date_: str = typer.Option(..., "--date", help="the landing day of the exports, YYYY-MM-DD")):
    """Convert the day's Label Studio exports (<landing>/label_studio/dt=<day>/*.json) into override files;
    `acsr run` / the nightly DAG do this themselves before landing `overrides`."""
    from feedback_loop.review.label_studio import convert_exports
    from feedback_loop.settings import Settings

    out = convert_exports(Settings.load(), date_)
    if not out["exports"]:
        typer.echo(f"no Label Studio export for {date_}")
    for r in out["exports"]:
        typer.echo(f"{r['export']}: {r['tasks']} tasks, {r['answered']} answers, {r['skipped']} skipped, "
                   f"{r['unanswered']} unanswered -> {r['rows']} override rows in {r['converted']}")


def approvals(limit: int = typer.Option(20, help="how many, newest first")):
    """The latest approval-gate decisions (also the warehouse view approval_decisions)."""
    from feedback_loop.review.approvals import flywheel_rows
    from feedback_loop.settings import Settings

    rows = flywheel_rows(Settings.load(), limit)
    if not rows:
        typer.echo("no approval decisions yet")
    for r in rows:
        typer.echo(f"{r['decided_at']}  {r['gate']:<9} {r['outcome']:<18} by {r['decided_by'] or '-':<16} "
                   f"{r['what']}: {r['reason']}  ({r['dag_id']} {r['run_id']})")
