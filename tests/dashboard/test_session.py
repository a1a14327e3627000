"""The Session page against the demo store: the decision view, the trace and the context diff."""

from __future__ import annotations

import html
import json
import re

import pytest

import replay
import tracer
from dashboard import _ui
from tests.dashboard.conftest import app, choose, follow, html_links, link_tables, no_exceptions, switches


def _html(at) -> str:
    """Everything the page drew as HTML (the decision view is HTML, to keep the page light)."""
    return "\n".join(h.proto.body for h in at.html)


def _labels(at) -> dict[int, str]:
    """The decision picker's turns, each with its tooltip: what it decided, and what went wrong."""
    return {int(c.text): c.tip for c in switches(at)["Decision"]}


def _marks(at) -> dict[int, str | None]:
    return {int(c.text): c.mark for c in switches(at)["Decision"]}


def _shown_turn(at) -> int:
    """The decision the page shows: the picker's current choice."""
    [current] = [c for c in switches(at)["Decision"] if c.link is None]
    return int(current.text)


def _longest(store, where: str = "TRUE") -> tracer.SessionAccount:
    with tracer.Store(str(store), read_only=True) as s:
        sid = s.sql(f"SELECT session_id FROM sessions WHERE {where} ORDER BY turns DESC, session_id LIMIT 1")[0][0]
        return s.session_account(sid)


def test_a_deep_link_opens_that_decision_with_what_the_model_saw_picked_and_paid(store):
    account = _longest(store, "tool_calls > 2")
    turn = next(t for t in account.turns if t.index == 2)
    call = [c for c in turn.llm_calls if c.status == "ok"][-1]
    at = app("session", id=account.session.session_id, turn="2")
    no_exceptions(at)
    assert account.session.session_id[:13] in at.title[0].value
    page = _html(at)
    assert f"<small>turns</small><b>{account.session.turns}</b>" in page
    assert f"<small>tool calls</small><b>{account.session.tool_calls}" in page
    assert _shown_turn(at) == 2
    for name in call.tools_available:  # every candidate tool, the chosen ones marked
        assert f'<span class="badge ">{name}</span>' in page or f">{name} (chosen)</span>" in page
    for name in call.tools_chosen:
        assert f'<span class="badge on">{name} (chosen)</span>' in page
    assert f"<small>cost</small><b>{_ui.usd(call.cost_usd)}</b>" in page
    for use in call.tool_uses:
        assert f"Called <code>{use['name']}</code>" in page
    assert f"What the model saw <span class=\"muted\">({call.message_count} messages)</span>" in page
    assert page.count('<div class="msg ') == min(call.message_count, 8)  # the newest messages, one by one
    assert at.query_params["turn"] == "2"
    # The exact request, once asked for: a link, its JSON sent to the browser only then.
    assert not at.json
    at = follow(html_links(at)["Show the exact request (JSON)"])
    no_exceptions(at)
    request = replay.reconstruct(account.session.session_id, 2, db=str(store)).request
    assert json.loads(at.json[0].value)["messages"] == request["messages"]
    assert at.query_params["turn"] == "2" and "Hide the exact request (JSON)" in html_links(at)


def test_a_long_conversation_hides_its_middle_not_the_customers_first_message(store):
    account = _longest(store)
    last = max(t.index for t in account.turns if t.llm_calls)
    at = app("session", id=account.session.session_id, turn=str(last))
    total = [c for c in account.turns[-1].llm_calls if c.status == "ok"][-1].message_count
    assert total > 8
    page = _html(at)
    assert page.count('<div class="msg ') == 8
    assert "message 0 · user" in page  # what the session is about
    assert "message 1 ·" not in page and f"message {total - 8} ·" not in page
    assert f"message {total - 7} ·" in page and f"message {total - 1} ·" in page
    assert f"{total - 8} messages hidden (1–{total - 8})" in page
    at = follow(html_links(at)["show them"])
    no_exceptions(at)
    assert at.query_params["turn"] == str(last)
    assert _html(at).count('<div class="msg ') == total


