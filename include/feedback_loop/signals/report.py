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
from feedback_loop.settings import Settings
from feedback_loop.signals.metrics import AB_MART, METRIC_BY_NAME, METRICS, METRICS_MART, QUEUE_MART

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
        cur = _rows(con, f"SELECT * FROM read_parquet('{lake.partition_file('marts', METRICS_MART, dt)}') "
                         "ORDER BY metric, metric_date, dimension, dimension_value")
        queue = _rows(con, f"SELECT * FROM read_parquet('{lake.partition_file('marts', QUEUE_MART, dt)}') "
                           "ORDER BY severity DESC, action_id") if lake.has_partition("marts", QUEUE_MART, dt) else []
        ab = _rows(con, f"SELECT * FROM read_parquet('{lake.partition_file('marts', AB_MART, dt)}') "
                        "ORDER BY metric, treatment") if lake.has_partition("marts", AB_MART, dt) else []
        trend = _trend(con, lake, day)
    finally:
        con.close()
    summary = lake.read_json("runs", f"dt={dt}", "summary.json") or {}
    html = _render(settings, lake, dt, cur, queue, ab, trend, summary, red)
    target = report_path(lake, dt)
    write_bytes_atomic(target, html.encode("utf-8"))
    return target


def _rows(con, sql: str) -> list[dict]:
    res = con.execute(sql)
    cols = [d[0] for d in res.description]
    return [dict(zip(cols, r)) for r in res.fetchall()]


def _trend(con, lake: Lake, day: date) -> list[dict]:
    """The overall value and baseline of every metric per metric_date, latest as of the day, final or not."""
    dt = day.isoformat()
    first = str(day - timedelta(days=TREND_DAYS))
    days = [d for d in lake.days("marts", METRICS_MART) if first <= d <= dt]
    files = "[" + ", ".join(f"'{lake.partition_file('marts', METRICS_MART, d)}'" for d in days) + "]"
    return _rows(con, f"""SELECT metric, metric_date, value, baseline_value, is_final, kind
        FROM read_parquet({files}, hive_partitioning=true, union_by_name=true)
        WHERE dimension = 'all' AND metric_date >= DATE '{first}'
        QUALIFY row_number() OVER (PARTITION BY metric, metric_date ORDER BY dt DESC) = 1
        ORDER BY metric, metric_date""")


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


def _render(settings, lake, dt, cur, queue, ab, trend, summary, red) -> str:
    e = lambda v: escape(str(red(str(v)) if v is not None else ""))
    out = ["<!doctype html><html lang='en'><head><meta charset='utf-8'>",
           f"<title>ACSR signals {e(dt)}</title><style>{STYLE}</style></head><body>"]
    out += _header(settings, lake, dt, summary, e)
    current = [r for r in cur if r["is_current"]]
    overall = {r["metric"]: r for r in current if r["dimension"] == "all"}

    out.append("<h2 id='headline'>Headline signals</h2><div class='tiles'>")
    for name in HEADLINE:
        r = overall.get(name)
        if r is None:
            continue
        d = _direction(r)
        status = "" if r["is_final"] else " <span class='pill prov'>provisional</span>"
        out.append(
            f"<div class='tile' title='{e(METRIC_BY_NAME[name].numerator)} / {e(METRIC_BY_NAME[name].denominator)}'>"
            f"<div class='muted'>{e(name)}</div><div class='v'>{e(_fmt(r['value'], name))}</div>"
            f"<div class='n'><span class='{d}'>{e(_fmt_change(r))}</span> vs {e(_fmt(r['baseline_value'], name))}"
            f" ({r['baseline_days'] or 0} d)</div><div class='n muted'>n = {r['sample_size']:,}, "
            f"day {e(r['metric_date'])}{status}</div></div>")
    out.append("</div>")

    out += _queue_section(queue, e)
    out += _movers_section(current, settings, e)
    out.append("<h2 id='trends'>Trends against the trailing baseline</h2>"
               "<p class='muted'>Overall value per day (filled points are final, hollow ones provisional) and the "
               f"trailing {settings.signals_baseline_days}-day baseline (dashed). Windowed metrics are plotted on "
               "their cohort day.</p>")
    out += _charts(trend, e)
    out += _ab_section(ab, e)
    out += _shadow_section(current, e)
    out += _cohort_section(cur, e)
    out.append("<p class='muted'>Definitions of every metric, the action-queue routing and the sentiment method: "
               "<code>docs/signals.md</code>. Marts: <code>marts/signal_metrics</code>, <code>marts/action_queue</code>, "
               "<code>marts/signal_ab_tests</code> (warehouse views of the same names, and "
               "<code>signal_metrics_latest</code>).</p></body></html>")
    return "\n".join(out)


