"""Audit: who acknowledged, resolved, replayed, forked, exported, labelled, pruned or deleted what, when,
and from where (the ``audit_log`` table, newest first), filterable and linked to what each entry names."""

import json

import pandas as pd
import streamlit as st

import tracer
from dashboard import _ui

_LIST_LIMIT = 1000
_SESSION_ACTIONS = ("replay", "fork", "export", "delete")
_ALERT_ACTIONS = ("acknowledge", "resolve", "reopen")


@_ui.cached
def _seen(column: str) -> list[str]:
    """The values a filter offers: those in the log."""
    return _ui.frame(f"SELECT DISTINCT {column} AS v FROM audit_log ORDER BY 1")["v"].tolist()


@_ui.cached
def _entries(actions: tuple[str, ...], actors: tuple[str, ...], vias: tuple[str, ...]) -> tuple[int, pd.DataFrame]:
    clauses, params = _ui.where_in({"action": actions, "actor": actors, "via": vias})
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    total = int(_ui.frame(f"SELECT count(*) AS n FROM audit_log {where}", params)["n"].iloc[0])
    rows = _ui.frame(f"SELECT at_ns, actor, action, target, via, detail FROM audit_log {where} "
                     "ORDER BY at_ns DESC LIMIT ?", [*params, _LIST_LIMIT])
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
    st.caption("Actions people took on the recorded data, newest first. The log is append-only: nothing in "
               "flightrec changes or removes an entry, and pruning leaves it alone. The dashboard has no login, so "
               f"actions taken here are recorded as **{_ui.actor()}** (`$FLIGHTREC_ACTOR` of the process serving "
               "it, else its OS user).")
    if not _seen("action"):
        st.info("No entries yet. Acknowledging or resolving an alert, labelling an eval run, replaying, forking or "
                "exporting a session (here or with `flightrec`) records one; `flightrec audit list` shows them too.")
        return
    c1, c2, c3 = st.columns(3)
    actions = c1.multiselect("Action", tracer.AUDIT_ACTIONS, key="audit_action")
    actors = c2.multiselect("Actor", _seen("actor"), key="audit_actor")
    vias = c3.multiselect("From", tracer.AUDIT_VIAS, key="audit_via")
    total, rows = _entries(tuple(actions), tuple(actors), tuple(vias))
    st.caption(f"{total:,} {'entry matches' if total == 1 else 'entries match'}"
               + (f"; showing the newest {len(rows):,}" if total > len(rows) else ""))
    if rows.empty:
        st.info("No entry matches these filters.")
        return
    table = pd.DataFrame({
        "when": [_ui.when(ns) for ns in rows["at_ns"]],
        "actor": rows["actor"],
        "action": rows["action"],
        "target": rows["target"],
        "open": [_link(a, t) for a, t in zip(rows["action"], rows["target"])],
        "from": rows["via"],
        "detail": [_detail(d) for d in rows["detail"]],
    })
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "open": st.column_config.LinkColumn("open", display_text="open", width="small"),
        "detail": st.column_config.TextColumn("detail", width="large"),
    })


_ui.guarded(render, live=True)
