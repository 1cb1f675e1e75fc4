"""Prove that the feedback loop makes the agent better: a week of traffic classified by the champion, the
nightly pipeline turning the week's human overrides into relabels, a retrain with champion/challenger
promotion, and the next week's traffic classified by the new champion.

    .venv/bin/python bench/prove_loop.py                       # 7 + 7 days x 300 conversations: a few minutes
    .venv/bin/python bench/prove_loop.py --json bench/results/prove_loop.json
    .venv/bin/python bench/prove_loop.py --taxonomy coarse   # the same loop on a company's own taxonomy

It exits 1 when the loop does not improve what it claims (promotion, week-2 accuracy and override rate, paired
tests; with --taxonomy coarse also that the champion speaks the company's taxonomy and learnt the new intent),
so it can run as a check.

`--taxonomy coarse` (issue 19): a company whose taxonomy is Banking77 merged into 17 coarser classes, several
renamed (`COARSE`); its base set (`ACSR_RETRAIN_TAXONOMY`, a CSV written in the work folder) leaves out every
currency-exchange message, so `currency_exchange` is a new intent that only the week's relabels can teach;
its gold set is split off the base set and frozen; the mapping Banking77 -> company (`ACSR_RETRAIN_INTENT_MAPPING`)
turns the people's overrides (the sample world speaks Banking77) into relabels of the company's taxonomy. The
sample agent is judged in the company's taxonomy: a prediction counts as right when it is the coarse class of
the message's true intent (the generator is told the true Banking77 intent then, another member of the
predicted class otherwise).

How it measures, honestly:
- The starting champion is trained on a small seed of the base labelled set (`--base-per-intent`, default
  10 of Banking77 train per intent). The sample traffic draws its customers' messages from Banking77 train,
  so a champion trained on all of it would have seen almost every message already.
- Week 1 (days 1-7): the sample agent classifies with champion v1 (the generator's classifier hook). The
  nightly stages (land, GX validation, conversation facts, summary, datasets, retraining decision) run for
  each night with only the data exported by that night; the retrain then uses the latest relabel version.
- Week 2 (days 8-14) is generated twice from the same seed, so the customers, messages and reviewer draws
  are identical: once classified by the promoted champion, once by v1 (the counterfactual "no retrain").
  The difference between the two is the effect of the loop, on traffic no model was trained on.
- Figures per week, from the landing files (the sample's hidden `true_intent`, the agent's first
  `intent_classified` event, the intent corrections in the override log, including reviews exported up to
  two days after the week): accuracy on traffic, intent-override rate, the same on the conversations whose
  opening message is in neither model's training set (unseen), and accuracy on the frozen gold set
  (Banking77 test, never trained on) with the McNemar test the promotion used.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
START = date(2026, 11, 2)  # fixed days: the figures do not depend on when the proof runs
REVIEW_LAG = 2  # days after a conversation its review can still be exported (generator OVERRIDE_LOOKBACK)


# The second taxonomy: Banking77 merged into coarser, partly renamed classes. currency_exchange is the new
# intent: none of its messages is in the company's base set.
COARSE = {
    "card_delivery": ["card_arrival", "card_delivery_estimate"],
    "card_activation": ["activate_my_card", "card_linking"],
    "new_card_order": ["order_physical_card", "get_physical_card", "getting_spare_card", "card_about_to_expire"],
    "virtual_cards": ["getting_virtual_card", "get_disposable_virtual_card", "disposable_card_limits",
                      "virtual_card_not_working"],
    "card_problem": ["card_not_working", "contactless_not_working", "card_swallowed", "card_acceptance",
                     "declined_card_payment"],
    "card_security": ["lost_or_stolen_card", "compromised_card", "lost_or_stolen_phone", "card_payment_not_recognised"],
    "pin_and_passcode": ["change_pin", "pin_blocked", "passcode_forgotten"],
    "card_payments": ["pending_card_payment", "reverted_card_payment?", "card_payment_fee_charged",
                      "transaction_charged_twice", "extra_charge_on_statement", "direct_debit_payment_not_recognised"],
    "cash_withdrawal": ["atm_support", "cash_withdrawal_charge", "cash_withdrawal_not_recognised",
                        "declined_cash_withdrawal", "pending_cash_withdrawal", "wrong_amount_of_cash_received"],
    "top_up": ["automatic_top_up", "pending_top_up", "top_up_by_bank_transfer_charge", "top_up_by_card_charge",
               "top_up_by_cash_or_cheque", "top_up_failed", "top_up_limits", "top_up_reverted", "topping_up_by_card",
               "verify_top_up"],
    "transfers_out": ["cancel_transfer", "declined_transfer", "failed_transfer", "pending_transfer",
                      "transfer_fee_charged", "transfer_not_received_by_recipient", "transfer_timing",
                      "beneficiary_not_allowed"],
    "money_in": ["receiving_money", "transfer_into_account", "balance_not_updated_after_bank_transfer",
                 "balance_not_updated_after_cheque_or_cash_deposit"],
    "refunds": ["Refund_not_showing_up", "request_refund"],
    "identity_verification": ["unable_to_verify_identity", "verify_my_identity", "verify_source_of_funds",
                              "why_verify_identity"],
    "account": ["edit_personal_details", "terminate_account", "age_limit"],
    "wallets_and_networks": ["apple_pay_or_google_pay", "visa_or_mastercard", "supported_cards_and_currencies",
                             "country_support"],
    "currency_exchange": ["exchange_charge", "exchange_rate", "exchange_via_app", "fiat_currency_support",
                          "card_payment_wrong_exchange_rate", "wrong_exchange_rate_for_cash_withdrawal"],
}
NEW_INTENT = "currency_exchange"


def coarse_taxonomy(folder: Path) -> dict:
    """Write the company's base set (CSV) and its Banking77 -> company mapping (JSON); return paths and maps."""
    import csv

    from feedback_loop.retrain import intent_assembly as ia

    to_coarse = {b: c for c, members in COARSE.items() for b in members}
    rows = ia._read_csv("train.csv")
    missing = sorted({r["label"] for r in rows} - set(to_coarse))
    assert not missing, f"COARSE leaves Banking77 intents out: {missing}"
    folder.mkdir(parents=True, exist_ok=True)
    taxonomy, mapping = folder / "company_intents.csv", folder / "banking77_to_company.json"
    with open(taxonomy, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "intent", "source"])
        for r in rows:
            if to_coarse[r["label"]] != NEW_INTENT:
                w.writerow([r["text"], to_coarse[r["label"]], "company labelled set"])
    mapping.write_text(json.dumps(to_coarse, indent=1, sort_keys=True))
    truth = {ia.normalise(r["text"]): r["label"] for r in rows + ia._read_csv("test.csv")}
    return {"taxonomy": str(taxonomy), "mapping": str(mapping), "to_coarse": to_coarse, "truth": truth}


