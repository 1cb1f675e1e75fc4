"""Faults: tasks SIGKILLed in the middle of a write and retried, runs of one day and of two days at once,
the warehouse file held open by another process, a full disk under the lake.

Each stage runs in a child process (tests/hostile/crash.py) that kills itself with SIGKILL at an exact
point of its N-th atomic write (the temp file complete but not renamed, or only half written), or that
the test kills at a random moment. The invariants, every time:

- no partial partition is visible: every `part.parquet` and JSON document reads, and equals what an
  undisturbed run writes; the only leftovers are `.tmp-*` files, which the readers' globs never match;
- the retry (the stage run again, as Airflow retries a task) gives outputs identical to the undisturbed
  run's and removes the dead writer's temp files.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from feedback_loop import nightly
from feedback_loop.ingest import contract
from feedback_loop.lake.files import Lake, LakeWriteError
from feedback_loop.settings import Settings

from .corpus import DAY, KINDS, PREV, FileSpec, Record, good_row, write_day

CRASH = str(Path(__file__).with_name("crash.py"))
STAGES = ["land", "validate", "model", "summarize", "publish"]
ENV = {"ACSR_MAX_BAD_ROW_SHARE": "1.0", "ACSR_REFERENCE_LOOKBACK_DAYS": "1", "ACSR_MISSING_SOURCE": "fail"}
ID_FIELDS = ("event_id", "conversation_id", "case_id", "survey_id", "override_id", "check_id", "article_id")
BAD_KINDS = ("not_json", "string_for_number", "timestamp_in_future", "missing_id", "duplicate_in_file")


def write_fault_day(landing: str, day: str, n: int = 12) -> None:
    """A small day of every source: good records and a few bad ones. Every id carries the day, so two
    days share nothing and can run in any order with the same outcome."""

    def tag(rec: Record) -> Record:
        if rec.row is not None:
            rec.row = {k: (f"{day}/{v}" if k in ID_FIELDS and isinstance(v, str) else v) for k, v in rec.row.items()}
        return rec

    for source in contract.SOURCE_NAMES:
        records = [tag(Record("good", good_row(source, i, day), None)) for i in range(n)]
        for i, kind in enumerate(BAD_KINDS, start=n):
            if "jsonl" in KINDS[kind].formats and KINDS[kind].applies(source):
                rec = KINDS[kind].make(source, i)
                if rec.row is not None:  # bad records of this day, not of the corpus's default day
                    rec.row = {**rec.row, **{k: v.replace(DAY, day) for k, v in rec.row.items()
                                             if isinstance(v, str) and DAY in v and kind != "timestamp_in_future"}}
                records.append(tag(rec))
        write_day(landing, source, [FileSpec("part-0.jsonl", records)], day)


def run_stages(settings: Settings, day: str, stages: list[str]) -> None:
    for stage in stages:
        if stage in ("land", "validate"):
            for source in contract.SOURCE_NAMES:
                getattr(nightly, stage)(settings, source, day)
        elif stage == "model":
            nightly.model(settings, day)
        elif stage == "summarize":
            nightly.summarize(settings, day)
        else:
            nightly.publish_warehouse(settings)


def child(root: Path, day: str, stages: list[str], kill: str | None = None) -> subprocess.Popen:
    env = {**os.environ, **ENV, "ACSR_DATA_DIR": str(root)}
    for var in ("ACSR_LANDING", "ACSR_LAKE", "ACSR_WAREHOUSE"):
        env.pop(var, None)
    args = [sys.executable, CRASH, *(["--kill", kill] if kill else []), day, *stages]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def settings_for(root: Path) -> Settings:
    return Settings(landing=f"{root}/landing", lake=f"{root}/lake", warehouse=f"{root}/warehouse.duckdb",
                    max_bad_row_share=1.0, reference_lookback_days=1, missing_source="fail")


_ROOT = re.compile(r"/[^\s'\"]*?/(landing|lake|gx|warehouse\.duckdb)(?=[/'\"\s,\]}]|$)")


def _normalise(text: str) -> str:
    """Paths of any data folder read as <root>/...: states are copied between folders."""
    return _ROOT.sub(lambda m: f"<root>/{m.group(1)}", text)


def snapshot(root: Path) -> dict[str, str]:
    """Every visible output, normalised: partitions (their rows), JSON documents, the warehouse's views."""
    out = {}
    lake = Path(root) / "lake"
    for path in sorted(lake.rglob("part.parquet")):
        rows = duckdb.sql(f"SELECT * FROM read_parquet('{path}')").fetchall()
        out[str(path.relative_to(root))] = _normalise(repr(rows))
    for path in sorted((lake / "runs").rglob("*.json")) if (lake / "runs").exists() else []:
        doc = json.loads(path.read_text())
        for src in doc.get("sources", {}).values() if isinstance(doc.get("sources"), dict) else []:
            src.get("suite", {}).pop("result_json", None)
        doc.get("suite", {}).pop("result_json", None)
        out[str(path.relative_to(root))] = _normalise(json.dumps(doc, sort_keys=True))
    warehouse = Path(root) / "warehouse.duckdb"
    if warehouse.exists():
        con = duckdb.connect(str(warehouse), read_only=True)
        views = sorted(r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall())
        counts = {v: con.execute(f"SELECT count(*) FROM {v}").fetchall()[0][0] for v in views if v != "run_summaries"}
        con.close()
        out["warehouse.duckdb"] = json.dumps(counts, sort_keys=True)
    return out


