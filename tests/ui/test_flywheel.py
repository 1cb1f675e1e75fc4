"""The Flywheel page's content without a server: empty sections say so; produced items show with their run.
(The page inside the real Airflow UI is tested in tests/integration/test_flywheel_ui.py.)"""

from __future__ import annotations

import json
from pathlib import Path

from feedback_loop.lake.duck import connect
from feedback_loop.lake.files import Lake
from feedback_loop.ui.flywheel import gather, render


def test_an_empty_lake_shows_not_produced_yet_everywhere(settings):
    sections = gather(settings, connect)
    assert {k: v["status"] for k, v in sections.items()} == {
        "report": "missing", "action_queue": "missing", "kb_gaps": "missing", "datasets": "missing",
        "models": "missing"}
    page = render(sections, lambda dag, day: None)
    assert page.count("Not produced yet") == 5


def test_produced_items_show_with_a_link_to_their_run(settings):
    lake = Lake(settings.lake)
    con = connect()
    lake.write_query(con, "SELECT 'refund_policy' AS intent, 'raise' AS action, 0.42 AS override_rate",
                     "marts", "action_queue", "2026-11-24")
    lake.write_query(con, "SELECT 'refund_policy' AS intent, 'missing <b>article</b>' AS gap", "marts", "kb_gaps",
                     "2026-11-24")
    con.close()
    report = Path(settings.lake) / "reports" / "dt=2026-11-24"
    report.mkdir(parents=True)
    (report / "index.html").write_text("<html>report</html>")
    version = Path(settings.lake) / "datasets" / "sft" / "v20261124-abc"
    version.mkdir(parents=True)
    (version / "manifest.json").write_text("{}")
    lake.write_json({"version": "v20261124-abc", "window_end": "2026-11-24", "examples": 12, "new_examples": 12},
                    "datasets", "sft", "latest.json")

    sections = gather(settings, connect)
    assert sections["action_queue"]["rows"] == [["refund_policy", "raise", "0.42"]]
    assert sections["datasets"]["datasets"][0]["versions"] == ["v20261124-abc"]
    runs = {("acsr_nightly", "2026-11-24"): "backfill__2026-11-24"}
    page = render(sections, lambda dag, day: runs.get((dag, day)))
    assert page.count('href="/dags/acsr_nightly/runs/backfill__2026-11-24"') == 4  # report, queue, gaps, dataset
    assert "/flywheel/lake/reports/dt=2026-11-24/index.html" in page
    assert "missing &lt;b&gt;article&lt;/b&gt;" in page  # lake text is escaped
    assert page.count("Not produced yet") == 1  # only the model registry
    json.dumps(sections)  # the JSON route returns the same structure
