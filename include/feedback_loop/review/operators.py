"""ApprovalGate: Airflow's ApprovalOperator with the loop's evidence, configuration and decision record.

Light at import (DAG files import it). At run time the gate reads its configuration from Settings (so an
administrator changes it with an Airflow Variable or the environment, not the person who triggers the run):

- nothing to decide (the evidence keeps the champion; a dry run spends nothing): records `not_needed`;
- mode `auto`: records `auto_approved` and goes on (development and the demo never wait);
- mode `required`: writes the evidence to Airflow's Required Actions (subject + Markdown body, a Reason
  field), notifies through the webhook notifier, and parks the task in `awaiting_input` (no worker, no
  triggerer, no pool slot) until someone answers in the UI or through
  `PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/-1/hitlDetails`, or the scheduler applies
  the configured default outcome when the timeout passes.

Every outcome is written to `<lake>/approvals/<decision id>.json` (feedback_loop.review.approvals). On
reject the gate can skip its direct downstream tasks (the fine-tuning job is then never submitted); the
promotion gate does not, because the promotion step itself records the rejection in MLflow and the card.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLOperator
from airflow.sdk import Param


class ApprovalGate(ApprovalOperator):
    """Ask a person before `gate` ("promotion" or "finetune") proceeds; see the module docstring.

    `evidence` is a dict of upstream XCom values (templated): {"evaluation", "registered"} for a
    promotion, {"request", "plan"} for a fine-tuning job. Returns the decision record's short form."""

    template_fields = (*ApprovalOperator.template_fields, "evidence")
    ui_color = "#fde9c9"

    def __init__(self, *, gate: str, evidence, skip_on_reject: bool = False, **kwargs):
        kwargs.setdefault("subject", f"Approval: {gate}")
        kwargs.setdefault("params", {"reason": Param("", type="string", maxLength=2000, title="Reason",
                                                     description="Why you approve or reject (recorded)")})
        super().__init__(**kwargs)
        self.gate = gate
        self.evidence = evidence
        self.skip_on_reject = skip_on_reject

    # -------------------------------------------------------------------------------------------- helpers
    def _base(self, context) -> dict:
        from feedback_loop.review.approvals import decision_id

        ti = context["ti"]
        return {"decision_id": decision_id(ti.dag_id, ti.run_id, ti.task_id, ti.map_index), "gate": self.gate,
                "dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}

    def _short(self, doc: dict) -> dict:
        keep = ("decision_id", "gate", "outcome", "chosen_option", "decided_by", "decided_at", "reason",
                "timed_out")
        return {**{k: doc.get(k) for k in keep},
                "approved": doc["outcome"] in ("approved", "auto_approved", "not_needed")
                and doc.get("chosen_option") != self.REJECT}

    # -------------------------------------------------------------------------------------------- execute
    def execute(self, context):
        from feedback_loop.alerts import WebhookNotifier
        from feedback_loop.review import approvals
        from feedback_loop.settings import Settings

        settings = Settings.load()
        cfg = approvals.gate_config(settings, self.gate)
        evidence = dict(self.evidence)
        needed, why = approvals.needs_person(self.gate, evidence)
        base = {**self._base(context), "mode": cfg["mode"], "timeout_minutes": cfg["timeout_minutes"],
                "on_timeout": cfg["on_timeout"], "assignees": cfg["assignees"], "timed_out": False}
        if not needed:
            doc = approvals.record(settings, {**base, "outcome": "not_needed", "chosen_option": None,
                                              "decided_by": "rule", "decided_at": approvals._now(), "reason": why,
                                              "subject": why, "evidence": {}})
            self.log.info("no approval needed: %s", why)
            return self._short(doc)
        if self.gate == "promotion":
            evidence["card_path"] = approvals.draft_model_card(evidence["evaluation"], evidence["registered"])
        shown = approvals.evidence_for(settings, self.gate, evidence)
        base.update(subject=shown["subject"], evidence=shown["summary"])
        if cfg["mode"] == "auto":
            doc = approvals.record(settings, {**base, "outcome": "auto_approved", "chosen_option": self.APPROVE,
                                              "decided_by": "auto-approve", "decided_at": approvals._now(),
                                              "reason": f"Settings.approval_{self.gate}_mode = auto"})
            self.log.info("auto-approved (approval_%s_mode=auto): %s", self.gate, shown["subject"])
            return self._short(doc)

        approvals.record(settings, {**base, "outcome": "pending", "chosen_option": None, "decided_by": None,
                                    "decided_at": None, "reason": None})
        self.subject, self.body = shown["subject"], shown["body"]
        self.defaults = [cfg["default_option"]]
        self.response_timeout = timedelta(minutes=cfg["timeout_minutes"])
        self.assigned_users = [{"id": a, "name": a} for a in cfg["assignees"]] or None
        try:
            link = self.generate_link_to_ui_from_context(context=context)
        except ValueError:  # no [api] base_url configured
            link = ""
        self.notifiers = [WebhookNotifier(kind="approval_requested",
                                          text=f"{shown['subject']} (waiting for "
                                               f"{', '.join(cfg['assignees']) or 'anyone allowed'}; default "
                                               f"{cfg['on_timeout']} after {cfg['timeout_minutes']:g} min) {link}")]
        return super().execute(context)  # parks the task in awaiting_input

    def execute_complete(self, context, event):
        from feedback_loop.review import approvals
        from feedback_loop.settings import Settings

        settings = Settings.load()
        old = approvals.read(settings, self._base(context)["decision_id"]) or {}
        if "error" in event:  # a timeout without a default (not configurable here) or an event error
            approvals.record(settings, {**old, **self._base(context), "outcome": "rejected", "chosen_option": None,
                                        "decided_by": "timeout", "decided_at": approvals._now(),
                                        "reason": str(event.get("error")), "timed_out": True})
        ret = HITLOperator.execute_complete(self, context=context, event=event)  # validates the answer
        chosen = ret["chosen_options"][0]
        timed_out = bool(event.get("timedout"))
        user = ret.get("responded_by_user") or {}
        reason = (ret.get("params_input") or {}).get("reason") or ""
        if timed_out:
            reason = (f"no answer within {old.get('timeout_minutes', '?')} min: default outcome "
                      f"{chosen.lower()} applied" + (f" ({reason})" if reason else ""))
        doc = approvals.record(settings, {
            **old, **self._base(context), "outcome": "approved" if chosen == self.APPROVE else "rejected",
            "chosen_option": chosen, "timed_out": timed_out,
            "decided_by": "timeout-default" if timed_out else (user.get("id") or user.get("name") or "unknown"),
            "decided_at": ret["responded_at"].isoformat() if hasattr(ret["responded_at"], "isoformat")
            else str(ret["responded_at"]), "reason": reason})
        if chosen == self.REJECT and self.skip_on_reject and self.downstream_task_ids:
            self.log.info("rejected: skipping %s", sorted(self.downstream_task_ids))
            self.skip(ti=context["ti"], tasks=[t for t in context["task"].get_direct_relatives(upstream=False)
                                               if not t.is_teardown])
        return self._short(doc)