def judged_in_company_taxonomy(classify, tax: dict):
    """The sample agent's classifier hook for a coarse champion: the generator's world speaks Banking77, so a
    coarse prediction is handed to it as the true Banking77 intent when it is that intent's class (right in
    the company's taxonomy) and as another member of the predicted class otherwise (wrong)."""
    from feedback_loop.retrain import intent_assembly as ia

    def hook(texts: list[str]) -> list[tuple[str, float]]:
        out = []
        for text, (label, conf) in zip(texts, classify(texts)):
            true77 = tax["truth"].get(ia.normalise(text))
            if true77 is not None and tax["to_coarse"][true77] == label:
                out.append((true77, conf))
            else:
                members = [m for m in COARSE.get(label, [label]) if m != true77] or COARSE.get(label, [label])
                out.append((members[0], conf))
        return out

    return hook


def _days(first: date, n: int) -> list[str]:
    return [str(first + timedelta(days=i)) for i in range(n)]


def nightly(settings, day: str) -> dict:
    """The nightly stages the loop needs (gaps, signals and the warehouse are left out: they feed people)."""
    from feedback_loop import nightly as n

    n.land_validate_model(settings, day)
    built = n.build_datasets(settings, day)
    decision = n.decide_retraining(settings, day)
    return {"relabels": built["datasets"]["intent_relabels"], "decision": decision["intent_classifier"]}


