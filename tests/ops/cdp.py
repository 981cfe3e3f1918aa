"""Drive a headless Chromium through the DevTools protocol (what playwright and chromedriver
do underneath), with ``websocket-client`` only: navigate, read the rendered text, screenshot.

Kept to what the UI test needs; every wait has a deadline."""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path

import websocket

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars", "--window-size=1600,1000",
         "--remote-allow-origins=*"]


class BrowserError(RuntimeError):
    pass


class Chromium:
    def __init__(self, executable: str, user_data_dir: Path, port: int, log: Path):
        self._log = open(log, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={user_data_dir}",
             "--remote-debugging-address=127.0.0.1", f"--remote-debugging-port={port}",
             "about:blank"], stdout=self._log, stderr=subprocess.STDOUT)
        self._ids = itertools.count(1)
        self.ws = websocket.create_connection(self._page_ws_url(port, 60.0), timeout=60,
                                              suppress_origin=True)
        self.call("Page.enable")
        self.call("Runtime.enable")

    def _page_ws_url(self, port: int, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrowserError(f"chromium exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list",
                                            timeout=2) as r:
                    pages = [t for t in json.load(r) if t.get("type") == "page"]
                if pages:
                    return pages[0]["webSocketDebuggerUrl"]
            except OSError:
                pass
            time.sleep(0.2)
        raise BrowserError(f"chromium's DevTools endpoint did not come up in {timeout:.0f}s")

    def call(self, method: str, **params):
        msg_id = next(self._ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:  # skip events until our answer arrives (socket timeout bounds the wait)
            msg = json.loads(self.ws.recv())
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise BrowserError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def js(self, expression: str):
        """Evaluate JavaScript in the page (promises awaited); returns its JSON value."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"script failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def text(self) -> str:
        return self.js("document.body ? document.body.innerText : ''") or ""

    def viewport(self, width: int, height: int) -> None:
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    def wait_for_text(self, needles: list[str], timeout: float = 60.0) -> str:
        """Wait until every string in ``needles`` is in the page's rendered text."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = self.text()
            if all(n in text for n in needles):
                return text
            time.sleep(0.5)
        missing = [n for n in needles if n not in text]
        raise BrowserError(f"page never showed {missing} in {timeout:.0f}s; it showed:\n"
                           f"{text[:3000]}")

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError, websocket.WebSocketException):
            self.call("Browser.close")
        try:
            self.ws.close()
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
            self._log.close()
