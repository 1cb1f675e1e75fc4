"""The nightly retraining decision: evaluate every trigger, record the decision and its reasons, every night.

Triggers for the intent classifier (any one fires a retrain):
- `no_champion`: nothing has been trained yet.
- `new_relabels`: human relabels (overrides, escalation categories) in the latest relabel dataset version
  that the champion's training set does not contain, at least `retrain_min_new_relabels`.
- `intent_drift`: population stability index of the live intent distribution (conversation_facts
  .final_intent over the trailing `retrain_window_days`) against the champion's reference: the live
  distribution over the window it was trained on (its training-label distribution when it has none, for a
  baseline). Fires at `retrain_drift_psi` when also beyond twice the PSI that sampling alone produces,
  (k - 1) (1/n_live + 1/n_ref), so a thin window cannot fire it.
- `override_rise`: for an intent (the agent's decision) or all intents, the rate of intent corrections
  in the window against the `signals_baseline_days` before it, a one-sided two-proportion z-test at
  `retrain_override_z`, each side with at least `retrain_min_sample` conversations.
- `action_queue`: open items of the signals stage's action queue that target `intent_classifier`.

Reasoning model: open action-queue items targeting `reasoning_model`, and a version of the fine-tuning
dataset (`finetune_dataset`) that no fine-tuning job has used yet with the configured backend.

Output: `marts/retrain_decisions/dt=D` (one row per check: target, trigger, scope, fired, value,
threshold, detail) and `runs/dt=D/retrain_decision.json` (the decision, its reasons and the conf for the
triggered DAG runs). Everything is read from the lake with an in-memory DuckDB; no MLflow import.
"""

from __future__ import annotations

import json
import logging
import math
from datetime import date, timedelta

from feedback_loop.lake.files import Lake
from feedback_loop.lake.sql import literal, literal_list
from feedback_loop.retrain import registry
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

MART = "retrain_decisions"
INTENT_DAG = "acsr_retrain_intent_classifier"
FINETUNE_DAG = "acsr_finetune_reasoning_model"
HUMAN_SOURCES = ("override", "escalation_category")
PSI_EPS = 1e-4


def _day(d) -> date:
    return date.fromisoformat(str(d)[:10])


def live_intent_distribution(settings: Settings, start: str, end: str) -> dict:
    """Shares of conversation_facts.final_intent over [start, end] (n = conversations with an intent)."""
    from feedback_loop.lake.duck import connect

    lake = Lake(settings.lake)
    files = lake.files_between("marts", "conversation_facts", str(start), str(end))
    if not files:
        return {"start": str(start), "end": str(end), "n": 0, "days": 0, "shares": {}}
    con = connect()
    try:
        rows = con.execute(f"SELECT final_intent, count(*) FROM read_parquet({literal_list(files)}) "
                           "WHERE final_intent IS NOT NULL GROUP BY 1 ORDER BY 1").fetchall()
    finally:
        con.close()
    n = sum(c for _, c in rows)
    return {"start": str(start), "end": str(end), "n": n, "days": len(files),
            "shares": {k: round(c / n, 6) for k, c in rows} if n else {}}


def psi(live: dict[str, float], ref: dict[str, float], eps: float = PSI_EPS) -> float:
    """Population stability index sum((p - q) ln(p / q)) over the union of categories, shares floored at eps."""
    total = 0.0
    for k in set(live) | set(ref):
        p, q = max(live.get(k, 0.0), eps), max(ref.get(k, 0.0), eps)
        total += (p - q) * math.log(p / q)
    return total


def two_proportion_z(x1: int, n1: int, x0: int, n0: int) -> float:
    """Pooled z of rate x1/n1 above x0/n0 (positive = a rise)."""
    if not n1 or not n0:
        return 0.0
    p = (x1 + x0) / (n1 + n0)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n0))
    return (x1 / n1 - x0 / n0) / se if se > 0 else 0.0


# ------------------------------------------------------------------------------------------------ checks


def _check(target, trigger, fired, value=None, threshold=None, scope="all", **detail) -> dict:
    return {"target": target, "trigger": trigger, "scope": scope, "fired": bool(fired),
            "value": None if value is None else float(value), "threshold": None if threshold is None else float(threshold),
            "detail": detail}


