"""Fine-tuning datasets from the loop's own records, versioned under `<lake>/datasets/<name>/<version>/`.

Every human override is a labelled correction and every well-rated resolution a worked example; this
stage turns complete records of a trailing window into files a trainer loads as they are, and keeps
incomplete or contradictory ones out:

- `intent_relabels`: (customer text, intent) from intent-stage corrections, from escalated cases whose
  human-assigned category differs from the agent's intent, and agent intents confirmed by a good outcome,
  each with its provenance and a weight for the retraining job.
- `sft`: conversations that ended well, and conversations a human corrected with the human's response in
  place of the agent's; the system message carries the policy clauses and KB passages that grounded them.
  TRL `messages` (JSON Lines and Parquet) and OpenAI chat fine-tuning JSONL.
- `preference`: the agent's response (rejected) against the human's correction (chosen) for the same
  prompt. TRL `prompt/chosen/rejected` and OpenAI DPO JSONL.
- `kto`: single responses labelled good or bad by thumbs and CSAT, and both sides of every correction.
  TRL `prompt/completion/label`.

Order of work: read the window's marts and staged sources with DuckDB (filters and joins in SQL), redact
personal data from every text as it leaves DuckDB, build candidates, curate (conflicts, exact and near
duplicates, token budget, split by conversation), write a version folder under a temporary name, validate
every file against its consumer's rules and scan it for personal data, then rename it into place and move
the `latest.json` pointer. A version with fewer than `dataset_min_new_examples` examples unseen in the
previous version is not published. Details and formats: docs/datasets.md.
"""


from __future__ import annotations

import logging
from datetime import date, timedelta

from feedback_loop.datasets import redactions, token_store, tokens
from feedback_loop.datasets.candidate_store import CandidateStore
from feedback_loop.datasets.config import (
    ACTION_DATASETS,
    ALL_DATASETS,
    DATASETS,
    LAYOUT,
    Config,
    DatasetError,
    resolve_window,
)
from feedback_loop.datasets.line_store import ValidatedLines
from feedback_loop.datasets.publish import _publish, curate, dataset_card
from feedback_loop.datasets.read import Redaction, _incomplete_triads, _read, _sources
from feedback_loop.datasets.signature_store import SignatureStore
from feedback_loop.datasets.value_store import ExampleValues
from feedback_loop.lake.files import Lake, file_sha256, is_remote
from feedback_loop.settings import Settings

__all__ = ["ACTION_DATASETS", "ALL_DATASETS", "DATASETS", "LAYOUT", "Config", "DatasetError", "build_datasets", "curate", "dataset_card", "latest",
           "resolve_window"]

log = logging.getLogger(__name__)


def _dq(lake: Lake, start: str, end: str) -> dict:
    """The data-quality results of every day of the window, from the nightly run summaries."""
    out = {}
    for d in _days(start, end):
        s = lake.read_json("runs", f"dt={d}", "summary.json")
        if s is None:
            out[d] = {"status": "no run summary"}
            continue
        out[d] = {"status": s.get("status"), "totals": s.get("totals"),
                  "sources": {k: {x: v.get(x) for x in ("status", "rows_read", "rows_staged", "rows_quarantined",
                                                       "quarantined_by_reason")}
                              for k, v in (s.get("sources") or {}).items()}}
    return out


def _days(start: str, end: str) -> list[str]:
    a, b = date.fromisoformat(start), date.fromisoformat(end)
    return [(a + timedelta(days=i)).isoformat() for i in range((b - a).days + 1)]


def _source_files(lake: Lake, sources: dict) -> dict:
    out = {}
    for (layer, name), days in sources.items():
        rows = []
        for d in days:
            path = lake.partition_file(layer, name, d)
            entry = {"dt": d, "path": path[len(lake.root) + 1:]}
            if not is_remote(path):
                entry["sha256"] = file_sha256(path)
            rows.append(entry)
        out[f"{layer}/{name}"] = rows
    return out


