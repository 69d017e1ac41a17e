"""How long the status page takes to draw Fugaku with 1,000 running jobs (issue 17; goal < 2 s).

The daemon is the one of ``tests/daemon/test_status_page_scale.py`` (:func:`fugaku_page`): the
fugaku preset (158,976 nodes), 1,000 running jobs of assorted torus and mesh boxes and node
counts started in one tick on the simulated backend (no processes), its API served in a thread
of this process. Headless Chromium is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no extra package, no port): per run a fresh tab navigates to the
page and is polled every 5 ms until ``body[data-ready]``. Figures per run:

* ``ready``: the page's own ``performance.now()`` when its first draw ended (``data-ready-ms``:
  milliseconds since the navigation started: HTML, script, the ``/api/v1/status`` request, the
  JSON parse, the tables, the map);
* ``painted``: the same clock once the frame after that draw is done (``data-painted-ms``: the
  browser's style, layout and paint of what was drawn);
* ``wall``: from sending ``Page.navigate`` to the poll that saw both;
* ``draw``: the time inside the first ``draw()`` (``data-draw-ms``).

A page without these attributes (``--page-rev`` of an older page) gives, for ready and painted,
``performance.now()`` at the poll that saw ``data-ready`` (up to 5 ms late, before its paint).

Also the daemon's side: ``GET /api/v1/status`` over HTTP (its size and median time).
One warm-up run, then ``--runs`` measured; prints each run and the medians. Nothing is asserted.

    .venv/bin/python benchmarks/status_page_render.py
    .venv/bin/python benchmarks/status_page_render.py --page-rev HEAD   # the committed page
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "daemon"))

from test_status_page_scale import CHROMIUM_FLAGS, JOBS, fugaku_page  # noqa: E402

from orchestrator.daemon import api  # noqa: E402

POLL_S = 0.005
READY = (
    "(() => { const b = document.body;"
    " if (!b || b.dataset.ready !== '1') return null;"
    " if (b.dataset.readyMs && !b.dataset.paintedMs) return null;"
    " const now = performance.now();"
    " return [Number(b.dataset.readyMs || now), Number(b.dataset.paintedMs || now),"
    " Number(b.dataset.drawMs || 0)]; })()"
)


class Chromium:
    """Headless Chromium with the DevTools protocol on fds 3 (commands) and 4 (replies)."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 1100) -> None:
        to_chrome_r, self._write = os.pipe()
        self._read, from_chrome_w = os.pipe()
        # Copies above 10, so that moving them to 3 and 4 in the child clobbers neither.
        high_r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD, 10)
        high_w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)

        def child() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        binary = shutil.which("chromium")
        if binary is None:
            raise SystemExit("chromium is missing: run scripts/install-system-deps.sh")
        self.process = subprocess.Popen(
            [
                binary,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
                "--remote-debugging-pipe",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=child,  # noqa: PLW1509 (single-threaded here: the API thread starts later)
        )
        os.close(high_r)
        os.close(high_w)
        self._buffer = b""
        self._next = 0

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def _receive(self) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        reply: dict[str, Any] = json.loads(message)
        return reply

    def render(self, url: str) -> tuple[float, float, float, float]:
        """One fresh tab: (ready ms, painted ms, wall ms, draw ms); see the module's doc."""
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session)
        start = time.perf_counter()
        self.call("Page.navigate", session, url=url)
        while True:
            try:
                value = self.call("Runtime.evaluate", session, expression=READY, returnByValue=True)
            except RuntimeError:  # the old document went away mid-call
                value = {}
            found = value.get("result", {}).get("value")
            if found:
                wall = (time.perf_counter() - start) * 1000
                break
            time.sleep(POLL_S)
        self.call("Target.closeTarget", targetId=target)
        return float(found[0]), float(found[1]), wall, float(found[2])

    def close(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.call("Browser.close")
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._write)
        os.close(self._read)


def old_page(rev: str, folder: Path) -> Path:
    """The status page's three files as of ``rev``."""
    for name in ("index.html", "app.js", "style.css"):
        text = subprocess.run(
            ["git", "show", f"{rev}:orchestrator/daemon/web/{name}"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        (folder / name).write_bytes(text)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--page-rev", help="serve the page files of this git revision instead")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="orch-page-") as tmp:
        if args.page_rev:
            api.WEB = old_page(args.page_rev, Path(tmp))
        t0 = time.perf_counter()
        with fugaku_page() as page:
            built = time.perf_counter() - t0
            status_ms, size = [], 0
            for _ in range(5):
                s0 = time.perf_counter()
                with urllib.request.urlopen(f"{page.url}/api/v1/status") as response:
                    size = len(response.read())
                status_ms.append((time.perf_counter() - s0) * 1000)
            browser = Chromium(Path(tmp) / "profile")
            try:
                browser.render(f"{page.url}/")  # warm-up: the browser's first tab
                runs = [browser.render(f"{page.url}/") for _ in range(args.runs)]
            finally:
                browser.close()
    print(f"fugaku, {JOBS} running jobs (world built in {built:.1f} s)")
    print(f"page files: {args.page_rev or 'working tree'}")
    print(f"GET /api/v1/status: {size / 1e6:.2f} MB, median {statistics.median(status_ms):.0f} ms")
    names = ("ready", "painted", "wall", "draw")
    for i, run in enumerate(runs, 1):
        print(f"run {i}: " + "  ".join(f"{n} {v:7.1f} ms" for n, v in zip(names, run, strict=True)))
    medians = [statistics.median(r[k] for r in runs) for k in range(len(names))]
    print(
        f"median of {len(runs)}: "
        + ", ".join(f"{n} {v:.1f} ms" for n, v in zip(names, medians, strict=True))
    )
    print(f"load average: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
