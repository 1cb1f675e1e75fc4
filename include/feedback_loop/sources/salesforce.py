"""Salesforce Service Cloud: Cases modified in the day, their whole status history, and survey answers kept as
records, through the Airflow Salesforce provider's hook (simple-salesforce) with SOQL (docs/sources.md#salesforce).

Streams:
- `cases`: `SELECT <CASE_FIELDS> FROM Case WHERE LastModifiedDate >= <start> AND LastModifiedDate < <end>`
- `case_history`: `SELECT Id, CaseId, Field, OldValue, NewValue, CreatedDate FROM CaseHistory WHERE Field = 'Status'
  AND CaseId IN (SELECT Id FROM Case WHERE LastModifiedDate ...)`: every status change of the day's cases, so
  reopens (Closed -> an open status) are counted over the case's life, not only the day.
- `surveys` (when the connection's extra has `survey_soql`, a SOQL with `{start}` and `{end}`): survey answers
  stored as records (Salesforce Feedback Management or a custom object).
Paging: the REST query resource's `nextRecordsUrl` until `done` (https://developer.salesforce.com/docs/atlas.
en-us.api_rest.meta/api_rest/resources_query.htm); records carry `attributes{type, url}` and datetimes as
`2026-11-02T08:15:00.000+0000`. Query locators expire, so a retry starts a stream again (no stored cursor).

The hook builds simple-salesforce from the connection `acsr_salesforce` (username/password/security token, a
connected app, or a direct session: extra `instance_url` with the access token as the password and
`"direct_session": true`). Its requests session gets a timeout and urllib3's Retry (429/5xx, Retry-After
honoured, backoff) mounted here; extra `ca_bundle` names a CA file for a TLS-inspecting proxy.
"""

from __future__ import annotations

import logging

from feedback_loop.sources.pull import Puller, PullError

log = logging.getLogger(__name__)

CASE_FIELDS = ("Id", "CaseNumber", "Status", "IsClosed", "ClosedDate", "CreatedDate", "LastModifiedDate", "Origin",
               "Reason", "Type", "Priority", "Subject", "IsEscalated", "OwnerId", "ContactId", "AccountId",
               "SystemModstamp")
HISTORY_FIELDS = ("Id", "CaseId", "Field", "OldValue", "NewValue", "CreatedDate")


def _soql_time(dt) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")  # SOQL datetime literal, unquoted


class SalesforcePuller(Puller):
    system = "salesforce"

    def __init__(self, sf, case_fields=CASE_FIELDS, extra_case_fields=(), survey_soql: str | None = None):
        self.sf = sf
        self.case_fields = tuple(dict.fromkeys((*case_fields, *extra_case_fields)))
        self.survey_soql = survey_soql
        self.streams = ("cases", "case_history") + (("surveys",) if survey_soql else ())
        self.requests = 0

    def _soql(self, stream, start, end) -> str:
        window = f"LastModifiedDate >= {_soql_time(start)} AND LastModifiedDate < {_soql_time(end)}"
        if stream == "cases":
            return f"SELECT {', '.join(self.case_fields)} FROM Case WHERE {window} ORDER BY LastModifiedDate, Id"
        if stream == "case_history":
            return (f"SELECT {', '.join(HISTORY_FIELDS)} FROM CaseHistory WHERE Field = 'Status' AND CaseId IN "
                    f"(SELECT Id FROM Case WHERE {window}) ORDER BY CaseId, CreatedDate, Id")
        return self.survey_soql.format(start=_soql_time(start), end=_soql_time(end))

    def pages(self, stream, start, end, cursor):
        import requests
        from simple_salesforce.exceptions import SalesforceError

        try:
            result = self.sf.query(self._soql(stream, start, end))
            while True:
                self.requests += 1
                yield result.get("records", []), None
                if result.get("done", True):
                    return
                result = self.sf.query_more(result["nextRecordsUrl"], identifier_is_url=True)
        except requests.exceptions.Timeout:
            raise PullError(f"salesforce {stream}: timed out") from None
        except requests.exceptions.RetryError as exc:
            raise PullError(f"salesforce {stream}: gave up after retries ({type(exc).__name__})") from None
        except requests.exceptions.ConnectionError as exc:
            raise PullError(f"salesforce {stream}: connection failed ({type(exc).__name__})") from None
        except SalesforceError as exc:  # 4xx with Salesforce's error body (no credentials in it)
            raise PullError(f"salesforce {stream}: HTTP {exc.status} {exc.content}"[:500]) from None


def _session(settings, ca_bundle=None):
    import requests
    from requests.adapters import HTTPAdapter
    from urllib3.util.retry import Retry

    class TimeoutAdapter(HTTPAdapter):
        def send(self, request, **kw):
            kw["timeout"] = kw.get("timeout") or settings.sources_timeout_seconds
            return super().send(request, **kw)

    retry = Retry(total=settings.sources_max_retries, connect=settings.sources_max_retries,
                  read=settings.sources_max_retries, status=settings.sources_max_retries,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=("GET",), backoff_factor=1.0,
                  backoff_max=settings.sources_max_wait_seconds, respect_retry_after_header=True)
    class Session(requests.Session):
        def merge_environment_settings(self, url, proxies, stream, verify, cert):
            # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's own `verify`: keep the
            # connection's CA bundle when it names one.
            out = super().merge_environment_settings(url, proxies, stream, verify, cert)
            if ca_bundle:
                out["verify"] = ca_bundle
            return out

    session = Session()
    session.mount("https://", TimeoutAdapter(max_retries=retry))
    session.mount("http://", TimeoutAdapter(max_retries=retry))
    return session


def make_puller(settings, conn) -> Puller:
    from airflow.providers.salesforce.hooks.salesforce import SalesforceHook

    extra = conn.extra
    session = _session(settings, extra.get("ca_bundle"))
    hook = SalesforceHook(salesforce_conn_id=conn.conn_id, session=session,
                          session_id=conn.password if extra.get("direct_session") else None)
    try:
        sf = hook.get_conn()
    except Exception as exc:  # noqa: BLE001 - a failed login names its cause, never the password
        raise PullError(f"salesforce: cannot connect with '{conn.conn_id}' ({type(exc).__name__})") from None
    return SalesforcePuller(sf, extra_case_fields=tuple(extra.get("case_fields", ())),
                            survey_soql=extra.get("survey_soql"))