def build_datasets(settings: Settings, dt: str | date | None = None, window_days: int | None = None,
                   start: str | None = None, end: str | None = None, *, only: list[str] | None = None) -> dict:
    """Build, validate and publish a version of every dataset for a trailing window; return what happened.

    The window is `window_days` (default `Settings.dataset_window_days`) ending at `dt`, or [start, end].
    Per dataset the result says `published` (a new version, now latest), `unchanged` (this exact version
    exists already), `published_not_latest` (a version of an older window than latest), or
    `not_published` with the reason (fewer new examples than the minimum)."""
    from feedback_loop.lake.duck import connect

    start, end = resolve_window(settings, dt, window_days, start, end)
    lake = Lake(settings.lake)
    cfg = Config.from_settings(settings, start, end)
    red = Redaction(settings)
    sources = _sources(lake, start, end)
    con = connect()
    stored = CandidateStore(lake, start, end)  # conversations whose candidates earlier nights built (partials/)
    try:
        n_conversations, cands, unusable = _read(con, lake, sources, red, cfg, stored)
        triads = (_incomplete_triads(con, lake, sources[("quarantine", "overrides")]) if n_conversations
                  else {"incomplete_total": 0})
        token_store.load(con, lake, start, end)  # the counts earlier nights encoded (partials/)
    except BaseException:
        stored.close()
        raise
    finally:
        con.close()
    context = {"window": {"start": start, "end": end, "days": _days(start, end),
                          "days_with_facts": sources[("marts", "conversation_facts")]},
               "sources": _source_files(lake, sources), "data_quality": _dq(lake, start, end),
               "redaction": red.summary(), "incomplete_triads": triads, "config": cfg.as_dict(),
               "tokenizer": tokens.describe(), "conversations_read": n_conversations}
    result = {"window": {"start": start, "end": end}, "conversations": n_conversations, "datasets": {}}
    con = connect()
    signatures = SignatureStore(con, lake, start, end)  # near-duplicate signatures of earlier nights (partials/)
    values = ExampleValues(con, lake, start, end)  # token counts and example ids of earlier nights (partials/)
    lines = ValidatedLines(con, lake, start, end, redactions.redactor_key(red.redactor))  # lines checked before
    try:
        for name in only or ALL_DATASETS:
            # A dataset's candidates are read back when its turn comes and let go once curated, its examples
            # once published: memory holds one dataset, not the ones still to come or every one built so far.
            examples, conflicts, steps = curate(name, cfg, cands.pop(name).examples(), unusable[name],
                                                signatures.signatures, values)
            result["datasets"][name] = _publish(lake, name, cfg, examples, conflicts, steps, context, red.redactor, lines)
            del examples, conflicts
            r = result["datasets"][name]
            log.info("dataset %s %s..%s: %s (%s examples, %s new)%s", name, start, end, r["status"], r["examples"],
                     r.get("new_examples"), f" version {r['version']}" if r.get("version") else "")
        token_store.save(con, lake, end)
        signatures.save(end)
        values.save(end)
        lines.save(end)
        stored.save(end, con)
        result["candidates"] = {"conversations_replayed": stored.reused, "conversations_built": stored.computed}
        log.info("candidates %s..%s: %s conversations replayed from earlier nights, %s built", start, end,
                 stored.reused, stored.computed)
        log.info("near-duplicate signatures %s..%s: %s stored by earlier nights, %s computed", start, end,
                 signatures.reused, signatures.computed)
    finally:
        signatures.close()
        values.close()
        lines.close()
        stored.close()
        con.close()
    lake.write_json(result, "runs", f"dt={end}", "datasets.json")
    return result



def latest(settings: Settings, name: str) -> dict | None:
    """The `latest.json` pointer of a dataset (None before its first version)."""
    return Lake(settings.lake).read_json("datasets", name, "latest.json")

