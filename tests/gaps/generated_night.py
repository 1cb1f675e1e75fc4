"""A generated night for gap tests: days of generated traffic through the real land, validate and model
stages, then the gap stage, with the generator's truth beside what the stage found."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb


def gap_night(root: Path, end: date, days: int, **generate_kw) -> tuple:
    """`days` days ending `end` generated into `root` (`generate_kw`: conversations a day, seed, gap share,
    regime), through land, validate and model, then detect_gaps over the window. Returns (settings, the
    generator's truth, the stage's summary, the gap rows by rank, each conversation's true intent)."""
    from feedback_loop import nightly
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    # The first day's surveys answer cases from before the generated range: not what these tests are about.
    settings = Settings.load(landing=str(root / "landing"), lake=str(root / "lake"),
                             warehouse=str(root / "warehouse.duckdb"), max_bad_row_share=1.0)
    start = end - timedelta(days=days - 1)
    truth = generate(settings.landing, start, end, **generate_kw)
    for i in range(days):
        nightly.land_validate_model(settings, start + timedelta(days=i), summarize_day=False)
    summary = nightly.detect_gaps(settings, end.isoformat(), window_days=days)
    con = duckdb.connect()
    cur = con.execute("SELECT * FROM read_parquet($f) ORDER BY rank NULLS LAST", {"f": summary["mart"]})
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r)) for r in cur.fetchall()]
    intents = dict(con.execute(f"""
        SELECT conversation_id, arg_min(json_extract_string(_extra, '$.true_intent'), ts)
        FROM read_parquet('{settings.lake}/staged/agent_events/dt=*/part.parquet')
        WHERE event_type = 'customer_message' GROUP BY conversation_id""").fetchall())
    con.close()
    return settings, truth, summary, rows, intents
