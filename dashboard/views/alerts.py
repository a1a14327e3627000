"""Alerts: what the detectors flagged, filterable, each with its evidence and the sessions it points
at (``?alert=ID``), and acknowledged or resolved from here.

The list follows the origin switch (production by default): an alert is listed with the sessions it
was seen in (``_ui.alerts_in``), so that alerts raised on eval trials (``flightrec detect --origin
eval``) are the evals view's."""

from typing import Any

import pandas as pd
import streamlit as st

import tracer
from dashboard import _html, _ui

_STATUSES = ("open", "acknowledged", "resolved")
_SEVERITIES = ("critical", "warning", "info")
_PAGE_SIZE = 50  # every row is drawn on each load (_html.table)
_SEVERITY_COLORS = {"critical": "red", "warning": "orange", "info": "blue"}


@_ui.cached
def _families() -> list[str]:
    return _ui.frame("SELECT DISTINCT family FROM alerts ORDER BY 1")["family"].tolist()


@_ui.cached
def _alerts(statuses: tuple[str, ...], severities: tuple[str, ...], families: tuple[str, ...], view: str, page: int):
    clauses, params = _ui.where_in({"status": statuses, "severity": severities, "family": families})
    seen, seen_params = _ui.alerts_in(view)
    if seen:
        clauses, params = [*clauses, seen], [*params, *seen_params]
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    total = int(_ui.frame(f"SELECT count(*) AS n FROM alerts a {where}", params)["n"].iloc[0])
    rows = _ui.frame(
        f"""SELECT alert_id, severity, status, detector, family, title, agent, route, count, last_seen_ns
            FROM alerts a {where}
            ORDER BY CASE status WHEN 'open' THEN 0 WHEN 'acknowledged' THEN 1 ELSE 2 END,
                     CASE severity WHEN 'critical' THEN 0 WHEN 'warning' THEN 1 ELSE 2 END, last_seen_ns DESC
            LIMIT ? OFFSET ?""", [*params, _PAGE_SIZE, page * _PAGE_SIZE])
    return total, rows


@_ui.cached
def _alert(alert_id: str) -> tracer.AlertRecord:
    return _ui.source().store().get_alert(alert_id)


def _chosen(name: str, options: tuple[str, ...] | list[str], default: list[str]) -> list[str]:
    """A filter's values: the URL's (``?status=open&status=acknowledged``, or an older link's
    ``?status=open,acknowledged``), else ``default``. A submitted form (``filtered=1``) with none ticked
    filters nothing."""
    asked = [v for value in st.query_params.get_all(name) for v in value.split(",")]
    if not asked:
        return [] if _ui.param("filtered") else default
    return [v for v in asked if v in options]


def _alert_list() -> None:
    families = _families()
    view = _ui.origin_view()
    statuses = _chosen("status", _STATUSES, ["open", "acknowledged"])
    severities = _chosen("severity", _SEVERITIES, [])
    chosen_families = _chosen("family", families, [])
    _ui.to_url({"status": statuses, "severity": severities, "family": chosen_families})
    kept = {"origin": view, "filtered": 1}
    _ui.draw(_html.switches("alerts", _ui.here(), _ui.origin_switch(view)),
             _html.filters("alerts", kept=kept, fields=[_html.boxes_field("status", _STATUSES, statuses),
                                                         _html.boxes_field("severity", _SEVERITIES, severities),
                                                         _html.boxes_field("family", families, chosen_families)]))
    page, pages, (total, rows) = _ui.paged(
        lambda index: _alerts(tuple(statuses), tuple(severities), tuple(chosen_families), view, index), _PAGE_SIZE)
    count = _html.note(_ui.matching(total, "alerts", (page - 1) * _PAGE_SIZE, len(rows), one="alert")
                       + ". Click a row to open its alert: its evidence and the sessions it points at.")
    if rows.empty:
        _ui.draw(count)
        # The detectors judge production only unless asked (`flightrec detect --origin`).
        st.info("No alert matches. Widen the filters (resolved alerts are hidden by default), or run the "
                "detectors with `flightrec detect`" + ("." if view in ("production", "all") else
                                                       f" (`--origin` for {_ui.ORIGIN_VIEWS[view].sessions})."))
        return
    # The key columns (what happened, last seen) first, in view at 1440 px.
    shown = [{"severity": r.severity, "status": r.status, "what happened": r.title,
              "last seen": _ui.when(r.last_seen_ns), "seen": f"{int(r.count):,}×", "detector": r.detector,
              "route": r.route or "–", "alert": r.alert_id} for r in rows.itertuples()]
    query = {**kept, "status": statuses, "severity": severities, "family": chosen_families}
    _ui.draw(count, _html.table(shown, links=[_ui.url("alerts", alert=a) for a in rows["alert_id"]],
                                numeric=("seen",), wrap=("what happened",)),
             _html.pager("alerts", query, page, pages) if pages > 1 else "")


