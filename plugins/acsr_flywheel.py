"""Airflow 3 UI plugin: a "Flywheel" page in the navigation (an external view) served by a FastAPI app that
the api-server mounts at /flywheel.

The page shows the latest daily report, the action queue, the knowledge-base gap report, the published
dataset versions and the model registry's champion and challenger, each linked to the Airflow run that
produced it (see feedback_loop.ui.flywheel for the content). It also serves the report pages from the lake
and the GX Data Docs, which the data-quality alerts link to. Every route needs the same login as the rest
of the UI (the JWT cookie the UI sets, or a Bearer token).
"""

from __future__ import annotations

import mimetypes
from typing import ClassVar

from airflow.api_fastapi.core_api.security import get_user
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse, Response

PREFIX = "/flywheel"
LAKE_FILES = ("reports/",)  # the lake folders the page may serve (rendered reports, not data)
ICON = (
    "data:image/svg+xml;utf8,<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' "
    "stroke='%23718096' stroke-width='2'><circle cx='12' cy='12' r='9'/><path d='M12 3v4M12 17v4M3 12h4M17 12h4'/>"
    "<circle cx='12' cy='12' r='3'/></svg>"
)

app = FastAPI(title="ACSR Flywheel", dependencies=[Depends(get_user)], docs_url=None, redoc_url=None)


def _settings():
    from feedback_loop.settings import Settings

    return Settings.load()


def nightly_runs_by_day(dag_id: str) -> dict[str, str]:
    """day -> run_id of the latest successful run that processed it, from each run's `resolve_day` XCom
    (the same lookup for scheduled, backfilled and manual runs)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    out: dict[str, tuple] = {}
    with create_session() as session:
        rows = session.execute(
            select(XComModel.value, DagRun.run_id, DagRun.end_date)
            .join(DagRun, DagRun.id == XComModel.dag_run_id)
            .where(XComModel.dag_id == dag_id, XComModel.task_id == "resolve_day",
                   XComModel.key == "return_value", DagRun.state == "success")
        ).all()
    for value, run_id, end in rows:
        day = value if isinstance(value, str) else None
        if day and day.startswith('"'):
            day = day.strip('"')
        if day and (day not in out or (end and out[day][1] and end > out[day][1])):
            out[day] = (run_id, end)
    return {day: run_id for day, (run_id, _) in out.items()}


@app.get("/", response_class=HTMLResponse)
def flywheel_page() -> str:
    from feedback_loop.lake.duck import connect
    from feedback_loop.ui.flywheel import NIGHTLY, gather, render

    sections = gather(_settings(), connect)
    cache: dict[str, dict] = {}

    def lookup(dag_id: str, day: str | None) -> str | None:
        if dag_id not in cache:
            cache[dag_id] = nightly_runs_by_day(dag_id) if dag_id == NIGHTLY else {}
        return cache[dag_id].get(day or "")

    return render(sections, lookup, PREFIX)


@app.get("/api/sections")
def flywheel_sections() -> dict:
    """The page's content as JSON (for scripts and tests)."""
    from feedback_loop.lake.duck import connect
    from feedback_loop.ui.flywheel import NIGHTLY, gather

    sections = gather(_settings(), connect)
    sections["runs"] = {NIGHTLY: nightly_runs_by_day(NIGHTLY)}
    return sections


@app.get("/lake/{path:path}")
def lake_file(path: str) -> Response:
    """A rendered page from the lake (reports only: data files are read through the warehouse)."""
    from feedback_loop.lake.files import filesystem_for, join

    if ".." in path.split("/") or not path.startswith(LAKE_FILES):
        raise HTTPException(status_code=404)
    fs, target = filesystem_for(join(_settings().lake, path))
    if not fs.exists(target):
        raise HTTPException(status_code=404, detail=f"{path} is not in the lake")
    with fs.open(target, "rb") as fh:
        data = fh.read()
    return Response(data, media_type=mimetypes.guess_type(path)[0] or "application/octet-stream")


@app.get("/data-docs")
def data_docs_root() -> RedirectResponse:
    return RedirectResponse(f"{PREFIX}/data-docs/index.html")


@app.get("/data-docs/{path:path}")
def data_docs_file(path: str) -> Response:
    from feedback_loop.ingest.data_docs import site_dir
    from feedback_loop.ingest.quality import gx_root

    site = site_dir(gx_root(_settings())).resolve()
    target = (site / (path or "index.html")).resolve()
    if site not in target.parents or not target.is_file():
        raise HTTPException(status_code=404, detail="not produced yet: the Data Docs are built by the nightly run")
    return Response(target.read_bytes(), media_type=mimetypes.guess_type(str(target))[0] or "text/html")


class FlywheelPlugin(AirflowPlugin):
    name = "acsr_flywheel"
    fastapi_apps: ClassVar[list] = [{"app": app, "url_prefix": PREFIX, "name": "ACSR Flywheel"}]
    external_views: ClassVar[list] = [
        {"name": "Flywheel", "href": f"{PREFIX}/", "url_route": "flywheel", "destination": "nav", "icon": ICON},
    ]
