"""Retraining the intent classifier, step by step: the functions the DAG's tasks and `acsr retrain-intent` call.

    request = resolve_request(settings, params)        # dataset version, policy, margin, dry run, force
    ensure_champion(settings, request)                 # first run ever: train, register, promote a baseline
    assembly = assemble(settings, request)             # training set, frozen gold set, held-out relabels
    trained = train_challenger(settings, assembly)     # the challenger's pipeline, in the run folder
    evaluation = evaluate(settings, assembly, request) # champion and challenger on the same sets + decision
    registered = register(settings, evaluation)        # MLflow run + model version, alias `challenger`
    outcome = finalize(settings, evaluation, registered)  # alias `champion` moves only here, on evidence

Everything a step produces is a file in the run folder `<lake>/retrain/intent_classifier/<training key>/`;
steps pass that folder's path, never data. The training key is a hash of everything that shapes the model
(dataset version, base-set selection, model settings), so re-running the same inputs reuses the same folder
and gives the same model. The champion changes only in `finalize`, the last step: a run that fails
anywhere before leaves the champion (MLflow alias and lake pointer) where it was.

The sets:
- training: the base labelled set (Banking77 train, optionally `retrain_base_per_intent` per intent, picked
  by a hash of the text so the choice is stable) plus the relabels' train and validation splits with their
  weights (human override 1.0, escalation category 0.8, confirmed by outcome 0.5 by default). A text a
  person relabelled replaces the same text in the base set.
- gold: Banking77 test, frozen; any training text that also appears in it is removed from training.
- holdout: the relabels' test split (split by conversation hash upstream), minus any text that is in
  training: recent production phrasing that no model was trained on.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from feedback_loop.lake.files import Lake, join
from feedback_loop.retrain import registry, store
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

ROOT = ("retrain", "intent_classifier")
BASE_DIR = Path(__file__).resolve().parents[1] / "data" / "banking77"
DATASET = "intent_relabels"
MODEL_CONFIG = {"features": "tfidf word 1-2 + char_wb 2-4", "classifier": "LinearSVC", "C": 0.5,
                "calibration": "temperature scaling on 3-fold out-of-fold scores", "random_state": 0,
                "recipe": 1}
POLICIES = ("evidence", "never", "always")
VERSION_RE = re.compile(r"^v\d{8}-[0-9a-f]{10}$")


class RetrainError(RuntimeError):
    """A retraining request that cannot run (unknown dataset version, remote lake for model files...)."""


# ------------------------------------------------------------------------------------------------ request


def resolve_request(settings: Settings, params: dict | None = None, asset_version: str | None = None) -> dict:
    """The request of one run: trigger-form params / conf over Settings defaults. A run started by the
    relabel dataset's Asset trains on the version the event announced."""
    p = dict(params or {})
    version = p.get("dataset_version") or "latest"
    if version == "latest" and asset_version:
        version = asset_version
    policy = p.get("promotion_policy") or "evidence"
    if policy not in POLICIES:
        raise RetrainError(f"unknown promotion policy {policy!r}: one of {POLICIES}")
    if version not in ("latest", "none") and not VERSION_RE.match(version):
        raise RetrainError(f"dataset version {version!r} is not 'latest', 'none' or v<YYYYMMDD>-<10 hex>")
    pick = (lambda k, default: default if p.get(k) is None else p[k])
    return {
        "dataset_version": version,
        "force": bool(p.get("force", False)),
        "dry_run": bool(p.get("dry_run", False)),
        "policy": {
            "mode": policy,
            "margin": float(pick("margin", settings.retrain_promotion_margin)),
            "alpha": float(pick("alpha", settings.retrain_promotion_alpha)),
            "max_intent_regression": float(pick("max_intent_regression", settings.retrain_max_intent_regression)),
            "max_ece_increase": float(pick("max_ece_increase", settings.retrain_max_ece_increase)),
            "protected": sorted(x.strip() for x in settings.retrain_protected_intents.split(",") if x.strip()),
        },
        "base_per_intent": int(pick("base_per_intent", settings.retrain_base_per_intent)),
        "reason": str(p.get("reason") or ("asset event: new relabel dataset version" if asset_version else "manual")),
        "decision": p.get("decision"),  # the nightly decision's reasons, when it triggered this run
    }


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


# ------------------------------------------------------------------------------------------------ train


