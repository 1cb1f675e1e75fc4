"""The company's intent taxonomy as data: its labelled base set, its frozen gold set, and renamed or retired
intents, read from configuration instead of the vendored Banking77 (which stays the demo's default).

Why here and not in the trainer: every set the classifier sees (base, gold, relabels, held-out) must go
through the same reader, checks and mapping, or a renamed intent would be one class in training and another
in the gold set. Bad input is refused before anything trains, with the file and the problem named.

A labelled set is a file or a folder of files (CSV, JSON Lines, Parquet) with the columns `text` and
`intent`, optional `weight` (> 0, default 1) and `source`, on the local disk or the lake's object store.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os

from feedback_loop.lake.files import filesystem_for, is_remote

FORMATS = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")
REQUIRED = ("text", "intent")


class TaxonomyError(ValueError):
    """A taxonomy, gold or mapping file that cannot be used: names the file and the problem."""


def normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def _files(source: str) -> list[str]:
    """The file itself, or the supported files of a folder (sorted; hidden and `_` files skipped)."""
    if is_remote(source):
        fs, path = filesystem_for(source)
        if not fs.exists(path):
            raise TaxonomyError(f"{source}: no such file or folder")
        if not fs.isdir(path):
            return [source]
        proto = source.split("://", 1)[0]
        entries = [f"{proto}://{e}" for e in sorted(fs.ls(path, detail=False))]
    else:
        if not os.path.exists(source):
            raise TaxonomyError(f"{source}: no such file or folder")
        if not os.path.isdir(source):
            return [source]
        entries = sorted(os.path.join(source, n) for n in os.listdir(source))
    found = [e for e in entries
             if e.lower().endswith(FORMATS) and not e.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_"))]
    if not found:
        raise TaxonomyError(f"{source}: a folder with no {'/'.join(FORMATS)} file")
    return found


def _records(path: str) -> list[dict]:
    fs, p = filesystem_for(path)
    with fs.open(p, "rb") as fh:
        data = fh.read()
    low = path.lower()
    try:
        if low.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(io.BytesIO(data)).to_pylist()
        text = data.decode("utf-8-sig")
        if low.endswith(".csv"):
            return list(csv.DictReader(io.StringIO(text)))
        if low.endswith(".json") and text.lstrip().startswith("["):
            return json.loads(text)
        out = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise TaxonomyError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        return out
    except TaxonomyError:
        raise
    except Exception as exc:  # noqa: BLE001 - any parser's error becomes the file's error
        raise TaxonomyError(f"{path}: cannot be read as {low.rsplit('.', 1)[-1]}: {exc}") from None


def read_labelled(source: str, what: str = "taxonomy") -> list[dict]:
    """The labelled rows of a file or folder: [{text, label, weight, source}], checked.

    Refused (TaxonomyError naming the file): a missing file, an unknown format, a missing `text` or
    `intent` column, no rows, an empty text or intent, a weight that is not a positive number, and the same
    text (after whitespace and case folding) with two different intents. An exact repeat is kept once."""
    rows: list[dict] = []
    seen: dict[str, tuple[str, str]] = {}
    conflicts: list[str] = []
    for path in _files(source):
        if not path.lower().endswith(FORMATS):
            raise TaxonomyError(f"{path}: unknown format (use {', '.join(FORMATS)})")
        recs = _records(path)
        if not recs:
            raise TaxonomyError(f"{path}: the {what} file is empty")
        if not isinstance(recs[0], dict):
            raise TaxonomyError(f"{path}: records must be objects with {REQUIRED}")
        missing = [c for c in REQUIRED if c not in recs[0]]
        if missing:
            raise TaxonomyError(f"{path}: missing column {', '.join(missing)} (has {', '.join(map(str, recs[0]))})")
        for n, r in enumerate(recs, 1):
            text, intent = r.get("text"), r.get("intent")
            if text is None or not str(text).strip():
                raise TaxonomyError(f"{path}: record {n} has an empty text")
            if intent is None or not str(intent).strip():
                raise TaxonomyError(f"{path}: record {n} has an empty intent")
            w = r.get("weight")
            try:
                weight = 1.0 if w in (None, "") else float(w)
            except (TypeError, ValueError):
                raise TaxonomyError(f"{path}: record {n} has weight {w!r}, not a number") from None
            if not weight > 0:
                raise TaxonomyError(f"{path}: record {n} has weight {weight}: weights must be > 0")
            text, intent = " ".join(str(text).split()), str(intent).strip()
            key = normalise(text)
            if key in seen:
                if seen[key][0] != intent and len(conflicts) < 5:
                    conflicts.append(f"{text[:60]!r} is {seen[key][0]!r} in {seen[key][1]} and {intent!r} "
                                     f"in {path} record {n}")
                continue
            seen[key] = (intent, f"{path} record {n}")
            rows.append({"text": text, "label": intent, "weight": weight, "source": str(r.get("source") or what)})
    if conflicts:
        raise TaxonomyError(f"{source}: the same text has two intents: " + "; ".join(conflicts))
    return rows


def content_hash(rows: list[dict]) -> str:
    """A version of a labelled set by content (order-independent): the first 12 hex of a sha256."""
    h = hashlib.sha256()
    for key in sorted(f"{normalise(r['text'])}\t{r['label']}\t{float(r.get('weight', 1.0))}" for r in rows):
        h.update(key.encode())
        h.update(b"\n")
    return h.hexdigest()[:12]


def load_mapping(spec: str) -> dict[str, str | None]:
    """Renamed or retired intents: {"old": "new"} renames, {"old": null} retires. `spec` is a JSON object or
    a path to a JSON file holding one (local or on the object store); "" = no mapping."""
    if not spec or not spec.strip():
        return {}
    text, where = spec, "ACSR_RETRAIN_INTENT_MAPPING"
    if not spec.lstrip().startswith("{"):
        fs, p = filesystem_for(spec)
        if not fs.exists(p):
            raise TaxonomyError(f"{spec}: intent mapping file not found")
        with fs.open(p, "rb") as fh:
            text, where = fh.read().decode("utf-8-sig"), spec
    try:
        mapping = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TaxonomyError(f"{where}: the intent mapping is not JSON ({exc.msg})") from None
    if not isinstance(mapping, dict) or not all(isinstance(k, str) and (v is None or isinstance(v, str))
                                                for k, v in mapping.items()):
        raise TaxonomyError(f"{where}: the intent mapping must be an object of intent -> new intent or null")
    return mapping


def apply_mapping(rows: list[dict], mapping: dict, counts: dict | None = None, what: str = "") -> list[dict]:
    """Rename (mapping value) or retire (null) intents; counts[what_renamed / what_retired] += n."""
    if not mapping:
        return rows
    out = []
    for r in rows:
        if r["label"] in mapping:
            new = mapping[r["label"]]
            if counts is not None:
                k = f"{what}_{'retired' if new is None else 'renamed'}"
                counts[k] = counts.get(k, 0) + 1
            if new is None:
                continue
            r = {**r, "label": new}
        out.append(r)
    return out


def in_gold_split(text: str, share: float) -> bool:
    """Stable: the same text is always on the same side, whatever else is in the set."""
    return int(hashlib.sha256(normalise(text).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < share
