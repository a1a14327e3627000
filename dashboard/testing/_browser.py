"""Drive a served dashboard in headless Debian ``chromium``, over the Chrome DevTools Protocol,
with the ``websockets`` client Streamlit already installs: no driver binary to match to the
browser, and a page load waits on Streamlit's own "script run finished" flag rather than on a
fixed sleep. The browser test (tests/dashboard/test_browser.py) and the page-speed benchmark
(benchmarks/bench_dashboard.py) use it.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLIGHTREC = str(Path(sys.executable).with_name("flightrec"))
WINDOW = (1440, 900)

# Whether the page's script run has finished, and what it shows. Streamlit marks the app root with
# the script's run state ("initial" before the first run, then "running" / "notRunning"); the test
# ids are those of Streamlit's own front end (static/js: stApp, stStatusWidget, stException,
# stAlertContent{Kind}, stSidebarNavLink; a "Page not found" modal is a role=dialog). Heavy
# elements (tables, selects, charts) load their code lazily and show an stSkeleton until then, so a
# page with skeletons is not ready yet.
_PROBE = """(() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const q = (sel) => Array.from(document.querySelectorAll(sel));
  const h1 = document.querySelector('[data-testid="stMain"] h1');
  return {
    app: !!app,
    state: app ? app.getAttribute('data-test-script-state') : null,
    connection: app ? app.getAttribute('data-test-connection-state') : null,
    running: q('[data-testid="stStatusWidgetRunningIcon"], [data-testid="stStatusWidgetRunningManIcon"]').length > 0,
    skeleton: q('[data-testid="stAppSkeleton"], [data-testid="stSkeleton"]').length > 0,
    title: h1 ? h1.innerText.trim() : null,
    content: (() => { try { return %s; } catch (e) { return false; } })(),  // mid-navigation: no body yet
    errors: q('[data-testid="stException"], [data-testid="stAlertContentError"], [role="dialog"]')
      .map(e => e.innerText.slice(0, 800)),
    nav: q('[data-testid="stSidebarNavLink"]').map(e => e.innerText.trim().split('\\n').pop()),
    current: q('[data-testid="stSidebarNavLink"][aria-current="page"]').map(e => e.innerText.trim().split('\\n').pop()),
    path: location.pathname,
  };
})()"""


def chromium() -> str | None:
    """Debian's ``chromium``, if installed."""
    return shutil.which("chromium")