def train_challenger(settings: Settings, assembly: dict) -> dict:
    """Fit the pipeline on the run's training set and store it as `model.joblib` (kept if it exists)."""
    from feedback_loop.retrain import intent_model

    path = join(assembly["folder"], "model.joblib")
    if not store.exists(path):
        rows = _read_parquet(assembly["files"]["train"])
        if not rows:
            raise RetrainError("empty training set")
        model = intent_model.train([r["text"] for r in rows], [r["label"] for r in rows],
                                   [r["weight"] for r in rows], C=MODEL_CONFIG["C"],
                                   random_state=MODEL_CONFIG["random_state"], step=settings.retrain_model)
        store.dump_model(model, path)
    return {"training_key": assembly["training_key"], "folder": assembly["folder"], "model_path": path}


# ------------------------------------------------------------------------------------------------ evaluate


def _evaluate_on(model, sets: dict[str, list[dict]]) -> dict:
    from feedback_loop.retrain import intent_model

    return {name: intent_model.evaluate(model, [r["text"] for r in rows], [r["label"] for r in rows])
            for name, rows in sets.items()}


def evaluate(settings: Settings, assembly: dict, request: dict, trained: dict | None = None) -> dict:
    """Champion and challenger on the same gold and held-out sets, and the promotion decision."""
    from feedback_loop.retrain import intent_model

    folder = assembly["folder"]
    ptr = registry.champion(settings)
    sets = {"gold": _read_parquet(assembly["files"]["gold"]), "holdout": _read_parquet(assembly["files"]["holdout"])}
    ch_model = store.load_model(join(folder, "model.joblib"))
    cp_model = store.load_model(ptr["model_path"]) if ptr else None
    change = taxonomy_change(ch_model, cp_model, sets)
    if cp_model is not None:  # the paired comparison is on the classes both models know
        shared = set(change["shared"])
        sets = {k: [r for r in rows if r["label"] in shared] for k, rows in sets.items()}
    challenger = _evaluate_on(ch_model, sets)
    champion = _evaluate_on(cp_model, sets) if cp_model is not None else None
    if ptr and ptr.get("training_key") == assembly["training_key"]:
        decision = {"promote": False, "reasons": ["the challenger is the champion (same training key)"],
                    "checks": {}, "worse_intents": [], "mcnemar": None}
    elif champion is not None and not challenger["gold"]["n"]:
        # A new taxonomy: no gold example of a class both models know, so there is no paired evidence.
        always = request["policy"]["mode"] == "always"
        decision = {"promote": always, "checks": {}, "worse_intents": [], "mcnemar": None, "reasons": [
            "no gold example of a class both the champion and the challenger know (a taxonomy change): no paired "
            "comparison is possible; " + ("promoted by promotion policy 'always'" if always else
                                          "kept the champion; review and retrain with promotion_policy 'always'")]}
    else:
        policy = request["policy"]
        decision = intent_model.compare(champion, challenger, policy)
        if policy["mode"] == "always" and champion is not None:
            decision["reasons"].insert(0, f"promotion policy 'always' (manual override): promoted whatever the "
                                          f"evidence; evidence said {'promote' if decision['promote'] else 'keep'}")
            decision["promote"] = True
    doc = {
        "training_key": assembly["training_key"], "dataset_version": assembly["dataset_version"],
        "champion": {"version": ptr["version"], "training_key": ptr.get("training_key")} if ptr else None,
        "metrics": {"challenger": _summary(challenger), "champion": _summary(champion) if champion else None},
        "decision": decision, "request": request, "dry_run": request["dry_run"],
        "taxonomy_change": {k: v for k, v in change.items() if k != "shared"} | {"shared_classes": len(change["shared"])},
    }
    name = f"evaluation-vs-{ptr['version'] if ptr else 'none'}.json"
    path = _write_json(join(folder, name), {**doc, "correct": {
        "challenger": {k: v["correct"] for k, v in challenger.items()},
        "champion": {k: v["correct"] for k, v in champion.items()} if champion else None}})
    log.info("evaluated %s vs champion %s: %s", assembly["training_key"], ptr and ptr["version"],
             "; ".join(decision["reasons"]))
    return {**doc, "path": path, "folder": folder, "model_path": join(folder, "model.joblib"),
            "assembly": join(folder, "assembly.json")}


