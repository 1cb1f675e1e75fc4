"""Langfuse: the day's traces, observations and scores through Langfuse's public API (docs/sources.md#langfuse).

- `traces`: `GET /api/public/traces?fromTimestamp&toTimestamp&page&limit`
- `observations`: `GET /api/public/observations?fromStartTime&toStartTime&page&limit`
- `scores`: `GET /api/public/scores?fromTimestamp&toTimestamp&page&limit`
Each answers `{data: [...], meta: {page, limit, totalItems, totalPages}}`; pages run from 1 to totalPages.
Auth: basic, public key as user and secret key as password. API reference: https://api.reference.langfuse.com
(traces, observations, scores; the observation `type`s include GENERATION, SPAN, EVENT, AGENT, TOOL,
RETRIEVER, GUARDRAIL; a score's `source` is API, EVAL or ANNOTATION, and people's judgements are ANNOTATION
(and CORRECTION where the deployment has it)).

For the mapping, `enriched_observations` and `enriched_scores` add each record's trace (`sessionId` = the
conversation, `userId` = the customer) and the trace's turn: its rank among the day's traces of the session,
by timestamp, from 0 (Langfuse has no turn number; one trace per agent turn is Langfuse's own convention).

Connection `acsr_langfuse`: host https://cloud.langfuse.com (or your deployment), login = public key,
password = secret key.
"""

from __future__ import annotations

from feedback_loop.sources import mapping
from feedback_loop.sources.pull import Puller, VendorHTTP

LIMIT = 100
ENDPOINTS = {"traces": ("/api/public/traces", "fromTimestamp", "toTimestamp"),
             "observations": ("/api/public/observations", "fromStartTime", "toStartTime"),
             "scores": ("/api/public/scores", "fromTimestamp", "toTimestamp")}


def _iso(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


class LangfusePuller(Puller):
    system = "langfuse"
    streams = ("traces", "observations", "scores")

    def __init__(self, http: VendorHTTP, limit: int = LIMIT):
        self.http, self.limit = http, limit

    def close(self) -> None:
        self.http.close()

    def pages(self, stream, start, end, cursor):
        path, lo, hi = ENDPOINTS[stream]
        page = int(cursor or 0) + 1
        while True:
            doc = self.http.get(path, params={lo: _iso(start), hi: _iso(end), "page": page, "limit": self.limit})
            yield doc.get("data", []), page
            total = (doc.get("meta") or {}).get("totalPages") or 0
            if page >= total or not doc.get("data"):
                return
            page += 1


def make_puller(settings, conn) -> Puller:
    import httpx

    http = VendorHTTP(conn.host or "https://cloud.langfuse.com", system="langfuse",
                      auth=httpx.BasicAuth(conn.login or "", conn.password or ""),
                      timeout=settings.sources_timeout_seconds, max_retries=settings.sources_max_retries,
                      max_wait=settings.sources_max_wait_seconds)
    return LangfusePuller(http)


def _turns(traces: list[dict]) -> dict:
    by_session: dict = {}
    for t in traces:
        by_session.setdefault(t.get("sessionId") or t["id"], []).append(t)
    turns = {}
    for ts in by_session.values():
        for i, t in enumerate(sorted(ts, key=lambda t: (t.get("timestamp") or "", t["id"]))):
            turns[t["id"]] = i
    return turns


def enriched_traces(stream) -> list[dict]:
    traces = stream("traces")
    turns = _turns(traces)
    return [{**t, "turn": turns[t["id"]]} for t in traces]


def _with_trace(records: list[dict], stream) -> list[dict]:
    traces = {t["id"]: t for t in enriched_traces(stream)}
    out = []
    for r in records:
        t = traces.get(r.get("traceId"))
        out.append({**r, "trace": None if t is None else
                    {"sessionId": t.get("sessionId"), "userId": t.get("userId"), "turn": t["turn"]}})
    return out


mapping.DERIVED_STREAMS["langfuse"] = {
    "enriched_traces": enriched_traces,
    "enriched_observations": lambda stream: _with_trace(stream("observations"), stream),
    "enriched_scores": lambda stream: _with_trace(stream("scores"), stream),
}
