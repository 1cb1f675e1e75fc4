"""Seeded sample-data generator: a realistic landing area for any date range and scale.

Why it exists: every stage of the loop (land, quality, signals, gap mining, datasets) needs input that
behaves like production -- mixed file formats, CRM cases exported again as they change, surveys that
arrive days later, humans overriding the agent, personal data in free text, broken rows -- and a hidden
answer key to score itself against. The answer key is `<landing>/_ground_truth.json` plus an extra
`true_intent` column on the `customer_message` rows of agent_events.

Layout: `<landing>/<source>/dt=YYYY-MM-DD/part-0000.<ext>`, dt = the UTC day the export covers.

Determinism: every random draw comes from an RNG seeded with (seed, day, stream). Effects that cross
days (a case solved tomorrow and reopened next week, a survey three days after resolution, a customer
who comes back within seven days) are computed by re-deriving the earlier days they depend on, so the
bytes of a day never depend on which date range the call covered.

Scale: rows are built as numpy arrays (one vectorised draw per column, never a Python loop per event),
turned into Arrow tables and serialised by DuckDB; only the few free-text rows with personal data are
built in Python.

Modules: common.py (constants, random streams, PII fakes, Arrow helpers), world.py (static data, the
seeded world, one day's simulation), sources.py (each source's day as a table), files.py (file layout,
malformed rows, the writer); this module keeps `generate` and re-exports the names other code imports."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

from feedback_loop.ingest.contract import SOURCE_NAMES

from feedback_loop_sample.generator.common import (  # noqa: F401 - re-exported
    ACTIONS,
    CASE_LOOKBACK,
    CHANNELS,
    CHECK_LOOKBACK,
    COMMENTS_BAD,
    COMMENTS_GOOD,
    DATA,
    ERRORS,
    ET,
    EXTERNAL_CASE_SHARE,
    FALLBACKS,
    FOLLOW_BAD,
    FOLLOW_GOOD,
    FOLLOW_RESP_BAD,
    FOLLOW_RESP_GOOD,
    GENERIC_RESP,
    GROUND_TRUTH,
    GZIP_LEVEL,
    HANDOVER,
    MAX_DUR_MS,
    MODELS,
    MS_DAY,
    MS_H,
    MS_MIN,
    OUTCOMES,
    OVERRIDE_LOOKBACK,
    POLICY_OUTCOMES,
    R_CUSTOMER,
    R_LOWCONF,
    R_MISSING,
    R_POLICY,
    REASONS,
    REENGAGE_SHARE,
    RESP_VARIANTS,
    RETURN_WINDOW,
    S_BASE,
    S_EVENTS,
    S_EXT,
    S_MAL,
    S_OUT,
    S_OV,
    S_PII,
    S_RET,
    S_SV,
    STAGES,
    START_MAX_MS,
    SURVEY_LOOKBACK,
    TZ_OFFSETS,
    WRITE_SLICE,
    _pii,
)
from feedback_loop_sample.generator.files import KINDS, _layout, _mutate, _Writer  # noqa: F401 - re-exported
from feedback_loop_sample.generator.sources import (
    _cases,
    _checks,
    _events,
    _kb_rows,
    _kb_table,
    _overrides,
    _surveys,
)
from feedback_loop_sample.generator.world import _Gen, _static, _world  # noqa: F401 - re-exported

# ----------------------------------------------------------------------------- public API


def generate(landing: str | Path, start: date, end: date, *, conversations_per_day: int = 300, seed: int = 7,
             malformed_share: float = 0.0, kb_gap_share: float = 0.15,
             classifier: Callable[[list[str]], list[tuple[str, float]]] | None = None,
             formats: str = "mixed") -> dict:
    """Write `<landing>/<source>/dt=<day>/` for every day in [start, end] and return the ground truth.

    The ground truth is also merged into `<landing>/_ground_truth.json` (per-day entries of the days
    written here replace earlier ones; other days are kept).

    `classifier` replaces the built-in error model: it is called once per simulated day with that day's
    opening messages as the customers wrote them (PII included). Because a day's exports carry the
    consequences of up to `CASE_LOOKBACK` earlier days (cases closed, surveys, reviews), those earlier
    days are simulated and classified too. For the same reason the first days of a fresh landing hold
    some surveys, reviews and checks that refer to cases and conversations of days before `start`, as a
    real export switched on mid-stream would: their ids carry the earlier date (CASE-YYYYMMDD-...).
    `malformed_share` > 0 appends, per source and day, max(#kinds, ceil(share x rows)) copies of valid
    rows, each with exactly one defect, listed in the ground truth's `malformed`.
    """
    if formats not in ("mixed", "jsonl"):
        raise ValueError("formats must be 'mixed' or 'jsonl'")
    if end < start:
        raise ValueError("end is before start")
    if conversations_per_day < 1:
        raise ValueError("conversations_per_day must be at least 1")
    landing = Path(landing)
    landing.mkdir(parents=True, exist_ok=True)
    world = _world(seed, float(kb_gap_share), max(1000, 4 * conversations_per_day))
    gen = _Gen(world, conversations_per_day, classifier)
    writer = _Writer(landing, formats, malformed_share, seed)
    st = world.st

    days = [start + timedelta(i) for i in range((end - start).days + 1)]
    counts = {s: {} for s in SOURCE_NAMES}
    malformed, pii_by_day, stats, params = [], {}, {}, {}
    for day in days:
        gen.evict(day - timedelta(CASE_LOOKBACK))
        key = day.isoformat()
        events, pii = _events(gen, day)
        n_ev, bad = writer.write("agent_events", day, events, frac=True)
        del events
        counts["agent_events"][key] = n_ev
        malformed += bad

        cases = _cases(gen, day)
        counts["crm_cases"][key], bad = writer.write("crm_cases", day, cases)
        malformed += bad

        surveys, sv_pii = _surveys(gen, day)
        counts["surveys"][key], bad = writer.write("surveys", day, surveys)
        malformed += bad

        overrides, ov_pii, natural = _overrides(gen, day)
        counts["overrides"][key], bad = writer.write("overrides", day, overrides)
        malformed += bad + [{"source": "overrides", "dt": key, "kind": "incomplete_triad", "id": oid,
                             "file": _layout("overrides", formats)[0], "natural": True} for oid in natural]

        counts["outcome_checks"][key], bad = writer.write("outcome_checks", day, _checks(gen, day))
        malformed += bad

        counts["kb_articles"][key], bad = writer.write("kb_articles", day, _kb_table(_kb_rows(world, day)))
        malformed += bad

        pii_by_day[key] = sorted(set(pii + sv_pii + ov_pii))
        c = gen.core(day)
        stats[key] = {
            "conversations": int(c.n), "returning_conversations": int(c.ret.sum()),
            "classifier_accuracy": round(float(c.correct.mean()), 4),
            "gap_conversations": int(c.gap.sum()), "escalated": int(c.esc.sum()),
            "reopened_later": int(c.reopened.sum()), "shadow": int(c.shadow.sum()),
            "cases_exported": counts["crm_cases"][key],
        }
        params[key] = {"seed": seed, "conversations_per_day": conversations_per_day,
                       "malformed_share": malformed_share, "kb_gap_share": kb_gap_share, "formats": formats,
                       "classifier": "custom" if classifier else "builtin"}

    gap_intents = [c for c, g_ in zip(st.intents, world.gap) if g_]
    truth = {
        "seed": seed,
        "intents": list(st.intents),
        "gap_intents": gap_intents,
        "kb_intents": [c for c, g_ in zip(st.intents, world.gap) if not g_],
        "kb_articles": {r["article_id"]: {"intents": r["intents"], "status": r["status"]} for r in world.kb},
        "files": {s: dict(zip(("name", "format", "gzip"), _layout(s, formats))) for s in SOURCE_NAMES},
        "lookback_days": CASE_LOOKBACK,
        "days": [d.isoformat() for d in days],
        "counts": counts,
        "malformed": malformed,
        "pii_by_day": pii_by_day,
        "stats": stats,
        "params": params,
    }
    return _merge_ground_truth(landing, truth)


def _merge_ground_truth(landing: Path, new: dict) -> dict:
    """Keep other days' entries of an existing ground truth; the days just written replace theirs.

    Locked, because parallel runs (a backfill) may generate different days into one landing."""
    with open(landing / f".{GROUND_TRUTH}.lock", "w") as lock:
        try:
            import fcntl

            fcntl.flock(lock, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: best effort
            pass
        return _merge_locked(landing, new)


def _merge_locked(landing: Path, new: dict) -> dict:
    path = landing / GROUND_TRUTH
    merged = dict(new)
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except (OSError, ValueError):
            old = {}
        written = set(new["days"])
        merged["days"] = sorted(set(old.get("days", [])) | written)
        merged["counts"] = {s: {**{d: n for d, n in old.get("counts", {}).get(s, {}).items() if d not in written},
                                **new["counts"][s]} for s in SOURCE_NAMES}
        merged["malformed"] = [m for m in old.get("malformed", []) if m.get("dt") not in written] + new["malformed"]
        for k in ("pii_by_day", "stats", "params"):
            merged[k] = {**{d: v for d, v in old.get(k, {}).items() if d not in written}, **new[k]}
    merged["days"] = sorted(merged["days"])
    for k in ("pii_by_day", "stats", "params"):
        merged[k] = dict(sorted(merged[k].items()))
    merged["malformed"] = sorted(merged["malformed"], key=lambda m: (m["dt"], m["source"]))
    merged["pii"] = sorted({p for v in merged["pii_by_day"].values() for p in v})
    tmp = path.with_name(f".{GROUND_TRUTH}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=False))
    os.replace(tmp, path)
    return merged