def taxonomy_change(challenger_model, champion_model, sets: dict) -> dict:
    """Classes the challenger adds or drops against the champion, and the added classes' own held-out figures
    (challenger's recall on gold and held-out examples of each: the champion cannot be compared there)."""
    from feedback_loop.retrain import intent_model

    ch = {str(c) for c in challenger_model.classes_}
    cp = {str(c) for c in champion_model.classes_} if champion_model is not None else set(ch)
    added, retired = sorted(ch - cp), sorted(cp - ch)
    figures = {}
    for intent in added:
        rows = [r for name in ("gold", "holdout") for r in sets[name] if r["label"] == intent]
        if rows:
            pred, _ = intent_model.predict(challenger_model, [r["text"] for r in rows])
            right = int(sum(str(p) == intent for p in pred))
            figures[intent] = {"held_out": len(rows), "recall": round(right / len(rows), 4)}
        else:
            figures[intent] = {"held_out": 0, "recall": None}
    excluded = {name: sum(r["label"] not in (ch & cp) for r in rows) for name, rows in sets.items()}
    return {"shared": sorted(ch & cp), "added": added, "retired": retired, "added_held_out": figures,
            "excluded_from_paired_test": excluded}


def _summary(ev: dict) -> dict:
    return {name: {k: v for k, v in m.items() if k != "correct"} for name, m in ev.items()}


# ------------------------------------------------------------------------------------------------ register


def register(settings: Settings, evaluation: dict, run_id: str | None = None) -> dict:
    """Register the challenger in MLflow (metrics, dataset version, training key), alias `challenger`."""
    assembly = _read_json(evaluation["assembly"])
    ch = evaluation["metrics"]["challenger"]
    metrics = {"gold": ch["gold"], "holdout": ch.get("holdout")}
    per_intent = _write_json(join(evaluation["folder"], "per_intent_f1.json"),
                             {k: v.get("per_intent") for k, v in ch.items()})
    out = registry.register_intent_model(
        settings, model=store.load_model(evaluation["model_path"]), training_key=evaluation["training_key"],
        dataset_version=evaluation["dataset_version"],
        params={"dataset_version": evaluation["dataset_version"] or "none", "base_per_intent": assembly["base"]["per_intent"],
                "train_rows": assembly["counts"]["train"], "holdout_rows": assembly["counts"]["holdout"],
                "gold_rows": assembly["counts"]["gold"], **{f"model_{k}": v for k, v in MODEL_CONFIG.items()}},
        metrics=metrics, artifacts=[evaluation["assembly"], evaluation["path"], per_intent],
        tags={"airflow_run_id": run_id or "", "champion_at_evaluation": (evaluation["champion"] or {}).get("version") or "none"})
    _write_json(join(evaluation["folder"], "registration.json"), out)
    return {**out, "training_key": evaluation["training_key"], "evaluation": evaluation["path"]}


def finalize(settings: Settings, evaluation: dict, registered: dict, run_id: str | None = None) -> dict:
    """Write the model card, record the decision in MLflow and, if the decision is to promote, move the
    `champion` alias and the lake pointer. The only step that changes the champion."""
    decision = evaluation["decision"]
    assembly = _read_json(evaluation["assembly"])
    version = registered["version"]
    current = registry.champion(settings)
    promote = decision["promote"] and not (current and current.get("version") == version)
    card = model_card(version, assembly, evaluation, promoted=promote, previous=current)
    card_path = join(evaluation["folder"], "model_card.md")
    store.write_bytes(card_path, card.encode())
    registry.record_decision(settings, version, decision, card)
    outcome = {"version": version, "promoted": promote, "reasons": decision["reasons"],
               "champion_before": current and current.get("version"), "model_card": card_path,
               "training_key": evaluation["training_key"]}
    if promote:
        ch = evaluation["metrics"]["challenger"]
        pointer = {
            "model": registry.INTENT_MODEL, "version": version, "model_uri": registered["model_uri"],
            "mlflow_run_id": registered.get("run_id"), "model_path": evaluation["model_path"],
            "training_key": evaluation["training_key"], "dataset": DATASET,
            "dataset_version": evaluation["dataset_version"], "dataset_window": assembly.get("dataset_window"),
            "train_file": assembly["files"]["train"], "label_distribution": assembly["label_distribution"],
            "reference_distribution": assembly.get("reference_distribution"),
            "gold": {k: ch["gold"][k] for k in ("accuracy", "macro_f1", "ece", "n")},
            "promoted_at": datetime.now(UTC).isoformat(timespec="seconds"), "promoted_by_run": run_id,
            "reasons": decision["reasons"], "previous_version": current and current.get("version"),
            "model_card": card_path,
        }
        registry.promote(settings, version, pointer)
    outcome["champion_after"] = version if promote else (current and current.get("version"))
    _write_json(join(evaluation["folder"], f"outcome-v{version}.json"), outcome)
    log.info("intent classifier v%s: %s (%s)", version, "PROMOTED" if promote else "kept the champion",
             "; ".join(decision["reasons"]))
    return outcome


