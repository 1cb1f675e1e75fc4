"""The sets an intent retraining run trains and is judged on, assembled into its run folder.

The sets:
- training: the base labelled set (Banking77 train, optionally `retrain_base_per_intent` per intent, picked
  by a hash of the text so the choice is stable) plus the relabels' train and validation splits with their
  weights (human override 1.0, escalation category 0.8, confirmed by outcome 0.5 by default). A text a
  person relabelled replaces the same text in the base set.
- gold: Banking77 test, frozen; any training text that also appears in it is removed from training.
- holdout: the relabels' test split (split by conversation hash upstream), minus any text that is in
  training: recent production phrasing that no model was trained on.

The run folder `<lake>/retrain/intent_classifier/<training key>/` is named by a hash of everything that
shapes the model (dataset version, base-set selection, model settings): `training_key`, `shaping`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from feedback_loop.lake.files import Lake, join
from feedback_loop.retrain import store
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

ROOT = ("retrain", "intent_classifier")
BASE_DIR = Path(__file__).resolve().parents[1] / "data" / "banking77"
DATASET = "intent_relabels"
MODEL_CONFIG = {"features": "tfidf word 1-2 + char_wb 2-4", "classifier": "LinearSVC", "C": 0.5,
                "calibration": "temperature scaling on 3-fold out-of-fold scores", "random_state": 0,
                "recipe": 1}


class RetrainError(RuntimeError):
    """A retraining request that cannot run (unknown dataset version, remote lake for model files...)."""


# ------------------------------------------------------------------------------------------------ sets


def normalise(text: str) -> str:
    return " ".join(str(text).lower().split())


def _read_csv(name: str) -> list[dict]:
    with open(BASE_DIR / name, newline="", encoding="utf-8") as fh:
        return [{"text": " ".join(r["text"].split()), "label": r["category"]} for r in csv.DictReader(fh)]


def _pick(rows: list[dict], per_intent: int) -> list[dict]:
    """All rows, or `per_intent` per intent chosen by a hash of the text (stable)."""
    if not per_intent:
        return rows
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    return [r for label in sorted(by) for r in sorted(
        by[label], key=lambda r: hashlib.sha1(r["text"].encode()).hexdigest())[:per_intent]]


def base_set(per_intent: int = 0) -> list[dict]:
    """The demo's base labelled set: Banking77 train, all of it or `per_intent` examples per intent."""
    return _pick(_read_csv("train.csv"), per_intent)


def gold_set() -> list[dict]:
    """The demo's frozen gold test set: Banking77 test. Retraining never trains on it."""
    return _read_csv("test.csv")


GOLD_ROOT = (*ROOT, "gold")


def taxonomy_sets(settings: Settings, per_intent: int = 0) -> dict:
    """The base set, the gold set and the intent mapping this configuration trains and judges with.

    Banking77 train/test when `retrain_taxonomy` is unset (the demo). Otherwise the company's file or
    folder; its gold set is `retrain_gold` if given, else a `retrain_gold_share` split of the taxonomy by a
    stable hash of the text, frozen in the lake (`retrain/intent_classifier/gold/`) the first time so later
    runs are judged on the same examples even when the taxonomy file grows. Renames/retirements of
    `retrain_intent_mapping` are applied to both. Raises TaxonomyError before anything trains."""
    from feedback_loop.retrain import taxonomy

    mapping = taxonomy.load_mapping(settings.retrain_intent_mapping)
    counts: dict = {}
    if not settings.retrain_taxonomy:
        rows = _read_csv("train.csv")
        info = {"source": "Banking77 train (vendored)", "hash": "banking77-train"}
    else:
        rows = taxonomy.read_labelled(settings.retrain_taxonomy, "taxonomy")
        info = {"source": settings.retrain_taxonomy, "hash": taxonomy.content_hash(rows)}
    if settings.retrain_gold:
        gold = taxonomy.read_labelled(settings.retrain_gold, "gold")
        gold_info = {"source": settings.retrain_gold, "hash": taxonomy.content_hash(gold), "split_off": False}
    elif not settings.retrain_taxonomy:
        gold = _read_csv("test.csv")
        gold_info = {"source": "Banking77 test (vendored)", "hash": "banking77-test", "split_off": False}
    else:
        gold, gold_info = _frozen_gold(settings, rows)
    gold_texts = {normalise(r["text"]) for r in gold}
    rows = [r for r in rows if normalise(r["text"]) not in gold_texts] if gold_info["split_off"] else rows
    base = taxonomy.apply_mapping(_pick(rows, per_intent), mapping, counts, "base")
    gold = taxonomy.apply_mapping(gold, mapping, counts, "gold")
    if not base:
        raise taxonomy.TaxonomyError(f"{info['source']}: no base examples left (after the gold split and mapping)")
    if not gold:
        raise taxonomy.TaxonomyError(f"{gold_info['source']}: the gold set is empty (after the mapping)")
    info["classes"] = len({r["label"] for r in base})
    return {"base": base, "gold": gold, "mapping": mapping, "mapping_counts": counts, "taxonomy": info,
            "gold_info": {**gold_info, "rows": len(gold)}}


