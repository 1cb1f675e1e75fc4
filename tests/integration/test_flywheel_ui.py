"""The Flywheel page inside the real Airflow UI: the plugin over HTTP through the api-server (login,
content, links to the runs that produced each item), and a screenshot of the page in headless Chromium."""

from __future__ import annotations

import os
import shutil
import struct
from pathlib import Path

import pytest
from airflow_stack import Processes, wait_for
from browser import Browser, chromium_binary

DAG = "acsr_nightly"


def test_the_page_needs_the_uis_login(airflow_stack):
    status, _ = airflow_stack.api("GET", "/flywheel/", auth=False, raw=True)
    assert status == 401


def test_the_plugin_adds_a_flywheel_entry_to_the_ui(airflow_stack):
    plugins = airflow_stack.api("GET", "/api/v2/plugins")["plugins"]
    [plugin] = [p for p in plugins if p["name"] == "acsr_flywheel"]
    [view] = plugin["external_views"]
    assert view["name"] == "Flywheel" and view["url_route"] == "flywheel" and view["href"] == "/flywheel/"
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/flywheel"


def test_the_page_shows_what_the_runs_produced_with_links_to_them(airflow_stack, nightly_outputs, days):
    sections = airflow_stack.api("GET", "/flywheel/api/sections")
    runs = sections.pop("runs")[DAG]
    status, page = airflow_stack.api("GET", "/flywheel/", raw=True)
    assert status == 200 and "ACSR Flywheel" in page
    # The nightly runs of the suite produced the gap report for the latest day, and every day has its run.
    assert sections["kb_gaps"]["status"] == "ok" and sections["kb_gaps"]["dt"] == days["latest"]
    assert set(days["backfill"]) <= set(runs)
    produced = [k for k, v in sections.items() if v.get("status") == "ok"]
    for key in produced:
        sec = sections[key]
        day = sec.get("dt") or (sec.get("datasets") or [{}])[0].get("window_end")
        if day in runs:
            assert f'href="/dags/{DAG}/runs/{runs[day]}"' in page, f"{key} links to its run"
    missing = [k for k, v in sections.items() if v.get("status") == "missing"]
    assert page.count("Not produced yet") == len(missing)
    assert not [k for k, v in sections.items() if v.get("status") == "error"], sections
    if sections["report"]["status"] == "ok":
        status, report = airflow_stack.api("GET", f"/flywheel/lake/{sections['report']['page']}", raw=True)
        assert status == 200 and "<html" in report.lower()
    status, _ = airflow_stack.api("GET", "/flywheel/lake/staged/agent_events/x", raw=True)
    assert status == 404, "only rendered reports are served from the lake"
    status, docs = airflow_stack.api("GET", "/flywheel/data-docs/index.html", raw=True)
    assert status == 200 and "Data Docs" in docs


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def test_screenshot_of_the_flywheel_page_in_the_airflow_ui(airflow_stack, nightly_outputs, integration_dir):
    if chromium_binary() is None:
        pytest.skip("Chromium is not installed: run scripts/ci_system_deps.sh chromium")
    procs = Processes()
    try:
        browser = Browser(procs, integration_dir / "chromium-logs")
        browser.set_cookie(airflow_stack.base_url, "_token", airflow_stack.token())
        browser.open(f"{airflow_stack.base_url}/plugin/flywheel")
        frame_text = ("(() => { const f = document.querySelector('iframe');"
                      " return f && f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; })()")
        text = wait_for(lambda: (browser.evaluate(frame_text) or "") if "Model registry" in (
            browser.evaluate(frame_text) or "") else None, 120, interval=1, what="the Flywheel page in the UI")
        assert "ACSR Flywheel" in text and "Knowledge-base gaps" in text
        nav = browser.evaluate("document.body.innerText") or ""
        assert "Flywheel" in nav
        shot = browser.screenshot(integration_dir / "flywheel.png")
        browser.close()
    finally:
        procs.stop()
    width, height = _png_size(shot)
    assert (width, height) == (1440, 1100) and shot.stat().st_size > 30_000
    keep = os.environ.get("ACSR_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "flywheel.png")
