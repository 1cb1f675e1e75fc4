"""The pull framework: fetch one system's records of one day's interval and keep them as the vendor sent them.

A pull writes each page of each stream (tickets, metric_sets, spans, ...) to a staging folder, then publishes
the whole day at once: the pages are joined into `<stream>.jsonl.gz` (gzip with a zero mtime, so the same
records give the same bytes) in a folder named by a hash of its content,
`<landing>/_vendor/<system>/dt=D/pull-<hash>/`, and `manifest.json` beside it is replaced atomically. The
manifest is the commit point: it says whether the day's pull is complete, which folder holds it, how many
records each stream has and the files' sha256. A pull that fails writes an `incomplete` manifest with the
error, and the land stage refuses a contract source fed by a system whose day is not complete.

The day is defined by its interval, never by a stored cursor: every pull of a day starts at the day's start
(a re-run of an old day fetches the whole day again). Within one task instance, Airflow 3.3's task state store
(`context["task_state_store"]`, scoped to dag, run, task and map index) keeps the cursor of the last page
written, so a retry after a timeout resumes where the failed try stopped instead of fetching the pages again.

HTTP: timeouts, 429/503 with Retry-After (seconds or an HTTP date), 5xx and connection errors retried with
backoff, a bounded number of times; credentials come from Airflow connections, are registered with the
secrets masker and only ever travel in headers (never in a URL, a log line or an error message).
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from feedback_loop.lake.files import is_remote, join, write_bytes_atomic
from feedback_loop.settings import Settings

log = logging.getLogger(__name__)

VENDOR_DIR = "_vendor"  # under the landing root; land never reads it (a leading "_")
MANIFEST = "manifest.json"
COMPLETE, INCOMPLETE = "complete", "incomplete"


class PullError(RuntimeError):
    """A pull that could not fetch its whole interval; the message names the system, stream and cause."""


class IncompleteDayError(RuntimeError):
    """The landing data of a day comes from a pull that is not complete: the day must not be processed."""


def day_interval(dt: str | date) -> tuple[datetime, datetime]:
    """[00:00, 24:00) UTC of the day: what one nightly run pulls."""
    d = date.fromisoformat(str(dt))
    start = datetime(d.year, d.month, d.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


# ---------------------------------------------------------------------------------------------- connections
@dataclass
class ConnectionInfo:
    """What a pull needs from an Airflow connection (host = API base URL, login, password, extra)."""

    conn_id: str
    host: str
    login: str | None = None
    password: str | None = None
    extra: dict = field(default_factory=dict)

    def __repr__(self) -> str:  # never print the password, not even in a traceback's locals
        return f"ConnectionInfo(conn_id={self.conn_id!r}, host={self.host!r}, login={self.login!r})"


def get_connection(conn_id: str) -> ConnectionInfo:
    """An Airflow connection (metadata DB, secrets backend or AIRFLOW_CONN_<ID>), its secrets masked."""
    from airflow.sdk import Connection

    try:
        conn = Connection.get(conn_id)
    except Exception as exc:
        raise PullError(f"Airflow connection '{conn_id}' not found: create it (docs/sources.md)") from exc
    extra = conn.extra_dejson or {}
    _mask(conn.password)
    for k in ("token", "api_token", "access_token", "secret_key", "public_key", "security_token"):
        _mask(extra.get(k))
    host = conn.host or ""
    if host and "://" not in host:
        host = f"{conn.schema or 'https'}://{host}"
    if conn.port and host.count(":") < 2:
        host = f"{host}:{conn.port}"
    return ConnectionInfo(conn_id, host.rstrip("/"), conn.login, conn.password, extra)


def _mask(secret) -> None:
    if not secret:
        return
    try:
        from airflow.sdk.log import mask_secret

        mask_secret(secret)
    except Exception:  # noqa: BLE001, S110 - masking is best effort outside a task process
        pass


# --------------------------------------------------------------------------------------------------- HTTP
class VendorHTTP:
    """GET/POST JSON with timeouts, Retry-After on 429/503, backoff on 5xx and network errors (httpx)."""

    def __init__(self, base_url: str, *, system: str, headers: dict | None = None, auth=None,
                 timeout: float = 30.0, max_retries: int = 5, max_wait: float = 120.0,
                 sleep: Callable[[float], None] = time.sleep):
        import httpx

        self.system, self.max_retries, self.max_wait, self.sleep = system, max_retries, max_wait, sleep
        self.client = httpx.Client(base_url=base_url, headers=headers or {}, auth=auth, timeout=timeout,
                                   follow_redirects=False)
        self.requests = 0
        self.retries = 0

    def close(self) -> None:
        self.client.close()

    def get(self, url: str, params: dict | None = None) -> dict:
        return self._call("GET", url, params=params)

    def post(self, url: str, body: dict) -> dict:
        return self._call("POST", url, json=body)

    def _call(self, method: str, url: str, **kw) -> dict:
        import httpx

        where = f"{self.system} {method} {url.split('?', 1)[0]}"
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                self.requests += 1
                resp = self.client.request(method, url, **kw)
            except httpx.TimeoutException as exc:
                if last:
                    raise PullError(f"{where}: timed out {attempt + 1} times ({type(exc).__name__})") from None
                self._wait(where, self._backoff(attempt), "timeout")
                continue
            except httpx.TransportError as exc:
                if last:
                    raise PullError(f"{where}: connection failed {attempt + 1} times ({type(exc).__name__})") from None
                self._wait(where, self._backoff(attempt), type(exc).__name__)
                continue
            if resp.status_code in (429, 503) or resp.status_code >= 500:
                if last:
                    raise PullError(f"{where}: HTTP {resp.status_code} after {attempt + 1} attempts")
                wait = retry_after(resp.headers.get("Retry-After"))
                if wait is None and resp.headers.get("X-RateLimit-Reset"):  # Intercom: the unix time of the reset
                    try:
                        wait = max(0.0, float(resp.headers["X-RateLimit-Reset"]) - time.time())
                    except ValueError:
                        wait = None
                if wait is None:
                    wait = self._backoff(attempt)
                if wait > self.max_wait:
                    raise PullError(f"{where}: HTTP {resp.status_code}, Retry-After {wait:.0f} s is beyond the "
                                    f"{self.max_wait:.0f} s this pull waits (ACSR_SOURCES_MAX_WAIT_SECONDS)")
                self._wait(where, wait, f"HTTP {resp.status_code}")
                continue
            if resp.status_code >= 400:
                raise PullError(f"{where}: HTTP {resp.status_code}: {resp.text[:300]}")
            try:
                return resp.json()
            except ValueError:
                raise PullError(f"{where}: the answer is not JSON: {resp.text[:200]!r}") from None
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int) -> float:
        return min(self.max_wait, 2.0 ** attempt)

    def _wait(self, where: str, seconds: float, why: str) -> None:
        self.retries += 1
        log.warning("%s: %s, retrying in %.1f s", where, why, seconds)
        self.sleep(seconds)


def retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110 10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


# ------------------------------------------------------------------------------------------------ pullers
class Puller:
    """One source system. `pages` yields (records, cursor after the page) for a stream and an interval;
    a page's cursor lets a retry resume after it (None: the stream cannot resume mid-way)."""

    system: str = ""
    streams: tuple[str, ...] = ()

    def pages(self, stream: str, start: datetime, end: datetime, cursor) -> Iterator[tuple[list[dict], object]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


# ------------------------------------------------------------------------------------------- raw day files
def vendor_day_dir(settings: Settings, system: str, dt: str) -> str:
    return join(settings.landing, VENDOR_DIR, system, f"dt={dt}")


def read_manifest(settings: Settings, system: str, dt: str) -> dict | None:
    path = join(vendor_day_dir(settings, system, dt), MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _write_manifest(settings: Settings, system: str, dt: str, doc: dict) -> None:
    path = join(vendor_day_dir(settings, system, dt), MANIFEST)
    write_bytes_atomic(path, json.dumps(doc, indent=2, sort_keys=True).encode())


def read_stream(settings: Settings, system: str, dt: str, stream: str) -> list[dict]:
    """The records of one stream of a complete pull (raises IncompleteDayError otherwise)."""
    m = require_complete(settings, system, dt)
    info = m["streams"].get(stream)
    if info is None:
        return []
    path = join(vendor_day_dir(settings, system, dt), m["folder"], info["file"])
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def require_complete(settings: Settings, system: str, dt: str) -> dict:
    m = read_manifest(settings, system, dt)
    if m is None:
        raise IncompleteDayError(f"{system} {dt}: never pulled (no {VENDOR_DIR}/{system}/dt={dt}/{MANIFEST})")
    if m.get("status") != COMPLETE:
        raise IncompleteDayError(f"{system} {dt}: the last pull is {m.get('status')}: {m.get('error')}. "
                                 "Re-run the day's pull before processing it.")
    return m


def gzip_lines(records: list[dict]) -> bytes:
    """JSON Lines, gzipped with no timestamp or name in the header: the same records, the same bytes."""
    text = "".join(json.dumps(r, ensure_ascii=False, sort_keys=False, separators=(",", ":")) + "\n" for r in records)
    return gzip.compress(text.encode("utf-8"), mtime=0)


@dataclass
class PullResult:
    system: str
    dt: str
    status: str
    folder: str
    streams: dict
    requests: int = 0
    retries: int = 0
    resumed_from: dict | None = None

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def run_pull(settings: Settings, puller: Puller, dt: str, state=None) -> PullResult:
    """Pull every stream of `puller` for the day into staging, then publish the day (see module doc).

    `state`: an object with get/set/delete (Airflow's task state store) to resume a retried try."""
    if is_remote(settings.landing):
        raise PullError(f"pulls write to a local landing folder; {settings.landing} is remote")
    system = puller.system
    start, end = day_interval(dt)
    day_dir = vendor_day_dir(settings, system, dt)
    os.makedirs(day_dir, exist_ok=True)
    key = f"pull:{system}:{dt}"
    saved = state.get(key) if state is not None else None
    if saved and os.path.isdir(saved.get("staging", "")):
        staging, progress = saved["staging"], saved["progress"]
        log.info("%s %s: resuming the interrupted pull at %s", system, dt, progress)
    else:
        staging, progress = join(day_dir, f".staging-{uuid.uuid4().hex}"), {}
    resumed = dict(progress) or None
    for name in os.listdir(day_dir):  # staging folders of earlier tries that are not being resumed
        if name.startswith(".staging-") and join(day_dir, name) != staging:
            shutil.rmtree(join(day_dir, name), ignore_errors=True)
    os.makedirs(staging, exist_ok=True)
    http = getattr(puller, "http", None)
    try:
        for stream in puller.streams:
            done = progress.get(stream, {})
            if done.get("finished"):
                continue
            sdir = join(staging, stream)
            os.makedirs(sdir, exist_ok=True)
            page_no = done.get("pages", 0)
            for name in os.listdir(sdir):  # pages written after the last saved cursor are fetched again
                if not name.startswith("page-") or int(name[5:11]) > page_no:
                    os.remove(join(sdir, name))
            for records, cursor in puller.pages(stream, start, end, done.get("cursor")):
                page_no += 1
                # A page may carry side-loaded records of other streams ({stream: records}).
                for name, recs in (records if isinstance(records, dict) else {stream: records}).items():
                    write_bytes_atomic(join(sdir, f"page-{page_no:06d}.{name}.jsonl.gz"), gzip_lines(recs))
                progress[stream] = {"pages": page_no, "cursor": cursor}
                if state is not None and cursor is not None:
                    state.set(key, {"staging": staging, "progress": progress})
            progress[stream] = {"pages": page_no, "cursor": None, "finished": True}
            if state is not None:
                state.set(key, {"staging": staging, "progress": progress})
    except Exception as exc:
        msg = str(exc) if isinstance(exc, PullError) else f"{type(exc).__name__}: {exc}"
        previous = read_manifest(settings, system, dt) or {}
        _write_manifest(settings, system, dt, {
            "system": system, "dt": dt, "status": INCOMPLETE, "error": msg,
            "interval": [start.isoformat(), end.isoformat()], "progress": progress,
            "previous_complete_folder": previous.get("folder") if previous.get("status") == COMPLETE
            else previous.get("previous_complete_folder"),
            "failed_at": datetime.now(UTC).isoformat(timespec="seconds"),
        })
        log.error("%s %s: pull incomplete: %s", system, dt, msg)
        if isinstance(exc, PullError):
            raise
        raise PullError(f"{system} {dt}: {msg}") from exc
    finally:
        puller.close()
    streams = _publish(staging, puller.streams)
    digest = hashlib.sha256(json.dumps(streams, sort_keys=True).encode()).hexdigest()[:16]
    folder = f"pull-{digest}"
    target = join(day_dir, folder)
    if os.path.isdir(target):  # the same records as a pull already published: keep that folder
        shutil.rmtree(staging)
    else:
        os.rename(staging, target)
    result = PullResult(system, dt, COMPLETE, folder, streams, getattr(http, "requests", 0),
                        getattr(http, "retries", 0), resumed)
    _write_manifest(settings, system, dt, {
        "system": system, "dt": dt, "status": COMPLETE, "folder": folder, "streams": streams,
        "interval": [start.isoformat(), end.isoformat()], "requests": result.requests, "retries": result.retries,
        "resumed_from": resumed, "pulled_at": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    for name in os.listdir(day_dir):  # earlier pulls of the day, no longer named by the manifest
        if name.startswith("pull-") and name != folder:
            shutil.rmtree(join(day_dir, name), ignore_errors=True)
    if state is not None:
        state.delete(key)
    log.info("%s %s: pulled %s", system, dt, {s: v["records"] for s, v in streams.items()})
    return result


def _publish(staging: str, units: tuple[str, ...]) -> dict:
    """Join the pages of every stream into `<stream>.jsonl.gz` inside staging, in fetch order;
    {stream: records, file, sha256}."""
    pages: dict[str, list[str]] = {}
    for unit in units:
        sdir = join(staging, unit)
        for name in sorted(n for n in os.listdir(sdir) if n.startswith("page-")):
            pages.setdefault(name.split(".")[1], []).append(join(sdir, name))
    out = {}
    for stream in sorted(pages):
        records = []
        for path in pages[stream]:
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                records.extend(json.loads(line) for line in fh if line.strip())
        data = gzip_lines(records)
        fname = f"{stream}.jsonl.gz"
        write_bytes_atomic(join(staging, fname), data)
        out[stream] = {"file": fname, "records": len(records), "sha256": hashlib.sha256(data).hexdigest()}
    for unit in units:
        shutil.rmtree(join(staging, unit))
    return out