def measure(landing: Path, days: list[str], trained_texts: set[str]) -> dict:
    """Accuracy and intent-override rate of the conversations of `days`, from the landing files."""
    import duckdb
    from feedback_loop.retrain.intent_assembly import normalise

    last = str(date.fromisoformat(days[-1]) + timedelta(days=REVIEW_LAG))
    events = [str(landing / "agent_events" / f"dt={d}" / "part-0000.jsonl.gz") for d in days]
    reviews = [str(p) for p in sorted((landing / "overrides").glob("dt=*/part-0000.jsonl"))
               if days[0] <= p.parent.name[3:] <= last]
    con = duckdb.connect()
    rows = con.execute(f"""
        WITH ev AS (SELECT * FROM read_json({events!r}, format='newline_delimited', union_by_name=true,
                                             columns={{'conversation_id': 'VARCHAR', 'ts': 'VARCHAR', 'turn': 'BIGINT',
                                                      'event_type': 'VARCHAR', 'text': 'VARCHAR', 'intent': 'VARCHAR',
                                                      'true_intent': 'VARCHAR', 'mode': 'VARCHAR'}})),
        conv AS (
            SELECT conversation_id,
                arg_min(text, ts) FILTER (event_type = 'customer_message') AS text,
                arg_min(true_intent, ts) FILTER (event_type = 'customer_message') AS truth,
                arg_min(intent, ts) FILTER (event_type = 'intent_classified') AS predicted
            FROM ev GROUP BY conversation_id),
        fixed AS (SELECT DISTINCT conversation_id FROM read_json({reviews!r}, format='newline_delimited',
                      union_by_name=true, columns={{'conversation_id': 'VARCHAR', 'stage': 'VARCHAR', 'outcome': 'VARCHAR'}})
                  WHERE stage = 'intent' AND outcome = 'corrected')
        SELECT c.text, c.truth = c.predicted, f.conversation_id IS NOT NULL, c.conversation_id
        FROM conv c LEFT JOIN fixed f USING (conversation_id)
        WHERE c.truth IS NOT NULL AND c.predicted IS NOT NULL ORDER BY c.conversation_id""").fetchall()
    con.close()

    def stats(subset):
        n = len(subset)
        return {"conversations": n, "accuracy": round(sum(r[1] for r in subset) / n, 4) if n else None,
                "override_rate": round(sum(r[2] for r in subset) / n, 4) if n else None}

    unseen = [r for r in rows if normalise(r[0]) not in trained_texts]
    return {"all": stats(rows), "unseen": stats(unseen),
            "_paired": {scope: {r[3]: (bool(r[1]), bool(r[2])) for r in subset}
                        for scope, subset in (("all", rows), ("unseen", unseen))}}


def paired(before: dict, after: dict) -> dict:
    """Exact McNemar tests on the same conversations (week 2 without vs with the retrain): accuracy (is the
    new champion right more often) and intent overrides (are they rarer)."""
    from feedback_loop.retrain.intent_model import mcnemar

    out = {}
    for scope in ("all", "unseen"):
        ids = sorted(set(before["_paired"][scope]) & set(after["_paired"][scope]))
        b = [before["_paired"][scope][i] for i in ids]
        a = [after["_paired"][scope][i] for i in ids]
        out[scope] = {"conversations": len(ids),
                      "accuracy": mcnemar([x[0] for x in b], [x[0] for x in a]),
                      "no_override": mcnemar([not x[1] for x in b], [not x[1] for x in a])}
    return out


