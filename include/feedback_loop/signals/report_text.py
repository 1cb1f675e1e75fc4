"""Plain-text run summaries for the terminal (the demo's closing table and `acsr summary`)."""

from __future__ import annotations

from feedback_loop.lake.files import Lake


def summary_table(lake: Lake, days: list[str]) -> str:
    lines = []
    for d in days:
        s = lake.read_json("runs", f"dt={d}", "summary.json")
        if s is None:
            lines.append(f"{d}: no summary (not run yet, or failed before summarizing)")
            continue
        t = s["totals"]
        lines.append(f"{d}  {s['status'].upper():6} read {t['rows_read']:>8}  staged {t['rows_staged']:>8}  "
                     f"quarantined {t['rows_quarantined']:>6}")
        for name, src in s["sources"].items():
            reasons = ", ".join(f"{k}={v}" for k, v in src["quarantined_by_reason"].items()) or "-"
            suite = src["suite"]
            st = suite.get("statistics") or {}
            gx = f"GX {st.get('successful_expectations', '?')}/{st.get('evaluated_expectations', '?')} passed"
            lines.append(f"    {name:15} read {src['rows_read']:>8}  staged {src['rows_staged']:>8}  "
                         f"quarantined {src['rows_quarantined']:>6}  {gx}  reasons: {reasons}")
    return "\n".join(lines)
