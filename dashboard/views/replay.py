"""Replay: rebuild one decision's exact request, edit it, re-run it (once or K trials) or fork the
session from there, and compare the outcomes. The editor and the run and fork controls open on a click
(``?edit=1``); the recorded decision and its rebuilt request are shown at once.

Every step is a call to the replay package (``reconstruct``, ``apply_edits``, ``run``, ``fork``,
``diff``); this page only turns widgets into ``replay.Edits`` and shows the records it gets back.
"""

import html
import json
from collections.abc import Callable
from typing import Any, TypeVar

import pandas as pd
import streamlit as st
from streamlit.delta_generator import DeltaGenerator

import replay
import tracer
from dashboard import _html, _ui

T = TypeVar("T")

_RECENT = 200
_TABS = ("System prompt", "Messages", "Tool results", "Tools", "Model parameters")
_MAX_TRIALS = 50
# The last run and fork are kept in the browser session, so that the script's reruns (any widget
# change) show them again without redoing them.
_RUN, _FORK = "replay_run_result", "replay_fork_result"
# The result a button has just produced, to scroll to once: it is drawn below the buttons, out of sight.
_SCROLL = "replay_scroll_to"
_EDITOR_KEY = "replay_editor"
# A fork's spend next to its origin's from the fork point on: what the fork changed in cost.
_SPEND = """SELECT count(DISTINCT turn_index) AS decisions,
                   sum(coalesce(input_tokens, 0) + coalesce(cache_read_tokens, 0) + coalesce(cache_write_tokens, 0))
                       AS input_tokens,
                   sum(coalesce(output_tokens, 0)) AS output_tokens, sum(cost_usd) AS cost_usd,
                   count(*) FILTER (cost_usd IS NULL AND status = 'ok') AS unpriced,
                   (SELECT count(*) FROM tool_calls WHERE session_id = ? AND turn_index >= ?) AS tool_calls
            FROM llm_calls WHERE session_id = ? AND turn_index >= ?"""


@_ui.cached
def _recent() -> pd.DataFrame:
    return _ui.frame("SELECT session_id, agent, status, turns, start_ns FROM sessions ORDER BY start_ns DESC LIMIT ?",
                     [_RECENT])


@_ui.cached
def _turns(session_id: str) -> pd.DataFrame:
    """What each turn of a session decided, in brief, so that the right turn is easy to pick."""
    return _ui.frame("""SELECT turn_index AS turn, arg_max(action, start_ns) AS action,
                               nullif(array_to_string(arg_max(tools_chosen, start_ns), ', '), '') AS tools
                        FROM llm_calls WHERE session_id = ? AND turn_index IS NOT NULL GROUP BY 1 ORDER BY 1""",
                     [session_id])


@_ui.cached
def _reconstruct(session_id: str, turn: int) -> replay.Reconstruction:
    return replay.reconstruct(session_id, turn, db=_ui.source().store())


def _pick() -> tuple[str | None, int]:
    """The session and turn: from the URL (``?id=…&turn=…``), else the newest session and its first
    decision; written back to the URL so that the page stays a deep link. The form that picks another
    session (a recent one, or any id pasted) and the turn links (``_turn_links``) load the page anew."""
    recent = _recent()
    session_id = _ui.param("id") or (recent["session_id"].iloc[0] if not recent.empty else None)
    suggestions = [(r.session_id, f"{r.agent} · {r.status} · {r.turns} turns · {_ui.when(r.start_ns)}")
                   for r in recent.itertuples()]
    _ui.draw(_html.filters("replay", kept={}, submit="Open", fields=[_html.search_field(
        "id", session_id or "", "pick a recent session, or paste a session id", label="Session",
        suggestions=suggestions)]))
    # Without a turn in the URL (the sidebar's entry), the session's first decision: a fork's turns
    # are numbered on from the turn it forked at, so it has no turn 1.
    first = _turns(session_id)["turn"].min() if session_id else None
    turn = max(1, _ui.int_param("turn") or (1 if first is None or pd.isna(first) else int(first)))
    if session_id:
        st.query_params.update(id=session_id, turn=str(turn))
    return session_id, turn