def _taxonomy_lines(assembly: dict, evaluation: dict) -> list[str]:
    """The model card's taxonomy section: where the classes and the gold set come from, and what changed."""
    t = assembly.get("taxonomy")
    if not t:
        return []
    g = t["gold"]
    lines = ["## Taxonomy", "",
             f"- Classes: {len(t['classes'])} (base set `{t['source']}`, content hash `{t['hash']}`)",
             (f"- Gold set: `{g['source']}`, {g['rows']} examples, content hash `{g['hash']}`"
              + (f"; split off the labelled data by a stable text hash (share {g['share']}) and frozen "
                 f"{g['frozen_at']}" if g.get("split_off") else ""))]
    if t.get("mapping"):
        lines.append(f"- Intent mapping (renamed / retired, applied to every set): {json.dumps(t['mapping'])}; "
                     f"rows affected: {json.dumps(t.get('mapped') or {})}")
    for intent, v in (t.get("new_intents") or {}).items():
        lines.append(f"- New intent `{intent}` named by {v['relabels']} relabel(s): {v['status']}")
    ch = evaluation.get("taxonomy_change") or {}
    if evaluation.get("champion"):
        lines.append(f"- Against the champion: {ch.get('shared_classes')} shared classes (the paired test uses only "
                     f"these; examples of other classes excluded: {json.dumps(ch.get('excluded_from_paired_test'))}); "
                     f"added {ch.get('added') or 'none'}; retired {ch.get('retired') or 'none'}")
        for intent, f in (ch.get("added_held_out") or {}).items():
            lines.append(f"  - `{intent}`: recall {f['recall']} on {f['held_out']} held-out examples"
                         if f["held_out"] else f"  - `{intent}`: no held-out example yet")
    return [*lines, ""]


