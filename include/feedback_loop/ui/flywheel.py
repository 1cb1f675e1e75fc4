"""The Flywheel page: what the loop produced lately, gathered from the lake and the model registry.

Plain functions with no Airflow import, so the page's content is testable without a server; the plugin
(`plugins/acsr_flywheel.py`) renders it inside the Airflow UI and adds the links to the Airflow runs that
produced each item. Every section says "not produced yet" until its stage has written something.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable

from feedback_loop.lake.files import Lake, join
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

NIGHTLY = "acsr_nightly"
RETRAIN_INTENT = "acsr_retrain_intent_classifier"
TABLE_ROWS = 10
CELL_CHARS = 120

# The run that produced a day's outputs: (dag_id, day) -> run_id or None. The plugin looks it up in
# Airflow's metadata; tests pass a dict's get.
RunLookup = Callable[[str, str], "str | None"]


def _latest(days: list[str]) -> str | None:
    return days[-1] if days else None


def report_section(lake: Lake) -> dict:
    day = _latest(lake.days_with_file("reports", "index.html"))
    if day is None:
        return {"status": "missing"}
    gaps_page = lake.days_with_file("reports", "gaps.html")
    return {"status": "ok", "dt": day, "page": f"reports/dt={day}/index.html",
            "gaps_page": f"reports/dt={day}/gaps.html" if day in gaps_page else None}


# The columns a person scans first, per mart (those that exist, in this order); other marts show their
# first MAX_COLUMNS columns. The full rows are in the warehouse views of the same names.
PREFERRED_COLUMNS = {
    "kb_gaps": ("rank", "kind", "label", "status", "first_seen", "impact", "impact_score", "n_conversations",
                "conversations", "failure_rate", "recommendation", "article_id", "gap_id"),
    "action_queue": ("severity", "component", "route", "metric", "scope", "dimension", "value", "trigger",
                     "threshold", "summary", "title", "first_raised_date", "action_id"),
}
MAX_COLUMNS = 9


def mart_section(lake: Lake, name: str, con_factory: Callable) -> dict:
    """The latest partition of a mart, its row count and its first rows (key columns, text shortened)."""
    day = _latest(lake.days("marts", name))
    if day is None:
        return {"status": "missing"}
    con = con_factory()
    try:
        rel = f"read_parquet('{lake.partition_file('marts', name, day)}', hive_partitioning=false)"
        total = con.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
        available = [d[0] for d in con.execute(f"SELECT * FROM {rel} LIMIT 0").description]
        chosen = [c for c in PREFERRED_COLUMNS.get(name, ()) if c in available][:MAX_COLUMNS]
        if len(chosen) < 3:
            chosen = available[:MAX_COLUMNS]
        cols = ", ".join('"' + c.replace('"', '""') + '"' for c in chosen)
        cur = con.execute(f"SELECT {cols} FROM {rel} LIMIT {TABLE_ROWS}")
        columns = [d[0] for d in cur.description]
        rows = [[_cell(v) for v in r] for r in cur.fetchall()]
    finally:
        con.close()
    return {"status": "ok", "dt": day, "rows_total": total, "columns": columns, "rows": rows,
            "columns_total": len(available)}


def _cell(value) -> str:
    if value is None:
        return ""
    text = json.dumps(value, default=str) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def datasets_section(lake: Lake) -> dict:
    """Every dataset's published versions (folders with a manifest) and its `latest.json` pointer."""
    from feedback_loop.lake.files import filesystem_for

    fs, base = filesystem_for(join(lake.root, "datasets"))
    try:
        names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(base, detail=False))
    except (FileNotFoundError, OSError):
        names = []
    out = []
    for name in names:
        latest = lake.read_json("datasets", name, "latest.json")
        if not latest:
            continue
        ffs, folder = filesystem_for(join(lake.root, "datasets", name))
        versions = sorted(
            leaf for leaf in (p.rstrip("/").rsplit("/", 1)[-1] for p in ffs.ls(folder, detail=False))
            if not leaf.startswith((".", "_")) and ffs.exists(f"{folder.rstrip('/')}/{leaf}/manifest.json")
        )
        out.append({"name": name, "latest": latest.get("version"), "window_end": latest.get("window_end"),
                    "examples": latest.get("examples"), "new_examples": latest.get("new_examples"),
                    "versions": versions})
    return {"status": "ok" if out else "missing", "datasets": out}