def check_new_relabels(settings: Settings, champion: dict | None) -> dict:
    from feedback_loop.lake.duck import connect

    lake = Lake(settings.lake)
    latest = lake.read_json("datasets", "intent_relabels", "latest.json")
    need = settings.retrain_min_new_relabels
    if not latest:
        return _check("intent_classifier", "new_relabels", False, 0, need, dataset_version=None,
                      note="no relabel dataset version published yet")
    index = f"{latest['path']}/examples.parquet"
    trained = (champion or {}).get("train_file")
    con = connect()
    try:
        if trained and champion.get("dataset_version"):
            sql = (f"SELECT e.source, count(*) FROM read_parquet({literal(index)}) e WHERE e.split IN ('train', 'validation') "
                   f"AND e.example_id NOT IN (SELECT example_id FROM read_parquet({literal(trained)}) WHERE example_id IS NOT NULL) "
                   "GROUP BY 1")
        else:
            sql = f"SELECT source, count(*) FROM read_parquet({literal(index)}) WHERE split IN ('train', 'validation') GROUP BY 1"
        by_source = dict(con.execute(sql).fetchall())
    finally:
        con.close()
    new = sum(v for k, v in by_source.items() if k in HUMAN_SOURCES)
    return _check("intent_classifier", "new_relabels", new >= need, new, need, dataset_version=latest["version"],
                  champion_dataset_version=(champion or {}).get("dataset_version"),
                  new_by_source=dict(sorted(by_source.items())))


def check_drift(settings: Settings, champion: dict | None, dt: str) -> dict:
    w = settings.retrain_window_days
    start = str(_day(dt) - timedelta(days=w - 1))
    live = live_intent_distribution(settings, start, dt)
    threshold = settings.retrain_drift_psi
    if not champion:
        return _check("intent_classifier", "intent_drift", False, None, threshold, note="no champion")
    ref_doc = champion.get("reference_distribution")
    if ref_doc and ref_doc.get("n"):
        ref, n_ref, ref_kind = ref_doc["shares"], ref_doc["n"], f"live intents {ref_doc['start']}..{ref_doc['end']}"
    else:
        ref, n_ref, ref_kind = champion.get("label_distribution") or {}, None, "training labels"
    if not live["n"] or not ref:
        return _check("intent_classifier", "intent_drift", False, None, threshold,
                      note="no live conversations in the window" if not live["n"] else "champion has no distribution")
    value = psi(live["shares"], ref)
    k = len(set(live["shares"]) | set(ref))
    noise = (k - 1) * (1 / live["n"] + (1 / n_ref if n_ref else 0.0))
    fired = value >= threshold and value >= 2 * noise
    top = sorted(((abs(live["shares"].get(i, 0) - ref.get(i, 0)), i) for i in set(live["shares"]) | set(ref)),
                 reverse=True)[:5]
    return _check("intent_classifier", "intent_drift", fired, value, threshold, window=[start, dt],
                  live_conversations=live["n"], reference=ref_kind, reference_conversations=n_ref,
                  sampling_noise_psi=round(noise, 4),
                  largest_shifts={i: {"live": live["shares"].get(i, 0), "reference": ref.get(i, 0)} for _, i in top})


def check_override_rise(settings: Settings, dt: str) -> list[dict]:
    """Intent corrections per conversation by the agent's intent: window vs baseline."""
    from feedback_loop.lake.duck import connect

    lake = Lake(settings.lake)
    w, b = settings.retrain_window_days, settings.signals_baseline_days
    d = _day(dt)
    win = (str(d - timedelta(days=w - 1)), str(d))
    base = (str(d - timedelta(days=w + b - 1)), str(d - timedelta(days=w)))
    z_need, n_min = settings.retrain_override_z, settings.retrain_min_sample
    facts = {k: lake.files_between("marts", "conversation_facts", *r) for k, r in (("win", win), ("base", base))}
    overrides = {k: lake.files_between("staged", "overrides", *r) for k, r in (("win", win), ("base", base))}
    if not facts["win"] or not facts["base"]:
        return [_check("intent_classifier", "override_rise", False, None, z_need, window=list(win),
                       baseline=list(base), note="no baseline days yet" if facts["win"] else "no days in the window")]
    con = connect()
    try:
        parts = []
        for k in ("win", "base"):
            conv = (f"SELECT '{k}' AS period, final_intent AS intent, count(*) AS n, 0 AS x "
                    f"FROM read_parquet({literal_list(facts[k])}) WHERE final_intent IS NOT NULL GROUP BY 2")
            parts.append(conv)
            if overrides[k]:
                parts.append(f"SELECT '{k}', agent_decision, 0, count(*) FROM read_parquet({literal_list(overrides[k])}, "
                             "union_by_name=true) WHERE stage = 'intent' AND outcome = 'corrected' "
                             "AND agent_decision IS NOT NULL GROUP BY 2")
        rows = con.execute(f"""WITH u AS ({' UNION ALL '.join(parts)})
            SELECT intent, sum(n) FILTER (period = 'win'), sum(x) FILTER (period = 'win'),
                   sum(n) FILTER (period = 'base'), sum(x) FILTER (period = 'base')
            FROM u GROUP BY ROLLUP (intent) ORDER BY intent NULLS FIRST""").fetchall()
    finally:
        con.close()
    out = []
    for intent, n1, x1, n0, x0 in rows:
        n1, x1, n0, x0 = int(n1 or 0), int(x1 or 0), int(n0 or 0), int(x0 or 0)
        x1, x0 = min(x1, n1), min(x0, n0)
        z = two_proportion_z(x1, n1, x0, n0)
        enough = n1 >= n_min and n0 >= n_min
        if intent is not None and not (enough and z >= z_need):
            continue  # per-intent rows are recorded only when they fire (77 quiet rows a night say nothing)
        out.append(_check("intent_classifier", "override_rise", enough and z >= z_need, z, z_need,
                          scope="all" if intent is None else f"intent={intent}", window=list(win), baseline=list(base),
                          rate=round(x1 / n1, 4) if n1 else None, baseline_rate=round(x0 / n0, 4) if n0 else None,
                          corrections=x1, conversations=n1, baseline_corrections=x0, baseline_conversations=n0,
                          enough_sample=enough))
    return out