def run_proof(workdir: Path, days: int, cpd: int, base_per_intent: int, seed: int,
              taxonomy: str = "banking77") -> dict:
    os.environ["ACSR_DATA_DIR"] = str(workdir / "loop")
    os.environ["ACSR_RETRAIN_BASE_PER_INTENT"] = str(base_per_intent)
    tax = None
    if taxonomy == "coarse":
        sys.path.insert(0, str(ROOT / "include"))
        tax = coarse_taxonomy(workdir / "company")
        os.environ["ACSR_RETRAIN_TAXONOMY"] = tax["taxonomy"]
        os.environ["ACSR_RETRAIN_INTENT_MAPPING"] = tax["mapping"]
    os.environ.setdefault("ACSR_MAX_BAD_ROW_SHARE", "0.5")
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    import pyarrow.parquet as pq
    from feedback_loop.retrain import intent_assembly as ia
    from feedback_loop.retrain import intent_model, registry
    from feedback_loop.retrain import intent_retrain as ir
    from feedback_loop.settings import Settings
    from feedback_loop_sample.generator import generate

    settings = Settings.load()
    t0 = time.monotonic()
    timings = {}

    def champion_classifier():
        classify = intent_model.as_classifier(registry.load_champion_model(settings))
        return judged_in_company_taxonomy(classify, tax) if tax else classify

    def classes():
        return sorted(str(c) for c in registry.load_champion_model(settings).classes_)

    ir.ensure_champion(settings, ir.resolve_request(settings, {"reason": "proof: baseline"}), "proof")
    v1 = registry.champion(settings)
    classify_v1 = champion_classifier()
    classes_v1 = classes()
    timings["baseline"] = time.monotonic() - t0

    week1, week2 = _days(START, days), _days(START + timedelta(days=days), days)
    tail = _days(START + timedelta(days=days), REVIEW_LAG)  # reviews of week 1 exported after it
    print(f"[proof] week 1 {week1[0]}..{week1[-1]}: the agent classifies with champion v{v1['version']}", flush=True)
    generate(settings.landing, START, date.fromisoformat(tail[-1]), conversations_per_day=cpd, seed=seed,
             classifier=classify_v1)
    week1_landing = Path(settings.landing)
    timings["generate_week1"] = time.monotonic() - t0 - sum(timings.values())
    nights = {}
    for d in week1:
        nights[d] = nightly(settings, d)
        r, dec = nights[d]["relabels"], nights[d]["decision"]
        print(f"[proof] night {d}: relabels {r['status']} ({r['examples']} examples); retrain decision "
              f"{'YES' if dec['retrain'] else 'no'}: {'; '.join(dec['reasons'])}", flush=True)
    timings["nightly_week1"] = time.monotonic() - t0 - sum(timings.values())

    outcome = ir.run(settings, ir.resolve_request(settings, {"reason": "proof: after week 1"}), "proof")
    v2 = registry.champion(settings)
    classes_v2 = classes()
    print(f"[proof] retrain: {json.dumps(outcome.get('outcome', outcome), default=str)[:600]}", flush=True)
    timings["retrain"] = time.monotonic() - t0 - sum(timings.values())

    end2 = date.fromisoformat(week2[-1]) + timedelta(days=REVIEW_LAG)
    arms = {"after_retrain": champion_classifier(), "no_retrain": classify_v1}
    landings = {}
    for arm, classify in arms.items():
        landings[arm] = workdir / f"week2-{arm}"
        generate(landings[arm], date.fromisoformat(week2[0]), end2, conversations_per_day=cpd, seed=seed,
                 classifier=classify)
    timings["generate_week2"] = time.monotonic() - t0 - sum(timings.values())

    def texts(ptr):
        return {ia.normalise(t) for t in pq.read_table(ptr["train_file"], columns=["text"]).column("text").to_pylist()}

    # "Unseen": week 1 against what v1 was trained on (all it knew then); week 2 against both models'
    # training sets, so that both arms are scored on the same conversations that neither model saw.
    seen1, seen_both = texts(v1), texts(v1) | texts(v2)
    figures = {
        "week1_v1": measure(week1_landing, week1, seen1),
        "week2_no_retrain": measure(landings["no_retrain"], week2, seen_both),
        "week2_after_retrain": measure(landings["after_retrain"], week2, seen_both),
    }
    tests = paired(figures["week2_no_retrain"], figures["week2_after_retrain"])
    for f in figures.values():
        f.pop("_paired")
    ev = json.loads(Path(outcome["outcome"]["model_card"]).with_name(f"evaluation-vs-{v1['version']}.json").read_text()) \
        if outcome.get("outcome") else None
    result = {
        "taxonomy": {"name": taxonomy, "classes_v1": classes_v1, "classes_after": classes_v2,
                     "assembly": _assembly_taxonomy(outcome)},
        "params": {"days": days, "conversations_per_day": cpd, "base_per_intent": base_per_intent, "seed": seed,
                   "week1": [week1[0], week1[-1]], "week2": [week2[0], week2[-1]]},
        "champion_v1": {"version": v1["version"], "gold_accuracy": v1["gold"]["accuracy"], "gold_ece": v1["gold"]["ece"],
                        "train_rows": len(pq.read_table(v1["train_file"]))},
        "champion_after": {"version": v2["version"], "gold_accuracy": v2["gold"]["accuracy"], "gold_ece": v2["gold"]["ece"],
                           "train_rows": len(pq.read_table(v2["train_file"])), "dataset_version": v2.get("dataset_version")},
        "promotion": outcome.get("outcome", {}).get("reasons") if outcome.get("outcome") else outcome.get("skipped"),
        "mcnemar_gold": (ev or {}).get("decision", {}).get("mcnemar"),
        "holdout": (ev or {}).get("metrics", {}),
        "traffic": figures,
        "week2_paired_tests": tests,
        "nights": {d: {"retrain": n["decision"]["retrain"], "reasons": n["decision"]["reasons"],
                       "relabels": n["relabels"]["examples"]} for d, n in nights.items()},
        "timings_s": {k: round(v, 1) for k, v in timings.items()},
    }
    if ev:
        result["holdout"] = {who: (m or {}).get("holdout", {}) and {k: m["holdout"].get(k) for k in ("n", "accuracy", "macro_f1")}
                             for who, m in ev["metrics"].items()}
    return result


