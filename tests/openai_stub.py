"""A local stand-in for an OpenAI-compatible fine-tuning API: the endpoints the openai backend calls.

POST /v1/files (multipart), POST /v1/fine_tuning/jobs, GET /v1/fine_tuning/jobs/{id},
POST /v1/fine_tuning/jobs/{id}/cancel. The job's fate is chosen by its `model`: `succeed` (running for
two polls, then succeeded with a model id, trained tokens and a cost), `fail` (failed with an error after
one poll), anything else runs forever (for timeouts). Requests are kept for assertions.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KEY = "sk-test-secret-0123456789"


class OpenAIStub:
    def __init__(self, key: str = KEY):
        self.key, self.lock = key, threading.Lock()
        self.requests: list[dict] = []
        self.files: dict[str, dict] = {}
        self.jobs: dict[str, dict] = {}
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, code, doc):
                body = json.dumps(doc).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _handle(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                with stub.lock:
                    stub.requests.append({"method": method, "path": self.path, "auth": self.headers.get("Authorization"),
                                          "content_type": self.headers.get("Content-Type"), "body": raw})
                    if self.headers.get("Authorization") != f"Bearer {stub.key}":
                        return self._send(401, {"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}})
                    return self._send(*stub.route(method, self.path, raw, self.headers.get("Content-Type") or ""))

            def do_GET(self):
                self._handle("GET")

            def do_POST(self):
                self._handle("POST")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def route(self, method, path, raw, ctype):
        if method == "POST" and path == "/v1/files":
            if "multipart/form-data" not in ctype:
                return 400, {"error": {"message": "multipart expected"}}
            name = re.search(rb'filename="([^"]+)"', raw)
            purpose = re.search(rb'name="purpose"\r\n\r\n([^\r]+)', raw)
            fid = f"file-{len(self.files) + 1}"
            self.files[fid] = {"id": fid, "filename": name.group(1).decode() if name else None,
                               "purpose": purpose.group(1).decode() if purpose else None, "bytes": len(raw),
                               "lines": raw.count(b"\n")}
            return 200, {"id": fid, "object": "file", "purpose": self.files[fid]["purpose"]}
        if method == "POST" and path == "/v1/fine_tuning/jobs":
            body = json.loads(raw)
            if body.get("training_file") not in self.files:
                return 400, {"error": {"message": "training_file not found", "code": "invalid_file"}}
            jid = f"ftjob-{len(self.jobs) + 1}"
            self.jobs[jid] = {"id": jid, "object": "fine_tuning.job", "model": body["model"], "status": "validating_files",
                              "polls": 0, "request": body, "fine_tuned_model": None, "trained_tokens": None, "error": None}
            return 200, self.view(jid)
        m = re.fullmatch(r"/v1/fine_tuning/jobs/([\w-]+)(/cancel)?", path)
        if m and m.group(1) in self.jobs:
            job = self.jobs[m.group(1)]
            if m.group(2):
                job["status"] = "cancelled"
            elif job["status"] not in ("succeeded", "failed", "cancelled"):
                job["polls"] += 1
                if job["model"] == "succeed" and job["polls"] >= 3:
                    job.update(status="succeeded", fine_tuned_model=f"ft:succeed:acsr:{job['id']}",
                               trained_tokens=12345, usage={"cost": 0.42})
                elif job["model"] == "fail" and job["polls"] >= 2:
                    job.update(status="failed", error={"code": "invalid_training_file",
                                                       "message": "line 3: missing assistant message", "param": None})
                else:
                    job["status"] = "running"
            return 200, self.view(job["id"])
        return 404, {"error": {"message": f"no route {method} {path}"}}

    def view(self, jid):
        return {k: v for k, v in self.jobs[jid].items() if k not in ("polls", "request")}

    def close(self):
        self.server.shutdown()
        self.server.server_close()
