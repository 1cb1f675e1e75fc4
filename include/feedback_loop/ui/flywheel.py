"""The Flywheel page: what the loop produced lately, gathered from the lake and the model registry.

Plain functions with no Airflow import, so the page's content is testable without a server; the plugin
(`plugins/acsr_flywheel.py`) renders it inside the Airflow UI and adds the links to the Airflow runs that
produced each item. Every section says "not produced yet" until its stage has written something.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from feedback_loop.lake.files import Lake, join
from feedback_loop.settings import Settings

if TYPE_CHECKING:
    from markupsafe import Markup

log = logging.getLogger(__name__)
TEMPLATES = Path(__file__).parent / "templates"

NIGHTLY = "acsr_nightly"
RETRAIN_INTENT = "acsr_retrain_intent_classifier"
CELL_CHARS = 160

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


TREND_DAYS = 14
ACTIONS_SHOWN = 12
GAPS_SHOWN = 5


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _mart_day(lake: Lake, name: str, day: str) -> str:
    """The relation of one day's partition of a mart, for a FROM clause."""
    return f"read_parquet({_sql_str(lake.partition_file('marts', name, day))}, hive_partitioning=false)"


def _dicts(cur) -> list[dict]:
    """The rows of an executed query as dicts by column name."""
    names = [d[0] for d in cur.description]
    return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def actions_section(lake: Lake, con_factory: Callable) -> dict:
    """What got worse: the latest action queue, new items first then by severity, each with its metric,
    scope, value against baseline, the component to act, example conversations and a trend of the metric
    at that scope over the last TREND_DAYS days (marts/signal_metrics)."""
    day = _latest(lake.days("marts", "action_queue"))
    if day is None:
        return {"status": "missing"}
    con = con_factory()
    try:
        rel = _mart_day(lake, "action_queue", day)
        total = con.execute(f"SELECT count(*) FROM {rel}").fetchone()[0]
        cur = con.execute(f"""
            SELECT action_id, signal, scope_dimension, scope_value, trigger, value, baseline_value, threshold,
                   change_rel, target_component, improvement_action, example_conversation_ids, severity,
                   first_raised_date::VARCHAR AS first_raised_date, days_open, first_raised_date = DATE {_sql_str(day)} AS new
            FROM {rel} ORDER BY new DESC, severity DESC, action_id LIMIT {ACTIONS_SHOWN}""")
        items = _dicts(cur)
        new_total = con.execute(f"SELECT count(*) FROM {rel} WHERE first_raised_date = DATE {_sql_str(day)}").fetchone()[0]
        trend_days = [d for d in lake.days("marts", "signal_metrics") if d <= day][-TREND_DAYS:]
        if items and trend_days:
            files = ", ".join(_sql_str(lake.partition_file("marts", "signal_metrics", d)) for d in trend_days)
            keys = ", ".join(f"({_sql_str(i['signal'])}, {_sql_str(i['scope_dimension'])}, {_sql_str(i['scope_value'])})"
                             for i in items)
            rows = con.execute(f"""
                SELECT metric, dimension, dimension_value, list(value ORDER BY metric_date)
                FROM read_parquet([{files}], hive_partitioning=false)
                WHERE is_current AND (metric, dimension, dimension_value) IN ({keys}) AND value IS NOT NULL
                GROUP BY ALL""").fetchall()
            trends = {(m, d, v): vals for m, d, v, vals in rows}
        else:
            trends = {}
    finally:
        con.close()
    for item in items:
        item["trend"] = [float(v) for v in trends.get((item["signal"], item["scope_dimension"], item["scope_value"]), [])]
        item["examples"] = list(item.pop("example_conversation_ids") or [])[:3]
        item["scope"] = ("all traffic" if item["scope_dimension"] == "all"
                         else f"{item['scope_dimension']} = {item['scope_value']}")
        for key in ("value", "baseline_value", "threshold", "change_rel", "severity"):
            item[key] = None if item[key] is None else float(item[key])
    return {"status": "ok", "dt": day, "rows_total": total, "new_total": new_total, "items": items}


def gaps_section(lake: Lake, con_factory: Callable) -> dict:
    """The top open knowledge-base gaps of the latest night: what to write (or revise) and the evidence."""
    day = _latest(lake.days("marts", "kb_gaps"))
    if day is None:
        return {"status": "missing"}
    con = con_factory()
    try:
        rel = _mart_day(lake, "kb_gaps", day)
        total = con.execute(f"SELECT count(*) FROM {rel} WHERE rank IS NOT NULL").fetchone()[0]
        cur = con.execute(f"""
            SELECT gap_id, rank, kind, label, reason, article_id, n_conversations, n_customers, impact,
                   failure_rate, trend, representative_messages[1] AS example_message, first_seen::VARCHAR AS first_seen
            FROM {rel} WHERE rank IS NOT NULL ORDER BY rank LIMIT {GAPS_SHOWN}""")
        items = _dicts(cur)
    finally:
        con.close()
    for item in items:
        for key in ("impact", "failure_rate", "trend"):
            item[key] = None if item[key] is None else float(item[key])
        item["example_message"] = _cell(item["example_message"])
    return {"status": "ok", "dt": day, "rows_total": total, "items": items,
            "page": f"reports/dt={day}/gaps.html" if day in lake.days_with_file("reports", "gaps.html") else None}