def leftovers(root: Path) -> list[Path]:
    return sorted(p for p in Path(root).rglob(".tmp-*"))


def assert_nothing_partial_is_visible(root: Path, reference: dict[str, str]) -> None:
    """Every visible output is complete and equals the undisturbed run's; readers' globs skip temp files."""
    visible = snapshot(root)  # reads every partition and document: a partial one would fail here
    for key, value in visible.items():
        if key != "warehouse.duckdb":
            assert value == reference[key], f"{key} differs from the undisturbed run's"
    lake = Lake(f"{root}/lake")
    for layer in ("raw", "staged", "quarantine", "marts"):
        base = Path(root) / "lake" / layer
        for name in sorted(os.listdir(base)) if base.exists() else []:
            days = lake.days(layer, name)
            if days:  # DuckDB reads the same glob as the warehouse views: a temp file would break it
                n = duckdb.sql(f"SELECT count(*) FROM read_parquet('{lake.glob(layer, name)}')").fetchall()[0][0]
                expected = sum(duckdb.sql(f"SELECT count(*) FROM '{lake.partition_file(layer, name, d)}'")
                               .fetchall()[0][0] for d in days)
                assert n == expected


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    """Two days run one after the other without a fault, the second stage by stage with a copy of the data
    folder before each stage: the reference every faulty run must end equal to, and its starting points."""
    root = tmp_path_factory.mktemp("undisturbed")
    settings = settings_for(root)
    for day in (PREV, DAY):
        write_fault_day(settings.landing, day)
    run_stages(settings, PREV, STAGES)
    states = {}
    for stage in STAGES:
        states[stage] = tmp_path_factory.mktemp(f"before-{stage}")
        shutil.copytree(root, states[stage], dirs_exist_ok=True)
        run_stages(settings, DAY, [stage])
    return snapshot(root), states


def start_from(states: dict, stage: str, root: Path) -> Settings:
    """The data folder as it was just before `stage` ran for DAY (PREV complete). The copied warehouse's
    views would read the original folder: it is published again here when the stage needs one."""
    shutil.copytree(states[stage], root, dirs_exist_ok=True)
    settings = settings_for(root)
    os.remove(settings.warehouse)
    if stage == "publish":
        nightly.publish_warehouse(settings)
    return settings


def assert_matches(root: Path, reference: dict[str, str], stages: list[str]) -> None:
    """The outputs equal the reference's, and the stages' outputs are all there."""
    got = snapshot(root)
    assert got == {k: reference[k] for k in got if k in reference} and set(got) <= set(reference)
    produced = {"land": f"lake/raw/surveys/dt={DAY}/part.parquet",
                "validate": f"lake/runs/dt={DAY}/sources/kb_articles.json",
                "model": f"lake/marts/case_history/dt={DAY}/part.parquet",
                "summarize": f"lake/runs/dt={DAY}/summary.json", "publish": "warehouse.duckdb"}
    assert {produced[s] for s in stages} <= set(got)


KILLS = [
    # (stage killed, kill point): complete-but-unrenamed or half-written temp files of partitions and documents.
    ("land", "half_written:1"),  # raw/agent_events partition
    ("land", "before_rename:2"),  # runs/.../land/agent_events.json
    ("validate", "half_written:1"),  # quarantine/agent_events
    ("model", "half_written:1"),  # marts/conversation_facts
    ("model", "before_rename:2"),  # marts/case_history
    ("summarize", "half_written:1"),  # runs/.../summary.json
    ("publish", "in_views:3"),  # the warehouse's temp file, 3 views made
    ("publish", "before_rename:1"),  # the warehouse's temp file, complete
]