def _turn_links(session_id: str, turn: int, turns: pd.DataFrame) -> str:
    """Every decision of the session as a link, its tooltip what it decided. A link keeps the session
    alone: an open editor (``edit=1``) holds one turn's edits, which mean nothing for another turn."""
    said = {str(t.turn): f"turn {t.turn}: {t.action}" + (f" {t.tools}" if isinstance(t.tools, str) else "")
            for t in turns.itertuples()}
    return _html.switches("replay", {"id": session_id}, _html.Switch("Turn", "turn", {k: k for k in said}, str(turn),
                                                                     tips=said))


def _system_text(system: Any) -> str:
    if system is None or isinstance(system, str):
        return system or ""
    return "\n".join(block.get("text", "") for block in system)


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise replay.EditError(f"{what} is not valid JSON ({exc}). Fix it in the editor above.") from None


def _decision(d: replay.Decision, title: str) -> str:
    """A decision, in a box headed ``title``: what it did, the tools it called with what, what it said,
    and what it cost."""
    calls = "".join(f"<p>calls <code>{html.escape(use['name'])}</code> with</p>"
                    f"<pre>{html.escape(json.dumps(use['input'], indent=2, ensure_ascii=False))}</pre>"
                    for use in d.tool_uses)
    # Plain text, not st.code: the browser's syntax highlighter took ~0.5 s for a few hundred characters.
    said = f"<pre>{html.escape(d.text)}</pre>" if d.text else ""
    return (f'<div class="fr-box"><p>{title}</p><p><b>{html.escape(d.action or "failed call")}</b> · stop reason '
            f"<code>{html.escape(str(d.stop_reason))}</code> · model <code>{html.escape(str(d.model))}</code></p>"
            f"{calls}{said}" + _html.note(f"{_ui.tokens(d.input_tokens)} input + {_ui.tokens(d.output_tokens)} "
                                          f"output tokens · {_ui.usd(d.cost_usd)} · {_ui.ms(d.latency_ms)}")
            + "</div>")


def _decision_diff(d: replay.DecisionDiff) -> None:
    changed = ", ".join(c.field for c in d.changes)
    if not d.same:
        st.warning(f"The decision changed: {changed}.", icon=":material/call_split:")
    else:
        st.success("Same decision: same action, tools and arguments" + (f" ({changed} differs)." if changed else "."),
                   icon=":material/check:")
    for c in d.changes:
        if c.diff:
            st.markdown(f"**{c.field}**")
            st.code("\n".join(c.diff), language="diff", wrap_lines=True)
        else:
            st.markdown(f"**{c.field}**: `{c.a}` → `{c.b}`")
    st.caption("The replayed decision, with its change from the recorded one:")
    cols = st.columns(4)
    _delta(cols[0], "input tokens", _ui.tokens(d.b.input_tokens), d.delta_input_tokens, f"{d.delta_input_tokens:+,}")
    _delta(cols[1], "output tokens", _ui.tokens(d.b.output_tokens), d.delta_output_tokens,
           f"{d.delta_output_tokens:+,}")
    _delta(cols[2], "cost", _ui.usd(d.b.cost_usd), d.delta_cost_usd,
           None if d.delta_cost_usd is None else tracer.format_usd(d.delta_cost_usd, signed=True))
    _delta(cols[3], "latency", _ui.ms(d.b.latency_ms), d.delta_latency_ms, f"{d.delta_latency_ms:+,.0f} ms")


def _delta(where: DeltaGenerator, label: str, value: str, delta: float | None, shown: str | None) -> None:
    """The replayed value with its change from the recorded one: more is worse (red), and no change
    is grey, not an up arrow."""
    where.metric(label, value, shown, delta_color="off" if not delta else "inverse",
                 delta_arrow="off" if not delta else "auto")