def check_action_queue(settings: Settings, dt: str) -> list[dict]:
    """Open action-queue items of the day (or the latest day before it) that target a model."""
    from feedback_loop.lake.duck import connect

    lake = Lake(settings.lake)
    days = [d for d in lake.days("marts", "action_queue") if d <= str(dt)]
    if not days:
        return [_check(t, "action_queue", False, 0, 1, note="no action queue yet (signals stage)")
                for t in ("intent_classifier", "reasoning_model")]
    day = days[-1]
    con = connect()
    try:
        cur = con.execute(f"""SELECT target_component, action_id, signal, scope_dimension, scope_value, trigger, severity
            FROM read_parquet({literal(lake.partition_file('marts', 'action_queue', day))})
            WHERE target_component IN ('intent_classifier', 'reasoning_model') AND coalesce(status, 'open') = 'open'
            ORDER BY severity DESC, action_id""")
        items = cur.fetchall()
    finally:
        con.close()
    out = []
    for target in ("intent_classifier", "reasoning_model"):
        mine = [{"action_id": a, "signal": s, "scope": f"{sd}={sv}", "trigger": tr, "severity": sev}
                for t, a, s, sd, sv, tr, sev in items if t == target]
        out.append(_check(target, "action_queue", bool(mine), len(mine), 1, queue_day=day, items=mine[:10]))
    return out


def check_finetune_data(settings: Settings) -> dict:
    from feedback_loop.retrain.finetune_jobs import jobs_for_version, same_backend

    name = settings.finetune_dataset
    latest = Lake(settings.lake).read_json("datasets", name, "latest.json")
    if not latest:
        return _check("reasoning_model", "new_finetune_data", False, 0, 1, dataset=name, note="no version yet")
    used = [j for j in jobs_for_version(settings, name, latest["version"])
            if same_backend(j, settings.finetune_backend) and j.get("status") not in ("failed", "timed_out", "cancelled")]
    return _check("reasoning_model", "new_finetune_data", not used, 0 if used else 1, 1, dataset=name,
                  dataset_version=latest["version"], jobs=[j.get("job_key") for j in used])


# ------------------------------------------------------------------------------------------------ decide


