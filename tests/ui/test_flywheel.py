"""The Flywheel page's content without a server: empty sections say so; produced items show what got worse
and who should act, the gaps with what to write, datasets and decisions, each with its run.
(The page inside the real Airflow UI, on real nightly outputs, is tested in tests/integration/test_flywheel_ui.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake
from feedback_loop.ui.flywheel import SECTIONS, gather, render, sparkline

DAY, YESTERDAY = "2026-11-24", "2026-11-23"


def test_an_empty_lake_shows_not_produced_yet_everywhere(settings):
    sections = gather(settings, connect)
    assert {k: v["status"] for k, v in sections.items()} == {key: "missing" for key, *_ in SECTIONS}
    page = render(sections, lambda dag, day: None)
    assert page.count("Not produced yet") == len(SECTIONS)


def _queue_row(action_id, signal, dim, value, first_raised, severity, component, examples):
    return (f"SELECT '{action_id}' AS action_id, DATE '{DAY}' AS metric_date, '{signal}' AS signal, '{dim[0]}' AS "
            f"scope_dimension, '{dim[1]}' AS scope_value, 'change_vs_baseline' AS trigger, {value} AS value, "
            f"0.1 AS threshold, 0.1 AS baseline_value, {value} - 0.1 AS change, ({value} - 0.1) / 0.1 AS change_rel, "
            f"'{component}' AS target_component, 'Retrain on the <overrides>' AS improvement_action, "
            f"{examples}::VARCHAR[] AS example_conversation_ids, {severity} AS severity, "
            f"DATE '{first_raised}' AS first_raised_date, (DATE '{DAY}' - DATE '{first_raised}') + 1 AS days_open, "
            "'open' AS status")


def _produce(settings) -> Lake:
    lake = Lake(settings.lake)
    con = connect()
    lake.write_query(con, " UNION ALL ".join([
        _queue_row("a1", "escalation_rate", ("all", "all"), 0.30, YESTERDAY, 9.0, "workflow", "['c1']"),
        _queue_row("a2", "intent_override_rate", ("intent", "card_arrival"), 0.25, DAY, 4.0, "intent_classifier",
                   "['c7', 'c8', 'c9', 'c10']"),
    ]), "marts", "action_queue", DAY)
    for i, d in enumerate(("2026-11-22", YESTERDAY, DAY)):
        lake.write_query(con, f"""SELECT DATE '{d}' AS metric_date, 'intent_override_rate' AS metric, 'intent' AS dimension,
            'card_arrival' AS dimension_value, {0.1 + 0.05 * i} AS value, true AS is_current
            UNION ALL SELECT DATE '{d}', 'intent_override_rate', 'all', 'all', 0.09, true""",
                         "marts", "signal_metrics", d)
    lake.write_query(con, """SELECT 'g1' AS gap_id, 1 AS rank, 'missing' AS kind, 'card delivery time' AS label,
        'No article covers card delivery times: write one <b>now</b>' AS reason, NULL::VARCHAR AS article_id,
        12 AS n_conversations, 11 AS n_customers, 3.5 AS impact, 0.6 AS failure_rate, 0.2 AS trend,
        ['where is my card?'] AS representative_messages, DATE '2026-11-20' AS first_seen
        UNION ALL SELECT 'g2', NULL, 'stale', 'closed gap', 'x', NULL, 1, 1, 0.1, 0.1, 0.0, [], DATE '2026-11-01'""",
                     "marts", "kb_gaps", DAY)
    con.close()
    report = Path(settings.lake) / "reports" / f"dt={DAY}"
    report.mkdir(parents=True)
    (report / "index.html").write_text("<html>report</html>")
    (report / "gaps.html").write_text("<html>gaps</html>")
    for version in ("v20261123-abc", "v20261124-abd"):
        (Path(settings.lake) / "datasets" / "sft" / version).mkdir(parents=True)
        (Path(settings.lake) / "datasets" / "sft" / version / "manifest.json").write_text("{}")
    lake.write_json({"version": "v20261124-abd", "window_end": DAY, "examples": 12, "new_examples": 3},
                    "datasets", "sft", "latest.json")
    lake.write_json({"dt": DAY, "intent_classifier": {"retrain": True, "reasons": ["412 new relabels"]},
                     "reasoning_model": {"finetune": False, "reasons": ["nothing new"]}},
                    "runs", f"dt={DAY}", "retrain_decision.json")
    return lake


def test_what_got_worse_and_who_should_act_at_a_glance(settings):
    _produce(settings)
    sections = gather(settings, connect)
    actions = sections["action_queue"]
    assert actions["status"] == "ok" and actions["dt"] == DAY
    assert actions["rows_total"] == 2 and actions["new_total"] == 1
    first, second = actions["items"]
    assert first["action_id"] == "a2" and first["new"]  # new since yesterday first, though less severe
    assert first["scope"] == "intent = card_arrival" and first["target_component"] == "intent_classifier"
    assert first["examples"] == ["c7", "c8", "c9"]
    assert first["trend"] == [0.1, 0.15, 0.2]  # its metric at its scope, day by day
    assert second["scope"] == "all traffic" and second["trend"] == []
    gaps = sections["kb_gaps"]
    assert gaps["rows_total"] == 1 and [g["gap_id"] for g in gaps["items"]] == ["g1"]  # ranked gaps only
    assert gaps["page"] == f"reports/dt={DAY}/gaps.html"
    assert sections["datasets"]["datasets"][0]["versions"] == 2
    assert [m["act"] for m in sections["decisions"]["items"]] == [True, False]

    runs = {("acsr_nightly", DAY): "backfill__2026-11-24"}
    page = render(sections, lambda dag, day: runs.get((dag, day)))
    # report, queue, gaps, dataset, decision: each linked to the run that produced it
    assert page.count('href="/dags/acsr_nightly/runs/backfill__2026-11-24"') == 5
    assert "/flywheel/lake/reports/dt=2026-11-24/index.html" in page
    assert "/flywheel/lake/reports/dt=2026-11-24/gaps.html" in page
    assert "1 new since yesterday" in page and f"since {YESTERDAY}" in page and "since 2026-11-20" in page
    queue_html = page.split('id="action_queue"')[1].split("</section>")[0]
    assert queue_html.index("intent_override_rate") < queue_html.index("escalation_rate")
    assert "intent = card_arrival" in queue_html and "intent_classifier" in queue_html and "c7" in queue_html
    assert "+150 %" in queue_html  # 0.25 against a baseline of 0.1
    assert queue_html.count("<svg") == 1 and "no trend yet" in queue_html
    assert "Retrain on the &lt;overrides&gt;" in queue_html  # lake text is escaped
    assert "write one &lt;b&gt;now&lt;/b&gt;" in page and "where is my card?" in page
    assert re.search(r"<span class=\"pill act\">retrain</span>\s*</td>\s*<td>412 new relabels", page)
    assert page.count("Not produced yet") == 2  # the model registry and the approvals: no retraining ran
    json.dumps(sections)  # the JSON route returns the same structure


def test_a_broken_section_says_so_and_the_others_still_show(settings):
    lake = _produce(settings)
    Path(lake.partition_file("marts", "kb_gaps", DAY)).write_bytes(b"not parquet")
    sections = gather(settings, connect)
    assert sections["kb_gaps"]["status"] == "error" and sections["action_queue"]["status"] == "ok"
    page = render(sections, lambda dag, day: None)
    assert "Could not read knowledge-base gaps: what to write:" in page and "intent_override_rate" in page


def test_sparkline_draws_the_values_and_marks_the_last():
    svg = str(sparkline([1.0, 3.0, 2.0]))
    points = re.search(r'points="([^"]+)"', svg).group(1).split()
    ys = [float(p.split(",")[1]) for p in points]
    assert len(points) == 3 and ys[1] < ys[2] < ys[0]  # SVG y grows downwards: 3 is highest
    assert "last 3 days: 1 to 2" in svg
    assert "no trend yet" in str(sparkline([0.5]))
