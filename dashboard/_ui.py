"""What every page shares: the store, cached queries, formatting, links and error boxes."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import pandas as pd
import streamlit as st

import tracer

from . import _source

T = TypeVar("T")

PAGES = {
    "overview": "views/overview.py",
    "sessions": "views/sessions.py",
    "session": "views/session.py",
    "replay": "views/replay.py",
    "evals": "views/evals.py",
    "alerts": "views/alerts.py",
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


def usd(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "unknown"
    return f"${value:,.4f}" if value < 1 else f"${value:,.2f}"


def ms(value: float | None) -> str:
    if value is None or pd.isna(value):
        return "–"
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def tokens(value: int | float | None) -> str:
    if value is None or pd.isna(value):
        return "–"
    if value >= 1_000_000:
        return f"{value / 1e6:,.2f}M"
    return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{int(value):,}"


def when(ns: int | None) -> str:
    if ns is None or pd.isna(ns):
        return "–"
    return dt.datetime.fromtimestamp(ns / 1e9, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def raw_json(label: str, value: Any) -> None:
    """Raw JSON, collapsed until asked for."""
    with st.expander(label, expanded=False):
        st.json(value if not isinstance(value, str) else _maybe_json(value), expanded=2)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def link(page: str, label: str, **query: Any) -> None:
    """A link to another page, carrying the ids that make it a deep link."""
    st.page_link(PAGES[page], label=label, query_params={k: str(v) for k, v in query.items() if v is not None})


Target = tuple[str, dict[str, Any]]
"""What a table row opens: a key of ``PAGES`` and the query that makes it a deep link."""


def table(data: pd.DataFrame, *, key: str, opens: Callable[[pd.Series], Target | None] | None = None,
          column_config: dict[str, Any] | None = None) -> pd.Series | None:
    """A table whose rows open their page in this tab when clicked.

    A click on any cell picks its row: Streamlit's row selection is made only through a checkbox
    column, and its link columns open a new tab. The row handed on is the one clicked, whatever
    order the browser sorted the table into (Streamlit reports positions in ``data``).

    Args:
        data: The rows, as shown.
        key: The widget key; the click is kept under it until the page changes.
        opens: The page and query a row opens (``None`` from it: the row opens nothing). Without
            it, the clicked row is returned for the page to show in place.
        column_config: As ``st.dataframe`` takes it.

    Returns:
        The clicked row, when ``opens`` is not given; else ``None`` (a row that opens a page leaves this one).
    """
    event = st.dataframe(data, key=key, hide_index=True, width="stretch", on_select="rerun",
                         selection_mode="single-cell", column_config=column_config)
    cells = event.selection.cells if event else []
    if not cells:
        return None
    row = data.iloc[cells[0][0]]
    target = opens(row) if opens is not None else None
    if target is None:
        return row if opens is None else None
    page, query = target
    st.switch_page(PAGES[page], query_params={k: str(v) for k, v in query.items() if v is not None})
    return None


def url(page: str, **query: Any) -> str:
    """The relative URL of a page with its query, for link columns in tables."""
    from urllib.parse import urlencode

    q = urlencode({k: v for k, v in query.items() if v is not None})
    return f"/{page}?{q}" if q else f"/{page}"
