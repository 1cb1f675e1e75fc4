"""Fixture builders for the retraining tests: small lakes written with the real Lake / DuckDB / Parquet code."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from datetime import date, timedelta
from pathlib import Path

_MLFLOW_TEMPLATE: dict = {}
BANKING = Path(__file__).resolve().parents[1] / "include" / "feedback_loop" / "data" / "banking77" / "train.csv"


def mlflow_db(settings, template_dir: Path) -> None:
    """Give this test's lake a migrated MLflow SQLite DB (migrations run once per session, then copied)."""
    from feedback_loop.retrain import registry

    template = template_dir / "mlflow.db"
    if not template.exists():
        from feedback_loop.settings import Settings

        seed = Settings.load(lake=str(template_dir / "lake"))
        with registry.mlflow_for(seed) as mlflow:
            mlflow.MlflowClient().search_experiments()  # creates and migrates the schema
        shutil.copy(template_dir / "lake" / "mlflow" / "mlflow.db", template)
    target = Path(settings.lake) / "mlflow"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, target / "mlflow.db")


def days(end: str, n: int) -> list[str]:
    e = date.fromisoformat(end)
    return [str(e - timedelta(days=i)) for i in range(n - 1, -1, -1)]


def write_facts(settings, dt: str, intents: dict[str, int]) -> None:
    """A conversation_facts partition with `count` conversations per final intent (other columns omitted)."""
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake

    rows = [(f"{dt}-{intent}-{i}", intent) for intent, n in sorted(intents.items()) for i in range(n)]
    con = connect()
    try:
        con.execute("CREATE TABLE f (conversation_id VARCHAR, final_intent VARCHAR)")
        if rows:
            con.executemany("INSERT INTO f VALUES (?, ?)", rows)
        Lake(settings.lake).write_query(con, f"SELECT DATE '{dt}' AS fact_date, * FROM f", "marts",
                                        "conversation_facts", dt)
    finally:
        con.close()


def write_overrides(settings, dt: str, corrections: dict[str, int]) -> None:
    """A staged/overrides partition with `count` intent corrections per agent decision."""
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake

    rows = [(f"ov-{dt}-{intent}-{i}", "intent", "corrected", intent, "other_intent")
            for intent, n in sorted(corrections.items()) for i in range(n)]
    con = connect()
    try:
        con.execute("CREATE TABLE o (override_id VARCHAR, stage VARCHAR, outcome VARCHAR, agent_decision VARCHAR, "
                    "human_decision VARCHAR)")
        if rows:
            con.executemany("INSERT INTO o VALUES (?, ?, ?, ?, ?)", rows)
        Lake(settings.lake).write_query(con, "SELECT * FROM o", "staged", "overrides", dt)
    finally:
        con.close()


def write_action_queue(settings, dt: str, items: list[tuple[str, str]]) -> None:
    """An action_queue partition: (target_component, signal) per open item."""
    from feedback_loop.lake.duck import connect
    from feedback_loop.lake.files import Lake

    con = connect()
    try:
        con.execute("CREATE TABLE q (action_id VARCHAR, signal VARCHAR, scope_dimension VARCHAR, scope_value VARCHAR, "
                    "trigger VARCHAR, severity DOUBLE, target_component VARCHAR, status VARCHAR)")
        for i, (target, signal) in enumerate(items):
            con.execute("INSERT INTO q VALUES (?, ?, 'all', 'all', 'change_vs_baseline', ?, ?, 'open')",
                        [f"a{i}", signal, 4.0 + i, target])
        Lake(settings.lake).write_query(con, "SELECT * FROM q", "marts", "action_queue", dt)
    finally:
        con.close()


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _version(end: str, tag: str) -> str:
    return f"v{end.replace('-', '')}-{hashlib.sha256(tag.encode()).hexdigest()[:10]}"


