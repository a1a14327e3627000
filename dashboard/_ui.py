"""What every page shares: the store, cached queries, formatting, links and error boxes."""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import pandas as pd
import streamlit as st

import tracer

from . import _chart, _html, _source
from ._html import url as url  # pages build links with it, as with the rest of _ui

T = TypeVar("T")

PAGES = {
    "overview": "views/overview.py",
    "sessions": "views/sessions.py",
    "session": "views/session.py",
    "replay": "views/replay.py",
    "evals": "views/evals.py",
    "alerts": "views/alerts.py",
    "review": "views/review.py",
    "approvals": "views/approvals.py",
    "costs": "views/costs.py",
    "audit": "views/audit.py",
}
"""Each page's script, relative to ``app.py``; its key is its URL path (``/session?id=…``), except
the default page, Overview, which Streamlit serves at ``/`` only."""

_TTL_LIVE_S = 2
_LIVE_RERUN_S = 5
_TTL_FILE_S = 60


def source() -> _source.Source:
    return _source.current()


def actor() -> str:
    """Who the audit log names for an action taken here. The dashboard has no login, so it cannot
    tell people apart: ``$FLIGHTREC_ACTOR`` of the process that serves it, else that process's OS user."""
    return tracer.actor_name()


def cached(fn: Callable[..., T]) -> Callable[..., T]:
    """Caches a query on its arguments, the store and the source's write generation. A live store
    (serve mode) is re-read every couple of seconds; a file no one writes, every minute."""

    # No leading underscore on ``db`` and ``generation``: Streamlit leaves such arguments out of the
    # key, and then one store's results (or those from before a write) would be served for another.
    def run(db: str, generation: int, *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    # Streamlit keys a cache on the function's name and code; every page's queries share ``run``.
    run.__qualname__ = f"{fn.__module__}.{fn.__qualname__}"
    run.__name__ = fn.__name__
    # cache_resource hands out the cached object itself (cache_data would unpickle a copy on every
    # hit): callers treat results as read-only.
    query = st.cache_resource(ttl=_TTL_LIVE_S if source().live else _TTL_FILE_S, show_spinner=False,
                              max_entries=256)(run)

    def wrapper(*args: Any, **kwargs: Any) -> T:
        src = source()
        return query(src.db_path, src.generation, *args, **kwargs)

    return wrapper


def frame(sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    """A query's rows as a DataFrame."""
    return source().frame(sql, params)


def where_in(filters: dict[str, Sequence[Any]]) -> tuple[list[str], list[Any]]:
    """SQL conditions for the filters that have values (``{"s.agent": ["support"]}`` gives
    ``s.agent IN (?)``), and their parameters; a filter with no value chosen filters nothing."""
    clauses: list[str] = []
    params: list[Any] = []
    for column, values in filters.items():
        if values:
            clauses.append(f"{column} IN ({', '.join('?' * len(values))})")
            params += values
    return clauses, params


def param(name: str) -> str | None:
    """A deep-link query parameter (``?id=…&turn=…``)."""
    value = st.query_params.get(name)
    return value or None


def int_param(name: str) -> int | None:
    value = param(name)
    try:
        return int(value) if value is not None else None
    except ValueError:
        st.warning(f"`{name}={value}` in the URL is not a number; it was ignored.")
        return None


def show_error(exc: BaseException) -> None:
    """A flightrec error as the CLI prints it: what went wrong and what to do next."""
    st.error(str(exc), icon=":material/error:")


def guarded(render: Callable[[], None], *, live: bool = False) -> None:
    """Runs a page body; our errors become one clear box instead of a traceback.

    With ``live``, in serve mode (agents writing while you watch), the body re-runs every few
    seconds unless the sidebar's Live toggle is off.
    """

    def body() -> None:
        try:
            render()
        except tracer.FlightrecError as exc:
            show_error(exc)

    if live and source().live and st.sidebar.toggle("Live", value=True, key="live",
                                                     help=f"Re-read the store every {_LIVE_RERUN_S} seconds."):
        st.fragment(run_every=_LIVE_RERUN_S)(body)()
    else:
        body()


usd, ms, tokens = tracer.format_usd, tracer.format_ms, tracer.format_tokens
"""Money, durations and token counts as every surface writes them (pandas' missing value, NaN, is unknown)."""


def when(ns: int | None) -> str:
    if ns is None or pd.isna(ns):
        return "–"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def raw_json(label: str, value: Any) -> None:
    """Raw JSON, collapsed until asked for, and only sent to the browser then: a collapsed
    expander's elements are drawn all the same, and a rebuilt request's tree was 1,464 of the
    Replay page's 2,553 DOM elements (``benchmarks/RESULTS.md``). Opening it reruns the page, keeping
    what its widgets hold; on a page drawn as HTML, ``json_link`` costs less."""
    box = st.expander(label, expanded=False, on_change="rerun", key=f"raw_json_{label}")
    if box.open:
        with box:
            st.json(value if not isinstance(value, str) else _maybe_json(value), expanded=2)


def json_link(page: str, label: str, name: str) -> str:
    """A link, for a page's HTML (``draw``), that shows the raw JSON ``json_view`` draws as ``name``
    (``?json=name``), or hides it. An expander (``raw_json``) is an element of its own, which costs the
    browser its drawing on every load, open or not (``benchmarks/RESULTS.md`` §79); a link in an element
    the page draws anyway costs nothing, and loads the page anew."""
    shown = param("json") == name
    query = {k: v for k, v in here().items() if k != "json"} | ({} if shown else {"json": name})
    return _html.link(f"{'Hide' if shown else 'Show'} {label}", url(page, **query))


def json_view(label: str, name: str, value: Any) -> None:
    """The raw JSON ``json_link`` shows, under its ``label``, when the URL asks for it; scrolled into
    view once a page load (a rerun of the page's widgets leaves the scroll alone)."""
    if param("json") != name:
        return
    key = f"json_{name}"
    with st.container(key=key):
        st.markdown(f"**{label}**")
        st.json(value if not isinstance(value, str) else _maybe_json(value), expanded=2)
    scroll_once(key)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def link(page: str, label: str, **query: Any) -> None:
    """A link to another page, carrying the ids that make it a deep link."""
    st.page_link(PAGES[page], label=label, query_params={k: str(v) for k, v in query.items() if v is not None})


def draw(*parts: str) -> None:
    """HTML parts (``_html``'s) drawn together, as one element with their style."""
    st.html(_html.STYLE + "".join(parts))


def link_table(rows: Sequence[dict[str, str]], **kw: Any) -> None:
    """``_html.table``'s table, drawn by itself; no rows, nothing."""
    if rows:
        draw(_html.table(rows, **kw))


R = TypeVar("R", bound=tuple)


def paged(fetch: Callable[[int], R], size: int, *, name: str = "page") -> tuple[int, int, R]:
    """A list's page from the URL (``?page=N``, 1 first; ``name`` is the parameter, for a second list on
    the page): the page, the count of pages, and ``fetch(index)``'s answer for it, a tuple whose first
    item is how many rows match. A page past the last (an old link, or fewer rows than when it was made)
    is the last."""
    page = max(1, int_param(name) or 1)
    got = fetch(page - 1)
    pages = max(1, -(-got[0] // size))
    if page > pages:
        page = pages
        got = fetch(page - 1)
    return page, pages, got


S = TypeVar("S", bound=Sequence)


def paged_rows(rows: S, size: int, *, name: str = "page") -> tuple[int, int, S]:
    """``paged`` over rows already at hand (a cached list or frame): the page, the count of pages, and
    that page's rows."""
    page, pages, (_, shown) = paged(lambda index: (len(rows), rows[index * size:(index + 1) * size]), size,
                                    name=name)
    return page, pages, shown


def picked(name: str, offered: Sequence[str]) -> list[str]:
    """A filter's values from the URL (``?status=ok&status=error``), those it offers; a warning names the others."""
    asked = st.query_params.get_all(name)
    unknown = [v for v in asked if v not in offered]
    if unknown:
        st.warning(f"`{name}={', '.join(unknown)}` in the URL is not one of {', '.join(offered)}; it was ignored.")
    return [v for v in asked if v in offered]


def matching(total: int, what: str, first: int, shown: int, *, one: str) -> str:
    """How many of ``what`` match (``one`` of them: "1 alert matches"), and which are shown when not all
    are: "120 alerts match; showing 51–100"."""
    said = f"1 {one} matches" if total == 1 else f"{total:,} {what} match"
    return said + (f"; showing {first + 1:,}–{first + shown:,}" if total > shown else "")


def to_url(choices: dict[str, Any]) -> None:
    """Writes a page's choices back to its URL, so that it stays a deep link; an empty one is left out."""
    for name, value in choices.items():
        if value:
            st.query_params[name] = value
        else:
            st.query_params.pop(name, None)


def here() -> dict[str, Any]:
    """The page's URL query now, for links that change one choice and keep the others: a parameter
    given more than once is a list."""
    return {k: v[0] if len(v) == 1 else v for k in st.query_params if (v := st.query_params.get_all(k))}


def scroll_to(key: str) -> None:
    """Scrolls the page to the container made with ``st.container(key=key)`` once it is drawn.
    Streamlit has no scroll API (and drops a URL's ``#anchor`` as it writes the query); its keyed
    containers carry the class ``st-key-KEY``. Call it once per cause: a rerun would scroll again."""
    st.html(f"""<script>(function go(tries) {{
        const el = window.parent.document.querySelector(".st-key-{key}") || document.querySelector(".st-key-{key}");
        if (el) el.scrollIntoView({{block: "start"}});
        else if (tries > 0) setTimeout(() => go(tries - 1), 100);
    }})(20);</script>""", unsafe_allow_javascript=True, width="content")


def scroll_once(key: str, cause: Any = True) -> None:
    """``scroll_to`` the container ``key`` when ``cause`` (what asked for it: a group picked, a view opened)
    is new to this browser session: a rerun of the page (its widgets', a live page's) then leaves the
    reader's scroll where it is."""
    if st.session_state.get(f"{key}_scrolled") != cause:
        st.session_state[f"{key}_scrolled"] = cause
        scroll_to(key)


def chart_html(data: pd.DataFrame, mark: Literal["bar", "line"], *, x: str = "time", across: bool = False,
               series: str = "series", order: Sequence[str] | None = None, colors: Sequence[str] | None = None,
               stack: bool = True, height: int = 220, title: str | None = None, points: bool = False,
               width: int = 480) -> str:
    """A chart of ``data`` in long form, one point a row (``x``, ``series``, ``value``), drawn here as an
    SVG image (``_chart``): a Vega-Lite chart costs the browser its chart library on every load
    (``benchmarks/RESULTS.md`` §61). Hovering a bucket or a group shows its values.

    Args:
        data: The points; build it where the query is cached, so that a rerun does no pandas work.
        mark: Bars (stacked unless ``stack`` is false, then side by side) or lines.
        x: A time column (temporal axis) or, with ``across``, a group column: bars across, one group a
            row, in ``data``'s order.
        series: The column that colours the points; ``order`` lists its values in the legend's order
            (and ``colors`` their colours, in the same order). One series gets no legend.
        width, height: The drawing's size in its own units, scaled to the column's width: about the
            column's width in pixels keeps text at its size (480 for half of a wide page at 1440 px).
        title: The value axis' title.
        points: Mark each point of a line.
    """
    return _chart.html_chart(data, mark, x=x, across=across, series=series, order=order, colors=colors, stack=stack,
                             height=height, title=title, points=points, width=width)


def chart(data: pd.DataFrame, mark: Literal["bar", "line"], **kw: Any) -> None:
    """``chart_html``'s chart, drawn by itself."""
    draw(chart_html(data, mark, **kw))


# -- the time range and the origin switch, shared by Overview, Sessions and Costs ------------------

_NS = 1_000_000_000
_RANGES = {"1h": ("last hour", 3600), "24h": ("24 h", 86_400), "7d": ("7 d", 7 * 86_400),
           "30d": ("30 d", 30 * 86_400), "all": ("all", None), "custom": ("custom", None)}
_DEFAULT_RANGE = "all"
# A store recorded in a couple of minutes (the demo) and one recorded over months both get a
# chart of a few dozen points: the bucket is the smallest of these that keeps under _MAX_BUCKETS.
_STEPS_S = (1, 5, 15, 60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86_400, 7 * 86_400)
_MAX_BUCKETS = 60


@dataclass(frozen=True)
class TimeRange:
    """The range a page shows, as [lo, hi) in ns since the epoch."""

    lo: int
    hi: int
    label: str
    """How the page names it ("the 24 h", "2025-01-01 to 2025-01-31", "all time")."""


def time_range(key: str) -> TimeRange:
    """The range the URL asks for (``?range=`` 1h, 24h, 7d, 30d, all, or custom with ``&from=&to=`` dates
    in UTC; ``range_switch`` is its row of links), with a date picker for a custom range, whose dates it writes
    back to the URL, so a link keeps them. ``key`` keeps each page's picker apart; the URL parameters
    are the same on every page."""
    choice = param("range") or _DEFAULT_RANGE
    if choice not in _RANGES:
        st.warning(f"`range={choice}` in the URL is not one of {', '.join(_RANGES)}; showing all.")
        choice = _DEFAULT_RANGE
    now = time.time_ns()
    st.query_params["range"] = choice
    if choice == "custom":
        today = dt.datetime.now(dt.UTC).date()
        picked = st.date_input("From – to (UTC)", value=(_date(param("from"), today - dt.timedelta(days=7)),
                                                         _date(param("to"), today)), key=f"{key}_dates", width=300)
        start, end = (picked[0], picked[-1]) if isinstance(picked, tuple) and picked else (today, today)
        st.query_params.update({"from": start.isoformat(), "to": end.isoformat()})
        lo = int(dt.datetime.combine(start, dt.time(), dt.UTC).timestamp()) * _NS
        hi = int(dt.datetime.combine(end + dt.timedelta(days=1), dt.time(), dt.UTC).timestamp()) * _NS
        return TimeRange(lo, hi, f"{start} to {end}")
    for stale in ("from", "to"):
        st.query_params.pop(stale, None)
    seconds = _RANGES[choice][1]
    # "all" also reaches past now: a collector's clock may run ahead of the dashboard's.
    if seconds is None:
        return TimeRange(0, 2**63 - 1, "all time")
    return TimeRange(now - seconds * _NS, now, f"the {_RANGES[choice][0]}")


def _date(text: str | None, default: dt.date) -> dt.date:
    try:
        return dt.date.fromisoformat(text) if text else default
    except ValueError:
        st.warning(f"`{text}` in the URL is not a date (YYYY-MM-DD); it was ignored.")
        return default


def bucket(first_ns: int, last_ns: int, *, most: int = _MAX_BUCKETS) -> tuple[int, str]:
    """The bucket for a time chart from ``first_ns`` to ``last_ns`` (in ns, with its label): the
    smallest step that keeps it under ``most`` points, so a minute-long demo and a year of traffic
    both get a readable chart."""
    step_s = next((s for s in _STEPS_S if (last_ns - first_ns) / (s * _NS) < most), _STEPS_S[-1])
    if step_s < 60:
        label = f"{step_s} s"
    elif step_s < 3600:
        label = f"{step_s // 60} min"
    elif step_s < 86_400:
        label = f"{step_s // 3600} h"
    else:
        label = f"{step_s // 86_400} d"
    return step_s * _NS, label


@dataclass(frozen=True)
class OriginView:
    """One choice of the origin switch."""

    label: str
    sessions: str
    """What its sessions are called in a sentence ("eval sessions")."""
    session: str
    """And one of them ("eval session")."""
    origins: tuple[str, ...]
    """The ``sessions.origin`` values it shows."""


ORIGIN_VIEWS = {
    "production": OriginView("production", "production sessions", "production session", ("production",)),
    "evals": OriginView("evals", "eval sessions", "eval session", ("eval",)),
    "replays": OriginView("replays & forks", "replays and forks", "replay or fork", ("replay", "fork")),
    "all": OriginView("all", "sessions", "session", tracer.ORIGINS),
}
"""The origin switch's choices, by their URL value."""


def origin_view(*, default: str = "production") -> str:
    """The sessions the URL asks for (``?origin=`` production, evals, replays, all; ``origin_switch`` is
    its row of links): production by default, so that eval trials, replays and forks do not count as traffic;
    written back to the URL."""
    choice = param("origin") or default
    if choice not in ORIGIN_VIEWS:
        st.warning(f"`origin={choice}` in the URL is not one of {', '.join(ORIGIN_VIEWS)}; showing {default}.")
        choice = default
    st.query_params["origin"] = choice
    return choice


_ORIGIN_HELP = ("Production is live traffic; evals are the trials of eval runs; replays and forks are made from "
                "recorded sessions on the Replay page or with flightrec replay.")


def range_switch() -> _html.Switch:
    """The range's row of ``_html.switches``, at the URL's range (``time_range`` warns of one it does not know)."""
    current = param("range") if param("range") in _RANGES else _DEFAULT_RANGE
    return _html.Switch("Range", "range", {k: label for k, (label, _) in _RANGES.items()}, current)


def origin_switch(view: str) -> _html.Switch:
    """The origin's row of ``_html.switches``, at ``view`` (``origin_view``'s)."""
    return _html.Switch("Sessions from", "origin", {k: v.label for k, v in ORIGIN_VIEWS.items()}, view, _ORIGIN_HELP)


def origin_values(view: str) -> list[str]:
    """The ``sessions.origin`` values an origin view keeps, for ``where_in`` (none: every session)."""
    return [] if view == "all" else list(ORIGIN_VIEWS[view].origins)


def observed_in(view: str) -> tuple[str, list[Any]]:
    """A condition on ``alert_observations o`` (``""``: none, for all) that keeps the observations of
    the view's sessions, and its parameters. An observation of no session (an agent's model latency
    over a window of calls) is production's, as the calls are unless eval runs are judged."""
    clauses, params = where_in({"s.origin": origin_values(view)})
    if not clauses:
        return "", []
    cond = f"o.observation IN (SELECT session_id FROM sessions s WHERE {clauses[0]})"
    if "production" in ORIGIN_VIEWS[view].origins:
        cond = f"({cond} OR o.observation NOT IN (SELECT session_id FROM sessions))"
    return cond, params


def alerts_in(view: str) -> tuple[str, list[Any]]:
    """The same for ``alerts a``: an alert counts in the view when it was seen in one of its sessions."""
    cond, params = observed_in(view)
    return (f"EXISTS (SELECT 1 FROM alert_observations o WHERE o.fingerprint = a.fingerprint AND {cond})"
            if cond else "", params)


SCORED = """(SELECT session_id,
       sum(value * weight) / nullif(sum(weight) FILTER (WHERE value IS NOT NULL), 0) AS score,
       string_agg(scorer, ', ' ORDER BY scorer) FILTER (WHERE NOT passed) AS failing,
       bool_or(chosen_by = 'alert') AS alerted
   FROM session_scores GROUP BY session_id)"""
"""A subquery of each scored session's online score, to join on ``session_id``: ``score``, the mean of
its scorers' values weighted by their weights (skipped ones left out; NULL if all were), and
``failing``, the scorers it failed, and ``alerted``, whether it was scored for raising an alert (not a
random pick: trends leave it out)."""


@dataclass(frozen=True)
class AfterDeploy:
    """What was made of a session after it ended: its online scores, its outcome and its review."""

    scores: list[tracer.SessionScore]
    outcomes: list[tracer.OutcomeRecord]
    """Newest first: the first is the session's outcome."""
    review: tracer.ReviewRecord | None
    """Its place in the review queue, with the verdict once reviewed; ``None``: never queued nor reviewed."""

    @property
    def score(self) -> float | None:
        """The scores' mean, weighted as ``SCORED`` weighs them."""
        done = [s for s in self.scores if s.value is not None]
        weight = sum(s.weight for s in done)
        return sum(s.value * s.weight for s in done) / weight if weight else None  # type: ignore[operator]


def after_deploy(session_id: str) -> AfterDeploy:
    """A session's ``AfterDeploy``; wrap it in ``cached`` where it is read."""
    store = source().store()
    review = frame("SELECT * FROM reviews WHERE session_id = ?", [session_id])
    return AfterDeploy(store.session_scores(session_id), store.outcomes(session_id),
                       tracer.ReviewRecord(**{k: None if pd.isna(v) else v for k, v in review.iloc[0].items()})
                       if not review.empty else None)


def _cell(text: Any) -> str:
    """Text on one line, for a line of markdown."""
    return " ".join(str(text).split())


_PASSED = {None: ":gray-badge[skipped]", True: ":green-badge[pass]", False: ":red-badge[fail]"}


def show_after_deploy(a: AfterDeploy) -> None:
    """The scores (each scorer's value, verdict and reason), the outcome and the review, as three blocks of markdown."""
    if a.scores:
        failed = [s.scorer for s in a.scores if s.passed is False]
        head = (f"**Online scores**: {a.score:.2f}" if a.score is not None else "**Online scores**: –") + (
            " (weighted mean)" + (f" · failed {', '.join(failed)}" if failed else " · passed every scorer"))
        # A list, not a table: a reason is a sentence, and a table's column of them is tall and narrow.
        rows = "".join(f"- {_PASSED[s.passed]} **{_cell(s.scorer)}** {'–' if s.value is None else f'{s.value:.2f}'}: "
                       f"{_cell(tracer.clip_text(s.reason, 300))}\n" for s in a.scores)
        st.markdown(f"{head}\n\n{rows}")
    else:
        st.markdown("**Online scores**: none. The scoring policy scores a sample of production sessions "
                    "(`flightrec serve --scoring`; `flightrec eval score` after the fact).")
    if a.outcomes:
        o = a.outcomes[0]
        said = [] if o.resolved is None else [":green-badge[resolved]" if o.resolved else ":red-badge[not resolved]"]
        said += [f"score {o.score:.2f}"] if o.score is not None else []
        said += [f"“{_cell(o.note)}”"] if o.note else []
        said += [f"{o.actor or 'unknown'} via {o.source}, {when(o.at_ns)}"]
        earlier = f" ({len(a.outcomes) - 1} earlier)" if len(a.outcomes) > 1 else ""
        st.markdown(f"**Outcome**{earlier}: " + " · ".join(said))
    else:
        st.markdown("**Outcome**: none recorded (`flightrec outcome`, `Recorder.outcome`).")
    r = a.review
    if r is None:
        st.markdown("**Review**: not queued.")
    elif r.verdict is None:
        st.markdown(f"**Review**: :orange-badge[waiting] queued ({r.queued_by}) {when(r.queued_ns)}")
    else:
        badge = ":green-badge[good]" if r.verdict == "good" else ":red-badge[bad]"
        st.markdown(f"**Review**: {badge}" + (f" {r.category}" if r.category else "")
                    + (f" · “{_cell(r.note)}”" if r.note else "") + f" · by {r.reviewer}, {when(r.reviewed_ns)}")


def shared_query() -> dict[str, str]:
    """The range and origin in the URL, for a link to another page that shows the same ones."""
    return {k: v for k in ("range", "from", "to", "origin") if (v := param(k)) is not None}
