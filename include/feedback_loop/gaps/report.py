"""The gap page: `<lake>/reports/dt=<dt>/gaps.html`, one self-contained HTML file next to the daily report.

Every free text on it (representative messages, labels) was redacted before clustering; the page escapes
all of it again as HTML.
"""

from __future__ import annotations

import json
from html import escape

from feedback_loop.lake.files import Lake, join, write_bytes_atomic

KIND_TEXT = {
    "missing_article": "missing article",
    "revise_article": "article to revise",
    "stale_article": "stale article",
}

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#1f2328;padding:0 1rem}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem} .muted{color:#656d76}
table{border-collapse:collapse;width:100%;font-size:.9rem} th,td{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa} td.num{text-align:right;font-variant-numeric:tabular-nums}
.kind{border-radius:1rem;padding:.05rem .5rem;font-size:.8rem;white-space:nowrap}
.missing_article{background:#ffebe9;color:#a40e26} .revise_article{background:#fff8c5;color:#7d4e00} .stale_article{background:#ddf4ff;color:#0a3069}
.closed{background:#eaeef2;color:#57606a}
.gap{border:1px solid #d0d7de;border-radius:6px;padding:.6rem 1rem;margin:1rem 0}
.gap h3{font-size:1rem;margin:.2rem 0 .5rem} blockquote{margin:.2rem 0;padding:.1rem .6rem;border-left:3px solid #d0d7de;color:#424a53}
code{font-size:.8rem;background:#f6f8fa;padding:.05rem .25rem;border-radius:3px;white-space:nowrap}
td.day{white-space:nowrap}
.ids{font-size:.75rem;color:#656d76;word-break:break-all}
"""


def render(dt: str, rows: list[dict], meta: dict) -> str:
    open_rows = [r for r in rows if r["status"] == "open"]
    closed = [r for r in rows if r["status"] != "open"]
    by_kind = {k: sum(r["kind"] == k for r in open_rows) for k in KIND_TEXT}
    e = escape
    out = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Knowledge-base gaps {e(dt)}</title><style>{STYLE}</style></head><body>",
        f"<p class='muted'><a href='index.html'>&larr; daily report {e(dt)}</a></p>",
        f"<h1>Knowledge-base gaps, {e(dt)}</h1>",
        (f"<p class='muted'>Window {e(str(meta.get('window_start')))} to {e(str(meta.get('window_end')))} "
        f"({meta.get('n_conversations', 0)} conversations, {meta.get('n_signals', 0)} with gap signals, "
        f"{meta.get('n_topics', 0)} topics, {meta.get('n_noise', 0)} signals left as noise); "
        f"KB snapshot {e(str(meta.get('kb_snapshot')))} with {meta.get('kb_published', 0)} published articles. "
        f"Method: {e(str(meta.get('params', {}).get('backend', 'tfidf')))} + "
        f"{e(str(meta.get('params', {}).get('algorithm', '')))}; see <code>docs/gaps.md</code>.</p>"),
        "<p>" + " &middot; ".join(f"<span class='kind {k}'>{e(t)}</span> {by_kind[k]}" for k, t in KIND_TEXT.items())
        + f" &middot; <span class='kind closed'>closed</span> {len(closed)}</p>",
    ]
    if not rows:
        out.append("<p>No gaps in this window.</p>")
    out.append("<h2>Ranked gaps</h2><table><tr><th>#</th><th>gap</th><th>kind</th><th>label</th>"
               "<th>impact</th><th>conversations</th><th>customers</th><th>escalated</th>"
               "<th title='failing conversations against the previous window'>trend</th>"
               "<th>first seen</th></tr>")
    for r in open_rows:
        out.append(
            f"<tr><td class='num'>{r.get('rank') or ''}</td><td><a href='#{e(r['gap_id'])}'><code>{e(r['gap_id'])}</code></a></td>"
            f"<td><span class='kind {e(r['kind'])}'>{e(KIND_TEXT[r['kind']])}</span></td><td>{e(r['label'])}</td>"
            f"<td class='num'>{r['impact']:.1f}</td><td class='num'>{r['n_conversations']}</td>"
            f"<td class='num'>{r['n_customers']}</td><td class='num'>{r['n_escalated']}</td>"
            f"<td class='num'>{_trend(r.get('trend'))}</td><td class='day'>{e(str(r.get('first_seen') or ''))}</td></tr>")
    out.append("</table>")
    if closed:
        out.append("<h2>Closed recently</h2><table><tr><th>gap</th><th>kind</th><th>label</th><th>closed on</th>"
                   "<th>why</th><th>first seen</th></tr>")
        for r in closed:
            out.append(f"<tr><td><code>{e(r['gap_id'])}</code></td><td>{e(KIND_TEXT[r['kind']])}</td>"
                       f"<td>{e(r['label'])}</td><td>{e(str(r.get('closed_on') or ''))}</td>"
                       f"<td>{e(str(r.get('closed_reason') or ''))}</td><td>{e(str(r.get('first_seen') or ''))}</td></tr>")
        out.append("</table>")
    out.append("<h2>Details</h2>")
    for r in open_rows:
        out.append(_detail(r))
    out.append("</body></html>")
    return "\n".join(out)


def _detail(r: dict) -> str:
    e = escape
    parts = [f"<div class='gap' id='{e(r['gap_id'])}'>",
             (f"<h3>#{r.get('rank')} <span class='kind {e(r['kind'])}'>{e(KIND_TEXT[r['kind']])}</span> "
             f"{e(r['label'])} <code>{e(r['gap_id'])}</code></h3>")]
    facts = []
    if r.get("reason"):
        facts.append("<b>why</b>: " + e(r["reason"]))
    if r.get("intents"):
        facts.append("intents: " + ", ".join(f"<code>{e(i)}</code>" for i in r["intents"]))
    if r.get("top_terms"):
        facts.append("terms: " + e(", ".join(r["top_terms"])))
    if r.get("failure_rate") is not None and r.get("base_failure_rate") is not None:
        facts.append(f"failure rate {r['failure_rate']:.0%} against {r['base_failure_rate']:.0%} overall")
    if r.get("escalation_hours"):
        facts.append(f"{r['escalation_hours']:.1f} h of human handling on escalations")
    if r.get("prev_window_conversations") is not None:
        facts.append(f"previous window: {r['prev_window_conversations']} conversations")
    try:
        sig = {k: v for k, v in json.loads(r.get("signal_counts") or "{}").items() if v}
        if sig:
            facts.append("signals: " + ", ".join(f"{e(k)} {v}" for k, v in sig.items()))
    except ValueError:
        pass
    if r.get("action_ids"):
        facts.append("action queue: " + ", ".join(f"<code>{e(a)}</code>" for a in r["action_ids"]))
    parts.append("<p>" + " &middot; ".join(facts) + "</p>")
    if r.get("representative_messages"):
        parts.append("<p><b>What customers asked</b></p>")
        parts.extend(f"<blockquote>{e(m)}</blockquote>" for m in r["representative_messages"])
    if r.get("nearest_articles"):
        parts.append("<p><b>Nearest articles</b></p><table><tr><th>article</th><th>title</th><th>score</th>"
                     "<th>text similarity</th><th>intent overlap</th></tr>")
        for a in r["nearest_articles"]:
            parts.append(f"<tr><td><code>{e(str(a['article_id']))}</code></td><td>{e(str(a['title']))}</td>"
                         f"<td class='num'>{_num(a.get('score'))}</td><td class='num'>{_num(a.get('text_similarity'))}</td>"
                         f"<td class='num'>{_num(a.get('intent_share'))}</td></tr>")
        parts.append("</table>")
    ids = r.get("conversation_ids") or []
    if ids:
        shown = ", ".join(e(i) for i in ids[:50])
        more = f" and {len(ids) - 50} more (all in <code>marts/kb_gaps</code>)" if len(ids) > 50 else ""
        parts.append(f"<p class='ids'>conversations: {shown}{more}</p>")
    parts.append("</div>")
    return "\n".join(parts)


def _num(v) -> str:
    return "" if v is None else f"{v:.2f}"


def _trend(v) -> str:
    return "&ndash;" if v is None else f"{v:+.0%}"  # no previous window in the lake yet


def page_path(lake: Lake, dt: str) -> str:
    return join(lake.root, "reports", f"dt={dt}", "gaps.html")


def write_page(lake: Lake, dt: str, rows: list[dict], meta: dict) -> str:
    target = page_path(lake, dt)
    write_bytes_atomic(target, render(dt, rows, meta).encode("utf-8"))
    return target