def _request(rec: replay.Reconstruction) -> str:
    """The rebuilt request's box: whether it is the request as recorded, byte for byte, and a warning
    when it is not."""
    body = rec.request
    head = (f'<div class="fr-box"><p><b>Rebuilt request</b> · model <code>{html.escape(str(body.get("model")))}</code>'
            f" · {len(body.get('messages') or [])} messages · {len(body.get('tools') or [])} tools</p>")
    if rec.reconstructed_from is not None:
        said = "".join(f"<li>{html.escape(n)}</li>" for n in rec.notes)
        said += "".join(f"<li><b>{html.escape(m)}</b> was not recorded; the Messages API requires it: set it under "
                        "Model parameters before a run.</li>" for m in rec.missing)
        return head + _html.callout(
            f"<b>Reconstructed from semantic conventions</b> ({html.escape(rec.reconstructed_from)}): other "
            "instrumentation recorded this call and kept no exact request, so this is its account of what was sent, "
            f"normalised to the Messages API. There is no recorded hash to verify it by.<ul>{said}</ul>") + "</div>"
    if rec.exact:
        return head + _html.note(f"✓ sha256 {rec.sha256} matches the hash recorded with the call.") + "</div>"
    return head + _html.callout(
        f"The rebuilt request's sha256 <code>{rec.sha256}</code> differs from the recorded "
        f"<code>{html.escape(rec.recorded_sha256 or 'none')}</code>, so a re-run does not start from exactly "
        "what the model saw. <code>flightrec replay verify</code> lists the calls that cannot be rebuilt and why."
    ) + "</div>"


def _kept(shown: bool, widget: Callable[..., T], default: T, *args: Any, key: str, **kwargs: Any) -> T:
    """An edit widget's value. Only the open edit tab is drawn: a closed tab's widgets are not sent to
    the browser (the tool results alone were 39 text areas), and their values are the ones they kept
    while closed (``persist_state="page"``), else ``default``, the recorded one, if never drawn."""
    if shown:
        return widget(*args, key=key, persist_state="page", **kwargs)
    return st.session_state[key] if key in st.session_state else default


def _message_edits(messages: list[dict[str, Any]], key: str, shown: bool) -> dict[str, Any]:
    if shown:
        st.dataframe(pd.DataFrame({
            "index": range(len(messages)), "role": [m.get("role") for m in messages],
            "content": [m.get("content") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
                        for m in messages],
        }), hide_index=True, width="stretch", height=min(400, 36 + 35 * len(messages)))

    def label(i: int) -> str:
        return f"{i} · {messages[i].get('role')}"

    drop = _kept(shown, st.multiselect, [], "Drop messages", range(len(messages)), format_func=label,
                 key=f"replay_drop_{key}")
    left, right = st.columns(2) if shown else (st, st)
    replace: dict[int, dict[str, Any]] = {}
    at = _kept(shown, left.selectbox, None, "Replace message", range(len(messages)), index=None, format_func=label,
               placeholder="none", key=f"replay_replace_at_{key}")
    if at is not None:
        recorded = json.dumps(messages[at], indent=2, ensure_ascii=False)
        text = _kept(shown, left.text_area, recorded, f"Message {at} (JSON: role and content)", recorded, height=200,
                     key=f"replay_replace_{key}_{at}")
        new = _json(text, f"message {at}")
        if new != messages[at]:
            replace[at] = new
    before = _kept(shown, right.number_input, len(messages), f"Insert a message before index ({len(messages)} "
                   "appends)", min_value=0, max_value=len(messages), value=len(messages), key=f"replay_insert_at_{key}")
    role = _kept(shown, right.radio, "user", "Its role", ["user", "assistant"], horizontal=True,
                 key=f"replay_insert_role_{key}")
    said = _kept(shown, right.text_area, "", "Its text (leave empty to insert nothing)", key=f"replay_insert_{key}")
    return {"drop_messages": list(drop), "replace_messages": replace,
            "insert_messages": [(int(before), {"role": role, "content": said})] if said.strip() else []}