def models_section(settings: Settings) -> dict:
    """Champion and challenger of the intent classifier in the MLflow registry (MLflow imported here only)."""
    pointer = Lake(settings.lake).read_json("models", "intent_classifier", "champion.json")
    try:
        from feedback_loop.retrain.registry import CHALLENGER, CHAMPION, INTENT_MODEL, mlflow_for
    except ImportError:
        return {"status": "missing", "reason": "the retraining package is not installed"}
    if not pointer and not _registry_exists(settings):
        return {"status": "missing"}
    aliases = {}
    try:
        with mlflow_for(settings) as mlflow:
            client = mlflow.MlflowClient()
            for alias in (CHAMPION, CHALLENGER):
                try:
                    mv = client.get_model_version_by_alias(INTENT_MODEL, alias)
                except Exception as exc:  # noqa: BLE001 - alias not set yet
                    log.debug("no %s alias: %s", alias, exc)
                    continue
                metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
                aliases[alias] = {
                    "version": mv.version, "tags": dict(mv.tags or {}),
                    "airflow_run_id": (mv.tags or {}).get("airflow_run_id") or None,
                    "metrics": {k: round(v, 4) for k, v in sorted(metrics.items()) if k.startswith("gold")},
                }
    except Exception as exc:  # noqa: BLE001 - a registry problem must not take the page down
        return {"status": "error", "error": f"{type(exc).__name__}: {exc}", "pointer": pointer}
    if not aliases:
        return {"status": "missing", "pointer": pointer}
    return {"status": "ok", "model": INTENT_MODEL, "aliases": aliases, "pointer": pointer}


def _registry_exists(settings: Settings) -> bool:
    if settings.mlflow_tracking_uri:
        return True
    from feedback_loop.lake.files import filesystem_for

    fs, path = filesystem_for(join(settings.lake, "mlflow", "mlflow.db"))
    return fs.exists(path)


def gather(settings: Settings, con_factory: Callable) -> dict:
    lake = Lake(settings.lake)
    sections = {}
    for key, fn in (
        ("report", lambda: report_section(lake)),
        ("action_queue", lambda: mart_section(lake, "action_queue", con_factory)),
        ("kb_gaps", lambda: mart_section(lake, "kb_gaps", con_factory)),
        ("datasets", lambda: datasets_section(lake)),
        ("models", lambda: models_section(settings)),
        ("approvals", lambda: approvals_section(settings)),
    ):
        try:
            sections[key] = fn()
        except Exception as exc:  # one broken section must not hide the others
            log.exception("flywheel section %s failed", key)
            sections[key] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return sections


