"""The model card (markdown) of a registered intent classifier version, written by `intent_promotion.finalize`."""

from __future__ import annotations

import json

from feedback_loop.retrain import registry
from feedback_loop.retrain.intent_assembly import MODEL_CONFIG


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
