"""Headless Chromium driven over the DevTools protocol on a pipe, to check the report's layout in a real browser.

The report's tests and ``bench/bench_report.py`` measure the rendered page (text boxes, overlaps, page height) at
several viewport widths. ``--dump-dom`` and ``--screenshot`` cannot run a script in a page whose CSP allows only
its own, so this speaks the protocol (``--remote-debugging-pipe``: JSON messages ending in NUL on file
descriptors 3 and 4) with the standard library alone: no websocket client, no Playwright.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

TIMEOUT_S = 60.0
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--hide-scrollbars",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
         "--remote-debugging-pipe")

_TRAMPOLINE = ("import os, sys; os.dup2(int(sys.argv[1]), 3); os.dup2(int(sys.argv[2]), 4); "
               "os.execv(sys.argv[3], sys.argv[3:])")

MAX_SHOT = 16_000  # px: taller captures fail in Chromium
_PAGE_BOX = "[0, 0, document.documentElement.scrollWidth, document.documentElement.scrollHeight]"
_ELEMENT_BOX = ("(() => { const r = document.querySelector(%s).getBoundingClientRect(); "
                "return [r.left + scrollX, r.top + scrollY, r.width, r.height]; })()")


def find_chromium() -> str | None:
    """The Chromium binary (Debian package ``chromium``), or None."""
    return next((p for p in ("/usr/bin/chromium", shutil.which("chromium")) if p and Path(p).is_file()), None)


class ChromiumError(RuntimeError):
    """The browser answered a command with an error, died, or did not answer in time."""


class Chromium:
    """One headless browser with one page; use as a context manager (the process ends on exit)."""

    def __init__(self, binary: str | None = None, timeout: float = TIMEOUT_S) -> None:
        binary = binary or find_chromium()
        if binary is None:
            raise ChromiumError("chromium not installed (apt-get install -y chromium)")
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._profile = tempfile.TemporaryDirectory(prefix="report-chromium-")
        self._next_id = 0
        self._buffer = b""
        self._proc, self._to, self._from = self._launch(binary)
        self._session = self._attach()

    def _launch(self, binary: str) -> tuple[subprocess.Popen[bytes], int, int]:
        """Start the browser with our pipe ends on its fds 3 (commands in) and 4 (answers out)."""
        cmd_r, cmd_w = os.pipe()
        out_r, out_w = os.pipe()
        # the child's ends go above fd 9, so moving them onto 3 and 4 cannot close one another
        cmd_r, out_w = (self._high(fd) for fd in (cmd_r, out_w))
        # a Python trampoline moves the pipe ends onto fds 3 and 4 and becomes the browser (dash's ``3<&N``
        # takes one digit only, and preexec_fn is unsafe with threads)
        args = [*FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"]
        proc = subprocess.Popen([sys.executable, "-c", _TRAMPOLINE, str(cmd_r), str(out_w), binary, *args],
                                pass_fds=(cmd_r, out_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        os.close(cmd_r)
        os.close(out_w)
        return proc, cmd_w, out_r

    @staticmethod
    def _high(fd: int) -> int:
        moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(fd)
        return moved

    def _attach(self) -> str:
        targets = self.send("Target.getTargets", session=False)["targetInfos"]
        page = next(t["targetId"] for t in targets if t.get("type") == "page")
        session = self.send("Target.attachToTarget", {"targetId": page, "flatten": True}, session=False)["sessionId"]
        self._session = session
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        return session

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from], [], [], left)[0]:
                raise ChromiumError("chromium did not answer in time")
            chunk = os.read(self._from, 1 << 20)
            if not chunk:
                raise ChromiumError(f"chromium exited (status {self._proc.poll()})")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, session: bool = True) -> dict[str, Any]:
        """Send one command and wait for its answer; events that arrive meanwhile are kept in ``events``."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = self._session
        os.write(self._to, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") != self._next_id:
                self.events.append(answer)
                continue
            if "error" in answer:
                raise ChromiumError(f"{method}: {answer['error']}")
            result: dict[str, Any] = answer.get("result", {})
            return result

    def wait_for(self, method: str) -> dict[str, Any]:
        """The next event named ``method`` (one already received counts, and is consumed)."""
        deadline = time.monotonic() + self.timeout
        while True:
            for i, event in enumerate(self.events):
                if event.get("method") == method:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def open(self, url: str, width: int, height: int = 900) -> None:
        """Load ``url`` in a viewport ``width`` CSS px wide (a phone's metrics below 600 px) and wait for it."""
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
        self.send("Page.navigate", {"url": url})
        self.wait_for("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (it runs outside the page's CSP)."""
        answer = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise ChromiumError(f"script failed: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True, element: str = "") -> Path:
        """A PNG for a person to look at: the viewport, the whole page (``full_page``), or the element a CSS
        selector names; at most ``MAX_SHOT`` px tall."""
        params: dict[str, Any] = {"format": "png"}
        if element or full_page:
            box = self.evaluate(_ELEMENT_BOX % json.dumps(element) if element else _PAGE_BOX)
            params.update(captureBeyondViewport=True, clip={"x": box[0], "y": box[1], "width": box[2],
                                                            "height": min(box[3], MAX_SHOT), "scale": 1})
        path.write_bytes(base64.b64decode(self.send("Page.captureScreenshot", params)["data"]))
        return path

    def console(self) -> list[str]:
        """Console messages and browser log entries received so far (a CSP violation logs one)."""
        lines = []
        for event in self.events:
            if event.get("method") == "Runtime.consoleAPICalled":
                lines.append(" ".join(str(a.get("value", a.get("description", ""))) for a in event["params"]["args"]))
            elif event.get("method") == "Log.entryAdded":
                lines.append(event["params"]["entry"].get("text", ""))
            elif event.get("method") == "Runtime.exceptionThrown":
                lines.append(str(event["params"]["exceptionDetails"].get("text", "")))
        return lines

    def close(self) -> None:
        """End the browser (only the process this object started) and remove its profile."""
        with contextlib.suppress(ChromiumError, OSError):
            self.send("Browser.close", session=False)
        with contextlib.suppress(OSError):
            os.close(self._to)
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._from)
        self._profile.cleanup()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
