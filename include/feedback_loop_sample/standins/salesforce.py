"""A Salesforce REST API stand-in: the query resource, over HTTPS (simple-salesforce only builds https:// URLs).

- GET /services/data/v59.0/query/?q=<SOQL> -> {totalSize, done, nextRecordsUrl, records: [{attributes: {type,
  url}, ...fields}]}; GET <nextRecordsUrl> (/services/data/v59.0/query/<locator>-<offset>) -> the next batch.
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/resources_query.htm
  https://developer.salesforce.com/docs/atlas.en-us.api_rest.meta/api_rest/dome_query.htm
- Errors: 401 [{message: "Session expired or invalid", errorCode: "INVALID_SESSION_ID"}].
The SOQL understood is what the pull sends: the object after FROM, `LastModifiedDate >= X AND
LastModifiedDate < Y` (for CaseHistory: of the parent Case, through the semi-join), `Field = 'Status'`.
Auth: `Authorization: Bearer <session id>`.
"""

from __future__ import annotations

import re
from datetime import datetime

from feedback_loop_sample.standins.server import StandIn

SESSION_ID = "00Dxx0000001gPL!AQ4AQ.sf-test-session"
API = "/services/data/v59.0"


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


class SalesforceStandIn(StandIn):
    def __init__(self, data: dict, tls_dir: str, *, page_size: int = 2, faults: dict | None = None,
                 session_id: str = SESSION_ID):
        super().__init__(lambda h: h.get("Authorization") == f"Bearer {session_id}", faults, tls_dir=tls_dir)
        self.data, self.page_size = data, page_size
        self.locators: dict[str, list] = {}
        self.route("GET", f"{API}/query/", self._query)
        self.route("GET", f"{API}/query/*", self._more)

    def _records(self, soql: str) -> list:
        obj = re.search(r"\bFROM\s+(\w+)", soql).group(1)
        window = re.findall(r"(?:LastModifiedDate|CreatedDate) (>=|<) (\S+?)[)\s]", soql + " ")
        lo = next((_t(v) for op, v in window if op == ">="), None)
        hi = next((_t(v) for op, v in window if op == "<"), None)

        def modified_in(case):
            m = _t(case["LastModifiedDate"])
            return (lo is None or m >= lo) and (hi is None or m < hi)

        cases = self.data.get("Case", [])
        if obj == "Case":
            rows = [c for c in cases if modified_in(c)]
        elif obj == "CaseHistory":
            ids = {c["Id"] for c in cases if modified_in(c)}
            rows = [h for h in self.data.get("CaseHistory", []) if h["CaseId"] in ids
                    and ("Field = 'Status'" not in soql or h["Field"] == "Status")]
        else:
            rows = [r for r in self.data.get(obj, []) if
                    (lo is None or _t(r["CreatedDate"]) >= lo) and (hi is None or _t(r["CreatedDate"]) < hi)]
        return [{"attributes": {"type": obj, "url": f"{API}/sobjects/{obj}/{r['Id']}"}, **r} for r in rows]

    def _batch(self, locator: str, offset: int):
        rows = self.locators[locator]
        page = rows[offset:offset + self.page_size]
        done = offset + self.page_size >= len(rows)
        doc = {"totalSize": len(rows), "done": done, "records": page}
        if not done:
            doc["nextRecordsUrl"] = f"{API}/query/{locator}-{offset + self.page_size}"
        return 200, doc

    def _query(self, q, body, base, path=None):
        if "q" not in q:
            return 400, [{"message": "missing q", "errorCode": "MALFORMED_QUERY"}]
        locator = f"01gxx{len(self.locators):010d}"
        self.locators[locator] = self._records(q["q"])
        return self._batch(locator, 0)

    def _more(self, q, body, base, path=None):
        locator, offset = path.rsplit("/", 1)[1].rsplit("-", 1)
        if locator not in self.locators:
            return 400, [{"message": "invalid query locator", "errorCode": "INVALID_QUERY_LOCATOR"}]
        return self._batch(locator, int(offset))