@pytest.mark.parametrize("stage,kill", KILLS, ids=[f"{s}-{k}" for s, k in KILLS])
def test_a_task_killed_mid_write_leaves_nothing_partial_and_its_retry_matches(tmp_path, undisturbed, stage, kill):
    reference, states = undisturbed
    settings = start_from(states, stage, tmp_path)
    proc = child(tmp_path, DAY, [stage], kill)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out  # it died at the injected point, not before or after
    temps = leftovers(tmp_path)
    assert temps, "the kill should have left the temp file of the write it interrupted"
    assert_nothing_partial_is_visible(tmp_path, reference)
    if kill.startswith("half_written"):  # the half-written bytes exist only under the temp name
        assert any(p.stat().st_size > 0 for p in temps)

    run_stages(settings, DAY, [stage])  # the retry
    assert_matches(tmp_path, reference, STAGES[: STAGES.index(stage) + 1])
    assert leftovers(tmp_path) == [], "the retry removes the temp files of the dead writer"


def test_a_rerun_killed_mid_write_keeps_the_previous_version(tmp_path, undisturbed):
    """A day re-run after its landing files changed: killed mid-write, the old partition stays in place."""
    reference, states = undisturbed
    settings = start_from(states, "land", tmp_path)
    shutil.move(f"{settings.landing}/agent_events/dt={DAY}", tmp_path / "complete-export")
    write_fault_day(str(tmp_path / "partial"), DAY, n=3)  # a first, partial export of the day
    shutil.move(tmp_path / "partial" / "agent_events" / f"dt={DAY}", f"{settings.landing}/agent_events/dt={DAY}")
    run_stages(settings, DAY, ["land"])
    raw = f"{settings.lake}/raw/agent_events/dt={DAY}/part.parquet"
    first = duckdb.sql(f"SELECT * FROM '{raw}'").fetchall()
    shutil.rmtree(f"{settings.landing}/agent_events/dt={DAY}")
    shutil.move(tmp_path / "complete-export", f"{settings.landing}/agent_events/dt={DAY}")  # the corrected one
    proc = child(tmp_path, DAY, ["land"], "half_written:1")
    proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert duckdb.sql(f"SELECT * FROM '{raw}'").fetchall() == first  # the old version intact, not a mix
    run_stages(settings, DAY, ["land"])
    assert_matches(tmp_path, reference, ["land"])


def test_a_run_killed_at_a_random_moment_then_rerun_matches(tmp_path, undisturbed):
    reference, states = undisturbed
    seed = random.randrange(1 << 30)
    delay = random.Random(seed).uniform(0.5, 8.0)
    settings = start_from(states, "land", tmp_path)
    proc = child(tmp_path, DAY, STAGES)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=600)
    print(f"seed {seed}: killed after {delay:.2f} s (exit {proc.returncode})")
    assert_nothing_partial_is_visible(tmp_path, reference)
    run_stages(settings, DAY, STAGES)
    assert snapshot(tmp_path) == reference
    assert leftovers(tmp_path) == []