def _session(store, where: str) -> tracer.SessionAccount:
    with tracer.Store(str(store), read_only=True) as s:
        sid = s.sql(f"SELECT session_id FROM sessions WHERE {where} ORDER BY session_id LIMIT 1")[0][0]
        return s.session_account(sid)


def test_the_conversation_view_shows_the_whole_session_turn_by_turn(store):
    account = _longest(store, "route IS DISTINCT FROM 'context_overflow'")  # a compacted one shows its last context
    sid = account.session.session_id
    at = follow(html_links(app("session", id=sid, view="chat"))["show them"])
    no_exceptions(at)
    assert at.query_params["view"] == "chat"
    chat = at.get("chat_message")
    first = account.turns[0]
    request = replay.reconstruct(sid, first.index, db=str(store)).request
    opening = request["messages"][0]["content"]
    bodies = [h.proto.body for h in at.html]
    assert chat[0].proto.name == "user" and any(str(opening)[:40] in b for b in bodies)
    decisions = [t for t in account.turns if any(c.status == "ok" for c in t.llm_calls)]
    assert [m.proto.name for m in chat].count("assistant") == len(decisions)  # one answer per decision
    assert "tool" in [m.proto.name for m in chat]  # tool results have their own speaker
    for t in decisions:
        assert any(f'<div class="muted">turn {t.index}</div>' in b for b in bodies)
    last = decisions[-1]
    answer = [c for c in last.llm_calls if c.status == "ok"][-1]
    if answer.output_text:
        assert any(html.escape(answer.output_text[:40]) in b for b in bodies)  # the last answer too


def test_guards_failed_tools_and_alerts_mark_their_turns(store):
    account = _session(store, "status = 'guard:loop'")
    sid = account.session.session_id
    guarded = next(t.index for t in account.turns if any(e["name"] == "guard_fired" for e in t.events))
    with tracer.Store(str(store), read_only=True) as s:
        alert_turns = {t for (turns,) in s.sql("SELECT turns FROM alerts WHERE session_id = ?", [sid]) for t in turns}
    at = app("session", id=sid)
    no_exceptions(at)
    labels = _labels(at)
    assert "[guard: loop]" in labels[guarded]
    assert _marks(at)[guarded] == "bad"  # underlined red in the picker
    for t in alert_turns:
        assert "[alert: " in labels[t] and _marks(at)[t] in ("bad", "warn")
    at = app("session", id=sid, view="trace")
    no_exceptions(at)
    spans = at.dataframe[0].value["span"]
    assert any("flightrec.turn" in v and "[guard: loop]" in v for v in spans)

    failed = _session(store, "tool_errors > 0")
    at = app("session", id=failed.session.session_id)
    no_exceptions(at)
    bad = next(t.index for t in failed.turns if any(c.status != "ok" for c in t.tool_calls))
    assert "[tool failed: " in _labels(at)[bad] and _marks(at)[bad] == "bad"


def test_a_span_of_the_trace_shows_its_details(store):
    account = _session(store, "tool_calls > 0")
    sid = account.session.session_id
    tool = account.turns[0].tool_calls[0] if account.turns[0].tool_calls else next(
        c for t in account.turns for c in t.tool_calls)
    with tracer.Store(str(store), read_only=True) as s:
        (span_id,) = s.sql("SELECT span_id FROM tool_calls WHERE session_id = ? AND tool_call_id = ?",
                           [sid, tool.tool_call_id])[0]
        (chat_id,) = s.sql("SELECT span_id FROM llm_calls WHERE session_id = ? ORDER BY start_ns LIMIT 1", [sid])[0]
    at = app("session", id=sid, view="trace", span=span_id)
    no_exceptions(at)
    details = next(h.proto.body for h in at.html if "<small>starts at</small>" in h.proto.body)
    assert f"<code>execute_tool {tool.tool_name}</code>" in details
    assert "<h4>Input</h4>" in details and html.escape(tool.arguments) in details
    assert "<h4>Output</h4>" in details and "<small>starts at</small>" in details
    assert "Attributes" in [e.label for e in at.expander]
    at = app("session", id=sid, view="trace", span=chat_id)
    no_exceptions(at)
    assert {"Input: the request sent", "Output: the response", "Attributes"} <= {e.label for e in at.expander}
    at = app("session", id=sid, view="trace", span="no-such-span")
    assert not at.exception and "has no span no-such-span" in at.warning[0].value


