"""The day is a datetime.date from nightly.partition_day down (parsed once at the edge), and the shared ground
imports no stage: the warehouse takes its view providers from feedback_loop.views or from its caller."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, date, datetime

import pytest
from feedback_loop import nightly


def test_partition_day_is_a_date_whoever_starts_the_run():
    assert nightly.partition_day("2026-11-20") == date(2026, 11, 20)
    assert nightly.partition_day(None, "2026-11-19") == date(2026, 11, 19)
    assert nightly.partition_day(None, None, datetime(2026, 11, 21, 2, tzinfo=UTC)) == date(2026, 11, 20)
    assert nightly.partition_day(None, None, None, datetime(2026, 11, 22, 9, tzinfo=UTC)) == date(2026, 11, 21)


def test_as_day_parses_text_once_and_passes_dates_through():
    d = date(2026, 11, 20)
    assert nightly.as_day(d) is d
    assert nightly.as_day("2026-11-20") == d
    assert nightly.as_day(datetime(2026, 11, 20, 23, 59, tzinfo=UTC)) == d
    with pytest.raises(ValueError):
        nightly.as_day("20.11.2026")
    assert nightly.days_between("2026-11-30", date(2026, 12, 2)) == [date(2026, 11, 30), date(2026, 12, 1),
                                                                      date(2026, 12, 2)]


def test_date_only_stage_functions_refuse_text(settings):
    """Below nightly the day must already be a date: text there means someone parses twice."""
    from feedback_loop.model.conversations import build_model

    with pytest.raises(AttributeError):
        build_model(settings, "2026-11-20")


def test_cli_parses_the_day_once_with_a_clear_error(data_dir):
    from feedback_loop.cli import app
    from typer.testing import CliRunner

    out = CliRunner().invoke(app, ["stage", "summarize", "--date", "2026-13-01"])
    assert out.exit_code != 0 and "is not a day (YYYY-MM-DD)" in out.output


def test_the_lake_imports_no_stage():
    code = ("import sys, feedback_loop.lake.warehouse, feedback_loop.lake.duck, feedback_loop.lake.files; "
            "print(sorted(m for m in sys.modules if m.startswith(('feedback_loop.signals', 'feedback_loop.gaps', "
            "'feedback_loop.datasets', 'feedback_loop.model'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_warehouse_views_come_from_the_named_providers(settings):
    import duckdb
    from feedback_loop import views
    from feedback_loop.lake.warehouse import register_views

    seen = []

    def provider(con, s):
        seen.append(s.lake)
        con.execute("CREATE VIEW probe AS SELECT 1 AS x")
        return ["probe"]

    con = duckdb.connect()
    assert register_views(con, settings, providers=[provider]) == ["probe"] and seen == [settings.lake]
    assert [p.__name__ for p in views.PROVIDERS] == ["register_signal_views", "register_gap_views", "register_approval_views"]
    assert register_views(duckdb.connect(), settings) == []  # an empty lake: the stages' views need their marts


STAGES = ("land", "validate", "model", "signals", "detect_gaps", "review_queue", "build_datasets",
          "publish_warehouse", "build_data_docs", "decide_retraining")


def test_every_stage_runs_with_fewer_collections_and_restores_the_callers_thresholds(settings, monkeypatch):
    """The collector's thresholds are raised while a stage runs (its CPU: docs/benchmark.md, "Fewer garbage
    collections") and put back when it returns or raises, so a task process or a test goes on with its own."""
    import gc

    from feedback_loop.datasets import build
    from feedback_loop.model import conversations

    assert all(hasattr(getattr(nightly, name), "__wrapped__") for name in STAGES)
    seen = []

    def record(*_args, **_kwargs):
        seen.append(gc.get_threshold())
        return {}

    def fail(*_args, **_kwargs):
        seen.append(gc.get_threshold())
        raise RuntimeError("boom")

    before = gc.get_threshold()
    assert before != nightly.STAGE_GC_THRESHOLDS
    monkeypatch.setattr(conversations, "build_model", record)
    monkeypatch.setattr(build, "build_datasets", fail)
    assert nightly.model(settings, "2026-11-20") == {}
    with pytest.raises(RuntimeError, match="boom"):
        nightly.build_datasets(settings, "2026-11-20")
    assert seen == [nightly.STAGE_GC_THRESHOLDS] * 2
    assert gc.get_threshold() == before