def _tool_result_edits(messages: list[dict[str, Any]], key: str, shown: bool) -> dict[str, Any]:
    """One editor for the result the user picks, rather than a text area for each of them (a 30-turn
    request carries dozens); the others keep their edits while another is shown."""
    blocks = [(i, b) for i, m in enumerate(messages) if isinstance(m.get("content"), list)
              for b in m["content"] if isinstance(b, dict)]
    names = {b.get("id"): b.get("name") for _, b in blocks if b.get("type") == "tool_use"}
    results = {b.get("tool_use_id"): (i, b.get("content")) for i, b in blocks if b.get("type") == "tool_result"}
    if not results:
        if shown:
            st.caption("This request has no tool results to edit.")
        return {}

    def as_text(recorded: Any) -> str:
        return recorded if isinstance(recorded, str) else json.dumps(recorded, ensure_ascii=False)

    def text_key(tid: str) -> str:
        return f"replay_result_{key}_{tid}"

    def label(tid: str) -> str:
        return f"{names.get(tid, 'tool')} · {tid} (message {results[tid][0]})"

    if shown:
        tid = st.selectbox(f"Tool result ({len(results)}, the newest first)", list(results)[::-1], format_func=label,
                           key=f"replay_result_pick_{key}")
        st.text_area(label(tid), as_text(results[tid][1]), height=200, key=text_key(tid), persist_state="page")
    edits: dict[str, Any] = {}
    for tid, (_, recorded) in results.items():
        text = st.session_state.get(text_key(tid), as_text(recorded))
        if text != as_text(recorded):
            # Content given as blocks is edited as their JSON and goes back as blocks.
            edits[tid] = text if isinstance(recorded, str) else _json(text, f"the result of {tid}")
    if shown and edits:
        st.caption("Edited: " + ", ".join(label(tid) for tid in edits))
    return edits


def _tool_edits(tools: list[dict[str, Any]], key: str, shown: bool) -> dict[str, Any]:
    names = [t.get("name") for t in tools]
    if shown:
        st.dataframe(pd.DataFrame({"tool": names, "description": [t.get("description") for t in tools]}),
                     hide_index=True, width="stretch")
    remove = _kept(shown, st.multiselect, [], "Stop offering", names, key=f"replay_remove_tools_{key}")
    text = _kept(shown, st.text_area, "", "Offer another tool: its JSON definition (a list for several)",
                 key=f"replay_add_tools_{key}", placeholder='{"name": "…", "description": "…", "input_schema": '
                                                           '{"type": "object", "properties": {}}}')
    added = _json(text, "the tool definition") if text.strip() else []
    return {"remove_tools": remove, "add_tools": added if isinstance(added, list) else [added]}


def _parameter_edits(body: dict[str, Any], key: str, shown: bool) -> dict[str, Any]:
    recorded_t, recorded_max = body.get("temperature"), body.get("max_tokens")
    recorded_model = body.get("model") or ""
    t0 = None if recorded_t is None else float(recorded_t)
    max0 = None if recorded_max is None else int(recorded_max)
    a, b, c = st.columns(3) if shown else (st, st, st)
    model = _kept(shown, a.text_input, recorded_model, "Model", recorded_model, key=f"replay_model_{key}").strip()
    temperature = _kept(shown, b.number_input, t0, "Temperature", min_value=0.0, max_value=1.0, step=0.1,
                        placeholder="not set", value=t0, key=f"replay_temp_{key}")
    max_tokens = _kept(shown, c.number_input, max0, "max_tokens", min_value=1, step=1, placeholder="not set",
                       value=max0, key=f"replay_max_{key}")
    return {"model": model if model and model != body.get("model") else None,
            "temperature": temperature if temperature is not None and temperature != recorded_t else None,
            "max_tokens": int(max_tokens) if max_tokens is not None and max_tokens != recorded_max else None}


def _edits(rec: replay.Reconstruction) -> replay.Edits:
    """The edits the widgets describe, in every tab, open or not: only what differs from the recorded
    request becomes an edit.

    Raises:
        replay.EditError: a JSON field does not parse.
    """
    body, key = rec.request, rec.span_id  # widgets per decision: another turn starts from its own request
    messages = body.get("messages") or []
    # Lazy tabs: only the open one's body runs and is sent (the others' widgets would be drawn all the same).
    system, conversation, results, tools, params = st.tabs(list(_TABS), key="replay_edit_tab", on_change="rerun")
    with system:
        recorded = _system_text(body.get("system"))
        text = _kept(bool(system.open), st.text_area, recorded, "System prompt", recorded, height=280,
                     key=f"replay_system_{key}")
    with conversation:
        fields = _message_edits(messages, key, bool(conversation.open))
    with results:
        fields["tool_results"] = _tool_result_edits(messages, key, bool(results.open))
    with tools:
        fields.update(_tool_edits(body.get("tools") or [], key, bool(tools.open)))
    with params:
        fields.update(_parameter_edits(body, key, bool(params.open)))
    return replay.Edits(system=text if text != recorded else None, **fields)