def model_card(version: str, assembly: dict, evaluation: dict, *, promoted: bool, previous: dict | None) -> str:
    """The model card (markdown) of one registered version."""
    m = evaluation["metrics"]
    ch, cp = m["challenger"], m.get("champion")
    d = evaluation["decision"]

    def fmt(x):
        return "-" if x is None else f"{x:.4f}"

    def row(name, key):
        a = cp[name][key] if cp and cp.get(name) and cp[name].get("n") else None
        b = ch[name][key] if ch.get(name) and ch[name].get("n") else None
        return f"| {name} {key} | {fmt(a)} | {fmt(b)} |"

    c = assembly["counts"]
    lines = [
        f"# {registry.INTENT_MODEL} v{version}", "",
        (f"Classifies a customer's message into one of the company's support intents (taxonomy: "
         f"{(assembly.get('taxonomy') or {}).get('source', assembly['base']['source'])}, plus any intent people "
         "assigned in production). Used by the support agent to route the conversation."), "",
        f"- Training key: `{evaluation['training_key']}`",
        f"- Relabel dataset: `{assembly['dataset_version'] or 'none (base set only)'}`"
        + (f" (window {assembly['dataset_window']['start']} .. {assembly['dataset_window']['end']})"
           if assembly.get("dataset_window") else ""),
        f"- Base set: {assembly['base']['source']}, "
        + (f"{assembly['base']['per_intent']} per intent" if assembly["base"]["per_intent"] else "all examples"),
        (f"- Model: {MODEL_CONFIG['features']}; {MODEL_CONFIG['classifier']} (C={MODEL_CONFIG['C']}); "
         f"{MODEL_CONFIG['calibration']}"),
        f"- Decision: **{'promoted to champion' if promoted else 'not promoted; champion stays ' + str((previous or {}).get('version'))}**",
        *[f"  - {r}" for r in d["reasons"]], "",
        "## Training data", "",
        (f"{c['train']} examples by origin: {json.dumps(c['train_by_origin'])}. Weights: base 1.0, relabels as the "
         "dataset assigns them (human override 1.0, escalation category 0.8, confirmed by outcome 0.5)."),
        (f"Leak guards: {c.get('base_in_gold_removed', 0) + c.get('relabel_in_gold_removed', 0)} training texts also "
         f"in the gold set removed; {c.get('base_replaced_by_relabel', 0)} base texts replaced by a person's relabel; "
         f"{c.get('holdout_seen_in_training_removed', 0)} held-out relabels removed because their text is trained on."),
        "",
        "## Evaluation (same sets for both models)", "",
        (f"Gold: {((assembly.get('taxonomy') or {}).get('gold') or {}).get('source', 'Banking77 test')}, {c['gold']} "
         f"examples, never trained on. Held out: {c['holdout']} recent relabels "
         "(test split of the dataset; over-represents the champion's own mistakes, so it guards against a loss but "
         "cannot prove a gain)."), "",
        f"| metric | champion{' v' + str(evaluation['champion']['version']) if evaluation.get('champion') else ''} | challenger v{version} |",
        "| --- | ---: | ---: |",
        *[row(s, k) for s in ("gold", "holdout") for k in ("accuracy", "macro_f1", "ece")], "",
    ]
    if d.get("mcnemar"):
        t = d["mcnemar"]
        lines += [(f"Paired test on gold: {t['test']}: only the challenger right on {t['only_challenger_right']}, "
                   f"only the champion right on {t['only_champion_right']}, p = {t['p_value']:.3g}."), ""]
    if d.get("checks"):
        lines += ["| check | passed | detail |", "| --- | --- | --- |"]
        lines += [f"| {k} | {'yes' if v['passed'] else 'NO'} | "
                  f"{json.dumps({x: y for x, y in v.items() if x != 'passed'})} |" for k, v in d["checks"].items()]
        lines.append("")
    lines += _taxonomy_lines(assembly, evaluation)
    worse = d.get("worse_intents") or []
    if worse:
        lines += ["## Intents that got worse (gold F1)", "", "| intent | champion | challenger | drop | protected |",
                  "| --- | ---: | ---: | ---: | --- |"]
        lines += [f"| {w['intent']} | {w['champion_f1']:.3f} | {w['challenger_f1']:.3f} | {w['drop']:.3f} | "
                  f"{'yes' if w['protected'] else ''} |" for w in worse[:15]]
        lines.append("")
    lines += ["## Limits", "",
              "- The gold set is public Banking77 phrasing; production phrasing is covered only by the held-out relabels.",
              "- Relabels carry reviewer noise; conflicting labels are held out upstream (docs/datasets.md).",
              "- Confidence is calibrated on the training distribution (ECE above); re-check it after large drift.", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ bootstrap


def ensure_champion(settings: Settings, request: dict, run_id: str | None = None) -> dict:
    """Before the first promotion there is nothing to compare with: train a baseline on the base set only,
    register it and make it the champion. Later runs return the current champion untouched."""
    current = registry.champion(settings)
    if current:
        return {"bootstrapped": False, "champion": current["version"], "training_key": current.get("training_key")}
    if request["dry_run"]:
        return {"bootstrapped": False, "champion": None, "note": "dry run: no baseline registered"}
    assembly = assemble(settings, request, dataset_version=None)
    train_challenger(settings, assembly)
    evaluation = evaluate(settings, assembly, {**request, "policy": {**request["policy"], "mode": "evidence"}})
    registered = register(settings, evaluation, run_id)
    outcome = finalize(settings, evaluation, registered, run_id)
    return {"bootstrapped": True, "champion": outcome["champion_after"], "training_key": assembly["training_key"]}


def should_train(settings: Settings, request: dict) -> dict:
    """Whether this run has anything new: a challenger identical to the champion is skipped unless forced."""
    manifest = resolve_dataset(settings, request["dataset_version"])
    key = training_key(manifest["version"] if manifest else None, request["base_per_intent"], shaping(settings))
    current = registry.champion(settings)
    same = bool(current and current.get("training_key") == key)
    return {"train": request["force"] or not same, "training_key": key,
            "reason": ("forced" if request["force"] and same else
                       f"the champion v{current['version']} was trained on exactly this data" if same else "new data")}


def run(settings: Settings, request: dict, run_id: str | None = None) -> dict:
    """Every step in this process (the CLI's `acsr retrain-intent`)."""
    boot = ensure_champion(settings, request, run_id)
    check = should_train(settings, request)
    if not check["train"]:
        return {"bootstrap": boot, "skipped": check["reason"]}
    assembly = assemble(settings, request)
    train_challenger(settings, assembly)
    evaluation = evaluate(settings, assembly, request)
    if request["dry_run"]:
        return {"bootstrap": boot, "dry_run": True, "decision": evaluation["decision"], "evaluation": evaluation["path"]}
    registered = register(settings, evaluation, run_id)
    return {"bootstrap": boot, "registered": registered, "outcome": finalize(settings, evaluation, registered, run_id)}

