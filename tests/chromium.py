"""Headless Chromium driven over the DevTools protocol: open a page, run JavaScript in it, screenshot it,
and keep what it reported (console errors, uncaught exceptions, the URLs it requested).

Just enough of the protocol (https://chromedevtools.github.io/devtools-protocol/) for the book's browser
tests, over `websocket-client`. One browser, one tab:

    with Chromium(find_chromium()) as browser:
        visit = browser.open("http://127.0.0.1:8000/book/intro.html")
        visit.errors, visit.requests, browser.evaluate("document.title")
"""
from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import websocket  # websocket-client

# A reproducible, quiet, sandbox-free headless browser (containers rarely allow Chromium's sandbox) that
# cannot reach the network: every host name except the loopback address fails to resolve, as offline.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)
EXECUTABLES = ("chromium", "chromium-browser", "google-chrome")
START_TIMEOUT_S = 60.0
WIDTH, HEIGHT = 1280, 900          # the viewport, in CSS pixels: a laptop screen
MAX_SCREENSHOT_HEIGHT = 16_000     # taller pages are cut here: Chromium cannot capture much more at once


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable on PATH, or None."""
    return next((path for name in EXECUTABLES if (path := shutil.which(name))), None)


class DevToolsError(RuntimeError):
    """The browser answered a command with an error, or did not answer in time."""


@dataclass
class Visit:
    """What one page load reported: its console errors and exceptions, and every URL it requested."""
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


class Chromium:
    """A headless Chromium with one tab, controlled over the DevTools protocol; a context manager."""

    def __init__(self, executable: str, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        # Chromium's helper processes may still write to the profile as it is deleted: ignore that.
        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-", ignore_cleanup_errors=True)
        profile = Path(self._profile.name)
        self._log = open(profile / "chromium.log", "w")
        self._process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
             f"--window-size={WIDTH},{HEIGHT}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
        )
        self._ids = itertools.count(1)
        self._events: list[dict] = []
        try:
            self._socket = websocket.create_connection(
                self._page_websocket_url(profile), timeout=timeout_s, suppress_origin=True)
            for domain in ("Page", "Runtime", "Log", "Network"):
                self.call(f"{domain}.enable")
            self.call("Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT,
                      deviceScaleFactor=1, mobile=False)
        except BaseException:
            self.close()
            raise

    def _page_websocket_url(self, profile: Path) -> str:
        """Wait for Chromium to write its DevTools port into the profile, then find the tab's socket."""
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while not (port_file.exists() and port_file.read_text().strip()):
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise DevToolsError(f"Chromium did not start:\n{(profile / 'chromium.log').read_text()[-3000:]}")
            time.sleep(0.1)
        port = port_file.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=self.timeout_s) as answer:
            targets = json.load(answer)
        return next(target["webSocketDebuggerUrl"] for target in targets if target["type"] == "page")

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection, stop the browser and delete its profile."""
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._log.close()
        self._profile.cleanup()

    # -- the protocol ----------------------------------------------------------------------------------

    def call(self, method: str, **params: Any) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept for later."""
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = self._receive(time.monotonic() + self.timeout_s, waiting_for=method)
            if message.get("id") == command_id:
                if "error" in message:
                    raise DevToolsError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})
            self._events.append(message)

    def wait_for_event(self, method: str, timeout_s: float | None = None) -> dict:
        """Wait for the next event called `method` (one already received counts) and return its params."""
        deadline = time.monotonic() + (timeout_s or self.timeout_s)
        for index, event in enumerate(self._events):
            if event.get("method") == method:
                return self._events.pop(index)["params"]
        while True:
            message = self._receive(deadline, waiting_for=method)
            if message.get("method") == method:
                return message["params"]
            self._events.append(message)

    def _receive(self, deadline: float, waiting_for: str) -> dict:
        self._socket.settimeout(max(deadline - time.monotonic(), 0.01))
        try:
            return json.loads(self._socket.recv())
        except websocket.WebSocketTimeoutException:
            raise DevToolsError(f"no answer from Chromium within {self.timeout_s:.0f} s ({waiting_for})") from None

    # -- what the tests use ----------------------------------------------------------------------------

    def open(self, url: str) -> Visit:
        """Load `url` and wait for its load event; return what the page reported while loading.

        Reports that come later (say, from a script that runs after the load event) are picked up by the
        next `collect(visit)`."""
        self._events.clear()
        self.call("Page.navigate", url=url)
        self.wait_for_event("Page.loadEventFired")
        return self.collect(Visit(url))

    def collect(self, visit: Visit) -> Visit:
        """Move the console errors, exceptions and requests received so far into `visit`."""
        for event in self._events:
            params = event.get("params", {})
            match event.get("method"):
                case "Runtime.consoleAPICalled" if params["type"] in ("error", "assert"):
                    visit.errors.append("console.error: " + " ".join(
                        str(arg.get("value", arg.get("description", ""))) for arg in params["args"]))
                case "Runtime.exceptionThrown":
                    details = params["exceptionDetails"]
                    visit.errors.append("uncaught: " + details.get("exception", {}).get("description", details["text"]))
                case "Log.entryAdded" if params["entry"]["level"] == "error":
                    entry = params["entry"]
                    visit.errors.append(f"{entry['source']}: {entry['text']} {entry.get('url', '')}".rstrip())
                case "Network.requestWillBeSent":
                    visit.requests.append(params["request"]["url"])
        self._events.clear()
        return visit

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page; a promise is awaited."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise DevToolsError(f"JavaScript error: {details.get('exception', {}).get('description', details['text'])}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save a PNG of the whole page (up to MAX_SCREENSHOT_HEIGHT pixels tall) at `path`."""
        size = self.call("Page.getLayoutMetrics")["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(max(size["height"], HEIGHT), MAX_SCREENSHOT_HEIGHT),
                "scale": 1}
        png = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(png))
        return path
