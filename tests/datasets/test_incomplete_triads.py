"""The manifest's count of corrections excluded as incomplete triads counts each correction once: the copies
the quality stage also quarantined as duplicates (of the day, or of one staged earlier) are not more."""

from __future__ import annotations

import duckdb


def test_a_correction_landed_twice_is_one_incomplete_triad(tmp_path):
    from feedback_loop.datasets.read import _incomplete_triads
    from feedback_loop.lake.files import Lake

    day = "2026-11-20"
    lake = Lake(str(tmp_path / "lake"))
    folder = tmp_path / "lake" / "quarantine" / "overrides" / f"dt={day}"
    folder.mkdir(parents=True)
    con = duckdb.connect()
    row = ("'intent' AS stage, 'corrected' AS outcome, 'a' AS agent_decision, 0.9 AS agent_confidence, "
           "'b' AS human_decision, {rationale} AS rationale, 'p1' AS policy_clause_id, NULL::VARCHAR AS evidence, "
           "{reasons} AS quarantine_reasons")
    con.execute(f"""COPY (
        SELECT 'o1' AS override_id, {row.format(rationale="NULL", reasons="['incomplete_triad']")}
        UNION ALL SELECT 'o1', {row.format(rationale="NULL", reasons="['duplicate_id', 'incomplete_triad']")}
        UNION ALL SELECT 'o2', {row.format(rationale="NULL", reasons="['duplicate_id_across_days', 'incomplete_triad']")}
        UNION ALL SELECT 'o3', {row.format(rationale="'why'", reasons="['unknown_conversation']")}
    ) TO '{folder}/part.parquet' (FORMAT parquet)""")
    con.execute("CREATE VIEW ovr AS SELECT 'intent' AS stage, 'corrected' AS outcome FROM range(3)")
    out = _incomplete_triads(con, lake, [day])
    assert out["incomplete_total"] == 1
    assert out["incomplete_by_missing"] == {"agent decision/confidence": 0, "human decision/rationale": 1,
                                            "policy clause or evidence": 0}
    assert out["incomplete_by_stage"] == {"intent": 1}
    assert out["corrections_staged_by_stage"] == {"intent": 3}
