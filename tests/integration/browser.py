"""Headless Chromium (Debian's package) driven over the DevTools protocol, to look at a page as a person
would: set the UI's login cookie, open a URL, wait for something to render, take a PNG screenshot.

Started in its own process group with the flags this machine needs (no GPU, no sandbox as root, no
background networking: the network is closed), stopped by that group's id.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

from airflow_stack import Processes, free_port, wait_for

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars"]


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, processes: Processes, log_dir: Path, width: int = 1440, height: int = 1100):
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError("Chromium is not installed (scripts/ci_system_deps.sh chromium)")
        self.port = free_port()
        self.profile = tempfile.mkdtemp(prefix="acsr-chromium-")
        processes.start("chromium", [binary, *FLAGS, f"--remote-debugging-port={self.port}",
                                     "--remote-debugging-address=127.0.0.1", f"--user-data-dir={self.profile}",
                                     f"--window-size={width},{height}", "about:blank"],
                        {**os.environ, "HOME": self.profile}, log_dir)
        self.width, self.height = width, height
        pages = wait_for(self._pages, 60, interval=0.5, what="Chromium's DevTools endpoint")
        from websockets.sync.client import connect

        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 1024 * 1024, open_timeout=30)
        self._ids = itertools.count(1)

    def _pages(self):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json/list", timeout=5) as resp:
            return [p for p in json.loads(resp.read()) if p.get("type") == "page"]

    def send(self, method: str, params: dict | None = None, timeout: float = 60) -> dict:
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def set_cookie(self, url: str, name: str, value: str) -> None:
        self.send("Network.enable")
        ok = self.send("Network.setCookie", {"url": url, "name": name, "value": value, "path": "/"})
        if not ok.get("success", True):
            raise RuntimeError(f"cookie {name} refused")

    def open(self, url: str) -> None:
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        res = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True})
        return res.get("result", {}).get("value")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", {"format": "png"})["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)
