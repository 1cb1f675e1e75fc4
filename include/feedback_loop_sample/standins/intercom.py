"""An Intercom stand-in: conversation search and retrieval, answering like Intercom's REST API 2.11.

- POST /conversations/search: body {query: {operator: AND, value: [{field, operator, value}, ...]},
  pagination: {per_page, starting_after}} -> {type: "conversation.list", conversations, total_count,
  pages: {type: "pages", page, per_page, total_pages, next: {page, starting_after}}}. Only `updated_at` with
  `>` / `<` is understood (what the pull sends).
  https://developers.intercom.com/docs/references/2.11/rest-api/api.intercom.io/conversations/searchconversations
- GET /conversations/{id} -> the conversation with `conversation_parts` (at most 500).
  https://developers.intercom.com/docs/references/2.11/rest-api/api.intercom.io/conversations/retrieveconversation
Auth: `Authorization: Bearer <token>`, else 401 {type: error.list, errors: [{code: unauthorized}]}. Search
results leave out `conversation_parts`, as Intercom's do.
"""

from __future__ import annotations

import base64

from feedback_loop_sample.standins.server import StandIn

TOKEN = "ic-test-token-dG9rOjEyMzQ1Njc4"


class IntercomStandIn(StandIn):
    def __init__(self, conversations: list[dict], *, page_size: int = 2, faults: dict | None = None,
                 token: str = TOKEN):
        super().__init__(lambda h: h.get("Authorization") == f"Bearer {token}", faults)
        self.conversations = {c["id"]: c for c in conversations}
        self.page_size = page_size
        self.route("POST", "/conversations/search", self._search)
        self.route("GET", "/conversations/*", self._get)

    def _search(self, q, body, base, path=None):
        lo, hi = -1, 2**40
        for cond in ((body or {}).get("query") or {}).get("value", []):
            if cond.get("field") != "updated_at":
                return 400, {"type": "error.list", "errors": [{"code": "parameter_invalid",
                                                                "message": f"unsupported field {cond.get('field')}"}]}
            if cond["operator"] == ">":
                lo = max(lo, int(cond["value"]))
            elif cond["operator"] == "<":
                hi = min(hi, int(cond["value"]))
        hits = sorted((c for c in self.conversations.values() if lo < c["updated_at"] < hi), key=lambda c: c["id"])
        pag = (body or {}).get("pagination") or {}
        size = min(int(pag.get("per_page", 20)), self.page_size)
        start = int(base64.b64decode(pag["starting_after"]).decode()) if pag.get("starting_after") else 0
        page = hits[start:start + size]
        total_pages = max(1, -(-len(hits) // size))
        pages = {"type": "pages", "page": start // size + 1, "per_page": size, "total_pages": total_pages}
        if start + size < len(hits):
            pages["next"] = {"page": start // size + 2,
                             "starting_after": base64.b64encode(str(start + size).encode()).decode()}
        brief = [{k: v for k, v in c.items() if k != "conversation_parts"} for c in page]
        return 200, {"type": "conversation.list", "conversations": brief, "total_count": len(hits), "pages": pages}

    def _get(self, q, body, base, path=None):
        cid = path.rsplit("/", 1)[1]
        c = self.conversations.get(cid)
        if c is None:
            return 404, {"type": "error.list", "errors": [{"code": "conversation_not_found", "message": "Not found"}]}
        parts = c.get("conversation_parts") or {"type": "conversation_part.list", "conversation_parts": [], "total_count": 0}
        return 200, {**c, "conversation_parts": {**parts, "conversation_parts": parts["conversation_parts"][:500]}}
