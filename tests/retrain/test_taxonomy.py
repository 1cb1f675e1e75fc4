"""The company's own intent taxonomy (issue 19): a labelled file instead of Banking77, a gold set split off and
frozen when there is none, relabels naming intents the base set does not know, renamed/retired intents, a
pluggable model step, and the champion as the agent loads it from the registry (pyfunc by alias)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from retrain_helpers import mlflow_db, write_relabel_version

BANKING = Path(__file__).resolve().parents[2] / "include" / "feedback_loop" / "data" / "banking77" / "train.csv"
# Three Banking77 intents under the company's own names.
COMPANY = {"card_arrival": "delivery", "lost_or_stolen_card": "lost_card", "top_up_failed": "topup_problem"}


def _banking(intent: str) -> list[str]:
    with open(BANKING, newline="") as fh:
        return [" ".join(r["text"].split()) for r in csv.DictReader(fh) if r["category"] == intent]


def _write_csv(path: Path, rows: list[dict], columns=("text", "intent")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(columns))
        w.writeheader()
        for r in rows:
            w.writerow({c: r.get(c) for c in columns})
    return path


@pytest.fixture
def company(data_dir, tmp_path_factory, monkeypatch):
    """Settings pointing at a 3-intent company taxonomy (45 messages each), no gold set of its own."""
    from feedback_loop.settings import Settings

    rows = [{"text": t, "intent": ours} for theirs, ours in COMPANY.items() for t in _banking(theirs)[:45]]
    path = _write_csv(data_dir / "company_intents.csv", rows)
    monkeypatch.setenv("ACSR_RETRAIN_TAXONOMY", str(path))
    s = Settings.load()
    mlflow_db(s, tmp_path_factory.getbasetemp() / "mlflow-template")
    return s


def test_a_three_class_taxonomy_trains_and_predicts_only_its_classes(company):
    from feedback_loop.retrain import intent_assembly as ia
    from feedback_loop.retrain import intent_model, registry, store
    from feedback_loop.retrain import intent_retrain as ir

    s = company
    out = ir.run(s, ir.resolve_request(s, {"dataset_version": "none"}))
    assert out["bootstrap"]["bootstrapped"] is True
    model = registry.load_champion_model(s)
    assert sorted(model.classes_) == ["delivery", "lost_card", "topup_problem"]
    labels, conf = intent_model.predict(model, ["my card has not arrived yet", "someone stole my card",
                                                "the top-up did not go through", "what is the weather like"])
    assert set(labels) <= set(COMPANY.values()) and all(0 < c <= 1 for c in conf)

    ptr = registry.champion(s)
    assembly = store.read_json(str(Path(ptr["model_path"]).parent / "assembly.json"))
    train = {ia.normalise(r["text"]) for r in store.read_parquet_rows(assembly["files"]["train"])}
    gold = {ia.normalise(r["text"]) for r in store.read_parquet_rows(assembly["files"]["gold"])}
    assert gold and train and not gold & train, "gold never overlaps training"
    g = assembly["taxonomy"]["gold"]
    assert g["split_off"] is True and g["rows"] == len(gold) and 10 <= len(gold) <= 50
    frozen = json.loads((Path(s.lake) / "retrain" / "intent_classifier" / "gold" / "frozen.json").read_text())
    assert frozen["hash"] == g["hash"] and frozen["source"] == s.retrain_taxonomy
    card = Path(ptr["model_card"]).read_text()
    assert "split off the labelled data by a stable text hash" in card and g["hash"] in card


def test_the_frozen_gold_set_stays_when_the_taxonomy_grows(company):
    from feedback_loop.retrain import intent_assembly as ia

    s = company
    first = ia.taxonomy_sets(s)
    path = Path(s.retrain_taxonomy)
    more = [{"text": t, "intent": "delivery"} for t in _banking("card_arrival")[45:90]]
    with open(path, "a", newline="") as fh:
        csv.DictWriter(fh, fieldnames=["text", "intent"]).writerows(more)
    second = ia.taxonomy_sets(s)
    assert second["taxonomy"]["hash"] != first["taxonomy"]["hash"]
    assert second["gold_info"]["hash"] == first["gold_info"]["hash"]
    assert [r["text"] for r in second["gold"]] == [r["text"] for r in first["gold"]]
    gold = {ia.normalise(r["text"]) for r in second["gold"]}
    assert not gold & {ia.normalise(r["text"]) for r in second["base"]}


def test_a_relabel_with_an_unknown_intent_is_learnt_or_reported_never_dropped_silently(company):
    from feedback_loop.retrain import intent_model, registry
    from feedback_loop.retrain import intent_retrain as ir

    s = company
    ir.ensure_champion(s, ir.resolve_request(s, {}))
    crypto = _banking("receiving_money")[:12]
    pets = _banking("pin_blocked")[:2]
    train = ([{"example_id": f"c{i}", "text": t, "label": "money_in"} for i, t in enumerate(crypto[:9])]
             + [{"example_id": f"p{i}", "text": t, "label": "pin_help"} for i, t in enumerate(pets)])
    test = [{"example_id": f"ct{i}", "text": t, "label": "money_in"} for i, t in enumerate(crypto[9:])]
    write_relabel_version(s, "2026-11-18", {"train": train, "test": test})
    out = ir.run(s, ir.resolve_request(s, {"promotion_policy": "always"}))

    ev = json.loads(Path(out["registered"]["evaluation"]).read_text())
    assembly = json.loads((Path(ev["assembly"]) if "assembly" in ev else
                           Path(out["registered"]["evaluation"]).parent / "assembly.json").read_text())
    new = assembly["taxonomy"]["new_intents"]
    assert new["money_in"]["status"] == "learnt" and new["money_in"]["relabels"] == 9
    assert new["pin_help"]["status"].startswith("reported: 2 relabel(s)")
    assert assembly["counts"]["relabel_new_intent_too_few"] == 2
    change = ev["taxonomy_change"]
    assert change["added"] == ["money_in"] and change["shared_classes"] == 3
    assert change["added_held_out"]["money_in"]["held_out"] == 3
    champion = registry.load_champion_model(s)
    assert "money_in" in champion.classes_ and "pin_help" not in champion.classes_
    labels, _ = intent_model.predict(champion, crypto[9:])
    assert list(labels).count("money_in") >= 2
    card = Path(out["outcome"]["model_card"]).read_text()
    assert "New intent `money_in` named by 9 relabel(s): learnt" in card
    assert "New intent `pin_help` named by 2 relabel(s): reported" in card
    assert "added ['money_in']" in card


def test_renamed_and_retired_intents_are_mapped_in_every_set(company, monkeypatch):
    from feedback_loop.retrain import intent_assembly as ia
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.settings import Settings

    monkeypatch.setenv("ACSR_RETRAIN_INTENT_MAPPING", json.dumps({"lost_card": "card_security", "topup_problem": None}))
    s = Settings.load()
    write_relabel_version(s, "2026-11-18", {"train": [{"example_id": "x1", "text": "i think my card was stolen today",
                                                       "label": "lost_card"}]})
    a = ia.assemble(s, ir.resolve_request(s, {}))
    from feedback_loop.retrain import store

    train = store.read_parquet_rows(a["files"]["train"])
    gold = store.read_parquet_rows(a["files"]["gold"])
    for rows in (train, gold):
        assert {r["label"] for r in rows} == {"delivery", "card_security"}
    assert a["taxonomy"]["mapped"]["relabel_train_renamed"] == 1
    assert a["taxonomy"]["mapped"]["base_retired"] > 0 and a["taxonomy"]["mapped"]["gold_retired"] > 0


@pytest.mark.parametrize("content,problem", [
    ("text,label\nhello,greeting\n", "missing column intent"),
    ("text,intent\n", "empty"),
    ("text,intent\nMy card is lost,lost_card\nmy  card is LOST,delivery\n", "the same text has two intents"),
    ("text,intent,weight\nhello,greeting,heavy\n", "not a number"),
    ("text,intent\n,greeting\n", "empty text"),
])
def test_a_bad_taxonomy_file_is_refused_before_anything_trains(data_dir, monkeypatch, content, problem):
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.retrain.taxonomy import TaxonomyError
    from feedback_loop.settings import Settings

    path = data_dir / "bad.csv"
    path.write_text(content)
    monkeypatch.setenv("ACSR_RETRAIN_TAXONOMY", str(path))
    s = Settings.load()
    with pytest.raises(TaxonomyError, match=problem) as err:
        ir.run(s, ir.resolve_request(s, {}))
    assert str(path) in str(err.value)
    assert not (Path(s.lake) / "retrain").exists() and not (Path(s.lake) / "models").exists()


def test_json_lines_and_parquet_folders_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from feedback_loop.retrain.taxonomy import TaxonomyError, read_labelled

    folder = tmp_path / "intents"
    folder.mkdir()
    (folder / "a.jsonl").write_text(json.dumps({"text": "where is my card", "intent": "delivery"}) + "\n")
    pq.write_table(pa.table({"text": ["card stolen"], "intent": ["lost_card"], "weight": [2.0]}), folder / "b.parquet")
    rows = read_labelled(str(folder))
    assert [(r["text"], r["label"], r["weight"]) for r in rows] == [("where is my card", "delivery", 1.0),
                                                                     ("card stolen", "lost_card", 2.0)]
    with pytest.raises(TaxonomyError, match="no such file"):
        read_labelled(str(tmp_path / "missing.csv"))


def make_step():
    """A stand-in for a team's own model step (e.g. sentence embeddings): character TF-IDF + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4)), LogisticRegression(max_iter=200))