# --- HTML ----------------------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:16px;color:#1a202c;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #e2e8f0;padding-bottom:4px}
.meta{color:#4a5568;font-size:13px;margin:2px 0 8px} .missing{color:#718096;font-style:italic}
.error{color:#c53030} table{border-collapse:collapse;font-size:12px;width:100%}
th,td{border:1px solid #e2e8f0;padding:3px 6px;text-align:left;vertical-align:top} th{background:#f7fafc}
a{color:#2b6cb0} .pill{display:inline-block;border-radius:9px;padding:1px 8px;font-size:12px;background:#ebf8ff}
.champion{background:#c6f6d5} .challenger{background:#fefcbf} section{margin-bottom:10px}
"""


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _run_link(lookup: RunLookup, dag_id: str, day: str | None, run_id: str | None = None) -> str:
    run_id = run_id or (lookup(dag_id, day) if day else None)
    if not run_id:
        return '<span class="missing">no Airflow run found</span>'
    return f'<a target="_top" href="/dags/{_e(dag_id)}/runs/{_e(run_id)}">Airflow run {_e(run_id)}</a>'


def _missing(what: str, stage: str) -> str:
    return f'<p class="missing">Not produced yet: {_e(what)} appears after the {_e(stage)} stage has run.</p>'


def _table(section: dict) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in section["columns"])
    body = "".join("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in row) + "</tr>" for row in section["rows"])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render(sections: dict, lookup: RunLookup, prefix: str = "/flywheel") -> str:
    parts = [(f"<!doctype html><html><head><meta charset='utf-8'><title>Flywheel</title><style>{STYLE}</style>"
              "</head><body><h1>ACSR Flywheel</h1>"
              "<p class='meta'>What the feedback loop produced lately, and the Airflow run behind each item. "
              f"<a href='{prefix}/data-docs/index.html' target='_blank'>Data quality (GX Data Docs)</a></p>")]

    rep = sections["report"]
    parts.append("<section id='report'><h2>Latest daily report</h2>")
    if rep.get("status") == "ok":
        gaps = (f" · <a target='_blank' href='{prefix}/lake/{_e(rep['gaps_page'])}'>gap report page</a>"
                if rep.get("gaps_page") else "")
        parts.append(f"<p class='meta'>Day {_e(rep['dt'])} · {_run_link(lookup, NIGHTLY, rep['dt'])}</p>"
                     f"<p><a target='_blank' href='{prefix}/lake/{_e(rep['page'])}'>Open the report of "
                     f"{_e(rep['dt'])}</a>{gaps}</p>")
    else:
        parts.append(_section_state(rep, "the daily report", "signals"))
    parts.append("</section>")

    for key, title, stage in (("action_queue", "Action queue", "signals"), ("kb_gaps", "Knowledge-base gaps", "gaps")):
        sec = sections[key]
        parts.append(f"<section id='{key}'><h2>{title}</h2>")
        if sec.get("status") == "ok":
            parts.append(f"<p class='meta'>Day {_e(sec['dt'])} · {sec['rows_total']} rows (first "
                         f"{len(sec['rows'])} shown, {len(sec['columns'])} of {sec['columns_total']} columns; "
                         f"all in the warehouse view <code>{key}</code>) · "
                         f"{_run_link(lookup, NIGHTLY, sec['dt'])}</p>")
            parts.append(_table(sec) if sec["rows"] else "<p class='missing'>No rows on that day.</p>")
        else:
            parts.append(_section_state(sec, title.lower(), stage))
        parts.append("</section>")

    ds = sections["datasets"]
    parts.append("<section id='datasets'><h2>Published dataset versions</h2>")
    if ds.get("status") == "ok":
        rows = "".join(
            f"<tr><td>{_e(d['name'])}</td><td><b>{_e(d['latest'])}</b></td><td>{_e(d['window_end'])}</td>"
            f"<td>{_e(d['examples'])}</td><td>{_e(d['new_examples'])}</td><td>{_e(', '.join(d['versions']))}</td>"
            f"<td>{_run_link(lookup, NIGHTLY, d['window_end'])}</td></tr>"
            for d in ds["datasets"])
        parts.append("<table><thead><tr><th>dataset</th><th>latest version</th><th>window end</th>"
                     "<th>examples</th><th>new</th><th>all versions</th><th>run</th></tr></thead>"
                     f"<tbody>{rows}</tbody></table>")
    else:
        parts.append(_section_state(ds, "a dataset version", "datasets"))
    parts.append("</section>")

    md = sections["models"]
    parts.append("<section id='models'><h2>Model registry: champion and challenger</h2>")
    if md.get("status") == "ok":
        rows = []
        for alias, v in md["aliases"].items():
            metrics = ", ".join(f"{k}={val}" for k, val in list(v["metrics"].items())[:6])
            rows.append(f"<tr><td><span class='pill {alias}'>{_e(alias)}</span></td><td>{_e(md['model'])} "
                        f"v{_e(v['version'])}</td><td>{_e(v['tags'].get('dataset_version', ''))}</td>"
                        f"<td>{_e(v['tags'].get('promotion_decision', ''))}</td><td>{_e(metrics)}</td>"
                        f"<td>{_run_link(lookup, RETRAIN_INTENT, None, v.get('airflow_run_id'))}</td></tr>")
        parts.append("<table><thead><tr><th>alias</th><th>version</th><th>dataset</th><th>decision</th>"
                     f"<th>gold-set metrics</th><th>run</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")
    else:
        parts.append(_section_state(md, "a registered model", "retraining"))
    parts.append("</section>")
    parts.append(_approvals_html(sections.get("approvals") or {}))
    parts.append("</body></html>")
    return "".join(parts)


def approvals_section(settings: Settings) -> dict:
    """The latest approval-gate decisions (feedback_loop.review.approvals; issue 17)."""
    from feedback_loop.review.approvals import flywheel_rows

    return {"status": "ok", "rows": flywheel_rows(settings)}


def _approvals_html(section: dict) -> str:
    from feedback_loop.review.approvals import flywheel_html

    if section.get("status") == "error":
        return f"<section id='approvals'><h2>Approvals</h2>{_section_state(section, 'the approvals', 'retraining')}</section>"
    return flywheel_html(section.get("rows") or [])


def _section_state(section: dict, what: str, stage: str) -> str:
    if section.get("status") == "error":
        return f"<p class='error'>Could not read {_e(what)}: {_e(section.get('error'))}</p>"
    return _missing(what, stage)