def free_port() -> int:
    """A TCP port free on the loopback interface now (another process may take it before it is bound)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout: float = 2.0) -> bytes:
    """The body of a GET of ``url`` (a loopback server's: the dashboard's health check, chromium's targets)."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # loopback only
        return resp.read()


@contextmanager
def served(db: str | os.PathLike[str], *, log: Path, timeout_s: float = 60) -> Iterator[str]:
    """``flightrec dashboard --db DB`` on a free loopback port, until the block ends; yields its URL.

    Waits (at most ``timeout_s``) for Streamlit's health endpoint, and always stops the server."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as out:
        proc = subprocess.Popen([FLIGHTREC, "dashboard", "--db", str(db), "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"flightrec dashboard exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if http_get(f"{url}/_stcore/health") == b"ok":
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"flightrec dashboard not serving after {timeout_s:.0f} s:\n{log.read_text()}")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Loaded:
    """One page load: what the page showed when it became ready, and how long that took."""

    url: str
    seconds: float
    """From the navigation command to the first of two consecutive polls that found the page ready."""
    title: str | None
    errors: list[str]
    nav: list[str]
    """The sidebar's page links, top to bottom (their labels)."""
    current: list[str]
    """The labels of the sidebar links marked as the current page."""
    phases: dict[str, float]
    """Seconds from the navigation command to the first poll that saw the app's root (``app``), the
    script running (``running``) and the script run finished (``finished``; the rest until ready is
    the browser drawing it)."""
    probe: dict[str, Any] = field(repr=False)


class Browser:
    """One headless chromium tab, driven over the DevTools protocol.

    Blocking; one thread at a time. Use as a context manager: ``close()`` kills the browser's
    process group."""

    def __init__(self, *, size: tuple[int, int] = WINDOW, timeout_s: float = 30) -> None:
        from websockets.sync.client import connect  # a dependency of streamlit

        binary = chromium()
        if binary is None:
            raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
        self._profile = tempfile.mkdtemp(prefix="flightrec-chromium-")
        self._ids = itertools.count(1)
        self._stack = ExitStack()
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--no-default-browser-check", "--disable-extensions",
                "--disable-background-networking", "--disable-component-update", "--hide-scrollbars",
                "--remote-debugging-port=0", f"--user-data-dir={self._profile}",
                f"--window-size={size[0]},{size[1]}", "about:blank"]
        # Its own process group, so that close() reaches the renderers and the zygote too.
        self._proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(self._profile, "DevToolsActivePort")
            deadline = time.monotonic() + timeout_s
            while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
                if self._proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start its DevTools endpoint (exit {self._proc.poll()})")
                time.sleep(0.05)
            port = int(port_file.read_text().split()[0])
            targets = json.loads(http_get(f"http://127.0.0.1:{port}/json/list"))
            page = next(t for t in targets if t["type"] == "page")
            self._ws = self._stack.enter_context(
                connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=timeout_s))
            self.send("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                      mobile=False)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, method: str, timeout_s: float = 30, **params: Any) -> dict[str, Any]:
        """Sends one DevTools command and returns its result (events in between are dropped)."""
        msg_id = next(self._ids)
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout_s
        while True:
            reply = json.loads(self._ws.recv(timeout=max(0.01, deadline - time.monotonic())))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def load(self, url: str, *, content: str | None = None, timeout_s: float = 60, poll_s: float = 0.02) -> Loaded:
        """Opens ``url`` and waits until Streamlit has finished the page's script run, the title is
        shown and (if given) an element matching the CSS selector ``content`` exists.

        Ready is confirmed by a second poll, so that a page that reruns itself is not caught between
        two runs. Raises TimeoutError with the last probe if the page is not ready in ``timeout_s``."""
        self.send("Page.navigate", url="about:blank")
        t0 = time.perf_counter()
        self.send("Page.navigate", url=url)
        until = f"document.querySelector({json.dumps(content)}) !== null" if content else None
        return self._ready(url, until, t0, timeout_s=timeout_s, poll_s=poll_s)

    def wait(self, until: str, *, timeout_s: float = 60, poll_s: float = 0.05) -> Loaded:
        """Waits, after a click, until the page is ready (as ``load`` has it) and the JavaScript
        expression ``until`` is true; ``until`` must tell the page the click leads to from the one
        it was made on, since that one is ready too."""
        return self._ready(self.evaluate("location.href"), until, time.perf_counter(), timeout_s=timeout_s,
                           poll_s=poll_s)

    def _ready(self, url: str, until: str | None, t0: float, *, timeout_s: float, poll_s: float) -> Loaded:
        probe_js = _PROBE % (f"Boolean({until})" if until else "true")
        deadline = time.monotonic() + timeout_s
        first_ready: float | None = None
        probe: dict[str, Any] = {}
        phases: dict[str, float] = {}
        while time.monotonic() < deadline:
            probe = self.evaluate(probe_js) or {}
            now = time.perf_counter()
            for phase, seen in (("app", probe.get("app")), ("running", probe.get("state") == "running"),
                                ("finished", probe.get("state") == "notRunning")):
                if seen:
                    phases.setdefault(phase, now - t0)
            ready = (probe.get("app") and probe.get("state") == "notRunning" and not probe.get("running")
                     and not probe.get("skeleton") and probe.get("title") and probe.get("content"))
            if ready or probe.get("errors"):
                if first_ready is not None:
                    return Loaded(url=url, seconds=first_ready - t0, title=probe["title"], errors=probe["errors"],
                                  nav=probe["nav"], current=probe["current"], phases=phases, probe=probe)
                first_ready = now
            else:
                first_ready = None
            time.sleep(poll_s)
        raise TimeoutError(f"{url} not ready after {timeout_s:.0f} s; last probe: {probe}")

    def find(self, selector: str, *, text: str | None = None, index: int = 0) -> dict[str, float] | None:
        """The on-screen box (x, y, width, height) of the ``index``-th element matching ``selector``
        with a line of text that starts with ``text`` (an icon's name is a line of its own), scrolled
        into view first and still for a frame (a click at a box a scroll or a late layout then moves
        lands on something else); ``None`` when there is none."""
        return self.evaluate(f"""(async () => {{
          const text = {json.dumps(text)};
          const e = Array.from(document.querySelectorAll({json.dumps(selector)}))
            .filter(e => text === null || e.innerText.split('\\n').some(l => l.trim().startsWith(text)))[{index}];
          if (!e) return null;
          e.scrollIntoView({{block: 'center'}});
          const box = () => {{ const r = e.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; }};
          let last = box();
          for (let frames = 0; frames < 120; frames++) {{
            await new Promise(done => requestAnimationFrame(done));
            const now = box();
            if (now.every((v, i) => v === last[i])) break;
            last = now;
          }}
          return {{x: last[0], y: last[1], width: last[2], height: last[3]}};
        }})()""")

    def click_at(self, x: float, y: float) -> None:
        """A left click with the mouse, as a person makes it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click(self, selector: str, *, text: str | None = None, index: int = 0) -> None:
        """Clicks the middle of an element (see ``find``); fails saying what was not there."""
        box = self.find(selector, text=text, index=index)
        if box is None:
            raise AssertionError(f"nothing on the page matches {selector!r} with text {text!r} (#{index})")
        self.click_at(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def text(self) -> str:
        """What the page's main area says."""
        return self.evaluate("document.querySelector('[data-testid=\"stMain\"]').innerText")

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        self._stack.close()
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._proc.wait()
        shutil.rmtree(self._profile, ignore_errors=True)