def _frozen_gold(settings: Settings, rows: list[dict]) -> tuple[list[dict], dict]:
    """The gold split of a taxonomy: read back if frozen for this source and share, else split and freeze."""
    from feedback_loop.retrain import taxonomy

    pointer_path = join(settings.lake, *GOLD_ROOT, "frozen.json")
    frozen = _read_json(pointer_path)
    if frozen and frozen["source"] == settings.retrain_taxonomy and frozen["share"] == settings.retrain_gold_share:
        gold = _read_parquet(frozen["file"])
        return gold, {k: frozen[k] for k in ("source", "hash", "share", "frozen_at")} | {"split_off": True}
    gold = [r for r in rows if taxonomy.in_gold_split(r["text"], settings.retrain_gold_share)]
    if not gold:
        raise taxonomy.TaxonomyError(f"{settings.retrain_taxonomy}: a {settings.retrain_gold_share} split leaves "
                                     "no gold examples: give a gold set (ACSR_RETRAIN_GOLD) or a larger share")
    import pyarrow as pa

    digest = taxonomy.content_hash(gold)
    file = join(settings.lake, *GOLD_ROOT, digest, "gold.parquet")
    _write_parquet(gold, file, {"text": pa.string(), "label": pa.string(), "weight": pa.float64(),
                                "source": pa.string()})
    doc = {"source": settings.retrain_taxonomy, "share": settings.retrain_gold_share, "hash": digest, "file": file,
           "rows": len(gold), "frozen_at": datetime.now(UTC).isoformat(timespec="seconds")}
    _write_json(pointer_path, doc)  # after the file: a crash in between leaves no pointer to a missing file
    log.info("gold set split off %s (share %s) and frozen as %s: %s examples", settings.retrain_taxonomy,
             settings.retrain_gold_share, digest, len(gold))
    return gold, {k: doc[k] for k in ("source", "hash", "share", "frozen_at")} | {"split_off": True}


def resolve_dataset(settings: Settings, version: str) -> dict | None:
    """The manifest of the relabel dataset version to train on (None for 'none' or before any version)."""
    lake = Lake(settings.lake)
    if version == "none":
        return None
    if version == "latest":
        latest = lake.read_json("datasets", DATASET, "latest.json")
        if not latest:
            return None
        version = latest["version"]
    manifest = lake.read_json("datasets", DATASET, version, "manifest.json")
    if manifest is None:
        raise RetrainError(f"no {DATASET} version {version} under {join(lake.root, 'datasets', DATASET)}")
    manifest["path"] = join(lake.root, "datasets", DATASET, version)
    return manifest


def read_relabels(manifest: dict) -> dict[str, list[dict]]:
    """The relabel rows of a dataset version by split (train / validation / test), from its Parquet files."""
    from feedback_loop.lake.duck import connect

    out = {"train": [], "validation": [], "test": []}
    con = connect()
    try:
        for f in manifest["files"]:
            if f["format"] == "intent_relabel" and f["path"].endswith(".parquet") and f.get("split") in out:
                path = join(manifest["path"], f["path"])
                cur = con.execute(f"SELECT example_id, text, label, source, weight FROM read_parquet('{path}') "
                                  "ORDER BY example_id")
                cols = [d[0] for d in cur.description]
                out[f["split"]] += [dict(zip(cols, row)) for row in cur.fetchall()]
    finally:
        con.close()
    return out


