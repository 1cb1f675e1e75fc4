"""Approval gates: what a person sees before a model goes live or money is spent, and the record of what
they decided.

The gate itself is an Airflow human-in-the-loop task (feedback_loop.review.operators.ApprovalGate); this
module holds everything that needs no Airflow: the gate's configuration (Settings, per DAG), whether a
decision needs a person at all, the evidence as a subject and a Markdown body, the decision records
(`<lake>/approvals/<decision id>.json`, one per gate task instance, rewritten from `pending` to its outcome)
with their warehouse view `approval_decisions`, how a promotion applies the gate's answer, and the rows
the Flywheel page shows.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from datetime import UTC, datetime

from feedback_loop.lake.files import Lake, filesystem_for, join
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

GATES = ("promotion", "finetune")
MODES = ("auto", "required")
OUTCOMES = ("pending", "approved", "rejected", "auto_approved", "not_needed")
FOLDER = "approvals"
APPROVE, REJECT = "Approve", "Reject"
DEFAULT_EPOCHS = 3


class ApprovalConfigError(ValueError):
    """A gate configured with an unknown mode or default outcome."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# ------------------------------------------------------------------------------------------------ config


def gate_config(settings: Settings, gate: str) -> dict:
    """The gate's mode, timeout, default outcome on timeout and assignees, from Settings."""
    if gate not in GATES:
        raise ApprovalConfigError(f"unknown gate {gate!r}: one of {GATES}")
    mode = str(getattr(settings, f"approval_{gate}_mode")).strip().lower()
    on_timeout = str(getattr(settings, f"approval_{gate}_on_timeout")).strip().lower()
    if mode not in MODES:
        raise ApprovalConfigError(f"approval_{gate}_mode={mode!r}: one of {MODES}")
    if on_timeout not in ("approve", "reject"):
        raise ApprovalConfigError(f"approval_{gate}_on_timeout={on_timeout!r}: approve or reject")
    minutes = float(getattr(settings, f"approval_{gate}_timeout_minutes"))
    if minutes <= 0:
        raise ApprovalConfigError(f"approval_{gate}_timeout_minutes must be > 0, not {minutes}")
    assignees = [a.strip() for a in str(getattr(settings, f"approval_{gate}_assignees")).split(",") if a.strip()]
    return {"gate": gate, "mode": mode, "timeout_minutes": minutes, "on_timeout": on_timeout,
            "default_option": APPROVE if on_timeout == "approve" else REJECT, "assignees": assignees}


# ------------------------------------------------------------------------------------------------ evidence


def needs_person(gate: str, evidence: dict) -> tuple[bool, str]:
    """Whether this decision can change anything a person must own; otherwise why not."""
    if gate == "promotion":
        decision = evidence["evaluation"]["decision"]
        if not decision.get("promote"):
            return False, "the evidence keeps the champion: nothing to approve"
        return True, "the challenger would become champion"
    request = evidence["request"]
    if request.get("dry_run"):
        return False, "dry run: nothing is submitted, nothing is spent"
    return True, f"a {request['backend']} fine-tuning job would be submitted"


