"""The Session page against the demo store: the decision view, the trace and the context diff."""

from __future__ import annotations

import pytest

import tracer
from dashboard import _ui
from tests.dashboard.conftest import app, no_exceptions


def _html(at) -> str:
    """Everything the page drew as HTML (the decision view is HTML, to keep the page light)."""
    return "\n".join(h.proto.body for h in at.html)


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
    assert at.selectbox(key=f"turn_{account.session.session_id}").value == 2
    for name in call.tools_available:  # every candidate tool, the chosen ones marked
        assert f">{name}</span>" in page or f">✓ {name}</span>" in page
    for name in call.tools_chosen:
        assert f'<span class="badge on">✓ {name}</span>' in page
    assert f"<small>cost</small><b>{_ui.usd(call.cost_usd)}</b>" in page
    for use in call.tool_uses:
        assert f"Called <code>{use['name']}</code>" in page
    assert f"({call.message_count} messages)" in "\n".join(m.value for m in at.markdown)
    assert page.count('<div class="msg ') == min(call.message_count, 8)  # the newest messages, one by one
    assert at.query_params["turn"] == "2"


def test_a_long_conversation_shows_its_newest_messages_and_all_on_request(store):
    account = _longest(store)
    last = max(t.index for t in account.turns if t.llm_calls)
    at = app("session", id=account.session.session_id, turn=str(last))
    total = [c for c in account.turns[-1].llm_calls if c.status == "ok"][-1].message_count
    assert total > 8
    assert _html(at).count('<div class="msg ') == 8
    assert f"message {total - 9} ·" not in _html(at) and f"message {total - 1} ·" in _html(at)
    at.toggle(key="all_messages").set_value(True).run()
    no_exceptions(at)
    assert _html(at).count('<div class="msg ') == total


def test_choosing_another_decision_updates_the_view_and_the_url(store):
    account = _longest(store)
    at = app("session", id=account.session.session_id)
    no_exceptions(at)
    last = max(t.index for t in account.turns if t.llm_calls)
    at.selectbox(key=f"turn_{account.session.session_id}").set_value(last).run()
    no_exceptions(at)
    assert at.query_params["turn"] == str(last)


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
    at.segmented_control(key="session_view").set_value("decision").run()
    assert at.query_params["view"] == "decision"


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