def shaping(settings: Settings) -> dict:
    """What else shapes the model besides the dataset version (empty for the demo's defaults, so their
    training keys stay as they were): the taxonomy, gold set and mapping by content, the model step."""
    from feedback_loop.retrain import intent_model

    out = {}
    if settings.retrain_taxonomy or settings.retrain_gold or settings.retrain_intent_mapping:
        sets = taxonomy_sets(settings)
        out.update(taxonomy=sets["taxonomy"]["hash"], gold=sets["gold_info"]["hash"],
                   mapping=sorted(sets["mapping"].items(), key=lambda kv: kv[0]),
                   min_new=settings.retrain_min_new_intent_examples)
    if settings.retrain_model:
        out["model_step"] = intent_model.model_step_name(settings.retrain_model)
    return out


def training_key(dataset_version: str | None, base_per_intent: int, shape: dict | None = None) -> str:
    blob = json.dumps({"dataset": dataset_version, "base_per_intent": base_per_intent, "model": MODEL_CONFIG,
                       **({"shape": shape} if shape else {})}, sort_keys=True, default=str)
    return f"{dataset_version or 'base'}-b{base_per_intent}-{hashlib.sha256(blob.encode()).hexdigest()[:8]}"


def run_dir(settings: Settings, key: str) -> str:
    """The run folder, on the lake itself (local or s3://): every step reads and writes it through
    `retrain.store`, so steps can run on different workers with no shared disk."""
    return join(settings.lake, *ROOT, key)


def _write_parquet(rows: list[dict], path: str, columns: dict) -> None:
    import pyarrow as pa

    store.write_parquet(pa.table({c: pa.array([r.get(c) for r in rows], t) for c, t in columns.items()}), path)


def _read_parquet(path: str) -> list[dict]:
    return store.read_parquet_rows(path)


def _write_json(path: str, doc: dict) -> str:
    return store.write_json(path, doc)


def _read_json(path: str) -> dict | None:
    return store.read_json(path)