def _f(x, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def promotion_evidence(evaluation: dict, registered: dict, card_path: str | None = None) -> dict:
    """Subject, Markdown body and a compact summary of a promotion: figures on the same sets for both
    models, the paired test, the checks, the intents that got worse, the model card."""
    d = evaluation["decision"]
    m = evaluation.get("metrics") or {}
    ch, cp = m.get("challenger") or {}, m.get("champion") or {}
    champ = (evaluation.get("champion") or {}).get("version")
    version = registered.get("version")
    lines = [f"**Challenger v{version}** would replace **champion v{champ or '-'}** of the intent classifier.", "",
             (f"Relabel dataset: `{evaluation.get('dataset_version') or 'none'}`; training key "
             f"`{evaluation.get('training_key')}`; policy `{(evaluation.get('request') or {}).get('policy', {}).get('mode')}`."),
             "", "| set | metric | champion | challenger |", "|---|---|---:|---:|"]
    for s in ("gold", "holdout"):
        for k in ("accuracy", "macro_f1", "ece"):
            a = (cp.get(s) or {}).get(k) if (cp.get(s) or {}).get("n") else None
            b = (ch.get(s) or {}).get(k) if (ch.get(s) or {}).get("n") else None
            lines.append(f"| {s} (n={(ch.get(s) or {}).get('n', 0)}) | {k} | {_f(a)} | {_f(b)} |")
    t = d.get("mcnemar")
    lines += ["", (f"Paired test on gold ({t['test']}): only the challenger right on {t['only_challenger_right']}, only "
                   f"the champion right on {t['only_champion_right']}, p = {t['p_value']:.3g}.") if t else
              "Paired test: none (no champion to compare with, or the same model)."]
    if d.get("checks"):
        lines += ["", "| check | passed |", "|---|---|"]
        lines += [f"| {k} | {'yes' if v.get('passed') else '**NO**'} |" for k, v in d["checks"].items()]
    worse = d.get("worse_intents") or []
    lines += ["", f"Intents that got worse on gold F1: {len(worse)}" + (":" if worse else ".")]
    lines += [f"- {w['intent']}: {w['champion_f1']:.3f} -> {w['challenger_f1']:.3f}"
              + (" (protected)" if w.get("protected") else "") for w in worse[:10]]
    lines += ["", "Why the evidence says promote: " + "; ".join(d.get("reasons") or []), "",
              f"Model card (draft): `{card_path}`" if card_path else "",
              f"MLflow: `{registered.get('model_uri')}` (run `{registered.get('run_id')}`)", "",
              "Approve to move the `champion` alias; Reject keeps the champion. Say why in the Reason field."]
    gold_ch, gold_cp = (ch.get("gold") or {}), (cp.get("gold") or {})
    summary = {"model_version": str(version), "champion_version": champ and str(champ),
               "dataset_version": evaluation.get("dataset_version"), "training_key": evaluation.get("training_key"),
               "gold_accuracy": {"champion": gold_cp.get("accuracy"), "challenger": gold_ch.get("accuracy")},
               "mcnemar_p": t and t.get("p_value"), "worse_intents": [w["intent"] for w in worse],
               "model_card": card_path, "model_uri": registered.get("model_uri")}
    subject = (f"Promote intent classifier v{version} to champion? gold accuracy {_f(gold_cp.get('accuracy'), 3)} -> "
               f"{_f(gold_ch.get('accuracy'), 3)}")
    return {"subject": subject, "body": "\n".join(lines), "summary": summary}


def _file_tokens(path: str) -> int:
    """Tokens of every message of a JSON Lines training file, counted as OpenAI counts chat messages."""
    from feedback_loop.datasets import tokens

    def messages_in(node, out):
        if isinstance(node, dict):
            if isinstance(node.get("content"), str) and "role" in node:
                out.append(node)
            else:
                for v in node.values():
                    messages_in(v, out)
        elif isinstance(node, list):
            for v in node:
                messages_in(v, out)
        return out

    total = 0
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                total += tokens.count_messages(messages_in(json.loads(line), []))
    return total


def estimate_cost(settings: Settings, base_model: str, training_tokens: int, epochs: int) -> dict:
    prices = settings.finetune_price_usd_per_1m_tokens or {}
    price = prices.get(base_model, prices.get("default"))
    cost = None if price is None else round(training_tokens * epochs * float(price) / 1e6, 4)
    return {"price_usd_per_1m_tokens": price, "price_source": base_model if base_model in prices else "default",
            "epochs": epochs, "billed_tokens": training_tokens * epochs, "estimated_cost_usd": cost}


def finetune_evidence(settings: Settings, request: dict, plan: dict) -> dict:
    """Subject, Markdown body and summary of a fine-tuning job: dataset version, examples, tokens, the
    estimated cost from the configured prices, the base model."""
    files = plan.get("files") or []
    train = next((f for f in files if f["role"] == "training_file"), None)
    train_tokens = _file_tokens(train["path"]) if train and os.path.exists(train["path"]) else 0
    hp = request.get("hyperparameters") or {}
    epochs = int(hp["n_epochs"]) if str(hp.get("n_epochs", "")).isdigit() else DEFAULT_EPOCHS
    cost = estimate_cost(settings, request["base_model"], train_tokens, epochs)
    usd = cost["estimated_cost_usd"]
    lines = [(f"A **{request['backend']}** fine-tuning job of **{request['base_model']}** on "
             f"`{plan['dataset']}` version `{plan['dataset_version']}`."), "",
             "| file | records | bytes |", "|---|---:|---:|"]
    lines += [f"| {f['role']} | {f['records']} | {f['bytes']} |" for f in files]
    lines += ["", (f"Training tokens (cl100k_base, chat framing): {train_tokens}; epochs {epochs}"
                  f"{' (API default assumed)' if 'n_epochs' not in hp else ''}; billed tokens {cost['billed_tokens']}."),
              (f"Estimated cost: **{'unknown (no price configured)' if usd is None else f'${usd:,.2f}'}** at "
              f"${cost['price_usd_per_1m_tokens']}/1M training tokens ({cost['price_source']} price, "
              "Settings.finetune_price_usd_per_1m_tokens)."),
              f"Hyperparameters: `{json.dumps(hp, sort_keys=True)}`; reason for the run: {request.get('reason')}.",
              f"Manifest: `{plan.get('manifest')}`", "",
              "Approve to submit the job (it is billed); Reject submits nothing. Say why in the Reason field."]
    summary = {"dataset": plan["dataset"], "dataset_version": plan["dataset_version"], "backend": request["backend"],
               "base_model": request["base_model"], "training_examples": plan.get("training_examples"),
               "training_tokens": train_tokens, **cost, "job_key": plan.get("job_key")}
    subject = (f"Spend {'?' if usd is None else f'${usd:,.2f}'} fine-tuning {request['base_model']} on "
               f"{plan['dataset']} {plan['dataset_version']}?")
    return {"subject": subject, "body": "\n".join(lines), "summary": summary}


def evidence_for(settings: Settings, gate: str, evidence: dict) -> dict:
    if gate == "promotion":
        return promotion_evidence(evidence["evaluation"], evidence["registered"], evidence.get("card_path"))
    return finetune_evidence(settings, evidence["request"], evidence["plan"])


def draft_model_card(evaluation: dict, registered: dict) -> str | None:
    """The model card as it would read if promoted, marked as a draft, beside the run's other files: the
    link a reviewer opens before deciding (finalize writes the real card after the decision)."""
    from feedback_loop.lake.files import write_bytes_atomic
    from feedback_loop.retrain.intent_model_card import model_card

    assembly_path = evaluation.get("assembly")
    if not assembly_path or not os.path.exists(assembly_path):
        return None
    with open(assembly_path) as fh:
        assembly = json.load(fh)
    card = model_card(str(registered["version"]), assembly, evaluation, promoted=True, previous=None)
    path = join(evaluation["folder"], f"model_card-v{registered['version']}.draft.md")
    write_bytes_atomic(path, ("> DRAFT awaiting approval: the decision line below is what approval would do.\n\n"
                              + card).encode())
    return path


# ------------------------------------------------------------------------------------------------ records


def decision_id(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """One record per gate task instance: retries and the resume after the answer rewrite the same one."""
    return hashlib.sha256(f"{dag_id}|{run_id}|{task_id}|{map_index}".encode()).hexdigest()[:16]


def record(settings: Settings, doc: dict) -> dict:
    """Write (or rewrite) a decision record atomically; `pending` records keep their request time."""
    if doc["outcome"] not in OUTCOMES:
        raise ValueError(f"outcome {doc['outcome']!r}: one of {OUTCOMES}")
    lake = Lake(settings.lake)
    old = lake.read_json(FOLDER, f"{doc['decision_id']}.json") or {}
    doc = {**doc, "requested_at": old.get("requested_at") or doc.get("requested_at") or _now(),
           "recorded_at": _now()}
    lake.write_json(doc, FOLDER, f"{doc['decision_id']}.json")
    log.info("approval %s %s/%s: %s by %s (%s)", doc["gate"], doc["dag_id"], doc["run_id"], doc["outcome"],
             doc.get("decided_by"), doc.get("reason"))
    return doc


def read(settings: Settings, decision: str) -> dict | None:
    return Lake(settings.lake).read_json(FOLDER, f"{decision}.json")


def all_records(settings: Settings) -> list[dict]:
    """Every decision record, newest request first."""
    base = join(settings.lake, FOLDER)
    fs, path = filesystem_for(base)
    try:
        names = [p for p in fs.ls(path, detail=False) if p.endswith(".json")]
    except FileNotFoundError:
        return []
    out = []
    for p in names:
        with fs.open(p, "rb") as fh:
            out.append(json.loads(fh.read()))
    return sorted(out, key=lambda r: (r.get("requested_at") or "", r["decision_id"]), reverse=True)


def apply_to_promotion(evaluation: dict, approval: dict | None) -> dict:
    """The evaluation the promotion step finalizes: a rejected (or timed-out-to-reject) gate turns the
    decision to keep, and the person's answer heads the reasons, so MLflow and the model card record it."""
    if not approval or approval.get("outcome") in (None, "not_needed"):
        return evaluation
    decision = dict(evaluation["decision"])
    who = approval.get("decided_by") or "?"
    why = approval.get("reason") or "no reason given"
    at = approval.get("decided_at") or ""
    if approval["outcome"] == "rejected":
        how = "timed out, default outcome reject applied" if approval.get("timed_out") else f"rejected by {who}"
        decision["reasons"] = [f"approval gate: {how} at {at}: {why}; the champion stays"] + list(decision["reasons"])
        decision["promote"] = False
    else:
        how = ("timed out, default outcome approve applied" if approval.get("timed_out") else
               "auto-approved (approval mode auto)" if approval["outcome"] == "auto_approved" else f"approved by {who}")
        decision["reasons"] = [f"approval gate: {how} at {at}: {why}"] + list(decision["reasons"])
    decision["approval"] = {k: approval.get(k) for k in ("decision_id", "outcome", "decided_by", "decided_at",
                                                        "reason", "timed_out")}
    return {**evaluation, "decision": decision}


# ------------------------------------------------------------------------------------------------ warehouse


COLUMNS = {"decision_id": "VARCHAR", "gate": "VARCHAR", "dag_id": "VARCHAR", "run_id": "VARCHAR",
           "task_id": "VARCHAR", "outcome": "VARCHAR", "chosen_option": "VARCHAR", "decided_by": "VARCHAR",
           "decided_at": "TIMESTAMPTZ", "requested_at": "TIMESTAMPTZ", "reason": "VARCHAR", "timed_out": "BOOLEAN",
           "mode": "VARCHAR", "timeout_minutes": "DOUBLE", "on_timeout": "VARCHAR", "assignees": "VARCHAR[]",
           "subject": "VARCHAR", "evidence": "JSON"}


def view_sql(settings: Settings) -> str:
    cols = ", ".join(f"'{k}': '{v}'" for k, v in COLUMNS.items())
    return (f"SELECT * FROM read_json('{join(settings.lake, FOLDER, '*.json')}', columns={{{cols}}}, "
            "format='auto')")


def register_approval_views(con, settings: Settings) -> list[str]:
    """`approval_decisions`: every gate decision (who, when, what, why) as one row."""
    if not all_records(settings):
        return []
    con.execute(f"CREATE OR REPLACE VIEW approval_decisions AS {view_sql(settings)}")
    return ["approval_decisions"]




# ------------------------------------------------------------------------------------------------ Flywheel


def flywheel_rows(settings: Settings, limit: int = 10) -> list[dict]:
    """The latest decisions for the Flywheel page: gate, what, outcome, who, when, why, the run."""
    rows = []
    for r in all_records(settings)[:limit]:
        ev = r.get("evidence") or {}
        # A gate that was not needed carries no evidence: name what is known, never "None".
        if r["gate"] == "promotion":
            what = "intent classifier" + (f" v{ev['model_version']}" if ev.get("model_version") is not None else "")
        else:
            what = " ".join(str(ev[k]) for k in ("dataset", "dataset_version") if ev.get(k)) or "fine-tuning job"
            what += f" on {ev['base_model']}" if ev.get("base_model") else ""
            what += f", est. ${ev['estimated_cost_usd']}" if ev.get("estimated_cost_usd") is not None else ""
        rows.append({"gate": r["gate"], "what": what, "outcome": r["outcome"] + (" (timeout)" if r.get("timed_out") else ""),
                     "decided_by": r.get("decided_by") or "", "decided_at": r.get("decided_at") or r.get("requested_at"),
                     "reason": r.get("reason") or "", "dag_id": r["dag_id"], "run_id": r["run_id"]})
    return rows

