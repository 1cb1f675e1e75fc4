"""Intercom: the conversations updated in the day, each with its parts and rating (docs/sources.md#intercom).

`POST /conversations/search` with `updated_at > start - 1 AND updated_at < end` (the search's operators are
strict), `pagination.per_page` and `starting_after` (the cursor of `pages.next`); search results carry no parts,
so each conversation is then read whole with `GET /conversations/{id}` (up to 500 parts, Intercom's limit; the
record keeps `conversation_parts.total_count` beside them). Headers: `Authorization: Bearer <access token>`,
`Intercom-Version: 2.11`. Rate limits answer 429 with `X-RateLimit-Reset` (a unix time), which the client waits
for. API reference: https://developers.intercom.com/docs/references/2.11/rest-api/api.intercom.io/conversations/
(search: .../searchconversations, retrieve: .../retrieveconversation, the conversation model with `state`,
`source`, `conversation_rating`, `statistics`, `ai_agent`, `conversation_parts`).

Connection `acsr_intercom`: host https://api.intercom.io (or the EU/AU region host), password = access token.
"""

from __future__ import annotations

from feedback_loop.sources.pull import Puller, VendorHTTP

API_VERSION = "2.11"
PER_PAGE = 50


class IntercomPuller(Puller):
    system = "intercom"
    streams = ("conversations",)

    def __init__(self, http: VendorHTTP, per_page: int = PER_PAGE):
        self.http, self.per_page = http, per_page

    def close(self) -> None:
        self.http.close()

    def pages(self, stream, start, end, cursor):
        query = {"operator": "AND", "value": [
            {"field": "updated_at", "operator": ">", "value": int(start.timestamp()) - 1},
            {"field": "updated_at", "operator": "<", "value": int(end.timestamp())},
        ]}
        while True:
            pagination = {"per_page": self.per_page}
            if cursor:
                pagination["starting_after"] = cursor
            doc = self.http.post("/conversations/search", {"query": query, "pagination": pagination})
            full = [self.http.get(f"/conversations/{c['id']}", params={"display_as": "plaintext"})
                    for c in doc.get("conversations", [])]
            nxt = ((doc.get("pages") or {}).get("next") or {}).get("starting_after")
            yield full, nxt
            if not nxt:
                return
            cursor = nxt


def make_puller(settings, conn) -> Puller:
    token = conn.password or conn.extra.get("access_token", "")
    http = VendorHTTP(conn.host or "https://api.intercom.io", system="intercom",
                      headers={"Authorization": f"Bearer {token}", "Intercom-Version": API_VERSION,
                               "Accept": "application/json"},
                      timeout=settings.sources_timeout_seconds, max_retries=settings.sources_max_retries,
                      max_wait=settings.sources_max_wait_seconds)
    return IntercomPuller(http)
