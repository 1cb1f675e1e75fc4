"""The sample agent's instrumented traffic, pulled and landed, gives the generator's contract rows.

One generated day is landed twice: as the generator wrote it, and after the sample agent replayed it through
`acsr_instrumentation` -> OTLP JSON files -> `feedback_loop.sources.otlp_acsr` -> landing. The raw lake
partitions of agent_events and overrides must hold the same rows, field by field.
"""

from __future__ import annotations

import os
import shutil
from datetime import date

import duckdb
import pytest
from feedback_loop import nightly
from feedback_loop.ingest import contract
from feedback_loop.lake.files import Lake
from feedback_loop.settings import Settings
from feedback_loop_sample.agent import through_instrumentation
from feedback_loop_sample.generator import generate

DAY = "2026-11-20"


def _settings(root):
    return Settings.load(landing=str(root / "landing"), lake=str(root / "lake"), warehouse=str(root / "wh.duckdb"))


def _landed_rows(settings, source) -> list[dict]:
    cols = contract.SOURCES[source].columns
    sel = ", ".join(f'"{c}"::VARCHAR AS "{c}"' if c in ("kb_results", "action_args") else f'"{c}"' for c in cols)
    path = Lake(settings.lake).partition_file("raw", source, DAY)
    con = duckdb.connect()
    try:
        cur = con.execute(f"SELECT {sel} FROM read_parquet('{path}') ORDER BY {contract.SOURCES[source].id_column}")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, r)) for r in cur.fetchall()]
    finally:
        con.close()


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(generator's settings, agent's settings, the agent's report) for one generated day, both landed."""
    gen_root = tmp_path_factory.mktemp("generator")
    generate(gen_root / "landing", date.fromisoformat(DAY), date.fromisoformat(DAY), conversations_per_day=80,
             seed=11)
    agent_root = tmp_path_factory.mktemp("agent")
    shutil.copytree(gen_root / "landing", agent_root / "landing")
    report = through_instrumentation(agent_root / "landing", DAY, agent_root / "traces")
    out = []
    for root in (gen_root, agent_root):
        s = _settings(root)
        for source in ("agent_events", "overrides"):
            nightly.land(s, source, DAY)
        out.append(s)
    return out[0], out[1], report


def test_the_agents_files_replace_the_generators(both):
    _, agent, report = both
    folder = f"{agent.landing}/agent_events/dt={DAY}"
    assert sorted(os.listdir(folder)) == ["otlp-acsr.jsonl"]
    assert report["export_failures"] == 0 and report["instrumentation_errors"] == 0
    assert report["unreplayable"] == {"agent_events": 0, "overrides": 0}
    assert report["conversations"] >= 80
    assert report["skipped_spans"] == {"turn span (invoke_agent)": report["spans_exported"]
                                       - sum(report["rows"]["agent_events"].values())
                                       - sum(report["rows"]["overrides"].values())}


@pytest.mark.parametrize("source", ["agent_events", "overrides"])
def test_same_contract_rows_field_by_field(both, source):
    gen, agent, _ = both
    expected, got = _landed_rows(gen, source), _landed_rows(agent, source)
    assert len(expected) > 0
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        diff = {k: (e[k], g[k]) for k in e if e[k] != g[k]}
        assert not diff, f"{e[contract.SOURCES[source].id_column]}: {diff}"
    if source == "agent_events":  # every kind of decision point went through the instrumentation
        assert {r["event_type"] for r in got} >= {"customer_message", "intent_classified", "kb_query", "policy_check",
                                                   "action_proposed", "agent_response", "escalated", "thumbs"}
    else:
        assert {r["stage"] for r in got} >= {"intent", "action"}


def test_planted_defects_are_kept_not_lost(tmp_path):
    """Rows the agent cannot replay stay in a file of their own: land reads as many rows as the generator wrote."""
    day = date.fromisoformat(DAY)
    truth = generate(tmp_path / "landing", day, day, conversations_per_day=20, seed=3, malformed_share=0.05)
    report = through_instrumentation(tmp_path / "landing", DAY, tmp_path / "traces")
    assert report["unreplayable"]["agent_events"] > 0
    files = {p: p.read_bytes() for p in sorted((tmp_path / "landing").rglob("*.jsonl"))}
    again = through_instrumentation(tmp_path / "landing", DAY, tmp_path / "traces")  # a re-run changes nothing
    assert again["skipped"] and {p: p.read_bytes() for p in sorted((tmp_path / "landing").rglob("*.jsonl"))} == files
    s = _settings(tmp_path)
    for source in ("agent_events", "overrides"):
        res = nightly.land(s, source, DAY)
        assert res["rows_read"] == truth["counts"][source][DAY], res  # the counts include the planted rows
