"""Every page of a served demo store, loaded in headless Debian ``chromium``: it becomes ready, shows
its title and no error box, and leaves a screenshot (in ``$FLIGHTREC_SCREENSHOTS``, else a temp dir).
Then the four jobs of issue 17, clicked through as a person would, a screenshot at every step.

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
import re
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
_HEADER_PX, _ROW_PX = 36, 35  # Streamlit's table header and row heights at the default font size

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
        into view first; ``None`` when there is none."""
        return self.evaluate(f"""(() => {{
          const text = {json.dumps(text)};
          const e = Array.from(document.querySelectorAll({json.dumps(selector)}))
            .filter(e => text === null || e.innerText.split('\\n').some(l => l.trim().startsWith(text)))[{index}];
          if (!e) return null;
          e.scrollIntoView({{block: 'center'}});
          const r = e.getBoundingClientRect();
          return {{x: r.x, y: r.y, width: r.width, height: r.height}};
        }})()""")

    def click_at(self, x: float, y: float) -> None:
        """A left click with the mouse, as a person makes it (canvas tables see only these)."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click(self, selector: str, *, text: str | None = None, index: int = 0) -> None:
        """Clicks the middle of an element (see ``find``); fails saying what was not there."""
        box = self.find(selector, text=text, index=index)
        if box is None:
            raise AssertionError(f"nothing on the page matches {selector!r} with text {text!r} (#{index})")
        self.click_at(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)

    def click_row(self, table: int, row: int) -> None:
        """Clicks a row (0-based, as drawn) of the ``table``-th table on the page. Streamlit draws
        tables on a canvas, so the row is found by its height under the header."""
        box = self.find('[data-testid="stDataFrame"]', index=table)
        if box is None:
            raise AssertionError(f"the page has no table #{table}")
        y = box["y"] + _HEADER_PX + (row + 0.5) * _ROW_PX
        if y > box["y"] + box["height"]:
            raise AssertionError(f"row {row} of table #{table} is scrolled out of sight")
        self.click_at(box["x"] + 60, y)

    def click_first_header(self, table: int) -> None:
        """Clicks the first column's header in the ``table``-th table, which sorts by that column
        (ascending first). Drawn on the canvas too: found where ``click_row`` finds rows."""
        box = self.find('[data-testid="stDataFrame"]', index=table)
        if box is None:
            raise AssertionError(f"the page has no table #{table}")
        self.click_at(box["x"] + 60, box["y"] + _HEADER_PX / 2)

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
def served_store(demo_store, tmp_path_factory) -> Path:
    """A copy of the demo store (and its world), since the click-through's replay writes to it."""
    where = tmp_path_factory.mktemp("served")
    for src in demo_store.parent.iterdir():
        shutil.copy(src, where / src.name)
    return where / demo_store.name


@pytest.fixture(scope="module")
def dashboard(served_store, tmp_path_factory) -> Iterator[str]:
    with served(served_store, log=tmp_path_factory.mktemp("dashboard") / "server.log") as url:
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


# -- the four jobs, clicked through ------------------------------------------------------------------
#
# Each starts at the app's root and goes on by clicks only: the sidebar, table rows and links. The
# rows to click are found from the store, in the order the page sorts them (tables are drawn on a
# canvas, so the browser cannot be asked which row says what).


def _clean(loaded: Loaded, shot: Path) -> None:
    """No error box, and a page with a title: it fails the job otherwise, naming the screenshot."""
    assert loaded.errors == [], f"an error box (screenshot {shot}):\n" + "\n---\n".join(loaded.errors)
    assert loaded.title, f"an empty page (screenshot {shot})"


def _step(browser: Browser, screenshots: Path, name: str, until: str, timeout_s: float = 60) -> Loaded:
    loaded = browser.wait(until, timeout_s=timeout_s)
    _clean(loaded, browser.screenshot(screenshots / f"{name}.png"))
    return loaded


def _sidebar(browser: Browser, dashboard: str, screenshots: Path, page: str, until: str) -> Loaded:
    _clean(browser.load(dashboard), browser.screenshot(screenshots / "start.png"))
    browser.click('[data-testid="stSidebarNavLink"]', text=page.capitalize())
    return _step(browser, screenshots, page, f"location.pathname === '/{page}' && {until}")


def _selected(browser: Browser, label: str) -> str:
    """What the select box labelled ``label`` shows."""
    return browser.evaluate(f"""(() => {{
      const box = Array.from(document.querySelectorAll('[data-testid="stSelectbox"]'))
        .find(e => e.querySelector('label')?.innerText.trim() === {json.dumps(label)});
      return box ? (box.querySelector('input')?.value || box.innerText.split('\\n').pop()) : '';
    }})()""")


_TABLES = 'document.querySelectorAll(\'[data-testid="stDataFrame"]\').length'