def _run(rec: replay.Reconstruction, edits: replay.Edits, trials: int, model_url: str | None) -> None:
    with st.spinner(f"Re-running turn {rec.turn} ({trials} trial{'s' * (trials != 1)})…"), \
            _ui.source().writing() as store:
        result = replay.run(rec.session_id, rec.turn, edits, trials=trials, model_url=model_url, db=store)
        replay.audit(store, result, actor=_ui.actor(), via="dashboard")
        diffs = [replay.diff(f"{rec.session_id}:{rec.turn}", f"{result.replay_session_id}:{k}", db=store)
                 for k in range(1, len(result.trials) + 1)]
    st.session_state[_RUN] = {"span": rec.span_id, "edits": edits, "trials": trials, "result": result,
                              "diffs": diffs}
    st.session_state[_SCROLL] = "replay_run_out"


def _fork(rec: replay.Reconstruction, edits: replay.Edits, tools: replay.ToolsMode, model_url: str | None) -> None:
    with st.spinner(f"Forking the session at turn {rec.turn}…"), _ui.source().writing() as store:
        result = replay.fork(rec.session_id, rec.turn, edits, tools=tools, model_url=model_url, db=store)
        replay.audit(store, result, actor=_ui.actor(), via="dashboard", edits=edits)
        trajectory = replay.diff(rec.session_id, result.session_id, db=store)
        spend = {label: store.frame(_SPEND, [sid, rec.turn] * 2).iloc[0]
                 for label, sid in (("recorded (origin)", rec.session_id), ("replayed (fork)", result.session_id))}
    st.session_state[_FORK] = {"span": rec.span_id, "edits": edits, "how": tools, "result": result,
                               "diff": trajectory, "spend": spend}
    st.session_state[_SCROLL] = "replay_fork_out"


def _failed(exc: tracer.FlightrecError) -> None:
    _ui.show_error(exc)
    if isinstance(exc, replay.NoModelError):
        st.info("On this page, put the endpoint in **Model URL** above.", icon=":material/info:")


def _actions(rec: replay.Reconstruction, edits: replay.Edits | None) -> None:
    """The run and fork buttons; ``edits`` is ``None`` while an edit is invalid."""
    model_url = st.text_input(
        "Model URL", key="replay_model_url", placeholder="the agent's own model",
        help="Any Messages-API-compatible endpoint to ask. Empty: the model the session's agent registers (the "
             "reference agent's simulator for its sessions); an agent that registers none needs one here.").strip() \
        or None
    run_box, fork_box = st.columns(2)
    with run_box.container(border=True):
        st.markdown("**Re-run this decision**, recorded as a new session linked to this one")
        trials = int(st.number_input("Trials", min_value=1, max_value=_MAX_TRIALS, value=1, key="replay_trials",
                                     help="How many times to send the request; each trial is one turn of the "
                                          "replay session, and the simulated model varies its seed per trial."))
        if st.button("Run", type="primary", icon=":material/play_arrow:", disabled=edits is None, key="replay_run"):
            try:
                _run(rec, edits or replay.Edits(), trials, model_url)
            except tracer.FlightrecError as exc:
                _failed(exc)
    with fork_box.container(border=True):
        st.markdown("**Fork the session from this turn**, carrying the agent loop on with the edits")
        tools = st.radio("Tool calls the recording does not have", ["live", "recorded"], horizontal=True,
                         key="replay_fork_tools",
                         help="Calls that match the recording always get the recorded result, so no side effect "
                              "happens twice. Others run on the session's registered agent's own tools (live), or "
                              "end the fork at the first one (recorded: no agent code runs).")
        if st.button("Fork", icon=":material/call_split:", disabled=edits is None, key="replay_fork"):
            try:
                _fork(rec, edits or replay.Edits(), "live" if tools == "live" else "recorded", model_url)
            except tracer.FlightrecError as exc:
                _failed(exc)


