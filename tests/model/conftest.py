"""The model tests' day: a small generated day, landed and validated, on real Parquet files."""

from __future__ import annotations

import shutil
from datetime import date
from typing import NamedTuple

import pytest

DAY = date(2026, 11, 20)


class LandedDay(NamedTuple):
    settings: object  # feedback_loop.settings.Settings of the data folder `root` (landing, lake)
    day: date
    root: object  # pathlib.Path of the data folder: copy it to build the same day another way


@pytest.fixture(scope="session")
def _landed_template(tmp_path_factory):
    """The day generated, landed and validated once per session (tests get a copy)."""
    from feedback_loop import nightly
    from feedback_loop.ingest.contract import SOURCE_NAMES
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    root = tmp_path_factory.mktemp("landed-day")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ACSR_DATA_DIR", str(root))
        settings = Settings.load()
        generate(settings.landing, DAY, DAY, conversations_per_day=80, seed=3)
        for source in SOURCE_NAMES:
            nightly.land(settings, source, DAY.isoformat())
            nightly.validate(settings, source, DAY.isoformat())
    return root


@pytest.fixture
def landed_day(_landed_template, tmp_path, monkeypatch) -> LandedDay:
    """80 conversations of 2026-11-20 (seed 3), every source landed and validated, in `tmp_path / "one"`."""
    from feedback_loop.settings import Settings

    shutil.copytree(_landed_template, tmp_path / "one")
    monkeypatch.setenv("ACSR_DATA_DIR", str(tmp_path / "one"))
    return LandedDay(Settings.load(), DAY, tmp_path / "one")
