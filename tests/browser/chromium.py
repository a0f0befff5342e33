"""Headless Chromium driven over its DevTools protocol (Debian's `chromium` package, a websocket,
no driver binary and no browser download): open a page, collect what the console and the
runtime reported, read the DOM with JavaScript, take a screenshot.

Chromium is started with `--remote-debugging-port=0` and says on stderr where it listens
("DevTools listening on ws://..."); the page target is found through the HTTP endpoint beside
it (/json/list). Protocol reference: https://chromedevtools.github.io/devtools-protocol/.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

#: The executables Debian's package installs (chromium) and other distributions' names for it.
NAMES = ("chromium", "chromium-browser", "google-chrome")


def executable() -> str | None:
    return next((path for path in map(shutil.which, NAMES) if path), None)


class Chromium:
    """One headless browser with one page; messages from the page are kept in `errors`."""

    def __init__(self, binary: str, timeout: float = 60):
        self.profile = tempfile.mkdtemp(prefix="policyload-chromium-")
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--window-size=1280,900", "--remote-debugging-port=0",
             f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        self.timeout = timeout
        port = self._port()
        pages = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
        (page,) = [target for target in pages if target["type"] == "page"]
        self.socket = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=timeout,
                                                  suppress_origin=True)
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.events: list[dict] = []
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable")

    def _port(self) -> int:
        deadline = time.monotonic() + self.timeout
        seen = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            match = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if match:
                return int(match.group(1))
        self.close()
        raise RuntimeError(f"chromium did not open its DevTools port: {''.join(seen)[-2000:]}")

    def call(self, method: str, **params) -> dict:
        """Send one command, return its result; events that arrive meanwhile are kept."""
        message_id = next(self.ids)
        self.socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.socket.recv())
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self._event(message)

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        self.events.append(message)
        if method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text} ({details.get('url', '')}:{details.get('lineNumber')})")
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params.get("args", []))
            self.errors.append(f"console.{params['type']}: {args}")
        elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"{entry.get('source')}: {entry.get('text')} {entry.get('url', '')}".strip())

    def open(self, url: str, settle_s: float = 0.5) -> None:
        """Navigate to `url` and wait for its load event, then `settle_s` for late scripts."""
        self.events.clear()
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + self.timeout
        while not any(event.get("method") == "Page.loadEventFired" for event in self.events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url}: no load event in {self.timeout} s")
            self._event(json.loads(self.socket.recv()))
        end = time.monotonic() + settle_s
        self.socket.settimeout(0.1)
        try:
            while time.monotonic() < end:
                try:
                    self._event(json.loads(self.socket.recv()))
                except websocket.WebSocketTimeoutException:
                    pass
        finally:
            self.socket.settimeout(self.timeout)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable; promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression[:80]}...: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        params = {"format": "png"}
        if full_page:
            size = self.call("Page.getLayoutMetrics")["cssContentSize"]
            height = min(size["height"], 16000)  # Chromium's texture limit
            clip = {"x": 0, "y": 0, "width": size["width"], "height": height, "scale": 1}
            params |= {"captureBeyondViewport": True, "clip": clip}
        data = self.call("Page.captureScreenshot", **params)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if getattr(self, "socket", None):
            self.socket.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.profile, ignore_errors=True)
