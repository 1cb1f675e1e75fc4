"""The daily signals report: `<lake>/reports/dt=<dt>/index.html`, one self-contained HTML page.

What a person wants in the morning, in this order: the headline signals against their baseline, the
improvement actions raised, what moved most, the trend of every signal against its baseline (Altair
charts rendered to inline SVG by vl-convert, so the page needs no JavaScript and no network), the A/B
and shadow-mode tables, the windowed cohorts still waiting for their window to close, and links to the
data-quality results, the run summary and the KB gap page.

No free text is shown: only metric names, labels (intents, channels, strategies, reasons) and ids. All of
them come from data, so every one goes through the project's PII redactor and is HTML-escaped.
"""

from __future__ import annotations

import functools
import glob
import math
import os
from datetime import date, timedelta
from html import escape

from feedback_loop.lake.files import Lake, is_remote, join, write_bytes_atomic
from feedback_loop.lake.sql import literal, literal_list
from feedback_loop.settings import Settings
from feedback_loop.signals.registry import AB_MART, METRIC_BY_NAME, METRICS, METRICS_MART, QUEUE_MART

HEADLINE = ("csat_top2_share", "ces_mean", "fcr", "autonomous_resolution_rate", "reopen_rate_24h",
            "escalation_rate", "override_rate", "policy_breach_rate", "sentiment_mean", "kb_weak_result_rate",
            "latency_p95_ms", "cost_per_resolution_usd")
KIND_TITLES = {"explicit": "Explicit signals", "implicit": "Implicit signals", "outcome": "Outcome-based",
               "reasoning": "Reasoning trace", "operational": "Operational", "comparative": "Comparative (shadow mode)"}