def _stale(done: dict[str, Any], edits: replay.Edits | None, what: str) -> None:
    if done["edits"] != edits:
        st.info(f"The edits have changed since this {what}; press the button again to apply them.",
                icon=":material/info:")


def _scroll_here(key: str) -> None:
    """Brings the result a button has just produced into view, once: it is drawn below the
    buttons, where the user is not looking."""
    if st.session_state.get(_SCROLL) != key:
        return
    del st.session_state[_SCROLL]
    _ui.scroll_to(key)


def _run_result(rec: replay.Reconstruction, edits: replay.Edits | None) -> None:
    done = st.session_state.get(_RUN)
    if not done or done["span"] != rec.span_id:
        return
    with st.container(key="replay_run_out"):
        _run_body(rec, edits, done)
    _scroll_here("replay_run_out")


def _run_body(rec: replay.Reconstruction, edits: replay.Edits | None, done: dict[str, Any]) -> None:
    result: replay.RunResult = done["result"]
    diffs: list[replay.DecisionDiff] = done["diffs"]
    st.subheader("Re-run")
    _stale(done, edits, "run")
    n = len(result.trials)
    st.markdown(f"**{result.changed} of {n} trial{'s' * (n != 1)}** decided differently from the recording · "
                f"answered by {result.model} · edited request sha256 `{result.request_sha256[:16]}…`")
    _ui.link("session", f"Open the replay session {result.replay_session_id}", id=result.replay_session_id)
    shown = 1
    if n > 1:
        st.dataframe(pd.DataFrame({
            "trial": range(1, n + 1), "changed": [not d.same for d in diffs],
            "action": [t.action for t in result.trials],
            "tools": [", ".join(u["name"] for u in t.tool_uses) for t in result.trials],
            "text": [t.text for t in result.trials],
        }), hide_index=True, width="stretch", height=min(300, 36 + 35 * n))
        first_changed = next((k for k, d in enumerate(diffs, 1) if not d.same), 1)
        shown = st.selectbox("Compare trial", range(1, n + 1), index=first_changed - 1,
                             format_func=lambda k: f"trial {k} ({'same' if diffs[k - 1].same else 'changed'})",
                             key=f"replay_trial_{result.replay_session_id}")
    _ui.draw(f'<div class="fr-pair">{_decision(result.origin, f"<b>Recorded</b> · turn {rec.turn}")}'
             f'{_decision(result.trials[shown - 1], f"<b>Replayed</b> · trial {shown}")}</div>')
    _decision_diff(diffs[shown - 1])


def _fork_result(rec: replay.Reconstruction, edits: replay.Edits | None) -> None:
    done = st.session_state.get(_FORK)
    if not done or done["span"] != rec.span_id:
        return
    with st.container(key="replay_fork_out"):
        _fork_body(rec, edits, done)
    _scroll_here("replay_fork_out")


def _spend_table(spend: dict[str, pd.Series], turn: int) -> None:
    """The fork's cost and tokens beside the origin's over the same turns (from the fork point on)."""
    def row(label: str, s: pd.Series) -> str:
        # One row of a frame comes out as floats: counts are shown as the whole numbers they are.
        cost = _ui.usd(s.cost_usd) + (f" (+{int(s.unpriced)} unpriced)" if s.unpriced else "")
        return (f"| {label} | {int(s.decisions)} | {int(s.tool_calls)} | {_ui.tokens(s.input_tokens)} | "
                f"{_ui.tokens(s.output_tokens)} | {cost} |")

    st.markdown(f"**Cost from turn {turn} on**\n\n| | decisions | tool calls | input tokens | output tokens | cost |\n"
                "|---|--:|--:|--:|--:|--:|\n" + "\n".join(row(label, s) for label, s in spend.items()))