def write_relabel_version(settings, end: str, rows_by_split: dict[str, list[dict]], tag: str = "a",
                          latest: bool = True) -> str:
    """An intent_relabels dataset version in the layout feedback_loop.datasets.build publishes (parquet + jsonl per
    split, examples.parquet index, manifest with sha256s, latest.json)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feedback_loop.lake.files import Lake

    version = _version(end, tag)
    folder = Path(settings.lake) / "datasets" / "intent_relabels" / version
    (folder / "data").mkdir(parents=True, exist_ok=True)
    files, index = [], []
    for split, rows in rows_by_split.items():
        if not rows:
            continue
        recs = [{"example_id": r["example_id"], "text": r["text"], "label": r["label"], "source": r.get("source", "override"),
                 "weight": float(r.get("weight", 1.0)), "conversation_id": r.get("conversation_id", r["example_id"])}
                for r in rows]
        pq.write_table(pa.Table.from_pylist(recs), folder / "data" / f"{split}.parquet")
        (folder / "data" / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
        for ext in ("parquet", "jsonl"):
            p = folder / "data" / f"{split}.{ext}"
            files.append({"path": f"data/{split}.{ext}", "format": "intent_relabel", "split": split, "rows": len(recs),
                          "sha256": _sha(str(p))})
        index += [{"example_id": r["example_id"], "split": split, "source": r["source"], "weight": r["weight"]}
                  for r in recs]
    pq.write_table(pa.Table.from_pylist(index, schema=pa.schema([("example_id", pa.string()), ("split", pa.string()),
                                                                  ("source", pa.string()), ("weight", pa.float64())])),
                   folder / "examples.parquet")
    start = str(date.fromisoformat(end) - timedelta(days=27))
    manifest = {"dataset": "intent_relabels", "version": version, "window": {"start": start, "end": end},
                "files": files, "counts": {"examples": len(index)}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if latest:
        Lake(settings.lake).write_json({"dataset": "intent_relabels", "version": version, "path": str(folder),
                                        "window_start": start, "window_end": end}, "datasets", "intent_relabels",
                                       "latest.json")
    return version


def write_chat_version(settings, name: str, end: str, n: int = 12, tag: str = "a") -> str:
    """An sft or preference dataset version with valid TRL and OpenAI files for `n` train + 3 validation rows."""
    from feedback_loop.lake.files import Lake

    version = _version(end, name + tag)
    folder = Path(settings.lake) / "datasets" / name / version
    system = {"role": "system", "content": "You are the bank's support assistant."}
    files = []

    def write(rel, fmt, split, recs):
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("".join(json.dumps(r) + "\n" for r in recs))
        files.append({"path": rel, "format": fmt, "split": split, "rows": len(recs), "sha256": _sha(str(p))})

    for split, k in (("train", n), ("validation", 3)):
        users = [f"How do I {verb} my card number {i}?" for i, verb in
                 zip(range(k), ["activate", "freeze", "replace", "order", "cancel", "unblock"] * 10)]
        answers = [f"Open the app, go to Cards and choose the option for request {i}." for i in range(k)]
        if name == "sft":
            trl = [{"messages": [system, {"role": "user", "content": u}, {"role": "assistant", "content": a}]}
                   for u, a in zip(users, answers)]
            oai = [{"messages": [system, {"role": "user", "content": u}, {"role": "assistant", "content": a, "weight": 1}]}
                   for u, a in zip(users, answers)]
            write(f"trl/{split}.jsonl", "trl_messages", split, trl)
            write(f"openai/{split}.jsonl", "openai_chat", split, oai)
        else:
            trl = [{"prompt": [system, {"role": "user", "content": u}], "chosen": [{"role": "assistant", "content": a}],
                    "rejected": [{"role": "assistant", "content": "Please call us."}]} for u, a in zip(users, answers)]
            oai = [{"input": {"messages": [system, {"role": "user", "content": u}]},
                    "preferred_output": [{"role": "assistant", "content": a}],
                    "non_preferred_output": [{"role": "assistant", "content": "Please call us."}]}
                   for u, a in zip(users, answers)]
            write(f"trl/{split}.jsonl", "trl_preference", split, trl)
            write(f"openai_dpo/{split}.jsonl", "openai_dpo", split, oai)
    manifest = {"dataset": name, "version": version, "window": {"start": end, "end": end}, "files": files}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    Lake(settings.lake).write_json({"dataset": name, "version": version, "path": str(folder), "window_end": end},
                                   "datasets", name, "latest.json")
    return version


def write_champion(settings, *, version="1", dataset_version=None, train_ids=(), label_distribution=None,
                   reference=None) -> dict:
    """A champion pointer (as intent_promotion.finalize writes it) with its training-set file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feedback_loop.lake.files import Lake

    folder = Path(settings.lake) / "retrain" / "intent_classifier" / f"fixture-{version}"
    (folder / "data").mkdir(parents=True, exist_ok=True)
    train = folder / "data" / "train.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in train_ids] or pa.array([], pa.string()),
                             "label": ["x" for _ in train_ids] or pa.array([], pa.string()),
                             "example_id": list(train_ids) or pa.array([], pa.string())}), train)
    pointer = {"model": "acsr-intent-classifier", "version": version, "dataset_version": dataset_version,
               "train_file": str(train), "training_key": f"fixture-{version}",
               "label_distribution": label_distribution or {}, "reference_distribution": reference,
               "model_path": os.devnull}
    Lake(settings.lake).write_json(pointer, "models", "intent_classifier", "champion.json")
    return pointer


def banking_relabels(per_intent: int = 8, skip: int = 3) -> list[dict]:
    """Correct Banking77 training examples beyond the base selection (a stable hash order per intent), as human
    relabels: a challenger trained on them is better than the base model."""
    with open(BANKING, newline="") as fh:
        rows = [{"text": " ".join(r["text"].split()), "label": r["category"]} for r in csv.DictReader(fh)]
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["label"], []).append(r)
    out = []
    for label in sorted(by):
        picked = sorted(by[label], key=lambda r: hashlib.sha1(r["text"].encode()).hexdigest())[skip: skip + per_intent]
        out += [{"example_id": hashlib.sha1(f"{label}{i}".encode()).hexdigest()[:20], "text": r["text"],
                 "label": label, "source": "override"} for i, r in enumerate(picked)]
    return out
