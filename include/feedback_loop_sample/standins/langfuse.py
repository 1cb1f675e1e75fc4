"""A Langfuse public API stand-in: traces, observations and scores, as https://api.reference.langfuse.com lists
them: `GET /api/public/traces` (fromTimestamp, toTimestamp), `GET /api/public/observations` (fromStartTime,
toStartTime), `GET /api/public/scores` (fromTimestamp, toTimestamp), each with `page` (from 1) and `limit`,
answering `{data: [...], meta: {page, limit, totalItems, totalPages}}`. Auth: basic with the project's public
key and secret key, else 401 {message}."""

from __future__ import annotations

import base64
from datetime import datetime

from feedback_loop_sample.standins.server import StandIn

PUBLIC_KEY = "pk-lf-1234567890abcdef"
SECRET_KEY = "sk-lf-fedcba0987654321-secret"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


class LangfuseStandIn(StandIn):
    def __init__(self, data: dict, *, page_size: int = 2, faults: dict | None = None, secret: str = SECRET_KEY):
        expected = "Basic " + base64.b64encode(f"{PUBLIC_KEY}:{secret}".encode()).decode()
        super().__init__(lambda h: h.get("Authorization") == expected, faults)
        self.data, self.page_size = data, page_size
        for name, (time_key, lo, hi) in {"traces": ("timestamp", "fromTimestamp", "toTimestamp"),
                                         "observations": ("startTime", "fromStartTime", "toStartTime"),
                                         "scores": ("timestamp", "fromTimestamp", "toTimestamp")}.items():
            self.route("GET", f"/api/public/{name}", self._lister(name, time_key, lo, hi))

    def _lister(self, name, time_key, lo_key, hi_key):
        def handle(q, body, base, path=None):
            lo = _t(q[lo_key]) if lo_key in q else None
            hi = _t(q[hi_key]) if hi_key in q else None
            rows = sorted((r for r in self.data.get(name, [])
                           if (lo is None or _t(r[time_key]) >= lo) and (hi is None or _t(r[time_key]) < hi)),
                          key=lambda r: (r[time_key], r["id"]))
            limit = min(int(q.get("limit", 50)), self.page_size)
            page = int(q.get("page", 1))
            total_pages = -(-len(rows) // limit)
            return 200, {"data": rows[(page - 1) * limit: page * limit],
                         "meta": {"page": page, "limit": limit, "totalItems": len(rows), "totalPages": total_pages}}
        return handle
