"""The gap page: `<lake>/reports/dt=<dt>/gaps.html`, one self-contained HTML file next to the daily report.

Rendered from `templates/gaps.html.j2` with autoescaping on: every free text on it (representative
messages, draft replies, labels) was redacted before clustering, and is escaped again as HTML here.
"""

from __future__ import annotations

import json
from functools import lru_cache
from html import escape

from feedback_loop.lake.files import Lake, join, write_bytes_atomic

KIND_TEXT = {
    "missing_article": "missing article",
    "revise_article": "article to revise",
    "stale_article": "stale article",
    "contradictory_articles": "contradictory articles",
    "out_of_scope": "out of scope",
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem} .muted{color:#656d76}
table{border-collapse:collapse;width:100%;font-size:.9rem} th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.kind{border-radius:1rem;padding:.05rem .5rem;font-size:.8rem;white-space:nowrap}
.missing_article{background:#ffebe9;color:#a40e26} .revise_article{background:#fff8c5;color:#7d4e00} .stale_article{background:#ddf4ff;color:#0a3069}
.contradictory_articles{background:#fbefff;color:#6e40c9} .out_of_scope{background:#eaeef2;color:#57606a}
.closed{background:#eaeef2;color:#57606a}
.gap{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.gap h3{font-size:1rem;margin:.2rem 0 .5rem} blockquote{margin:.2rem 0;padding:.1rem .6rem;border-left:3px solid #d0d7de;color:#424a53}
blockquote.draft{border-left-color:#1a7f37}
code{font-size:.8rem;background:#f6f8fa;padding:.05rem .25rem;border-radius:3px;white-space:nowrap}
td.day{white-space:nowrap}
.ids{font-size:.75rem;color:#656d76;word-break:break-all}
"""


@lru_cache(maxsize=1)
def _template():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("feedback_loop.gaps", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True), keep_trailing_newline=True)
    env.filters["num"] = lambda v: "" if v is None else f"{v:.2f}"
    env.filters["trend"] = lambda v: "–" if v is None else f"{v:+.0%}"  # no previous window yet
    return env.get_template("gaps.html.j2")


def _facts(r: dict) -> list[str]:
    """The one-line facts of a gap, as HTML fragments (each free text escaped here)."""
    e = escape
    out = []
    if r.get("reason"):
        out.append("<b>why</b>: " + e(r["reason"]))
    if r.get("misrouted_to"):
        out.append(f"misrouted to article <code>{e(r['misrouted_to'])}</code>")
    if r.get("intents"):
        out.append("routed to: " + ", ".join(f"<code>{e(i)}</code>" for i in r["intents"]))
    if r.get("top_terms"):
        out.append("terms: " + e(", ".join(r["top_terms"])))
    if r.get("failure_rate") is not None and r.get("base_failure_rate") is not None:
        out.append(f"failure rate {r['failure_rate']:.0%} against {r['base_failure_rate']:.0%} overall")
    if r.get("escalation_hours"):
        out.append(f"{r['escalation_hours']:.1f} h of human handling on escalations")
    if r.get("prev_window_conversations") is not None:
        out.append(f"previous window: {r['prev_window_conversations']} conversations")
    try:
        sig = {k: v for k, v in json.loads(r.get("signal_counts") or "{}").items() if v}
        if sig:
            out.append("signals: " + ", ".join(f"{e(k)} {v}" for k, v in sig.items()))
    except ValueError:
        pass
    if r.get("action_ids"):
        out.append("action queue: " + ", ".join(f"<code>{e(a)}</code>" for a in r["action_ids"]))
    return out


def render(dt: str, rows: list[dict], meta: dict) -> str:
    open_rows = [r for r in rows if r["status"] == "open"]
    closed = [r for r in rows if r["status"] != "open"]
    by_kind = {k: sum(r["kind"] == k for r in open_rows) for k in KIND_TEXT}
    return _template().render(dt=dt, rows=rows, open_rows=open_rows, closed=closed, by_kind=by_kind,
                              kinds=KIND_TEXT, meta={"params": {}, **meta}, style=STYLE, facts=_facts)


def page_path(lake: Lake, dt: str) -> str:
    return join(lake.root, "reports", f"dt={dt}", "gaps.html")


def write_page(lake: Lake, dt: str, rows: list[dict], meta: dict) -> str:
    target = page_path(lake, dt)
    write_bytes_atomic(target, render(dt, rows, meta).encode("utf-8"))
    return target