def assemble(settings: Settings, request: dict, *, dataset_version: str | None = "from-request") -> dict:
    """Build the training, gold and held-out sets of a run in its folder; return the assembly summary."""
    import pyarrow as pa

    manifest = resolve_dataset(settings, request["dataset_version"]) if dataset_version == "from-request" else (
        resolve_dataset(settings, dataset_version) if dataset_version else None)
    version = manifest["version"] if manifest else None
    from feedback_loop.retrain import taxonomy

    key = training_key(version, request["base_per_intent"], shaping(settings))
    folder = run_dir(settings, key)
    done = _read_json(join(folder, "assembly.json"))
    if done:
        return done
    sets = taxonomy_sets(settings, request["base_per_intent"])
    mapping, mapped = sets["mapping"], dict(sets["mapping_counts"])
    relabels = read_relabels(manifest) if manifest else {"train": [], "validation": [], "test": []}
    relabels = {k: taxonomy.apply_mapping(v, mapping, mapped, f"relabel_{k}") for k, v in relabels.items()}
    gold = sets["gold"]
    gold_texts = {normalise(r["text"]) for r in gold}
    human = [dict(r, origin=r["source"]) for r in relabels["train"] + relabels["validation"]]
    # Intents the base set does not know: learnt with enough relabels, else reported (and not trained on).
    known = {r["label"] for r in sets["base"]}
    new_counts = Counter(r["label"] for r in human if r["label"] not in known)
    minimum = settings.retrain_min_new_intent_examples
    new_intents = {i: {"relabels": n, "status": "learnt" if n >= minimum else
                       f"reported: {n} relabel(s), fewer than the {minimum} needed to learn it"}
                   for i, n in sorted(new_counts.items())}
    too_few = {i for i, v in new_intents.items() if v["status"] != "learnt"}
    relabelled = {normalise(r["text"]) for r in human if r["label"] not in too_few}
    base = sets["base"]
    counts = Counter()
    train = []
    for r in base:
        n = normalise(r["text"])
        if n in relabelled:
            counts["base_replaced_by_relabel"] += 1
        elif n in gold_texts:
            counts["base_in_gold_removed"] += 1
        else:
            train.append({"text": r["text"], "label": r["label"], "weight": float(r.get("weight", 1.0)),
                          "origin": "base", "example_id": None})
    for r in human:
        if normalise(r["text"]) in gold_texts:
            counts["relabel_in_gold_removed"] += 1
            continue
        if r["label"] in too_few:
            counts["relabel_new_intent_too_few"] += 1
            continue
        train.append({"text": r["text"], "label": r["label"], "weight": float(r["weight"]), "origin": r["origin"],
                      "example_id": r["example_id"]})
    trained_texts = {normalise(r["text"]) for r in train}
    holdout = []
    for r in relabels["test"]:
        if normalise(r["text"]) in trained_texts | gold_texts:
            counts["holdout_seen_in_training_removed"] += 1
            continue
        holdout.append({"text": r["text"], "label": r["label"], "source": r["source"], "example_id": r["example_id"]})
    if too_few:
        log.warning("intents named by relabels but not learnt (too few examples): %s",
                    {i: new_intents[i]["relabels"] for i in sorted(too_few)})

    cols = {"text": pa.string(), "label": pa.string(), "weight": pa.float64(), "origin": pa.string(),
            "example_id": pa.string()}
    _write_parquet(train, join(folder, "data", "train.parquet"), cols)
    _write_parquet(gold, join(folder, "data", "gold.parquet"), {"text": pa.string(), "label": pa.string()})
    _write_parquet(holdout, join(folder, "data", "holdout.parquet"),
                   {"text": pa.string(), "label": pa.string(), "source": pa.string(), "example_id": pa.string()})
    labels = Counter(r["label"] for r in train)
    total = sum(labels.values())
    window = (manifest or {}).get("window") or {}
    summary = {
        "training_key": key, "folder": folder, "dataset": DATASET, "dataset_version": version,
        "dataset_manifest": join(manifest["path"], "manifest.json") if manifest else None,
        "dataset_window": {"start": window.get("start"), "end": window.get("end")} if window else None,
        "base": {"source": sets["taxonomy"]["source"], "per_intent": request["base_per_intent"], "rows": len(base)},
        "taxonomy": {**sets["taxonomy"], "gold": sets["gold_info"], "mapping": mapping, "mapped": mapped,
                     "new_intents": new_intents, "classes": sorted({r["label"] for r in train})},
        "counts": {"train": len(train), "gold": len(gold), "holdout": len(holdout),
                   "train_by_origin": dict(sorted(Counter(r["origin"] for r in train).items())),
                   "holdout_by_source": dict(sorted(Counter(r["source"] for r in holdout).items())),
                   "relabels_by_split": {k: len(v) for k, v in relabels.items()}, **dict(sorted(counts.items()))},
        "label_distribution": {k: round(v / total, 6) for k, v in sorted(labels.items())} if total else {},
        "reference_distribution": _reference_distribution(settings, window),
        "model_config": {**MODEL_CONFIG, **({"model_step": settings.retrain_model} if settings.retrain_model else {})},
        "files": {"train": join(folder, "data", "train.parquet"), "gold": join(folder, "data", "gold.parquet"),
                  "holdout": join(folder, "data", "holdout.parquet")},
    }
    _write_json(join(folder, "assembly.json"), summary)
    log.info("assembled %s: %s training rows %s, %s gold, %s held out", key, len(train),
             summary["counts"]["train_by_origin"], len(gold), len(holdout))
    return summary


def _reference_distribution(settings: Settings, window: dict) -> dict | None:
    """The live intent distribution the nightly drift check compares with: over the dataset's window, or
    for a model trained on the base set only, over the last `retrain_window_days` of traffic before it
    went into service (None before any traffic: then the check falls back to the training labels)."""
    from datetime import date, timedelta

    from feedback_loop.retrain.decide import live_intent_distribution

    if not window.get("end"):
        days = Lake(settings.lake).days("marts", "conversation_facts")
        if not days:
            return None
        end = days[-1]
        window = {"start": str(date.fromisoformat(end) - timedelta(days=settings.retrain_window_days - 1)), "end": end}
    dist = live_intent_distribution(settings, window["start"], window["end"])
    return dist if dist["n"] else None