def test_two_runs_of_the_same_day_at_once(tmp_path, undisturbed):
    reference, states = undisturbed
    start_from(states, "land", tmp_path)
    procs = [child(tmp_path, DAY, STAGES) for _ in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert snapshot(tmp_path) == reference
    assert leftovers(tmp_path) == []


def test_two_different_days_at_once(tmp_path, undisturbed):
    reference, _ = undisturbed
    settings = settings_for(tmp_path)
    for day in (PREV, DAY):
        write_fault_day(settings.landing, day)
    procs = [child(tmp_path, day, STAGES) for day in (PREV, DAY)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    nightly.publish_warehouse(settings)  # the last publish sees both days whichever finished first
    assert snapshot(tmp_path) == reference


# -- the warehouse file held open by another process ------------------------------------------------------


def _holder(path: str, read_only: bool, write: bool = False) -> subprocess.Popen:
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({path!r}, read_only={read_only})\n"
        + ("con.execute('CREATE TABLE my_notes AS SELECT 42 AS x')\n" if write else "")
        + "print(sorted(r[0] for r in con.execute(\"SELECT view_name FROM duckdb_views() WHERE NOT internal\").fetchall()), flush=True)\n"
        "sys.stdin.readline()\n"
        "print(con.execute('SELECT count(*) FROM staged_surveys').fetchall()[0][0], flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    proc.first_line = proc.stdout.readline()
    return proc


@pytest.fixture
def published(tmp_path, undisturbed):
    _, states = undisturbed
    settings = replace(start_from(states, "publish", tmp_path), warehouse_lock_wait_seconds=1.0)
    nightly.publish_warehouse(settings)
    return settings


def test_readers_holding_the_warehouse_do_not_block_publishing(published):
    settings = published
    holder = _holder(settings.warehouse, read_only=True)
    assert "staged_surveys" in holder.first_line
    shutil.rmtree(f"{settings.lake}/marts/case_history")  # so the new catalogue differs
    nightly.publish_warehouse(settings)
    con = duckdb.connect(settings.warehouse, read_only=True)
    views = {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
    assert "staged_surveys" in views and "case_history" not in views
    con.close()
    out, _ = holder.communicate("\n", timeout=60)  # the reader still queries its (old) catalogue
    assert holder.returncode == 0 and int(out.strip()) > 0


def test_a_writer_holding_the_warehouse_makes_publishing_wait_then_fail_clearly(published):
    settings = published
    holder = _holder(settings.warehouse, read_only=False, write=True)
    try:
        from feedback_loop.lake.warehouse import WarehouseLockedError

        with pytest.raises(WarehouseLockedError) as err:
            nightly.publish_warehouse(settings)
        message = str(err.value)
        assert settings.warehouse in message and f"PID {holder.pid}" in message and "read-only" in message
    finally:
        holder.communicate("\n", timeout=60)
    # The writer is gone; publishing works again and nobody trips over its write-ahead log.
    nightly.publish_warehouse(settings)
    con = duckdb.connect(settings.warehouse, read_only=True)
    assert con.execute("SELECT count(*) FROM staged_surveys").fetchall()[0][0] > 0
    con.close()


def test_a_writer_killed_with_its_log_open_does_not_break_the_next_publish(published):
    settings = published
    holder = _holder(settings.warehouse, read_only=False, write=True)
    holder.kill()
    holder.wait()
    assert os.path.exists(settings.warehouse + ".wal")  # its uncheckpointed log is left behind
    nightly.publish_warehouse(settings)
    assert not os.path.exists(settings.warehouse + ".wal")
    con = duckdb.connect(settings.warehouse)  # read-write: replays no foreign log
    assert con.execute("SELECT count(*) FROM staged_surveys").fetchall()[0][0] > 0
    con.close()


# -- a full disk under the lake --------------------------------------------------------------------------


@pytest.fixture
def small_lake(tmp_path):
    """The lake on a 1 MiB tmpfs the test mounts itself (root only; skipped where mounting is impossible)."""
    lake = tmp_path / "lake"
    lake.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(lake)],
                            check=False, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small filesystem here: {result.stderr.strip() or result.returncode}")
    try:
        yield replace(settings_for(tmp_path), lake=str(lake))
    finally:
        subprocess.run(["umount", "-l", str(lake)], check=False)


def test_a_full_disk_fails_naming_the_partition_and_publishes_nothing(small_lake):
    import secrets

    settings = small_lake
    write_fault_day(settings.landing, DAY, n=3)
    nightly.land(settings, "agent_events", DAY)  # a first version that fits
    target = f"{settings.lake}/raw/agent_events/dt={DAY}/part.parquet"
    first = duckdb.sql(f"SELECT * FROM '{target}'").fetchall()
    rows = [{**good_row("agent_events", i), "text": secrets.token_hex(4000)} for i in range(300)]  # 2.4 MB
    write_day(settings.landing, "agent_events", [FileSpec("part-0.jsonl", [Record("good", r, None) for r in rows])])
    with pytest.raises(LakeWriteError) as err:
        nightly.land(settings, "agent_events", DAY)
    message = str(err.value)
    assert message.startswith(f"{target}: could not write the partition") and "No space left on device" in message
    assert duckdb.sql(f"SELECT * FROM '{target}'").fetchall() == first  # the previous version is intact
    assert leftovers(Path(settings.lake)) == []  # the failed temp file is removed, the space is free again


def test_only_temp_files_of_dead_writers_are_removed(tmp_path):
    """The clean-up on the next write never cuts a live writer's temp file, here or on another host."""
    from feedback_loop.lake.files import STALE_TMP_SECONDS, remove_stale_tmp, tmp_name

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    mine = tmp_path / f"{tmp_name()}.parquet"
    theirs = tmp_path / tmp_name().replace(f".tmp-{os.getpid()}@", f".tmp-{dead}@")
    other_host_fresh = tmp_path / ".tmp-1@elsewhere@0123456789abcdef0123456789abcdef"
    other_host_old = tmp_path / ".tmp-2@elsewhere@fedcba9876543210fedcba9876543210"
    unowned_old = tmp_path / ".tmp-0123456789abcdef0123456789abcdef.duckdb"
    for path in (mine, theirs, other_host_fresh, other_host_old, unowned_old):
        path.write_bytes(b"x")
    old = time.time() - STALE_TMP_SECONDS - 60
    for path in (other_host_old, unowned_old):
        os.utime(path, (old, old))
    (tmp_path / ".tmp-a-folder").mkdir()
    removed = remove_stale_tmp(str(tmp_path))
    assert sorted(removed) == sorted(str(p) for p in (theirs, other_host_old, unowned_old))
    assert mine.exists() and other_host_fresh.exists() and (tmp_path / ".tmp-a-folder").is_dir()
