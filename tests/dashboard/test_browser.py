"""Every page of a served demo store, loaded in headless Debian ``chromium``: it becomes ready, shows
its title and no error box, and leaves a screenshot (in ``$FLIGHTREC_SCREENSHOTS``, else a temp dir).
Then the four jobs of issue 17, clicked through as a person would, a screenshot at every step.

Chromium is driven by ``dashboard.testing`` (``served`` and ``Browser``), as
``benchmarks/bench_dashboard.py`` drives it to time page loads.

Without chromium the test skips locally, and fails under ``CI=true``: ``.ci/run`` installs it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from dashboard.testing import Browser, Loaded, chromium, served

SCREENSHOTS_ENV = "FLIGHTREC_SCREENSHOTS"


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


PAGES = ["overview", "sessions", "session", "replay", "evals", "alerts", "review", "approvals", "costs", "audit"]
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


def test_a_page_opened_at_its_own_url_connects_to_the_server_at_once(browser, dashboard):
    # Else Streamlit's front end asks /sessions/_stcore/health first, and waits out a retry delay after its 404.
    browser.load(f"{dashboard}/sessions")
    asked = browser.evaluate("performance.getEntriesByType('resource').map(e => new URL(e.name).pathname)")
    assert "/_stcore/health" in asked and not [p for p in asked if p.startswith("/sessions/")], asked
    # Told the server's URL: the page's without its name (a proxy's prefix would stay).
    assert browser.evaluate("window.__streamlit.BACKEND_BASE_URL") == dashboard


# -- the four jobs, clicked through ------------------------------------------------------------------
#
# Each starts at the app's root and goes on by clicks only: the sidebar, table rows and links. The
# rows to click are found from the store, in the order the page sorts them, and clicked by a cell that
# is not their link.


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


def _shown_decision(browser: Browser) -> str:
    """The turn the Session page's decision picker marks as shown, and the line that says what it decided."""
    return browser.evaluate("""(() => {
      const row = Array.from(document.querySelectorAll('.fr-switch'))
        .find(r => r.querySelector('.fr-sl')?.innerText.trim() === 'Decision');
      const line = row?.closest('.stHtml, [data-testid="stHtml"]')?.querySelector('.fr-note');
      return row ? row.querySelector('b').innerText + ' | ' + (line ? line.innerText : '') : '';
    })()""")