def _fork_body(rec: replay.Reconstruction, edits: replay.Edits | None, done: dict[str, Any]) -> None:
    result: replay.ForkResult = done["result"]
    trajectory: replay.SessionDiff = done["diff"]
    st.subheader("Fork")
    _stale(done, edits, "fork")
    guarded = result.status.startswith("guard:")
    st.markdown(f"Ended **{result.status}**" + (" (the agent's own guard stopped it, as in production)" if guarded
                                                 else "")
                + f" · answered by {result.model} · tool calls answered from the recording: "
                f"{result.recorded_tool_calls}, run live: {result.live_tool_calls}"
                + (f" (agent {result.agent})" if result.agent else ""))
    st.text(f"Why: {result.reason}")
    _ui.link("session", f"Open the fork session {result.session_id}", id=result.session_id)
    _spend_table(done["spend"], rec.turn)
    recorded, replayed = trajectory.labels
    st.dataframe(pd.DataFrame({
        "turn": [p.turn for p in trajectory.turns], "same": [p.same for p in trajectory.turns],
        "recorded": [p.a or "—" for p in trajectory.turns], "replayed": [p.b or "—" for p in trajectory.turns],
    }), hide_index=True, width="stretch", column_config={
        "recorded": st.column_config.TextColumn(f"{recorded} (origin {trajectory.a[:13]})", width="large"),
        "replayed": st.column_config.TextColumn(f"{replayed} (fork {trajectory.b[:13]})", width="large"),
    })
    if trajectory.first_divergence is None:
        st.success("The fork takes the same path as its origin.", icon=":material/check:")
        return
    st.markdown(f"**First divergence at turn {trajectory.first_divergence}**")
    if trajectory.divergence is not None:
        _decision_diff(trajectory.divergence)


def render() -> None:
    st.title("Replay")
    session_id, turn = _pick()
    if not session_id:
        st.info("No sessions yet. Record some (`make demo`, or point an agent at this store), then pick one here.")
        return
    turns = _turns(session_id)
    strip = _turn_links(session_id, turn, turns) if not turns.empty else ""
    try:
        rec = _reconstruct(session_id, turn)
    except tracer.FlightrecError as exc:
        _ui.draw(strip)
        _ui.show_error(exc)
        _ui.draw(_html.note("Pick another session or turn above, or find the session on the Sessions page: ")
                 + f"<p>{_html.link('Sessions', _ui.url('sessions', q=session_id))}</p>")
        return
    origin = _html.note(f"This session is a {rec.origin.replay_kind} of session {rec.origin.replay_session}, "
                        f"turn {rec.origin.replay_turn}.") if rec.origin.replay_session else ""
    editing = _ui.param("edit") == "1"
    # The edit tabs and the run and fork controls are a dozen kinds of widget, which cost the browser
    # more than the rest of the page on every load (benchmarks/RESULTS.md §63, §65): drawn once asked
    # for, and kept open by the URL (``?edit=1``).
    edit = "" if editing else _html.button_link(
        "Edit and re-run", _ui.url("replay", **(_ui.here() | {"edit": 1})),
        help="Edit the request, then re-run this decision or fork the session from this turn.")
    # The recorded decision and the request that made it, side by side, as one element (``_html``).
    links = [_html.link("Open this session", _ui.url("session", id=rec.session_id, turn=turn)),
             _ui.json_link("replay", "the request as JSON", "request")]
    _ui.draw(strip, origin, f"<p>{' · '.join(links)}</p>",
             f'<div class="fr-pair">{_decision(rec.decision, f"<b>Recorded decision</b> · turn {turn}")}'
             f"{_request(rec)}</div>", edit)
    _ui.json_view("The request as JSON", "request", rec.request)
    if not editing:
        return
    with st.container(key=_EDITOR_KEY):
        _editor(rec)
    _ui.scroll_once(_EDITOR_KEY)  # its widgets rerun the page


def _editor(rec: replay.Reconstruction) -> None:
    """The request's editor, with its run and fork controls and their results."""
    st.subheader("Edit the request")
    edits: replay.Edits | None = None
    try:
        edits = _edits(rec)
        edited = replay.apply_edits(rec.request, edits)
    except replay.EditError as exc:
        _ui.show_error(exc)
    else:
        if edits.is_empty():
            st.caption("No edits: a re-run sends the request as recorded.")
        else:
            _ui.raw_json("The edits, as the replay session records them", edits.model_dump(exclude_defaults=True))
            _ui.raw_json("The edited request", edited)
    _actions(rec, edits)
    _run_result(rec, edits)
    _fork_result(rec, edits)


_ui.guarded(render)
