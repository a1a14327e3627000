"""Every page of a served demo store, loaded in headless Debian ``chromium``: it becomes ready, shows
its title and no error box, and leaves a screenshot (in ``$FLIGHTREC_SCREENSHOTS``, else a temp dir).

Chromium is driven over the Chrome DevTools Protocol with the ``websockets`` client Streamlit already
installs: no driver binary to match to the browser, and the test can wait on Streamlit's own "script
run finished" flag rather than on a fixed sleep. ``benchmarks/bench_dashboard.py`` times page loads
with the same helpers (``served`` and ``Browser``).

Without chromium the test skips locally, and fails under ``CI=true``: ``.ci/run`` installs it.
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

import duckdb
import pytest

FLIGHTREC = str(Path(sys.executable).with_name("flightrec"))
SCREENSHOTS_ENV = "FLIGHTREC_SCREENSHOTS"
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
    content: %s,
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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 2.0) -> bytes:
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
                if _get(f"{url}/_stcore/health") == b"ok":
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
            targets = json.loads(_get(f"http://127.0.0.1:{port}/json/list"))
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
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def load(self, url: str, *, content: str | None = None, timeout_s: float = 60, poll_s: float = 0.02) -> Loaded:
        """Opens ``url`` and waits until Streamlit has finished the page's script run, the title is
        shown and (if given) an element matching the CSS selector ``content`` exists.

        Ready is confirmed by a second poll, so that a page that reruns itself is not caught between
        two runs. Raises TimeoutError with the last probe if the page is not ready in ``timeout_s``."""
        probe_js = _PROBE % (f"document.querySelector({json.dumps(content)}) !== null" if content else "true")
        self.send("Page.navigate", url="about:blank")
        t0 = time.perf_counter()
        self.send("Page.navigate", url=url)
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


# -- the test ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if chromium() is None:
        message = "chromium is not installed: apt-get install -y --no-install-recommends chromium"
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"{message} (.ci/run installs it; CI must not skip the browser test)")
        pytest.skip(message)
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def deep_link(demo_store) -> dict[str, str]:
    """A real session of the demo store, and one of its middle turns: the longest session."""
    con = duckdb.connect(str(demo_store), read_only=True)
    try:
        sid, turns = con.execute(
            "SELECT session_id, turns FROM sessions ORDER BY turns DESC, session_id LIMIT 1").fetchone()
        turn = con.execute("SELECT turn_index FROM turns WHERE session_id = ? ORDER BY turn_index LIMIT 1 OFFSET ?",
                           [sid, turns // 2]).fetchone()[0]
    finally:
        con.close()
    return {"id": sid, "turn": str(turn)}


@pytest.fixture(scope="module")
def dashboard(demo_store, tmp_path_factory) -> Iterator[str]:
    with served(demo_store, log=tmp_path_factory.mktemp("dashboard") / "server.log") as url:
        yield url


@pytest.fixture(scope="module")
def screenshots(tmp_path_factory) -> Path:
    where = os.environ.get(SCREENSHOTS_ENV)
    path = Path(where) if where else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


PAGES = ["overview", "sessions", "session", "replay", "evals", "alerts", "costs", "audit"]
_DEEP = {"session", "replay"}  # opened on a real session and turn, as their links do


@pytest.mark.parametrize("page", PAGES)
def test_page_loads_without_errors(page, browser, dashboard, deep_link, screenshots):
    from urllib.parse import urlencode

    path = "" if page == "overview" else page  # the default page lives at /, and only there
    url = f"{dashboard}/{path}" + (f"?{urlencode(deep_link)}" if page in _DEEP else "")
    loaded = browser.load(url)
    shot = browser.screenshot(screenshots / f"{page}.png")
    assert loaded.errors == [], f"{url} shows an error box (screenshot {shot}):\n" + "\n---\n".join(loaded.errors)
    assert loaded.title, f"{url} has no title (screenshot {shot})"
    # The URL opened this page, not the default one Streamlit falls back to for an unknown path.
    assert [label.lower() for label in loaded.current] == [page], loaded.probe
    assert loaded.probe["path"] == ("/" if page == "overview" else f"/{page}")  # the default page lives at /


def test_deep_links_get_the_apps_navigation(browser, dashboard):
    # A deep link runs app.py (navigation, wide layout, titles), not the page script alone.
    loaded = browser.load(f"{dashboard}/sessions")
    assert [label.lower() for label in loaded.nav] == PAGES, loaded.nav