_EMOJI = re.compile("[\u2600-\u27bf\U0001f000-\U0001faff\u2b00-\u2bff\u2300-\u23ff]")


@pytest.mark.parametrize("view", ["decision", "chat", "trace"])
def test_status_marks_are_words_and_colours_not_emoji(store, view):
    """Emoji are empty boxes in a browser without an emoji font (Debian's Chromium)."""
    account = _session(store, "status = 'guard:loop'")
    at = app("session", id=account.session.session_id, view=view, turn="4")
    no_exceptions(at)
    drawn = _html(at) + "".join(m.value for m in at.markdown)
    assert not _EMOJI.findall(drawn)


def test_choosing_another_decision_updates_the_view_and_the_url(store):
    account = _longest(store)
    at = app("session", id=account.session.session_id)
    no_exceptions(at)
    last = max(t.index for t in account.turns if t.llm_calls)
    at = choose(at, "Decision", str(last))
    no_exceptions(at)
    assert at.query_params["turn"] == str(last) and _shown_turn(at) == last
    assert f"turn {last} ·" in _html(at)  # the decision shown is written out under the picker


def test_a_compacted_session_is_marked_in_the_decision_picker_and_the_conversation_view(store):
    account = _longest(store, "route = 'context_overflow'")
    turn = next(t.index for t in account.turns for e in t.events if e["name"] == "context_compacted")
    at = app("session", id=account.session.session_id)
    no_exceptions(at)
    label = _labels(at)[turn]
    assert "[context compacted:" in label and "messages dropped]" in label
    at = app("session", id=account.session.session_id, view="chat")
    no_exceptions(at)
    assert any(f"compacted its context at turn {turn}" in i.value for i in at.info)


def test_a_model_fallback_is_marked_in_the_decision_picker(store):
    account = _longest(store, "route = 'model_fallback'")
    turn = next(t.index for t in account.turns for e in t.events if e["name"] == "model_fallback")
    at = app("session", id=account.session.session_id)
    no_exceptions(at)
    assert "[fallback: claude-haiku-4-5]" in _labels(at)[turn]


def test_the_context_diff_shows_what_was_added_between_two_decisions(store):
    account = _longest(store)
    at = app("session", id=account.session.session_id, turn="3", view="context")
    no_exceptions(at)
    at.selectbox(key="ctx_a").set_value(1).run()
    at.selectbox(key="ctx_b").set_value(3).run()
    no_exceptions(at)
    summary = next(m.value for m in at.markdown if "messages in common at the start" in m.value)
    assert "**1** messages in common" in summary and "**4** added" in summary


def test_a_session_recorded_without_content_says_why_the_conversation_is_missing(store, tmp_path):
    from tests.replay.conftest import record

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTREC_DB", str(store))
        sid = record("order_status", content="none")
    at = app("session", id=sid, turn="1")
    no_exceptions(at)
    assert any("content mode `none`" in i.value for i in at.info)


def test_the_trace_view_draws_every_span_of_the_session(store):
    account = _longest(store)
    at = app("session", id=account.session.session_id, view="trace")
    no_exceptions(at)
    with tracer.Store(str(store), read_only=True) as s:
        spans = s.sql("SELECT count(*) FROM spans WHERE session_id = ?", [account.session.session_id])[0][0]
    assert len(at.dataframe[0].value) == spans
    at = choose(at, "View", "Decision")
    assert at.query_params["view"] == "decision" and at.query_params["turn"]  # the decision is kept


def test_redacted_parts_of_the_conversation_are_marked(store):
    from tests.replay.conftest import record

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FLIGHTREC_DB", str(store))
        sid = record("unknown_order", content="redacted")
    at = app("session", id=sid, turn="1")
    no_exceptions(at)
    assert "<mark>[REDACTED:email]</mark>" in _html(at)
    assert "@example.com" not in _html(at)