def _label(key: str) -> str:
    return key.replace("_", " ")


def _value(key: str, value: Any) -> str:
    if isinstance(value, float) and key.endswith("_usd"):
        return _ui.usd(value)
    if isinstance(value, float) and key.endswith("_ms"):
        return _ui.ms(value)
    if isinstance(value, float):
        return f"{value:,.4g}"
    if isinstance(value, list) and all(not isinstance(v, (dict, list)) for v in value):
        return ", ".join(map(str, value))
    return str(value)


def _numbers(values: dict[str, Any]) -> None:
    rows = {_label(k): _value(k, v) for k, v in values.items() if not isinstance(v, dict) and k != "rule"}
    if rows:
        # A static table wraps long values (a guard's reason, a tool's arguments) instead of cutting them.
        st.table(pd.Series(rows, name="value"))


def _evidence(evidence: dict[str, Any]) -> None:
    """The detector's evidence as a person reads it: its numbers, then each nested part (the baseline
    and the rule it was built by, the guard that fired, the repeating calls) under its own name."""
    flat = {k: v for k, v in evidence.items()
            if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))}
    _numbers(flat)
    for key, part in evidence.items():
        if key in flat:
            continue
        st.markdown(f"**{_label(key).capitalize()}**")
        if isinstance(part, list):
            st.dataframe(pd.DataFrame(part), hide_index=True, width="stretch")
        elif key == "arguments" or not all(not isinstance(v, dict) for v in part.values()):
            st.json(part, expanded=1)
        else:
            if part.get("rule"):
                st.caption(f"Rule: {part['rule']}")
            _numbers(part)


def _set_status(alert_id: str, status: str) -> None:
    """Writes the new status, then reruns so that everything on the page shows it."""
    with _ui.source().writing() as store:
        store.set_alert_status(alert_id, status, actor=_ui.actor(), via="dashboard")
    st.session_state["alerts_done"] = (alert_id, status)
    st.rerun()


def _one_alert(alert_id: str) -> None:
    a = _alert(alert_id)
    done = st.session_state.pop("alerts_done", None)
    if done == (a.alert_id, a.status):
        st.success(f"Alert {a.alert_id} is now **{a.status}**.", icon=":material/check:")
    st.subheader(a.title)
    color = _SEVERITY_COLORS.get(a.severity, "gray")
    st.markdown(f":{color}-badge[{a.severity}] :gray-badge[{a.status}] `{a.alert_id}` · {a.detector} ({a.family}) · "
                f"agent {a.agent or '–'} · route {a.route or '–'}")
    st.caption(f"seen {a.count}× · first {_ui.when(a.first_seen_ns)} · last {_ui.when(a.last_seen_ns)}")
    buttons = st.container(horizontal=True)
    # Plain buttons, not on_click callbacks: a write that fails (the file is locked by a writer) must
    # raise inside the page body, where it becomes an error box.
    if buttons.button("Acknowledge", key="alerts_ack", disabled=a.status != "open", icon=":material/visibility:",
                      help="Someone is on it."):
        _set_status(a.alert_id, "acknowledged")
    if buttons.button("Resolve", key="alerts_resolve", disabled=a.status == "resolved", icon=":material/done_all:",
                      help="It reopens if it is seen again."):
        _set_status(a.alert_id, "resolved")
    left, right = st.columns([3, 2])
    with left:
        st.markdown("#### Evidence")
        _evidence(a.evidence)
        _ui.raw_json("Raw alert (JSON)", a.model_dump())
    with right:
        st.markdown("#### Where it was seen")
        if a.session_id:
            _ui.link("session", f"Latest session {a.session_id[:13]}…", id=a.session_id)
            for turn in a.turns:
                _ui.link("session", f"turn {turn} of that session", id=a.session_id, turn=turn)
        earlier = [s for s in reversed(a.session_ids) if s != a.session_id]
        if earlier:
            st.caption(f"{len(earlier)} earlier session(s), newest first")
            for sid in earlier:
                _ui.link("session", sid[:13] + "…", id=sid)
        if not a.session_ids and not a.session_id:
            st.caption("A fleet-wide alert: it points at no single session.")


def render() -> None:
    st.title("Alerts")
    alert_id = _ui.param("alert")
    if alert_id is not None:
        _ui.link("alerts", "All alerts")
        _one_alert(alert_id)
        return
    if not _families():
        st.info("No alerts in this store. The detectors raise them as sessions end in `flightrec serve`, or run "
                "them over the history with `flightrec detect`.")
        return
    _alert_list()


_ui.guarded(render, live=True)
