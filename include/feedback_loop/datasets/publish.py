"""Curating, writing, validating and publishing a version of one dataset.

Part of the dataset stage (`feedback_loop.datasets.build`, docs/datasets.md)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections import Counter

from feedback_loop.datasets import actions, curation, formats, json_text, pii, tokens
from feedback_loop.datasets.config import (
    ACTION_DATASETS,
    HUMAN_LABEL_SOURCES,
    LAYOUT,
    RELABEL_FIELDS,
    Config,
    DatasetError,
)
from feedback_loop.datasets.curation import Example, Step
from feedback_loop.datasets.line_store import ValidatedLines, line_hash
from feedback_loop.lake.files import Lake, file_sha256, filesystem_for, is_remote, join


def _main_format(name: str) -> str:
    return LAYOUT[name][0][1]


def _count_tokens(name: str, e: Example) -> int:
    r = e.records[_main_format(name)]
    if name in ACTION_DATASETS:  # tool calls and schemas have no chat-template count: their JSON, a bound above
        return tokens.count_json(r)
    if name == "intent_relabels":
        return tokens.count(r["text"])
    if name == "sft":
        return tokens.count_messages(r["messages"])
    if name == "preference":
        return max(tokens.count_messages(r["prompt"] + r[s]) for s in ("chosen", "rejected"))
    return tokens.count_messages(r["prompt"] + r["completion"])


def curate(name: str, cfg: Config, candidates: list[Example], unusable: Counter,
           signatures_of=None, values=None) -> tuple[list[Example], list[dict], list[Step]]:
    """The curation steps of one dataset, in order; every step's out is the next step's in
    (`signatures_of`: where near-duplicate signatures come from, see `curation.near_duplicates`; `values`: a
    `value_store.ExampleValues` giving stored token counts and ids)."""
    n_unusable = sum(unusable.values())
    steps = [Step("candidates", len(candidates) + n_unusable, len(candidates),
                  {"by_source": dict(sorted(Counter(e.source for e in candidates).items())),
                   "unusable": dict(sorted(unusable.items()))})]
    examples, conflicts = candidates, []
    del candidates  # each step's input is let go when the next step has its output (the dropped copies too)
    if name == "intent_relabels":
        examples, conflicts, step = curation.label_conflicts(examples, HUMAN_LABEL_SOURCES)
        steps.append(step)
    elif name in ("kto", "tool_kto"):  # the same response to the same message judged good and bad: neither is kept
        examples, conflicts, step = curation.label_conflicts(examples, {e.source for e in examples})
        steps.append(step)
    examples, step = curation.exact_duplicates(examples)
    steps.append(step)
    examples, step = curation.near_duplicates(examples, cfg.near_duplicate_threshold, signatures_of=signatures_of)
    steps.append(step)
    if values is not None:  # counted and identified together: the id of one over the budget is not used
        values.fill(examples, lambda e: _count_tokens(name, e), lambda e: _example_id(name, e))
    else:
        for e in examples:
            e.tokens = _count_tokens(name, e)
    within = [e for e in examples if e.tokens <= cfg.max_tokens]
    steps.append(Step("token_budget", len(examples), len(within), {"max_tokens": cfg.max_tokens,
                                                                   "tokenizer": tokens.ENCODING}))
    steps.append(curation.assign_splits(within, cfg.validation_share, cfg.test_share))
    for e in within:
        e.example_id = e.example_id or _example_id(name, e)
        if name == "intent_relabels":  # one fixed set of columns, so every file has the same schema
            rec = e.records["intent_relabel"]
            rec.update(example_id=e.example_id, n_copies=e.merged,
                       reviewers=sorted(set(rec.get("reviewers") or []) | set(e.meta.get("reviewers") or [])))
            e.records["intent_relabel"] = {k: rec.get(k) for k in RELABEL_FIELDS}
    within.sort(key=lambda e: e.example_id)
    return within, conflicts, steps


def _example_id(name: str, e: Example) -> str:
    """Content-derived id: the same example gets the same id in every version (used to count new ones)."""
    r = dict(e.records[_main_format(name)])
    for volatile in ("example_id", "n_copies", "reviewers", "weight"):
        r.pop(volatile, None)
    blob = json_text.dumps([name, e.conversation_id, e.source, r], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


# ------------------------------------------------------------------------------------------- publishing


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json_text.dumps(r, default=str) + "\n" for r in records).encode()


def _records_of(e: Example) -> dict:
    """An example's records: read back from the spill once (`candidates._Spilled`), or the dict itself."""
    return e.records.load() if hasattr(e.records, "load") else e.records