def decide(settings: Settings, dt: str) -> dict:
    """Evaluate every trigger for day dt, write the decision mart and document, return the decision."""
    dt = str(_day(dt))
    champion = registry.champion(settings)
    checks = [_check("intent_classifier", "no_champion", champion is None, None, None,
                     champion_version=(champion or {}).get("version"))]
    checks.append(check_new_relabels(settings, champion))
    checks.append(check_drift(settings, champion, dt))
    checks += check_override_rise(settings, dt)
    queue = check_action_queue(settings, dt)
    checks += queue
    checks.append(check_finetune_data(settings))

    fired = [c for c in checks if c["fired"] and c["target"] == "intent_classifier"]
    intent_reasons = [_reason(c) for c in fired]
    rm_queue = next(c for c in queue if c["target"] == "reasoning_model")
    rm_data = checks[-1]
    finetune = rm_queue["fired"] and rm_data["fired"]
    rm_reasons = ([_reason(rm_queue), _reason(rm_data)] if finetune else
                  [f"not fine-tuning: {_reason(rm_queue) if rm_queue['fired'] else 'no open action-queue item targets the reasoning model'}"
                   + ("" if rm_data["fired"] or not rm_queue["fired"] else "; no unused dataset version")])
    decision = {
        "dt": dt,
        "champion_version": (champion or {}).get("version"),
        "intent_classifier": {
            "retrain": bool(fired), "reasons": intent_reasons or ["no trigger fired"], "dag_id": INTENT_DAG,
            "conf": {"dataset_version": "latest", "reason": f"nightly decision {dt}: " + "; ".join(intent_reasons),
                     "decision": {"dt": dt, "triggers": [c["trigger"] + ("" if c["scope"] == "all" else f"[{c['scope']}]")
                                                         for c in fired]}} if fired else None,
        },
        "reasoning_model": {
            "finetune": finetune, "reasons": rm_reasons, "dag_id": FINETUNE_DAG,
            "conf": {"dataset": settings.finetune_dataset, "dataset_version": rm_data["detail"].get("dataset_version") or "latest",
                     "backend": settings.finetune_backend, "reason": f"nightly decision {dt}: " + "; ".join(rm_reasons)}
            if finetune else None,
        },
        "checks": checks,
        "settings": {k: getattr(settings, k) for k in (
            "retrain_min_new_relabels", "retrain_drift_psi", "retrain_window_days", "retrain_override_z",
            "retrain_min_sample", "signals_baseline_days", "finetune_backend", "finetune_dataset")},
    }
    _record(settings, decision)
    log.info("retraining decision %s: intent classifier %s (%s); reasoning model %s", dt,
             "RETRAIN" if fired else "keep", "; ".join(decision["intent_classifier"]["reasons"]),
             "FINE-TUNE" if finetune else "keep")
    return decision


def _reason(c: dict) -> str:
    d = c["detail"]
    t = c["trigger"]
    if t == "no_champion":
        return "no champion model yet"
    if t == "new_relabels":
        return f"{int(c['value'])} new human relabels in {d.get('dataset_version')} (minimum {int(c['threshold'])})"
    if t == "intent_drift":
        return f"intent drift PSI {c['value']:.3f} >= {c['threshold']} (noise {d.get('sampling_noise_psi')}) vs {d.get('reference')}"
    if t == "override_rise":
        return (f"override rate {c['scope']} rose {d.get('baseline_rate')} -> {d.get('rate')} (z={c['value']:.2f} >= "
                f"{c['threshold']})")
    if t == "action_queue":
        items = d.get("items") or []
        return f"{len(items)} open action-queue item(s) for {c['target']}: " + ", ".join(
            f"{i['signal']} {i['scope']}" for i in items[:3])
    if t == "new_finetune_data":
        return (f"{d.get('dataset')} version {d.get('dataset_version')} not fine-tuned yet" if c["fired"]
                else f"{d.get('dataset')}: {d.get('note') or 'latest version already used by job(s) ' + str(d.get('jobs'))}")
    return t


def _record(settings: Settings, decision: dict) -> None:
    """One mart row per check (the decision repeated on each row) and the whole decision as JSON."""
    import pyarrow as pa

    from feedback_loop.lake.duck import connect

    lake = Lake(settings.lake)
    rows = []
    for c in decision["checks"]:
        target = decision[c["target"]]
        rows.append({"target": c["target"], "trigger": c["trigger"], "scope": c["scope"], "fired": c["fired"],
                     "value": c["value"], "threshold": c["threshold"],
                     "detail": json.dumps(c["detail"], sort_keys=True, default=str),
                     "decision": bool(target.get("retrain", target.get("finetune"))),
                     "reasons": json.dumps(target["reasons"]), "champion_version": decision["champion_version"]})
    table = pa.Table.from_pylist(rows, schema=pa.schema([
        ("target", pa.string()), ("trigger", pa.string()), ("scope", pa.string()), ("fired", pa.bool_()),
        ("value", pa.float64()), ("threshold", pa.float64()), ("detail", pa.string()), ("decision", pa.bool_()),
        ("reasons", pa.string()), ("champion_version", pa.string())]))
    con = connect()
    try:
        con.register("decision_rows", table)
        lake.write_query(con, "SELECT $day::DATE AS dt, * FROM decision_rows ORDER BY target, trigger, scope",
                         "marts", MART, decision["dt"], params={"day": str(decision["dt"])})
    finally:
        con.close()
    lake.write_json(decision, "runs", f"dt={decision['dt']}", "retrain_decision.json")