def test_a_pluggable_model_step_and_the_pyfunc_the_agent_loads_by_alias(company, monkeypatch):
    import mlflow.pyfunc
    import pandas as pd
    from feedback_loop.retrain import intent_model, registry
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.settings import Settings

    monkeypatch.setenv("ACSR_RETRAIN_MODEL", f"{__name__}:make_step")
    s = Settings.load()
    ir.ensure_champion(s, ir.resolve_request(s, {}))
    local = registry.load_champion_model(s)
    assert type(local.steps[-1][1]).__name__ == "LogisticRegression"
    texts = ["my card still has not come", "someone took my card", "top up keeps failing", ""]
    labels, conf = intent_model.predict(local, texts)
    with registry.mlflow_for(s):
        served = mlflow.pyfunc.load_model(f"models:/{registry.INTENT_MODEL}@champion")
    out = served.predict(pd.DataFrame({"text": texts}))
    assert list(out.columns) == ["intent", "confidence"]
    assert out["intent"].tolist() == [str(x) for x in labels]
    assert out["confidence"].round(9).tolist() == [round(float(c), 9) for c in conf]


def test_a_taxonomy_the_champion_does_not_share_keeps_it_unless_a_person_decides(data_dir, tmp_path_factory,
                                                                                  monkeypatch):
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.retrain import registry
    from feedback_loop.settings import Settings

    rows = [{"text": t, "intent": ours} for theirs, ours in COMPANY.items() for t in _banking(theirs)[:30]]
    first = _write_csv(data_dir / "first.csv", rows)
    renamed = _write_csv(data_dir / "second.csv", [{**r, "intent": r["intent"].upper()} for r in rows])
    monkeypatch.setenv("ACSR_RETRAIN_TAXONOMY", str(first))
    mlflow_db(Settings.load(), tmp_path_factory.getbasetemp() / "mlflow-template")
    s = Settings.load()
    ir.ensure_champion(s, ir.resolve_request(s, {}))
    monkeypatch.setenv("ACSR_RETRAIN_TAXONOMY", str(renamed))
    monkeypatch.setenv("ACSR_RETRAIN_GOLD_SHARE", "0.25")  # a new gold split for the new taxonomy
    s = Settings.load()
    kept = ir.run(s, ir.resolve_request(s, {}))
    assert kept["outcome"]["promoted"] is False and "no paired comparison" in kept["outcome"]["reasons"][0]
    assert registry.champion(s)["version"] == "1"
    forced = ir.run(s, ir.resolve_request(s, {"promotion_policy": "always", "force": True}))
    assert forced["outcome"]["promoted"] is True
    assert sorted(registry.load_champion_model(s).classes_) == ["DELIVERY", "LOST_CARD", "TOPUP_PROBLEM"]
