"""A tiny threaded HTTP server for vendor stand-ins: routes, basic/bearer auth, and a fault plan.

The fault plan maps the n-th request (1-based, any route) to a fault: ("429", seconds) answers
429 Too Many Requests with that Retry-After, ("429-reset", seconds) with X-RateLimit-Reset (Intercom); ("hang", seconds) sleeps before answering (a client timeout);
("500", 0) answers a server error. Requests are recorded (method, path, query, whether authorised)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


def self_signed(folder: str) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key (PEM files in `folder`): for clients that only speak HTTPS
    (simple-salesforce builds https:// URLs). The certificate is its own CA: give its path to the client."""
    import datetime
    import ipaddress
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = os.path.join(folder, "standin-cert.pem"), os.path.join(folder, "standin-key.pem")
    with open(cert_path, "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return cert_path, key_path


class StandIn:
    scheme = "http"

    def __init__(self, check_auth, faults: dict | None = None, tls_dir: str | None = None):
        self.check_auth, self.faults = check_auth, dict(faults or {})
        self.tls_dir = tls_dir
        self.ca_path: str | None = None
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.routes: dict[tuple[str, str], object] = {}
        self.server: ThreadingHTTPServer | None = None

    def route(self, method: str, path: str, fn) -> None:
        self.routes[(method, path)] = fn

    @property
    def url(self) -> str:
        return f"{'https' if self.tls_dir else 'http'}://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> StandIn:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _answer(self, code: int, doc, headers: dict | None = None):
                body = json.dumps(doc).encode()
                try:
                    self.send_response(code)
                    self.send_header("Content-Type", "application/json; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass  # the client gave up (a timeout test)

            def _handle(self, method: str):
                url = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"null") if length else None
                with stand_in.lock:
                    n = len(stand_in.requests) + 1
                    ok = stand_in.check_auth(self.headers)
                    stand_in.requests.append({"n": n, "method": method, "path": url.path, "query": query,
                                              "authorised": ok})
                    fault = stand_in.faults.pop(n, None)
                if fault:
                    kind, seconds = fault
                    if kind == "429-reset":  # Intercom's form: the unix time the limit resets
                        return self._answer(429, {"type": "error.list", "errors": [
                            {"code": "rate_limit_exceeded", "message": "Exceeded rate limit"}]},
                            {"X-RateLimit-Limit": "1000", "X-RateLimit-Remaining": "0",
                             "X-RateLimit-Reset": str(int(time.time()) + int(seconds))})
                    if kind == "429":
                        return self._answer(429, {"error": "APIRateLimitExceeded",
                                                  "description": "Number of allowed API requests per minute exceeded"},
                                            {"Retry-After": str(seconds)})
                    if kind == "hang":
                        time.sleep(seconds)
                    if kind == "500":
                        return self._answer(500, {"error": "InternalError"})
                if not ok:
                    return self._answer(401, {"error": "Couldn't authenticate you"})
                fn = stand_in.routes.get((method, url.path)) or stand_in.routes.get(
                    (method, url.path.rsplit("/", 1)[0] + "/*"))
                if fn is None:
                    return self._answer(404, {"error": "InvalidEndpoint", "description": url.path})
                code, doc = fn(query, body, stand_in.url, url.path)
                return self._answer(code, doc)

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if self.tls_dir:
            cert, key = self_signed(self.tls_dir)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(cert, key)
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
            self.ca_path = cert
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