def _header(settings, lake, dt, summary, e) -> list[str]:
    here = os.path.dirname(report_path(lake, dt))
    prev_d = str(date.fromisoformat(dt) - timedelta(days=1))
    next_d = str(date.fromisoformat(dt) + timedelta(days=1))
    links = []
    if lake.has_partition("marts", METRICS_MART, prev_d):
        links.append(f"<a href='../dt={e(prev_d)}/index.html'>&larr; {e(prev_d)}</a>")
    if lake.has_partition("marts", METRICS_MART, next_d):
        links.append(f"<a href='../dt={e(next_d)}/index.html'>{e(next_d)} &rarr;</a>")
    links.append(f"<a href='{e(_rel(join(lake.root, 'runs', f'dt={dt}', 'summary.json'), here))}'>run summary</a>")
    docs = _data_docs(settings)
    links.append(f"<a href='{e(_rel(docs, here))}'>data-quality results (GX Data Docs)</a>" if docs else
                 "<span class='muted'>GX Data Docs not built yet (<code>build_data_docs</code> task)</span>")
    # The gap stage writes its page next to this one in the same nightly run (maybe after this task).
    links.append("<a href='gaps.html'>knowledge-base gaps</a>")
    t = summary.get("totals") or {}
    status = (f"Run {e(summary.get('status', '?'))}: {t.get('rows_read', 0):,} rows read, "
              f"{t.get('rows_staged', 0):,} staged, {t.get('rows_quarantined', 0):,} quarantined."
              if summary else "No run summary for this day.")
    return [f"<nav>{' '.join(links)}</nav>", f"<h1>ACSR feedback signals, {e(dt)}</h1>",
            (f"<p class='muted'>{status} Baseline: trailing {settings.signals_baseline_days} days of final values; "
             f"a change counts as beyond noise at |z| &ge; {settings.signals_noise_z}.</p>")]


def _queue_section(queue, e) -> list[str]:
    out = [f"<h2 id='actions'>Improvement-action queue ({len(queue)})</h2>"]
    if not queue:
        return out + ["<p>No signal crossed a threshold today.</p>"]
    out.append("<table><tr><th>signal</th><th>scope</th><th>trigger</th><th>value</th><th>threshold / baseline</th>"
               "<th>n</th><th>act on</th><th>severity</th><th>open since</th>"
               "<th>example conversations</th></tr>")
    for q in queue:
        shown = q["level_value"] if q["trigger"].startswith("level") else q["value"]
        n = q["level_sample_size"] if q["trigger"].startswith("level") else q["sample_size"]
        basis = (f"{_fmt(q['threshold'], q['signal'])} ({q['level_days']} d pooled)" if q["trigger"].startswith("level")
                 else f"{_fmt(q['baseline_value'], q['signal'])} (z = {q['z_score']:.1f})")
        out.append(
            f"<tr><td><code>{e(q['signal'])}</code></td><td>{e(q['scope_dimension'])} = {e(q['scope_value'])}</td>"
            f"<td>{e(q['trigger'].replace('_', ' '))}</td><td class='num'>{e(_fmt(shown, q['signal']))}</td>"
            f"<td class='num'>{e(basis)}</td><td class='num'>{e(_fmt(int(n or 0)))}</td>"
            f"<td><span class='pill worse'>{e(q['target_component'])}</span><br><span class='muted'>"
            f"{e(q['improvement_action'])}</span></td>"
            f"<td class='num'>{q['severity']:.1f}</td><td class='day'>{e(q['first_raised_date'])}</td>"
            # ids are keys, not free text: the free-text redactor would mangle some of them
            f"<td class='ids'>{escape(', '.join((q['example_conversation_ids'] or [])[:3]))}</td></tr>")
    return out + ["</table>"]


def _movers_section(current, settings, e) -> list[str]:
    rows = [r for r in current if r["z_score"] is not None and r["z_score"] == r["z_score"]
            and r["sample_size"] >= settings.signals_min_sample and r["higher_is_better"] is not None]
    rows.sort(key=lambda r: (-abs(r["z_score"]), r["metric"], r["dimension"], str(r["dimension_value"])))
    out = [("<h2 id='movers'>Top movers</h2><p class='muted'>Current values with the largest change against "
            f"their baseline, in noise units (scopes with at least {settings.signals_min_sample} units).</p>"),
           ("<table><tr><th>metric</th><th>scope</th><th>value</th><th>baseline</th><th>change</th><th>z</th>"
            "<th>n</th><th>verdict</th></tr>")]
    for r in rows[:15]:
        d = _direction(r)
        verdict = {"worse": "worse, beyond noise", "better": "better, beyond noise"}.get(d, "within noise")
        out.append(f"<tr><td><code>{e(r['metric'])}</code></td><td>{e(r['dimension'])} = {e(r['dimension_value'])}</td>"
                   f"<td class='num'>{e(_fmt(r['value'], r['metric']))}</td>"
                   f"<td class='num'>{e(_fmt(r['baseline_value'], r['metric']))}</td>"
                   f"<td class='num {d}'>{e(_fmt_change(r))}</td><td class='num'>{r['z_score']:+.1f}</td>"
                   f"<td class='num'>{r['sample_size']:,}</td><td><span class='pill {d}'>{verdict}</span></td></tr>")
    if not rows:
        out.append("<tr><td colspan='8'>No baseline yet (it needs "
                   f"{settings.signals_min_baseline_days} days of final values).</td></tr>")
    return out + ["</table>"]