def _assembly_taxonomy(outcome: dict) -> dict | None:
    card = (outcome.get("outcome") or {}).get("model_card")
    if not card:
        return None
    doc = json.loads(Path(card).with_name("assembly.json").read_text())
    t = doc.get("taxonomy") or {}
    return {k: t.get(k) for k in ("source", "hash", "gold", "mapped", "new_intents")} | {
        "train_labels": sorted(doc["label_distribution"])}


def claims(r: dict) -> list[tuple[str, bool, str]]:
    """What the proof claims, each checked: (claim, holds, figures)."""
    t, p = r["traffic"], r["week2_paired_tests"]["all"]
    a_after, a_before = t["week2_after_retrain"]["all"], t["week2_no_retrain"]["all"]
    out = [
        ("the retrain promoted a new champion", r["champion_after"]["version"] != r["champion_v1"]["version"],
         f"v{r['champion_v1']['version']} -> v{r['champion_after']['version']}: {r['promotion']}"),
        ("gold accuracy rose", r["champion_after"]["gold_accuracy"] > r["champion_v1"]["gold_accuracy"],
         f"{r['champion_v1']['gold_accuracy']:.4f} -> {r['champion_after']['gold_accuracy']:.4f}"),
        ("week-2 intent accuracy is higher after the retrain, significantly (paired, p < 0.05)",
         a_after["accuracy"] > a_before["accuracy"] and p["accuracy"]["p_value"] < 0.05,
         f"{a_before['accuracy']:.3f} -> {a_after['accuracy']:.3f}, p = {p['accuracy']['p_value']:.2g}"),
        ("week-2 intent-override rate falls after the retrain, significantly (paired, p < 0.05)",
         a_after["override_rate"] < a_before["override_rate"] and p["no_override"]["p_value"] < 0.05,
         f"{a_before['override_rate']:.3f} -> {a_after['override_rate']:.3f}, p = {p['no_override']['p_value']:.2g}"),
    ]
    tx = r["taxonomy"]
    if tx["name"] == "coarse":
        company = set(COARSE)
        asm = tx["assembly"] or {}
        out += [
            ("the champion is trained on the company's taxonomy (no Banking77 class, no new intent yet)",
             set(tx["classes_v1"]) == company - {NEW_INTENT}, f"{len(tx['classes_v1'])} classes: {tx['classes_v1']}"),
            ("overrides became relabels in the company's taxonomy (mapped, every training label a company class)",
             bool((asm.get("mapped") or {}).get("relabel_train_renamed")) and set(asm.get("train_labels") or []) <= company,
             f"mapped {asm.get('mapped')}"),
            (f"the new intent {NEW_INTENT} is learnt from relabels and in the new champion",
             NEW_INTENT in tx["classes_after"] and (asm.get("new_intents") or {}).get(NEW_INTENT, {}).get("status") == "learnt",
             f"{(asm.get('new_intents') or {}).get(NEW_INTENT)}"),
        ]
    return out