TREND_DAYS = 35

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1280px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2.2rem} h3{font-size:1rem} .muted{color:#656d76}
table{border-collapse:collapse;width:100%;font-size:.85rem} th,td{border-bottom:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.tiles{display:grid;grid-template-columns:repeat(auto-fill,minmax(185px,1fr));gap:.6rem}
.tile{border:1px solid #d0d7de;border-radius:6px;padding:.5rem .7rem}
.tile .muted{overflow-wrap:anywhere} td.day{white-space:nowrap} .tile .v{font-size:1.35rem;font-variant-numeric:tabular-nums} .tile .n{font-size:.8rem}
.worse{color:#a40e26} .better{color:#1a7f37} .flat{color:#656d76}
.pill{border-radius:1rem;padding:.05rem .5rem;font-size:.75rem;white-space:nowrap;background:#eaeef2}
.pill.worse{background:#ffebe9} .pill.better{background:#dafbe1} .pill.prov{background:#fff8c5;color:#7d4e00}
.ids{font-size:.75rem;color:#656d76;word-break:break-all} code{font-size:.8rem;background:#f6f8fa;padding:.05rem .25rem;border-radius:3px}
nav a{margin-right:1rem} svg{max-width:100%;height:auto}
"""


def report_path(lake: Lake, dt: str) -> str:
    return join(lake.root, "reports", f"dt={dt}", "index.html")


def write_report(settings: Settings, day: date) -> str:
    """Render the report of `day` from the signal marts (run the signals stage first); return its path."""
    from feedback_loop.datasets.pii import redactor
    from feedback_loop.lake.duck import connect

    dt = day.isoformat()
    lake = Lake(settings.lake)
    if not lake.has_partition("marts", METRICS_MART, dt):
        raise RuntimeError(f"no marts/{METRICS_MART} for {dt}: run the signals stage first")
    red = functools.lru_cache(maxsize=None)(redactor(settings).redact)  # labels repeat on every row
    con = connect()
    try:
        part = lambda mart: literal(lake.partition_file("marts", mart, dt))
        cur = _rows(con, f"SELECT * FROM read_parquet({part(METRICS_MART)}) "
                         "ORDER BY metric, metric_date, dimension, dimension_value")
        queue = _rows(con, f"SELECT * FROM read_parquet({part(QUEUE_MART)}) "
                           "ORDER BY severity DESC, action_id") if lake.has_partition("marts", QUEUE_MART, dt) else []
        ab = _rows(con, f"SELECT * FROM read_parquet({part(AB_MART)}) "
                        "ORDER BY metric, treatment") if lake.has_partition("marts", AB_MART, dt) else []
        trend = _trend(con, lake, day)
    finally:
        con.close()
    summary = lake.read_json("runs", f"dt={dt}", "summary.json") or {}
    html = _render(settings, lake, day, cur, queue, ab, trend, summary, red)
    target = report_path(lake, dt)
    write_bytes_atomic(target, html.encode("utf-8"))
    return target


def _rows(con, sql: str, params: dict | None = None) -> list[dict]:
    res = con.execute(sql, params)
    cols = [d[0] for d in res.description]
    return [dict(zip(cols, r)) for r in res.fetchall()]


def _trend(con, lake: Lake, day: date) -> list[dict]:
    """The overall value and baseline of every metric per metric_date, latest as of the day, final or not."""
    dt = day.isoformat()
    first = str(day - timedelta(days=TREND_DAYS))
    files = literal_list(lake.files_between("marts", METRICS_MART, first, dt))
    return _rows(con, f"""SELECT metric, metric_date, value, baseline_value, is_final, kind
        FROM read_parquet({files}, hive_partitioning=true, union_by_name=true)
        WHERE dimension = 'all' AND metric_date >= $first::DATE
        QUALIFY row_number() OVER (PARTITION BY metric, metric_date ORDER BY dt DESC) = 1
        ORDER BY metric, metric_date""", {"first": first})


# ----------------------------------------------------------------------------------------------- render

def _fmt(v, metric: str | None = None) -> str:
    if v is None:
        return "–"
    if isinstance(v, float) and math.isnan(v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int,)) and not isinstance(v, bool):
        return f"{v:,}"
    if isinstance(v, float):
        m = METRIC_BY_NAME.get(metric or "")
        if m is not None and m.share:
            return f"{v:.1%}"
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.3f}"
    return str(v)


def _fmt_change(r: dict) -> str:
    m = METRIC_BY_NAME.get(r["metric"] if "metric" in r else r.get("signal"))
    ch = r.get("change")
    if ch is None or math.isnan(ch):
        return "–"
    if m is not None and m.share:
        return f"{ch * 100:+.1f} pt"
    rel = r.get("change_rel")
    return f"{ch:+.3g}" + (f" ({rel:+.0%})" if rel is not None and not math.isnan(rel) else "")


def _direction(r: dict) -> str:
    d = r.get("change_direction") or "flat"
    if not r.get("beyond_noise"):
        return "flat"
    return d


def _render(settings, lake, day: date, cur, queue, ab, trend, summary, red) -> str:
    """The page from templates/report.html.j2: this function picks and orders the rows, the template lays
    them out."""
    dt = day.isoformat()
    e = lambda v: escape(str(red(str(v)) if v is not None else ""))
    current = [r for r in cur if r["is_current"]]
    overall = {r["metric"]: r for r in current if r["dimension"] == "all"}
    here = os.path.dirname(report_path(lake, dt))
    prev_d = str(day - timedelta(days=1))
    next_d = str(day + timedelta(days=1))
    docs = _data_docs(settings)
    movers = [r for r in current if r["z_score"] is not None and r["z_score"] == r["z_score"]
              and r["sample_size"] >= settings.signals_min_sample and r["higher_is_better"] is not None]
    movers.sort(key=lambda r: (-abs(r["z_score"]), r["metric"], r["dimension"], str(r["dimension_value"])))
    shadow = [r for r in current if r["metric"] in ("shadow_intent_agreement", "shadow_review_agreement")]
    shadow.sort(key=lambda r: (r["metric"], r["dimension"] != "all", r["dimension"], -r["sample_size"],
                               str(r["dimension_value"])))
    windowed = [r for r in cur if r["dimension"] == "all" and r["window_name"] != "day"]
    cohort_days = sorted({r["metric_date"] for r in windowed})
    by_cohort = {(r["metric"], r["metric_date"]): r for r in windowed}
    template = _templates().get_template("report.html.j2")
    return template.render(
        e=e, esc=escape, fmt=_fmt, fmt_change=_fmt_change, direction=_direction, num=lambda v: f"{v:,}",
        style=STYLE, settings=settings, dt=dt, summary=summary, totals=summary.get("totals") or {},
        prev_day=prev_d if lake.has_partition("marts", METRICS_MART, prev_d) else None,
        next_day=next_d if lake.has_partition("marts", METRICS_MART, next_d) else None,
        summary_href=_rel(join(lake.root, "runs", f"dt={dt}", "summary.json"), here),
        docs_href=_rel(docs, here) if docs else None,
        tiles=[(name, METRIC_BY_NAME[name], overall[name]) for name in HEADLINE if name in overall],
        queue=queue, movers=movers[:15], trend=trend, charts=_charts(trend), ab=ab,
        shadow=[r for r in shadow if r["dimension"] in ("all", "stage", "strategy", "channel")]
        + [r for r in shadow if r["dimension"] == "intent"][:10],
        cohort_days=cohort_days,
        cohort_rows=[(name, [by_cohort.get((name, d)) for d in cohort_days])
                     for name in sorted({r["metric"] for r in windowed})])


@functools.cache
def _templates():
    """No autoescape: every value goes through the template's e() (PII redaction, then html.escape) or
    esc(), whose output is what the page always had; the gaps link assumes the gap stage's page beside it."""
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("feedback_loop.signals", "templates"), autoescape=False,
                              trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _charts(trend) -> list[tuple[str, str]]:
    """(title, inline SVG): one faceted Altair chart per kind of signal."""
    if not trend:
        return []
    import altair as alt
    import pandas as pd
    import vl_convert as vlc

    frame = pd.DataFrame(trend)
    frame["metric_date"] = pd.to_datetime(frame["metric_date"])
    frame["state"] = frame["is_final"].map({True: "final", False: "provisional"})
    out = []
    for kind, title in KIND_TITLES.items():
        names = [m.name for m in METRICS if m.kind == kind]
        part = frame[frame["metric"].isin(names)]
        if part.empty:
            continue
        base = alt.Chart(part).encode(x=alt.X("metric_date:T", title=None, axis=alt.Axis(format="%d %b", labelAngle=0)))
        value = base.mark_line(point=False, color="#0969da").encode(y=alt.Y("value:Q", title=None,
                                                                            scale=alt.Scale(zero=False)))
        points = base.mark_point(size=28, color="#0969da").encode(
            y="value:Q", fill=alt.Fill("state:N", scale=alt.Scale(domain=["final", "provisional"],
                                                                   range=["#0969da", "white"]), legend=None),
            tooltip=["metric", "metric_date:T", "value:Q", "baseline_value:Q", "state"])
        baseline = base.mark_line(strokeDash=[4, 3], color="#8c959f").encode(y="baseline_value:Q")
        chart = (alt.layer(baseline, value, points, data=part)
                 .properties(width=230, height=110)
                 .facet(facet=alt.Facet("metric:N", title=None, sort=names), columns=4)
                 .resolve_scale(y="independent"))
        svg = vlc.vegalite_to_svg(chart.to_dict())
        out.append((title, svg))
    return out


# ----------------------------------------------------------------------------------------------- links

def _data_docs(settings: Settings) -> str | None:
    """The GX Data Docs index page, wherever the GX project under the lake put it."""
    from feedback_loop.ingest.quality import gx_root

    root = gx_root(settings)
    if is_remote(root):
        return None
    found = sorted(glob.glob(os.path.join(root, "**", "data_docs", "local_site", "index.html"), recursive=True))
    return found[0] if found else None


def _rel(target: str, here: str) -> str:
    if is_remote(target) or is_remote(here):
        return target
    return os.path.relpath(target, here)