def test_an_unknown_session_or_turn_gets_a_clear_message(store):
    at = app("session", id="no-such-session")
    assert not at.exception
    assert "no session 'no-such-session'" in at.error[0].value
    account = _longest(store)
    at = app("session", id=account.session.session_id, turn="999")
    assert not at.exception
    assert "has no turn 999" in at.warning[0].value


def test_without_an_id_the_page_offers_recent_sessions(store):
    at = app("session")
    no_exceptions(at)
    assert at.selectbox[0].options


def test_a_guard_that_fired_before_the_turns_model_call_is_shown_on_its_turn(store):
    recorder = tracer.Recorder(str(store))
    try:
        with recorder.session("support") as session:
            with session.turn():
                with session.tool_call("get_order", {"order_id": "A-1"}) as call:
                    call.set_result("{}")
            with session.turn():  # stopped before it asked the model anything
                session.event("guard_fired", guard="time_limit", reason="over its 1 s limit", limit=1, value=2)
            session.set_status("guard:time_limit", "over its 1 s limit")
    finally:
        recorder.shutdown()
    at = app("session", id=session.id, turn="2")
    no_exceptions(at)
    assert _labels(at)[2] == "turn 2  [guard: time_limit]"
    assert "This turn made no LLM call." in at.info[0].value
    assert ">guard</span> guard_fired: guard=time_limit" in _html(at)


def _task_rows(at) -> list[tuple[str | None, str, str]]:
    """The task table's rows: the first cell's link (``None``: none), its text, and the agent."""
    [table] = link_tables(at)
    return [(link, row["session"], row["agent"]) for link, row in zip(table.links, table.rows, strict=True)]


def test_a_session_with_sub_agents_shows_the_tree_of_its_task_and_what_it_cost_in_all(store):
    with tracer.Store(str(store), read_only=True) as s:
        [(parent, child)] = s.sql("SELECT parent_session_id, session_id FROM sessions WHERE agent = 'researcher' "
                                  "AND origin = 'production' ORDER BY start_ns LIMIT 1")
        alone = s.sql("SELECT session_id FROM sessions WHERE parent_session_id IS NULL AND session_id NOT IN "
                      "(SELECT parent_session_id FROM sessions WHERE parent_session_id IS NOT NULL) LIMIT 1")[0][0]
    recorder = tracer.Recorder(str(store))  # a grandchild: the researcher hands a check on to a session of its own
    try:
        with recorder.session("checker", parent_session_id=child) as grandchild:
            grandchild.set_status("ok")
    finally:
        recorder.shutdown()
    with tracer.Store(str(store), read_only=True) as s:
        tree = s.session_tree(parent)
    assert [(n.session_id, n.depth) for n in tree.nodes] == [(parent, 0), (child, 1), (grandchild.id, 2)]

    at = app("session", id=parent)
    no_exceptions(at)
    assert f"<small>cost with sub-agents</small><b>{_ui.usd(tree.root.subtree_cost_usd)}</b>" in _html(at)
    assert f"<small>cost</small><b>{_ui.usd(tree.root.cost_usd)}</b>" in _html(at)
    assert "Sessions of this task" in _html(at)
    # Each row's session opens its page in this tab (a plain link: no target); the one shown opens nothing.
    assert _task_rows(at) == [(None, f"{parent[:13]} (this one)", "support"),
                              (f"/session?id={child}", child[:13], "researcher"),
                              (f"/session?id={grandchild.id}", grandchild.id[:13], "checker")]
    assert f'<td class="num">{_ui.usd(tree.root.subtree_cost_usd)}</td>' in _html(at)
    at = app("session", id=child)  # where the link leads

    # On the child: a link to its parent, and the same tree, itself marked.
    no_exceptions(at)
    label, link = next((label, link) for label, link in html_links(at).items() if "parent session" in label)
    assert link == f"/session?id={parent}" and "support" in label
    assert _task_rows(at)[1] == (None, f"{child[:13]} (this one)", "researcher")

    # A session no other started, and that started none, has no tree to show.
    at = app("session", id=alone)
    no_exceptions(at)
    assert "Sessions of this task" not in _html(at)
    assert "cost with sub-agents" not in _html(at)
