"""A headless Chromium driven through chromedriver's W3C WebDriver HTTP API (urllib only).

What the MLflow UI test needs of Selenium, in a page: open a URL, wait for a script's
condition, run a script, take a screenshot. chromedriver is started on a free loopback port and
stopped by its PID.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Browser:
    """One headless Chromium session; use as a context manager."""

    def __init__(self, profile: Path, width: int = 1400, height: int = 1000) -> None:
        driver, chromium = shutil.which("chromedriver"), shutil.which("chromium")
        if driver is None or chromium is None:
            pytest.fail("chromium or chromedriver is missing: run scripts/install-system-deps.sh")
        self.port = _free_port()
        self.proc = subprocess.Popen(
            [driver, f"--port={self.port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                self._call("GET", "/status")
                break
            except OSError:
                if time.monotonic() > deadline:
                    self.close()
                    raise
                time.sleep(0.3)
        args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
        ]
        caps = {
            "capabilities": {
                "alwaysMatch": {"goog:chromeOptions": {"binary": chromium, "args": args}}
            }
        }
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.base + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=300) as resp:
            return json.loads(resp.read())["value"]

    def get(self, url: str) -> None:
        self._call("POST", f"/session/{self.session}/url", {"url": url})

    def script(self, source: str, *args: Any) -> Any:
        """Run ``source`` as a function body in the page; returns its value."""
        return self._call(
            "POST", f"/session/{self.session}/execute/sync", {"script": source, "args": list(args)}
        )

    def wait_for(self, source: str, timeout: float = 120.0) -> Any:
        """Poll a script until it returns something truthy; fail with the page's text."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.script(source)
            if value:
                return value
            time.sleep(0.5)
        text = self.script("return document.body ? document.body.innerText : ''")
        raise AssertionError(f"page never satisfied {source!r}; its text:\n{str(text)[:3000]}")

    def screenshot(self, path: Path) -> None:
        png = self._call("GET", f"/session/{self.session}/screenshot")
        path.write_bytes(base64.b64decode(png))

    def close(self) -> None:
        try:
            if getattr(self, "session", None):
                self._call("DELETE", f"/session/{self.session}")
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
