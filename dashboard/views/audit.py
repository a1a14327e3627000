"""Audit: who acknowledged, resolved, replayed, forked, exported, labelled, pruned or deleted what, when,
and from where (the ``audit_log`` table, newest first), filterable and linked to what each entry names."""

import json

import pandas as pd
import streamlit as st

import tracer
from dashboard import _html, _ui

_PAGE_SIZE = 50  # every row is drawn on each load (_html.table)
_SESSION_ACTIONS = ("replay", "fork", "export", "delete")
_ALERT_ACTIONS = ("acknowledge", "resolve", "reopen")


@_ui.cached
def _seen(column: str) -> list[str]:
    """The values a filter offers: those in the log."""
    return _ui.frame(f"SELECT DISTINCT {column} AS v FROM audit_log ORDER BY 1")["v"].tolist()


@_ui.cached
def _entries(actions: tuple[str, ...], actors: tuple[str, ...], vias: tuple[str, ...],
             page: int) -> tuple[int, pd.DataFrame]:
    """How many entries match, and a page of them, the newest first."""
    clauses, params = _ui.where_in({"action": actions, "actor": actors, "via": vias})
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    total = int(_ui.frame(f"SELECT count(*) AS n FROM audit_log {where}", params)["n"].iloc[0])
    rows = _ui.frame(f"SELECT at_ns, actor, action, target, via, detail FROM audit_log {where} "
                     "ORDER BY at_ns DESC, target LIMIT ? OFFSET ?", [*params, _PAGE_SIZE, page * _PAGE_SIZE])
    return total, rows


def _link(action: str, target: str) -> str | None:
    """The page of the object an entry names, where there is one."""
    if action in _SESSION_ACTIONS:
        return _ui.url("session", id=target)
    if action in _ALERT_ACTIONS:
        return _ui.url("alerts", alert=target)
    if action == "label":
        return _ui.url("evals", run=target)
    return None


def _detail(text: str) -> str:
    return " · ".join(f"{k} {v}" for k, v in json.loads(text).items() if v is not None)


def render() -> None:
    st.title("Audit")
    intro = _html.note(
        "Actions people took on the recorded data, newest first. The log is append-only: nothing in flightrec "
        "changes or removes an entry, and pruning leaves it alone. The dashboard has no login, so actions taken "
        f"here are recorded as {_ui.actor()} ($FLIGHTREC_ACTOR of the process serving it, else its OS user).")
    if not _seen("action"):
        _ui.draw(intro)
        st.info("No entries yet. Acknowledging or resolving an alert, labelling an eval run, replaying, forking or "
                "exporting a session (here or with `flightrec`) records one; `flightrec audit list` shows them too.")
        return
    actors = _seen("actor")
    actions, who, vias = (_ui.picked("action", tracer.AUDIT_ACTIONS), _ui.picked("actor", actors),
                          _ui.picked("via", tracer.AUDIT_VIAS))
    query = {"action": actions, "actor": who, "via": vias}
    _ui.to_url(query)
    form = _html.filters("audit", kept={}, clear=bool(actions or who or vias), fields=[
        _html.boxes_field("action", tracer.AUDIT_ACTIONS, actions), _html.boxes_field("actor", actors, who),
        _html.boxes_field("via", tracer.AUDIT_VIAS, vias)])
    page, pages, (total, rows) = _ui.paged(
        lambda index: _entries(tuple(actions), tuple(who), tuple(vias), index), _PAGE_SIZE)
    count = _html.note(_ui.matching(total, "entries", (page - 1) * _PAGE_SIZE, len(rows), one="entry")
                       + (". Click an entry to open what it names." if total else "."))
    if rows.empty:
        _ui.draw(intro, form, count)
        st.info("No entry matches these filters. Clear them, or tick other values.")
        return
    shown = [{"when": _ui.when(r.at_ns), "actor": r.actor, "action": r.action, "target": r.target, "from": r.via,
              "detail": _detail(r.detail)} for r in rows.itertuples()]
    _ui.draw(intro, form, count,
             _html.table(shown, links=[_link(a, t) for a, t in zip(rows["action"], rows["target"], strict=True)],
                         wrap=("detail",)),
             _html.pager("audit", query, page, pages) if pages > 1 else "")


_ui.guarded(render, live=True)