def table(r: dict) -> str:
    t = r["traffic"]
    lines = ["| measure | week 1 (champion v{a}) | week 2, no retrain (v{a}) | week 2 after retrain (v{b}) |".format(
        a=r["champion_v1"]["version"], b=r["champion_after"]["version"]), "| --- | ---: | ---: | ---: |"]
    for scope, label in (("all", "all conversations"), ("unseen", "opening message never trained on")):
        for k, name in (("accuracy", "intent accuracy"), ("override_rate", "intent-override rate")):
            lines.append(f"| {name}, {label} | {t['week1_v1'][scope][k]:.3f} | {t['week2_no_retrain'][scope][k]:.3f} | "
                         f"{t['week2_after_retrain'][scope][k]:.3f} |")
        lines.append(f"| conversations, {label} | {t['week1_v1'][scope]['conversations']} | "
                     f"{t['week2_no_retrain'][scope]['conversations']} | {t['week2_after_retrain'][scope]['conversations']} |")
    gold = "Banking77 test, 3080" if r["taxonomy"]["name"] == "banking77" else "company gold, split off and frozen"
    lines.append(f"| gold accuracy ({gold}) | {r['champion_v1']['gold_accuracy']:.4f} | "
                 f"{r['champion_v1']['gold_accuracy']:.4f} | {r['champion_after']['gold_accuracy']:.4f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--conversations-per-day", type=int, default=300)
    ap.add_argument("--base-per-intent", type=int, default=None,
                    help="base examples per intent of the seed champion (default 10 for banking77, 45 for coarse)")
    ap.add_argument("--taxonomy", choices=("banking77", "coarse"), default="banking77")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--workdir", default=None, help="kept if given; a temporary folder otherwise")
    ap.add_argument("--json", default=None, help="also write every figure here")
    args = ap.parse_args()
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="acsr-proof-"))
    if (workdir / "loop").exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    try:
        per_intent = args.base_per_intent or (45 if args.taxonomy == "coarse" else 10)
        r = run_proof(workdir, args.days, args.conversations_per_day, per_intent, args.seed, args.taxonomy)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    r["elapsed_s"] = round(time.monotonic() - start, 1)
    print("\n" + table(r))
    m = r["mcnemar_gold"] or {}
    for scope, t in r["week2_paired_tests"].items():
        a, o = t["accuracy"], t["no_override"]
        print(f"week 2 paired ({scope}, {t['conversations']} conversations): right only after the retrain "
              f"{a['only_challenger_right']}, only without it {a['only_champion_right']}, p = {a['p_value']:.2g}; "
              f"overridden only without the retrain {o['only_challenger_right']}, only after it "
              f"{o['only_champion_right']}, p = {o['p_value']:.2g}")
    print(f"\npromotion: {r['promotion']}\nMcNemar on gold: only the new champion right {m.get('only_challenger_right')}, "
          f"only v1 right {m.get('only_champion_right')}, p = {m.get('p_value')}\nheld-out relabels: {r['holdout']}"
          f"\nelapsed {r['elapsed_s']} s {r['timings_s']}")
    r["claims"] = [{"claim": c, "holds": ok, "figures": f} for c, ok, f in claims(r)]
    print()
    for c in r["claims"]:
        print(f"[{'ok' if c['holds'] else 'FAILED'}] {c['claim']}: {c['figures']}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(r, indent=2, default=str) + "\n")
    return 0 if all(c["holds"] for c in r["claims"]) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "include"))
    sys.exit(main())
