"""Zendesk Support: the day's tickets with their metric sets, status history, satisfaction ratings and the
Help Center articles, through Zendesk's REST API (docs/sources.md#zendesk).

Streams (raw, as Zendesk sends them):
- `tickets`, `metric_sets`: incremental ticket export, cursor based,
  `GET /api/v2/incremental/tickets/cursor.json?start_time=<day start>&include=metric_sets`, then `?cursor=
  <after_cursor>` until `end_of_stream`; tickets whose `updated_at` is past the day's end are left to the next
  day (https://developer.zendesk.com/api-reference/ticketing/ticket-management/incremental_exports/).
- `ticket_events`: incremental ticket event export (time based, `next_page` until `end_of_stream`), whose
  `child_events` with `field_name = "status"` are the status history (reopens: solved -> open).
- `satisfaction_ratings`: `GET /api/v2/satisfaction_ratings?start_time&end_time`, cursor pagination
  (`page[size]`, `meta.has_more`, `meta.after_cursor`).
- `articles`: `GET /api/v2/help_center/articles`, cursor pagination: the knowledge base's snapshot.

The client is httpx rather than the Airflow Zendesk provider's Zenpy: Zenpy turns the answers into objects,
and the pull must keep them byte for byte as the API sent them; the provider's connection type is still the
one to create (conn id `acsr_zendesk`, host = https://<subdomain>.zendesk.com, login = agent e-mail, password =
API token: basic auth `<email>/token:<api token>`).
"""

from __future__ import annotations

from datetime import datetime
from urllib.parse import parse_qs, urlsplit

from feedback_loop.sources import mapping
from feedback_loop.sources.pull import Puller, VendorHTTP

PAGE_SIZE = 100


def _ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


class ZendeskPuller(Puller):
    system = "zendesk"
    streams = ("tickets", "ticket_events", "satisfaction_ratings", "articles")

    def __init__(self, http: VendorHTTP):
        self.http = http

    def close(self) -> None:
        self.http.close()

    def pages(self, stream, start, end, cursor):
        return getattr(self, f"_{stream}")(start, end, cursor)

    def _tickets(self, start: datetime, end: datetime, cursor):
        # The export orders tickets by their last update; each page's side-loaded metric sets are written
        # as the `metric_sets` stream from the same answer.
        params = {"cursor": cursor} if cursor else {"start_time": int(start.timestamp())}
        params["include"] = "metric_sets"
        while True:
            doc = self.http.get("/api/v2/incremental/tickets/cursor.json", params=params)
            tickets = [t for t in doc.get("tickets", []) if start <= _ts(t["updated_at"]) < end]
            keep = {t["id"] for t in tickets}
            metric_sets = [m for m in doc.get("metric_sets") or [] if m.get("ticket_id") in keep]
            past_end = any(_ts(t["updated_at"]) >= end for t in doc.get("tickets", []))
            done = doc.get("end_of_stream", True) or past_end or not doc.get("after_cursor")
            yield {"tickets": tickets, "metric_sets": metric_sets}, doc.get("after_cursor")
            if done:
                return
            params = {"cursor": doc["after_cursor"], "include": "metric_sets"}

    def _ticket_events(self, start, end, cursor):
        # Time-based export: a page ends at a timestamp and the next starts at it, so events at that second can
        # come twice; they are kept once (by id).
        url, params = "/api/v2/incremental/ticket_events.json", {"start_time": int(cursor or start.timestamp())}
        seen: set = set()
        while True:
            doc = self.http.get(url, params=params)
            events = doc.get("ticket_events", [])
            page = [e for e in events if start.timestamp() <= int(e["timestamp"]) < end.timestamp()
                    and e.get("id") not in seen]
            seen.update(e.get("id") for e in page)
            yield page, doc.get("end_time")
            if doc.get("end_of_stream", True) or not doc.get("next_page") or any(
                    int(e["timestamp"]) >= end.timestamp() for e in events):
                return
            q = parse_qs(urlsplit(doc["next_page"]).query)
            params = {"start_time": int(q["start_time"][0])}

    def _cursor_pages(self, path: str, key: str, params: dict, cursor):
        while True:
            p = dict(params, **{"page[size]": PAGE_SIZE})
            if cursor:
                p["page[after]"] = cursor
            doc = self.http.get(path, params=p)
            meta = doc.get("meta") or {}
            cursor = meta.get("after_cursor")
            yield doc.get(key, []), cursor
            if not meta.get("has_more") or not cursor:
                return

    def _satisfaction_ratings(self, start, end, cursor):
        params = {"start_time": int(start.timestamp()), "end_time": int(end.timestamp()) - 1}
        yield from self._cursor_pages("/api/v2/satisfaction_ratings", "satisfaction_ratings", params, cursor)

    def _articles(self, start, end, cursor):
        yield from self._cursor_pages("/api/v2/help_center/articles", "articles", {}, cursor)


def make_puller(settings, conn) -> Puller:
    """The Zendesk puller for an Airflow connection (basic auth with an API token)."""
    import httpx

    login = conn.login or ""
    auth = httpx.BasicAuth(login if login.endswith("/token") else f"{login}/token", conn.password or "")
    http = VendorHTTP(conn.host, system="zendesk", auth=auth, timeout=settings.sources_timeout_seconds,
                      max_retries=settings.sources_max_retries, max_wait=settings.sources_max_wait_seconds)
    return ZendeskPuller(http)


def status_changes(stream) -> list[dict]:
    """`ticket_events` -> one record per status change {ticket_id, created_at, previous_value, value}."""
    out = []
    for e in stream("ticket_events"):
        for c in e.get("child_events") or []:
            if c.get("field_name") == "status":
                out.append({"ticket_id": e.get("ticket_id"), "created_at": e.get("created_at"),
                            "previous_value": c.get("previous_value"), "value": c.get("value")})
    return out


mapping.DERIVED_STREAMS["zendesk"] = {"status_changes": status_changes}