def test_alert_to_its_looping_decision_then_replayed_with_an_edited_system_prompt(browser, dashboard, served_store,
                                                                                   screenshots):
    from dashboard import _ui

    production, params = _ui.alerts_in("production")
    con = duckdb.connect(str(served_store), read_only=True)
    try:  # the Alerts page's order (open first, then by severity and recency) and its default filters
        rows = con.execute(f"""SELECT alert_id, detector, turns FROM alerts a WHERE status <> 'resolved'
            AND {production}
            ORDER BY CASE status WHEN 'open' THEN 0 ELSE 1 END,
                     CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, last_seen_ns DESC""",
                           params).fetchall()
    finally:
        con.close()
    # A loop guard's alert points at the turn where the guard stopped the loop; else any loop alert's first turn.
    loops = [(k, r) for k, r in enumerate(rows[:10]) if r[1].startswith("loop.") and r[2]]
    row, (alert_id, _, turns) = next((x for x in loops if x[1][1] == "loop.guard"), loops[0])
    _sidebar(browser, dashboard, screenshots, "alerts", f"{_TABLES} > 0")

    # 1. alert -> session -> the looping decision
    browser.click_row(0, row)
    # The URL changes as the script starts its run: wait for the alert's links it then draws.
    _step(browser, screenshots, "1-alert", f"location.search.includes('alert={alert_id}') && "
                                           f"document.body.innerText.includes('turn {turns[0]} of that session')")
    browser.click("a", text=f"turn {turns[0]} of that session")
    loaded = _step(browser, screenshots, "1-looping-decision",
                   f"location.pathname === '/session' && location.search.includes('turn={turns[0]}')")
    assert re.match(rf"turn {turns[0]}\b", _selected(browser, "Decision")), loaded.probe

    # 2. that decision -> replay with an edited system prompt -> the diff
    browser.click("a", text="Replay this turn")
    _step(browser, screenshots, "2-replay", "location.pathname === '/replay' && "
                                            "document.querySelector('textarea[aria-label=\"System prompt\"]')")
    browser.click('textarea[aria-label="System prompt"]')
    browser.evaluate("(() => { const t = document.querySelector('textarea[aria-label=\"System prompt\"]'); "
                     "t.setSelectionRange(t.value.length, t.value.length); })()")
    browser.send("Input.insertText", text="\nNever call a tool again with the arguments it was called with.")
    browser.click("h1")  # the text area sends its value when it loses focus
    _step(browser, screenshots, "2-edited", "document.body.innerText.includes('The edits, as the replay session')")
    browser.click("button", text="Run")
    _step(browser, screenshots, "2-diff", "document.body.innerText.includes('decided differently from the recording')")
    text = browser.text()
    assert "Recorded" in text and "Replayed" in text
    assert "The decision changed" in text or "Same decision" in text


def test_evals_comparison_to_the_failing_decision(browser, dashboard, served_store, screenshots):
    import evals
    import tracer

    with tracer.Store(str(served_store), read_only=True) as s:
        runs = s.eval_runs()
        c = evals.compare_stored(s, "baseline", next(r.run_id for r in runs if "baseline" not in r.labels))
        results = s.eval_results(c.candidate.run_id)
    # The page's comparison table: the cases whose pass rate changed, sorted below by their name.
    shown = sorted((k for k in c.cases if k.delta), key=lambda k: k.case_id)
    failed = {k.case_id: next(r for r in results if r.case_id == k.case_id and not r.passed)
              for k in shown if k.regressed}
    row, case = next((n, k) for n, k in enumerate(shown)
                     if k.case_id in failed and evals.failing_turn(failed[k.case_id]) not in (None, 1))
    trial = failed[case.case_id]
    turn = evals.failing_turn(trial)
    _sidebar(browser, dashboard, screenshots, "evals", f"{_TABLES} >= 2")
    browser.click_first_header(1)  # by case, in the browser: the click must still open the case clicked
    browser.screenshot(screenshots / "3-sorted.png")
    browser.click_row(1, row)
    _step(browser, screenshots, "3-case", f"location.search.includes('case={case.case_id}') && {_TABLES} >= 4")
    browser.click_row(3, [r.trial for r in results if r.case_id == case.case_id].index(trial.trial))
    _step(browser, screenshots, "3-failing-decision",
          f"location.pathname === '/session' && location.search.includes('turn={turn}')")
    text = browser.text()
    assert "Eval trial" in text and case.case_id in text and "failed" in text
    assert re.match(rf"turn {turn}\b", _selected(browser, "Decision"))


def test_costs_to_the_most_expensive_route_to_its_top_session(browser, dashboard, served_store, screenshots):
    production = "FROM llm_calls c JOIN sessions s USING (session_id) WHERE s.origin = 'production'"
    with duckdb.connect(str(served_store), read_only=True) as con:
        route = con.execute(f"SELECT coalesce(s.route, '(none)') AS r {production} "
                            "GROUP BY r ORDER BY sum(c.cost_usd) DESC LIMIT 1").fetchone()[0]
        top = {sid for (sid,) in con.execute(  # ties: any of the dearest opens first
            "SELECT session_id FROM sessions WHERE origin = 'production' AND coalesce(route, '(none)') = ? "
            "AND cost_usd = (SELECT max(cost_usd) FROM sessions WHERE origin = 'production' "
            "AND coalesce(route, '(none)') = ?)", [route, route]).fetchall()}
    _sidebar(browser, dashboard, screenshots, "costs", "true")
    browser.click("button", text="route")
    _step(browser, screenshots, "4-by-route", "location.search.includes('by=route')")
    browser.click_row(0, 0)  # the breakdown is sorted by cost: the most expensive route first
    # The URL changes as the script starts its run: wait for the top sessions it then draws.
    _step(browser, screenshots, "4-route", "location.search.includes('route=') && "
                                           f"document.body.innerText.includes({json.dumps('sessions of route ' + route)})")
    # Its top sessions, most expensive first. A table just scrolled into view from the page's foot
    # can drop a synthetic click (about one run in two on a loaded machine): one more try.
    for attempt in range(2):
        browser.click_row(1, 0)
        try:
            _step(browser, screenshots, "4-top-session", "location.pathname === '/session'", timeout_s=15)
            break
        except TimeoutError:
            if attempt:
                raise
    assert browser.evaluate("new URLSearchParams(location.search).get('id')") in top
