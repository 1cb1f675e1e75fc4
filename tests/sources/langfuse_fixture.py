"""Two days of a Langfuse project, shaped as the public API's Trace, Observation and Score objects
(https://api.reference.langfuse.com: traces list, observations list, scores list)."""

from __future__ import annotations

D1, D2 = "2026-11-02", "2026-11-03"


def _trace(tid, day, hh, session, user, text):
    return {"id": tid, "timestamp": f"{day}T{hh:02d}:00:00.000Z", "name": "support-turn", "userId": user,
            "sessionId": session, "input": {"role": "user", "content": text}, "output": {"content": "..."},
            "metadata": {"channel": "chat"}, "tags": ["prod"], "release": "v7", "version": "1", "public": False,
            "bookmarked": False, "environment": "production", "htmlPath": f"/project/p1/traces/{tid}",
            "latency": 2.1, "totalCost": 0.0031, "observations": [], "scores": []}


def _obs(oid, tid, day, hh, mm, kind, name, **kw):
    base = {"id": oid, "traceId": tid, "type": kind, "name": name, "startTime": f"{day}T{hh:02d}:{mm:02d}:00.000Z",
            "endTime": f"{day}T{hh:02d}:{mm:02d}:01.500Z", "completionStartTime": None, "model": None,
            "modelParameters": {}, "input": None, "output": None, "metadata": {}, "level": "DEFAULT",
            "statusMessage": None, "parentObservationId": None, "version": None, "environment": "production",
            "usageDetails": {}, "costDetails": {}, "calculatedTotalCost": None, "latency": 1.5, "promptId": None}
    base.update(kw)
    return base


def _score(sid, tid, day, hh, name, source, value=None, string_value=None, **kw):
    return {"id": sid, "traceId": tid, "observationId": None, "name": name, "source": source, "value": value,
            "stringValue": string_value, "dataType": "CATEGORICAL" if string_value else "NUMERIC",
            "timestamp": f"{day}T{hh:02d}:30:00.000Z", "createdAt": f"{day}T{hh:02d}:30:00.000Z",
            "updatedAt": f"{day}T{hh:02d}:30:00.000Z", "authorUserId": kw.pop("author", None),
            "comment": kw.pop("comment", None), "configId": None, "queueId": None, "environment": "production",
            "metadata": kw.pop("metadata", None)}


def data() -> dict:
    return {
        "traces": [
            _trace("t1", D1, 8, "sess-A", "CUST-1", "My card has not arrived"),
            _trace("t2", D1, 9, "sess-A", "CUST-1", "It is still not here"),
            _trace("t3", D1, 10, "sess-B", "CUST-2", "Change my PIN"),
            _trace("t4", D2, 8, "sess-C", "CUST-3", "Top up failed"),
        ],
        "observations": [
            _obs("o1", "t1", D1, 8, 0, "AGENT", "support-agent"),
            _obs("o2", "t1", D1, 8, 1, "RETRIEVER", "kb-search", input={"query": "card not arrived"},
                 output={"documents": [{"id": "KB-1", "score": 0.82}]}),
            _obs("o3", "t1", D1, 8, 2, "GENERATION", "answer", model="gpt-4.1-mini",
                 output={"role": "assistant", "content": "Cards arrive within 5 days."},
                 usageDetails={"input": 412, "output": 38, "total": 450}, calculatedTotalCost=0.0012),
            _obs("o4", "t2", D1, 9, 1, "TOOL", "reissue_card", input={"card": "last4-1234"},
                 metadata={"acsr.action.status": "ok"}),
            _obs("o5", "t2", D1, 9, 2, "SPAN", "classify", metadata={"acsr.event.type": "intent_classified",
                                                                      "acsr.intent": "card_arrival",
                                                                      "acsr.intent.confidence": 0.91}),
            _obs("o6", "t3", D1, 10, 1, "GUARDRAIL", "pin-policy", metadata={"acsr.policy.outcome": "pass"}),
            _obs("o7", "t3", D1, 10, 2, "GENERATION", "answer", model="gpt-4.1-mini", output="Open the app.",
                 level="ERROR", statusMessage="upstream timeout"),
            _obs("o8", "t3", D1, 10, 3, "MYSTERY", "x"),  # an event type the contract does not know: quarantined
            _obs("o9", "t4", D2, 8, 1, "GENERATION", "answer", model="gpt-4.1-mini", output="Try again."),
        ],
        "scores": [
            _score("s1", "t1", D1, 8, "user_feedback", "API", value=1),
            _score("s2", "t3", D1, 10, "user_feedback", "API", value=0),
            _score("s3", "t2", D1, 9, "intent", "ANNOTATION", string_value="card_arrival", author="rev-7",
                   comment="Intent is right.", metadata={"agent_decision": "card_arrival", "agent_confidence": 0.91}),
            _score("s4", "t3", D1, 10, "policy", "CORRECTION", string_value="waive", author="rev-2",
                   comment="Long-standing customer.", metadata={"agent_decision": "fail", "policy_clause_id": "POL-9"}),
            _score("s5", "t1", D1, 8, "helpfulness", "EVAL", value=0.7),  # a model's judgement: not a person's
            _score("s6", "t4", D2, 8, "user_feedback", "API", value=1),
        ],
    }