def _charts(trend, e) -> list[str]:
    """One faceted Altair chart per kind of signal, rendered to inline SVG."""
    if not trend:
        return ["<p>No history yet.</p>"]
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
        out.append(f"<h3>{e(title)}</h3>{svg}")
    return out


def _ab_section(ab, e) -> list[str]:
    out = ["<h2 id='ab'>A/B: strategies against the control (live traffic)</h2>"]
    if not ab:
        return out + ["<p>Fewer than two strategies with data in the window.</p>"]
    out.append("<table><tr><th>metric</th><th>control</th><th>treatment</th><th>cohorts</th><th>n control</th>"
               "<th>n treatment</th><th>control</th><th>treatment</th><th>difference</th><th>test</th><th>p</th>"
               "<th>verdict</th><th>n per arm for this difference</th></tr>")
    for r in ab:
        verdict = (f"<span class='pill {'better' if r['better'] == r['treatment'] else 'worse'}'>"
                   f"{e(r['better'])} better</span>" if r["significant"] else "<span class='pill'>not significant</span>")
        out.append(f"<tr><td><code>{e(r['metric'])}</code></td><td>{e(r['control'])}</td><td>{e(r['treatment'])}</td>"
                   f"<td>{e(r['cohort_first'])} – {e(r['cohort_last'])}</td><td class='num'>{r['n_control']:,}</td>"
                   f"<td class='num'>{r['n_treatment']:,}</td><td class='num'>{e(_fmt(r['value_control'], r['metric']))}</td>"
                   f"<td class='num'>{e(_fmt(r['value_treatment'], r['metric']))}</td>"
                   f"<td class='num'>{e(_fmt_change({'metric': r['metric'], 'change': r['diff'], 'change_rel': r['diff_rel']}))}</td>"
                   f"<td>{e(r['test'].replace('_', ' '))}</td><td class='num'>{e(_fmt(r['p_value']))}</td>"
                   f"<td>{verdict}</td><td class='num'>{e(_fmt(r['n_required_per_arm']))}</td></tr>")
    return out + ["</table>"]


def _shadow_section(current, e) -> list[str]:
    rows = [r for r in current if r["metric"] in ("shadow_intent_agreement", "shadow_review_agreement")]
    rows.sort(key=lambda r: (r["metric"], r["dimension"] != "all", r["dimension"], -r["sample_size"],
                             str(r["dimension_value"])))
    out = ["<h2 id='shadow'>Shadow mode: agent proposal against the human's decision</h2>"]
    if not rows:
        return out + ["<p>No shadow-mode conversations today.</p>"]
    out.append("<table><tr><th>metric</th><th>scope</th><th>agreement</th><th>n</th><th>baseline</th></tr>")
    for r in [r for r in rows if r["dimension"] in ("all", "stage", "strategy", "channel")] + \
            [r for r in rows if r["dimension"] == "intent"][:10]:
        out.append(f"<tr><td><code>{e(r['metric'])}</code></td><td>{e(r['dimension'])} = {e(r['dimension_value'])}</td>"
                   f"<td class='num'>{e(_fmt(r['value'], r['metric']))}</td><td class='num'>{r['sample_size']:,}</td>"
                   f"<td class='num'>{e(_fmt(r['baseline_value'], r['metric']))}</td></tr>")
    return out + ["</table>"]


def _cohort_section(cur, e) -> list[str]:
    rows = [r for r in cur if r["dimension"] == "all" and r["window_name"] != "day"]
    days = sorted({r["metric_date"] for r in rows})
    by = {(r["metric"], r["metric_date"]): r for r in rows}
    out = [("<h2 id='cohorts'>Windowed metrics by cohort day</h2><p class='muted'>Recomputed every night "
            "until their window and the lateness allowance have passed (shaded: provisional); then final and "
            "never changed again.</p>"), "<table><tr><th>metric</th>" + "".join(f"<th class='num'>{e(d)}</th>" for d in days)
           + "</tr>"]
    for name in sorted({r["metric"] for r in rows}):
        cells = []
        for d in days:
            r = by.get((name, d))
            if r is None:
                cells.append("<td></td>")
                continue
            style = "" if r["is_final"] else " style='background:#fff8c5'"
            cells.append(f"<td class='num'{style} title='n = {r['sample_size']}'>{e(_fmt(r['value'], name))}</td>")
        out.append(f"<tr><td><code>{e(name)}</code></td>{''.join(cells)}</tr>")
    return out + ["</table>"]


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