def decisions_section(lake: Lake) -> dict:
    """The latest nightly retraining decision (runs/dt=D/retrain_decision.json) and its reasons."""
    day = _latest(lake.days_with_file("runs", "retrain_decision.json"))
    if day is None:
        return {"status": "missing"}
    doc = lake.read_json("runs", f"dt={day}", "retrain_decision.json") or {}
    ic, rm = doc.get("intent_classifier") or {}, doc.get("reasoning_model") or {}
    return {"status": "ok", "dt": day, "items": [
        {"model": "intent classifier", "act": bool(ic.get("retrain")), "verb": "retrain",
         "reasons": list(ic.get("reasons") or [])},
        {"model": "reasoning model", "act": bool(rm.get("finetune")), "verb": "fine-tune",
         "reasons": list(rm.get("reasons") or [])}]}


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
                    "versions": len(versions), "first_version": versions[0] if versions else None})
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


def approvals_section(settings: Settings) -> dict:
    """The latest approval-gate decisions (feedback_loop.review.approvals; issue 17)."""
    from feedback_loop.review.approvals import flywheel_rows

    rows = flywheel_rows(settings)
    return {"status": "ok" if rows else "missing", "rows": rows}


# The page's sections, in order: (key, title, the stage that produces it, template). A new section (approval
# decisions, a review queue) is a gather function in SECTION_SOURCES, one line here and one template file.
SECTIONS = (
    ("report", "Latest daily report", "signals", "flywheel_report.html.j2"),
    ("action_queue", "What got worse: the action queue", "signals", "flywheel_actions.html.j2"),
    ("kb_gaps", "Knowledge-base gaps: what to write", "gaps", "flywheel_gaps.html.j2"),
    ("datasets", "Published dataset versions", "datasets", "flywheel_datasets.html.j2"),
    ("decisions", "Retraining decision", "retraining decision", "flywheel_decisions.html.j2"),
    ("models", "Model registry: champion and challenger", "retraining", "flywheel_models.html.j2"),
    ("approvals", "Approvals", "retraining approval gates", "flywheel_approvals.html.j2"),
)


def gather(settings: Settings, con_factory: Callable) -> dict:
    lake = Lake(settings.lake)
    sources = {
        "report": lambda: report_section(lake),
        "action_queue": lambda: actions_section(lake, con_factory),
        "kb_gaps": lambda: gaps_section(lake, con_factory),
        "datasets": lambda: datasets_section(lake),
        "decisions": lambda: decisions_section(lake),
        "models": lambda: models_section(settings),
        "approvals": lambda: approvals_section(settings),
    }
    sections = {}
    for key, *_ in SECTIONS:
        try:
            sections[key] = sources[key]()
        except Exception as exc:  # one broken section must not hide the others
            log.exception("flywheel section %s failed", key)
            sections[key] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
    return sections


# --- HTML: templates/flywheel*.html.j2 (Jinja2, autoescaped) ------------------------------------------------

def _environment():
    from jinja2 import Environment, FileSystemLoader, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html", "j2"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = _num
    env.globals["sparkline"] = sparkline
    return env


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def sparkline(values: list[float], width: int = 110, height: int = 24) -> Markup:
    """A small inline SVG line of the values, the last point marked (no axes: the trend at a glance)."""
    from markupsafe import Markup

    if len(values) < 2:
        return Markup('<span class="missing">no trend yet</span>')
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    step = (width - 4) / (len(values) - 1)
    pts = [(2 + i * step, height - 2 - (v - lo) / span * (height - 4)) for i, v in enumerate(values)]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
    x, y = pts[-1]
    return Markup(f'<svg class="spark" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
                  f'aria-label="last {len(values)} days: {values[0]:.3g} to {values[-1]:.3g}">'
                  f'<polyline fill="none" stroke="#2b6cb0" stroke-width="1.5" points="{path}"/>'
                  f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#c53030"/></svg>')


def render(sections: dict, lookup: RunLookup, prefix: str = "/flywheel") -> str:
    def run_link(dag_id: str, day: str | None, run_id: str | None = None) -> Markup:
        from markupsafe import Markup, escape

        run_id = run_id or (lookup(dag_id, day) if day else None)
        if not run_id:
            return Markup('<span class="missing">no Airflow run found</span>')
        return Markup(f'<a target="_top" href="/dags/{escape(dag_id)}/runs/{escape(run_id)}">Airflow run '
                      f'{escape(run_id)}</a>')

    template = _environment().get_template("flywheel.html.j2")
    return template.render(sections=sections, layout=SECTIONS, prefix=prefix, run_link=run_link,
                           NIGHTLY=NIGHTLY, RETRAIN_INTENT=RETRAIN_INTENT)