_TABLES = "document.querySelectorAll('.fr-table').length"
_ROW_TEXT = ".fr-table tr:has(td:first-child a) td:nth-child(3)"
"""A cell of a row that is not its link: a click there must open the row all the same."""


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
    _sidebar(browser, dashboard, screenshots, "alerts", "document.querySelector('.fr-table') !== null")

    # 1. alert -> session -> the looping decision: a click on the row's text, not its link
    browser.click(_ROW_TEXT, index=row)
    # The URL changes as the script starts its run: wait for the alert's links it then draws.
    _step(browser, screenshots, "1-alert", f"location.search.includes('alert={alert_id}') && "
                                           f"document.body.innerText.includes('turn {turns[0]} of that session')")
    browser.click("a", text=f"turn {turns[0]} of that session")
    loaded = _step(browser, screenshots, "1-looping-decision",
                   f"location.pathname === '/session' && location.search.includes('turn={turns[0]}')")
    assert re.match(rf"{turns[0]} \| turn {turns[0]}\b", _shown_decision(browser)), loaded.probe

    # 2. that decision -> replay with an edited system prompt -> the diff
    browser.click("a", text="Replay this turn")
    _step(browser, screenshots, "2-replay", "location.pathname === '/replay' && "
                                            "document.body.innerText.includes('Rebuilt request')")
    browser.click("a.fr-btn", text="Edit and re-run")  # the editor opens on a click
    _step(browser, screenshots, "2-editor", "location.search.includes('edit=1') && "
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
    browser.click(".fr-table th a", text="case")  # the comparison's header: sorted by case
    _step(browser, screenshots, "3-sorted", f"location.search.includes('sort=case') && {_TABLES} >= 2")
    browser.click(_ROW_TEXT, index=len(runs) + row)  # under the runs' rows
    _step(browser, screenshots, "3-case", f"location.search.includes('case={case.case_id}') && {_TABLES} >= 4")
    candidate = [r.trial for r in results if r.case_id == case.case_id].index(trial.trial)
    browser.click(f".fr-pair > div:nth-child(2) {_ROW_TEXT}", index=candidate)
    _step(browser, screenshots, "3-failing-decision",
          f"location.pathname === '/session' && location.search.includes('turn={turn}')")
    text = browser.text()
    assert "Eval trial" in text and case.case_id in text and "failed" in text
    assert re.match(rf"{turn} \| turn {turn}\b", _shown_decision(browser))


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
    browser.click(".fr-switch a", text="route")  # the breakdown's switch: a link
    _step(browser, screenshots, "4-by-route", "location.search.includes('by=route') && "
                                              "document.querySelector('.fr-table a[href*=\"by=route\"]')")
    # The breakdown is sorted by cost: the most expensive route first. Its link loads the page anew.
    browser.click('.fr-table a[href*="by=route"]')
    heading = json.dumps("sessions of route " + route)
    _step(browser, screenshots, "4-route",
          f"location.search.includes('route=') && document.body.innerText.includes({heading})")
    # Its top sessions, most expensive first: a click anywhere on the row (here its start time) opens it.
    browser.click('.fr-table tr:has(a[href^="/session"]) td:nth-child(6)')
    _step(browser, screenshots, "4-top-session", "location.pathname === '/session'")
    assert browser.evaluate("new URLSearchParams(location.search).get('id')") in top


def test_sessions_filtered_by_their_form_then_searched_by_typing(browser, dashboard, served_store, screenshots):
    # The filters are an HTML form whose answer is the page's URL: ticked boxes and a typed search,
    # submitted by a click and by the Enter key, as a person does.
    with duckdb.connect(str(served_store), read_only=True) as con:
        loops = con.execute("SELECT count(*) FROM sessions WHERE origin = 'production' AND status = 'guard:loop'"
                            ).fetchone()[0]
        sid = con.execute("SELECT session_id FROM sessions WHERE origin = 'production' AND status = 'guard:loop' "
                          "ORDER BY start_ns LIMIT 1").fetchone()[0]
    assert loops > 0
    _sidebar(browser, dashboard, screenshots, "sessions", "document.querySelector('.fr-table') !== null")
    browser.click(".fr-form summary", text="Status")
    browser.click(".fr-form label", text="guard:loop")
    browser.click(".fr-form button", text="Filter")
    _step(browser, screenshots, "5-status", "location.search.includes('status=guard%3Aloop') && "
                                            "document.querySelector('.fr-table') !== null")
    shown = browser.evaluate("Array.from(document.querySelectorAll('.fr-table td:nth-child(2)')).map(e => e.innerText)")
    assert shown and set(shown) == {"guard:loop"}
    assert f"{loops:,} production sessions match" in browser.text()
    browser.click(".fr-form input[type=search]")
    browser.send("Input.insertText", text=sid[:23])  # 13 characters are a millisecond, which two can share
    browser.send("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter", text="\r",
                 windowsVirtualKeyCode=13)
    browser.send("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter", windowsVirtualKeyCode=13)
    _step(browser, screenshots, "5-search", "location.search.includes('q=') && "
                                            "document.querySelector('.fr-table') !== null")
    # The box ticked before is kept: the search is within the looping sessions.
    assert "status=guard%3Aloop" in browser.evaluate("location.search")
    links = browser.evaluate("Array.from(document.querySelectorAll('.fr-table td:first-child a')).map(a => "
                             "a.getAttribute('href'))")
    assert links == [f"/session?id={sid}"]
