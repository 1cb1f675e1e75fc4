"""A Zendesk Support stand-in: the endpoints the Zendesk pull calls, answering like Zendesk's API reference.

- GET /api/v2/incremental/tickets/cursor.json (start_time | cursor, include=metric_sets): `tickets`,
  `metric_sets` (side-load), `after_cursor`, `after_url`, `before_cursor`, `before_url`, `end_of_stream`.
  https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/#incremental-ticket-export-cursor-based
- GET /api/v2/incremental/ticket_events.json (start_time): `ticket_events`, `next_page`, `count`,
  `end_of_stream`, `end_time`; a page ends at a timestamp and the next starts at it (time-based export).
  https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/#incremental-ticket-event-export
- GET /api/v2/satisfaction_ratings (start_time, end_time, page[size], page[after]): `satisfaction_ratings`,
  `meta{has_more, after_cursor, before_cursor}`, `links{next, prev}`.
  https://developer.zendesk.com/api-reference/ticketing/ticket-management/satisfaction_ratings/
  https://developer.zendesk.com/api-reference/introduction/pagination/#using-cursor-pagination
- GET /api/v2/help_center/articles (page[size], page[after]): `articles`, `meta`, `links`.
  https://developer.zendesk.com/api-reference/help_center/help-center-api/articles/#list-articles
Auth: basic `{email}/token:{api_token}` (https://developer.zendesk.com/api-reference/introduction/security-and-auth/);
otherwise 401. Rate limits: 429 with Retry-After, from the fault plan (server.StandIn).
"""

from __future__ import annotations

import base64
from datetime import datetime

from feedback_loop_sample.standins.server import StandIn

EMAIL = "agent@example.com"
TOKEN = "zd-test-token-6f1e2d3c4b5a"


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def _cursor(i: int) -> str:
    return base64.urlsafe_b64encode(f"o:{i}".encode()).decode()


def _offset(c: str) -> int:
    return int(base64.urlsafe_b64decode(c.encode()).decode().split(":")[1])


class ZendeskStandIn(StandIn):
    def __init__(self, data: dict, *, page_size: int = 2, faults: dict | None = None,
                 email: str = EMAIL, token: str = TOKEN):
        expected = "Basic " + base64.b64encode(f"{email}/token:{token}".encode()).decode()
        super().__init__(lambda h: h.get("Authorization") == expected, faults)
        self.data, self.page_size = data, page_size
        self.route("GET", "/api/v2/incremental/tickets/cursor.json", self._tickets)
        self.route("GET", "/api/v2/incremental/ticket_events.json", self._events)
        self.route("GET", "/api/v2/satisfaction_ratings", self._ratings)
        self.route("GET", "/api/v2/help_center/articles", self._articles)

    def _tickets(self, q, body, base, path=None):
        tickets = sorted(self.data.get("tickets", []), key=lambda t: (t["updated_at"], t["id"]))
        if "cursor" in q:
            i = _offset(q["cursor"])
        elif "start_time" in q:
            i = next((k for k, t in enumerate(tickets) if _epoch(t["updated_at"]) >= int(q["start_time"])), len(tickets))
        else:
            return 400, {"error": "InvalidPaginationParameter", "description": "start_time or cursor is required"}
        page = tickets[i:i + self.page_size]
        end = i + len(page) >= len(tickets)
        nxt = _cursor(i + len(page))
        doc = {"tickets": page, "after_cursor": nxt,
               "after_url": f"{base}/api/v2/incremental/tickets/cursor.json?cursor={nxt}",
               "before_cursor": _cursor(i), "before_url": None, "end_of_stream": end}
        if "metric_sets" in q.get("include", ""):
            ids = {t["id"] for t in page}
            doc["metric_sets"] = [m for m in self.data.get("metric_sets", []) if m["ticket_id"] in ids]
        return 200, doc

    def _events(self, q, body, base, path=None):
        if "start_time" not in q:
            return 400, {"error": "InvalidValue", "description": "start_time is required"}
        start = int(q["start_time"])
        events = sorted((e for e in self.data.get("ticket_events", []) if int(e["timestamp"]) >= start),
                        key=lambda e: (e["timestamp"], e["id"]))
        page = events[:self.page_size]
        end = len(events) <= self.page_size
        end_time = page[-1]["timestamp"] if page else start
        if not end and end_time == start:  # a page of one timestamp: step past it as Zendesk does
            end_time = start + 1
        return 200, {"ticket_events": page, "count": len(page), "end_of_stream": end, "end_time": end_time,
                     "next_page": f"{base}/api/v2/incremental/ticket_events.json?start_time={end_time}"}

    def _cursor_list(self, items, q, base, path, key):
        size = int(q.get("page[size]", 100))
        i = _offset(q["page[after]"]) if q.get("page[after]") else 0
        page = items[i:i + size]
        more = i + size < len(items)
        after = _cursor(i + len(page)) if page else None
        return 200, {key: page,
                     "meta": {"has_more": more, "after_cursor": after, "before_cursor": _cursor(i)},
                     "links": {"next": f"{base}{path}?page[size]={size}&page[after]={after}" if more else None,
                               "prev": None}}

    def _ratings(self, q, body, base, path=None):
        lo, hi = int(q.get("start_time", 0)), int(q.get("end_time", 2**40))
        items = sorted((r for r in self.data.get("satisfaction_ratings", []) if lo <= _epoch(r["created_at"]) <= hi),
                       key=lambda r: r["id"])
        q = dict(q, **{"page[size]": str(min(int(q.get("page[size]", 100)), self.page_size))})
        return self._cursor_list(items, q, base, "/api/v2/satisfaction_ratings", "satisfaction_ratings")

    def _articles(self, q, body, base, path=None):
        q = dict(q, **{"page[size]": str(min(int(q.get("page[size]", 100)), self.page_size))})
        return self._cursor_list(sorted(self.data.get("articles", []), key=lambda a: a["id"]), q, base,
                                 "/api/v2/help_center/articles", "articles")