def _write_files(folder: str, name: str, examples: list[Example], conflicts: list[dict]) -> list[dict]:
    """Write every format of every split; return [{path, format, split, rows}] (paths relative to folder).

    One pass over each split's examples writes all its formats: an example's records are read back from the
    spill once, not once per file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    written: dict[tuple[str, str, str], dict] = {}
    fact_dates: list[str] = [""] * len(examples)
    provenance_of: dict[int, dict] = {}
    for split in curation.SPLITS:
        members = [i for i, e in enumerate(examples) if e.split == split]
        if not members:
            continue
        handles, parquets = {}, {}
        try:
            for pattern, fmt, parquet in LAYOUT[name]:
                rel = pattern.format(split=split)
                os.makedirs(os.path.dirname(os.path.join(folder, rel)), exist_ok=True)
                handles[fmt] = open(os.path.join(folder, rel + ".jsonl"), "wb")  # noqa: SIM115 - closed below
                written[(fmt, split, "jsonl")] = {"path": rel + ".jsonl", "format": fmt, "split": split,
                                                  "rows": len(members)}
                if parquet:
                    parquets[fmt] = _ParquetSplit(os.path.join(folder, rel + ".parquet"))
                    written[(fmt, split, "parquet")] = {"path": rel + ".parquet", "format": fmt, "split": split,
                                                        "rows": len(members)}
            for i in members:
                e = examples[i]
                records = _records_of(e)
                for fmt, fh in handles.items():
                    fh.write(_jsonl([records[fmt]]))
                for fmt, writer in parquets.items():
                    writer.add(records[fmt])
                fact_dates[i] = str(e.meta.get("fact_date") or records.get("intent_relabel", {}).get("fact_date") or "")
                if name in ACTION_DATASETS and (p := records.get(actions.PROVENANCE)):
                    provenance_of[i] = p
        finally:
            for fh in handles.values():
                fh.close()
        for fmt, writer in parquets.items():
            writer.close(lambda fmt=fmt, members=members: (_records_of(examples[i])[fmt] for i in members))
    files = [written[(fmt, split, kind)] for _, fmt, _ in LAYOUT[name] for split in curation.SPLITS
             for kind in ("jsonl", "parquet") if (fmt, split, kind) in written]
    index = [{"example_id": e.example_id, "conversation_id": e.conversation_id, "split": e.split, "source": e.source,
              "weight": e.weight, "tokens": e.tokens, "copies_merged": e.merged, "fact_date": fact_dates[i]}
             for i, e in enumerate(examples)]
    pq.write_table(pa.Table.from_pylist(index, schema=pa.schema([
        ("example_id", pa.string()), ("conversation_id", pa.string()), ("split", pa.string()),
        ("source", pa.string()), ("weight", pa.float64()), ("tokens", pa.int64()), ("copies_merged", pa.int64()),
        ("fact_date", pa.string())])), os.path.join(folder, "examples.parquet"), compression="zstd")
    files.append({"path": "examples.parquet", "format": "index", "split": None, "rows": len(index)})
    provenance = [{"example_id": examples[i].example_id, "conversation_id": examples[i].conversation_id,
                   "split": examples[i].split, **p} for i, p in sorted(provenance_of.items())]
    if provenance:  # where each tool-calling example came from: override or check, reviewer, policy clause
        with open(os.path.join(folder, "provenance.jsonl"), "wb") as fh:
            fh.write(_jsonl(provenance))
        files.append({"path": "provenance.jsonl", "format": "provenance", "split": None, "rows": len(provenance)})
    if conflicts:
        with open(os.path.join(folder, "conflicts.jsonl"), "wb") as fh:
            fh.write(_jsonl(conflicts))
        files.append({"path": "conflicts.jsonl", "format": "conflicts", "split": None, "rows": len(conflicts)})
    for f in files:
        f["sha256"] = file_sha256(os.path.join(folder, f["path"]))
        f["bytes"] = os.path.getsize(os.path.join(folder, f["path"]))
    return files


PARQUET_ROWS = 10_000  # rows per row group of a split's Parquet file: what is turned into Arrow at once


class _ParquetSplit:
    """A split's records as one Parquet file, `PARQUET_ROWS` at a time, as they are added.

    Each block's schema is inferred as `Table.from_pylist` infers it; when every block infers the same one,
    it is the schema of the whole split, and only one block is in memory (a 10 M-event night's SFT split
    as one Arrow table beside its records was the stage's peak). When a block infers another (a field
    empty in one block, a key missing from a block's first record), `close` writes the file again from the
    whole split at once, whose inference is the reference."""

    def __init__(self, path: str):
        self.path, self.block, self.writer, self.failed = path, [], None, False

    def add(self, record: dict) -> None:
        if self.failed:
            return
        self.block.append(record)
        if len(self.block) >= PARQUET_ROWS:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self.block)
        self.block = []
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.path, table.schema, compression="zstd")
        elif not table.schema.equals(self.writer.schema):
            self.failed = True
            return
        self.writer.write_table(table)

    def close(self, records) -> None:
        """Finish the file; `records()` yields the whole split again for the fallback."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self.failed and self.block:
            self._flush()
        if self.writer is not None:
            self.writer.close()
        if self.failed:
            pq.write_table(pa.Table.from_pylist(list(records())), self.path, compression="zstd")


def _validate(folder: str, files: list[dict], cfg: Config, redactor: pii.Redactor,
              lines: ValidatedLines | None = None) -> dict:
    """Every data file read back and checked against its consumer's rules; every string scanned for PII
    (`lines`: the lines earlier nights checked, which pass without being checked again)."""
    checked = {}
    for f in files:
        path = os.path.join(folder, f["path"])
        if f["path"].endswith(".jsonl"):
            summary = _check_jsonl(path, f["format"], cfg.max_tokens, redactor, lines)
            if f["format"] in formats.CHECKS:
                checked[f["path"]] = summary
        elif f["format"] in formats.CHECKS:
            checked[f["path"]] = formats.validate_file(path, f["format"], cfg.max_tokens)
    return {"passed": True, "files": checked, "pii_scan": "no personal data found in any message content or text of any JSONL file"}


def _check_jsonl(path: str, fmt: str, max_tokens: int, redactor, lines: ValidatedLines | None) -> dict | None:
    """One JSON Lines file: each line parsed once, checked against `fmt` (when it has rules) and scanned for
    PII; a line `lines` knows as passed is counted only. FormatError first (the whole file's problems), then
    DatasetError on a finding; when the file passes, its new lines are stored as passed."""
    with open(path, "rb") as fh:
        hashes = [line_hash(fmt, max_tokens, line) for line in fh]
    known = lines.known(hashes) if lines is not None else [False] * len(hashes)
    leaks: Counter = Counter()

    def records():
        with open(path, "rb") as fh:
            for n, line in enumerate(fh, 1):
                if known[n - 1]:
                    yield formats.KNOWN_VALID
                    continue
                if not line.strip():
                    raise formats.FormatError(f"{path}:{n}: empty line (JSON Lines allows none)")
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise formats.FormatError(f"{path}:{n}: not JSON: {e}") from e
                for s in _strings(rec):
                    leaks.update(kind for kind, _ in redactor.find(s))
                yield rec

    if fmt in formats.CHECKS:
        summary = formats.validate_file(path, fmt, max_tokens, records=records())
    else:
        summary = None
        for _ in records():
            pass
    if leaks:
        raise DatasetError(f"{path}: personal data found after redaction: {dict(leaks)}")
    if lines is not None:
        lines.passed([h for h, k in zip(hashes, known) if not k])
    return summary


def _strings(obj, key: str | None = None):
    """The free-text values of a record (message contents, texts); ids and hashes are not free text."""
    if isinstance(obj, str):
        if key in FREE_TEXT_KEYS:
            yield obj
    elif key == "arguments":  # a tool call's arguments: every string in them is free text
        yield from _all_strings(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from _strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v, key)


FREE_TEXT_KEYS = {"content", "text", "label", "labels", "previous_label", "arguments"}  # free text a person or model typed


def _all_strings(obj):
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _all_strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _all_strings(v)


@contextlib.contextmanager
def _publish_lock(base: str):
    """One publisher per dataset at a time (backfill runs of several days may finish together)."""
    if is_remote(base):
        yield
        return
    import fcntl

    os.makedirs(base, exist_ok=True)
    with open(os.path.join(base, ".publish.lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _previous_ids(lake: Lake, name: str, latest: dict | None) -> set[str]:
    if not latest:
        return set()
    import pyarrow.parquet as pq

    path = join(lake.root, "datasets", name, latest["version"], "examples.parquet")
    if is_remote(path):
        fs, key = filesystem_for(path)
        with fs.open(key, "rb") as fh:
            return set(pq.read_table(fh, columns=["example_id"]).column(0).to_pylist())
    return set(pq.read_table(path, columns=["example_id"]).column(0).to_pylist())


def _publish(lake: Lake, name: str, cfg: Config, examples: list[Example], conflicts: list[dict], steps: list[Step],
             context: dict, redactor: pii.Redactor, lines: ValidatedLines | None = None) -> dict:
    base = join(lake.root, "datasets", name)
    remote = is_remote(base)
    import tempfile

    tmp = (tempfile.mkdtemp(prefix=f"acsr-{name}-") if remote
           else os.path.join(base, f".tmp-{uuid.uuid4().hex}"))
    os.makedirs(tmp, exist_ok=True)
    try:
        files = _write_files(tmp, name, examples, conflicts)
        # Content and the settings that shaped it (not the publishing rule): same inputs, same version id.
        shaping = {k: v for k, v in cfg.as_dict().items() if k not in ("min_new_examples", "min_new_pairs")}
        digest = hashlib.sha256(json.dumps(
            [name, shaping, [(f["path"], f["sha256"]) for f in files if f["path"].endswith(".jsonl")]],
            sort_keys=True).encode()).hexdigest()
        version = f"v{cfg.window_end.replace('-', '')}-{digest[:10]}"
        out = {"status": "", "version": None, "examples": len(examples), "window_end": cfg.window_end}
        with _publish_lock(base):
            latest = lake.read_json("datasets", name, "latest.json")
            target = join(base, version)
            if latest and latest.get("version") == version or _exists(target):
                return {**out, "status": "unchanged", "version": version, "path": target,
                        "manifest": join(target, "manifest.json"), "new_examples": 0,
                        "reason": "this exact version is published already"}
            prev_ids = _previous_ids(lake, name, latest)
            new = sum(1 for e in examples if e.example_id not in prev_ids)
            out["new_examples"] = new
            minimum = cfg.min_new_pairs if name in ("preference", "tool_preference") else cfg.min_new_examples
            if new < minimum or not examples:
                return {**out, "status": "not_published", "supersedes": (latest or {}).get("version"),
                        "reason": f"{new} new examples, fewer than the minimum of {minimum}"}
            validation = _validate(tmp, files, cfg, redactor, lines)
            manifest = _manifest(name, version, latest, examples, conflicts, steps, files, validation, context,
                                 new, prev_ids)
            with open(os.path.join(tmp, "manifest.json"), "w") as fh:
                json.dump(manifest, fh, indent=2, sort_keys=True, default=str)
                fh.write("\n")
            with open(os.path.join(tmp, "README.md"), "w") as fh:
                fh.write(dataset_card(manifest))
            _move_into_place(tmp, target)
            older = latest and latest.get("window_end", "") > cfg.window_end
            if not older:
                lake.write_json({"dataset": name, "version": version, "path": target,
                                 "manifest": join(target, "manifest.json"), "window_start": cfg.window_start,
                                 "window_end": cfg.window_end, "examples": len(examples), "new_examples": new},
                                "datasets", name, "latest.json")
            return {**out, "status": "published_not_latest" if older else "published", "version": version,
                    "path": target, "manifest": join(target, "manifest.json"),
                    "supersedes": (latest or {}).get("version"),
                    "by_split": dict(Counter(e.split for e in examples))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exists(target: str) -> bool:
    if is_remote(target):
        fs, path = filesystem_for(join(target, "manifest.json"))
        return fs.exists(path)
    return os.path.exists(os.path.join(target, "manifest.json"))


def _move_into_place(tmp: str, target: str) -> None:
    """Local: one rename of the finished folder. Object storage: upload the files, the manifest last."""
    if not is_remote(target):
        os.replace(tmp, target)
        return
    fs, path = filesystem_for(target)
    for root, _, names in os.walk(tmp):
        for n in sorted(names, key=lambda n: n == "manifest.json"):
            local = os.path.join(root, n)
            fs.put_file(local, path + "/" + os.path.relpath(local, tmp))


def _manifest(name, version, latest, examples, conflicts, steps, files, validation, context, new, prev_ids) -> dict:
    ids = {e.example_id for e in examples}
    return {
        "dataset": name,
        "version": version,
        "supersedes": (latest or {}).get("version"),
        "window": context["window"],
        "counts": {
            "examples": len(examples),
            "by_split": {s: sum(1 for e in examples if e.split == s) for s in curation.SPLITS},
            "by_source": dict(sorted(Counter(e.source for e in examples).items())),
            "new_examples": new,
            "carried_over": len(ids & prev_ids),
            "dropped_since_previous": len(prev_ids - ids),
            "conflicts_listed": len(conflicts),
            "conversations": len({e.conversation_id for e in examples}),
        },
        "curation": {
            "steps": [s.as_dict() for s in steps],
            "redaction": context["redaction"],
            "incomplete_triads_excluded": context["incomplete_triads"],
        },
        "files": files,
        "formats": {f: {"description": formats.FORMATS[f].description, "reference": formats.FORMATS[f].reference}
                    for f in sorted({f["format"] for f in files if f["format"] in formats.FORMATS})},
        "validation": validation,
        "tokenizer": context["tokenizer"],
        "config": context["config"],
        "sources": context["sources"],
        "data_quality": context["data_quality"],
    }


def dataset_card(m: dict) -> str:
    """The version's README.md: what it is, where it came from, how it was curated, how to load it."""
    name, c = m["dataset"], m["counts"]
    what = {
        "intent_relabels": "Customer messages with the intent a person (or a confirmed good outcome) assigned, "
                           "with provenance and a weight per example, for retraining the intent classifier.",
        "sft": "Support conversations that ended well, and conversations a person corrected with the person's "
               "response in place of the agent's, for supervised fine-tuning.",
        "preference": "The agent's response (rejected) against the person's correction (chosen) for the same "
                      "prompt, for DPO-style preference training.",
        "kto": "Single agent responses labelled good or bad by customer feedback (thumbs, CSAT) and by human "
               "corrections, for KTO-style unpaired preference training.",
        "tool_sft": "The reviewer's corrected call (action or policy stage) as the assistant's tool call, with the "
                    "window's tool catalogue, for supervised tool-calling fine-tuning (TRL tool use, OpenAI chat "
                    "with tools/tool_calls).",
        "tool_preference": "The agent's tool call (rejected) against the reviewer's (chosen) for the same prompt, "
                           "for DPO-style preference training of the action framework.",
        "tool_kto": "Tool calls labelled undesirable (the agent's corrected call; an executed action whose outcome "
                    "check failed) or desirable (the reviewer's call), for KTO-style training.",
    }[name]
    lines = [f"# ACSR {name} - {m['version']}", "", what, "",
             f"- Window: {m['window']['start']} .. {m['window']['end']}",
             f"- Supersedes: {m['supersedes'] or 'nothing (first version)'}",
             (f"- Examples: {c['examples']} ({c['new_examples']} new, {c['carried_over']} carried over, "
             f"{c['dropped_since_previous']} no longer present) from {c['conversations']} conversations"),
             "- Splits: " + ", ".join(f"{k} {v}" for k, v in c["by_split"].items()) + " (by a hash of the "
             "conversation id: a conversation never changes split between versions)",
             "- By source: " + ", ".join(f"{k} {v}" for k, v in c["by_source"].items()), "",
             "## Files", "", "| file | format | rows | sha256 |", "| --- | --- | ---: | --- |"]
    lines += [f"| `{f['path']}` | {f['format']} | {f['rows']} | `{f['sha256'][:16]}...` |" for f in m["files"]]
    lines += ["", "## Curation", "", "| step | in | out | removed |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {s['step']} | {s['in']} | {s['out']} | {s['removed']} |" for s in m["curation"]["steps"]]
    r, t = m["curation"]["redaction"], m["curation"]["incomplete_triads_excluded"]
    lines += ["", (f"Personal data: {r['texts_scanned']} texts scanned, {r['texts_changed']} changed; replaced "
              f"{r['replaced_by_kind'] or 'nothing'} with typed placeholders ({', '.join(r['placeholders'])}) before "
              "anything was written, and every output string was scanned again before publishing."),
              (f"Incomplete override triads excluded upstream (quarantined): {t.get('incomplete_total', 0)} "
              f"{t.get('incomplete_by_missing') or ''}."),
              (f"Token budget: {m['config']['max_tokens']} tokens per example, counted with "
              f"{m['tokenizer']['library']} / {m['tokenizer']['encoding']}."),
              "", "## Loading", ""]
    parquet = {f["split"]: f["path"] for f in m["files"] if f["path"].endswith(".parquet") and f["split"]}
    kind, data = "parquet", parquet
    if not parquet:  # JSON Lines only: the main format's files
        main = LAYOUT[name][0][1]
        kind, data = "json", {f["split"]: f["path"] for f in m["files"] if f["format"] == main and f["split"]}
    lines += ["```python", "from datasets import load_dataset  # works offline on the local files",
              f"ds = load_dataset('{kind}', data_files={json.dumps(data)})", "```"]
    if name == "sft":
        lines += ["", ("OpenAI: upload `openai/train.jsonl` (and `openai/validation.jsonl`) with "
                  "`purpose=\"fine-tune\"`; earlier agent turns of corrected conversations carry `weight: 0`.")]
    if name == "preference":
        lines += ["", "OpenAI: `openai_dpo/train.jsonl` for a fine-tuning job with `method={\"type\": \"dpo\"}`."]
    if name.startswith("tool_"):
        lines += ["", ("`provenance.jsonl`: per example the override or outcome check it came from, the reviewer, "
                  "the stage, the policy clause, the agent's and the reviewer's calls. Load the JSON Lines files "
                  "(no Parquet: each tool's arguments differ).")]
    notes = [n for v in m["validation"]["files"].values() for n in v.get("notes", [])]
    lines += ["", "## Validation", "", ("Every file was read back and checked against its consumer's rules "
              "(roles, non-empty content, final assistant message, token budget); see docs/datasets.md.")]
    lines += [f"- note: {n}" for n in notes]
    lines += ["", "## Limits", "",
              ("- Labels and outcomes come from production records and carry their noise: reviewers disagree "
              "(conflicting texts are held out and listed in `conflicts.jsonl` where any), CSAT is sparse."),
              "- The data describes one bank's support traffic; do not use it outside that domain.", ""]
    return "\n".join(lines)

