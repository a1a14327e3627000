"""The Replay page against the demo store: the README's walkthrough, clicked through."""

from __future__ import annotations

import json
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

import replay
import tracer
from tests.dashboard.conftest import app, drawn, follow, html_links, no_exceptions, switches
from tests.replay.conftest import RULE_2


@pytest.fixture(scope="module")
def asks_to_confirm(demo_store) -> tuple[str, int]:
    """A refund_over_threshold session recorded with rule 2, and the turn where the agent asks the
    customer to confirm the refund instead of issuing it."""
    with tracer.Store(str(demo_store), read_only=True) as store:
        for summary in store.list_sessions(limit=1000):
            runs = store.session_runs(summary.session_id)
            if not runs or runs[0].attributes.get("flightrec.scenario") != "refund_over_threshold":
                continue
            # The agent words its question one of two ways (a seeded choice), and which session the
            # demo's concurrent workers start first varies: pick one that asks in the words checked below.
            finals = store.sql("SELECT min(turn_index) FROM llm_calls WHERE session_id = ? AND action = 'final' "
                               "AND response_body LIKE '%Shall I go ahead?%'", [summary.session_id])
            turn = finals[0][0]
            if turn is not None and RULE_2 in str(replay.reconstruct(summary.session_id, turn, db=store).request):
                return summary.session_id, turn
    pytest.fail("the demo store has no refund_over_threshold session that asks for confirmation")


def _links(at: AppTest) -> dict[str, str]:
    """Each link's label -> the session id it opens (page links, and links in the page's HTML)."""
    drawn = {label: parse_qs(urlsplit(link).query).get("id", [""])[0] for label, link in html_links(at).items()}
    return drawn | {link.proto.label: parse_qs(link.proto.query_string).get("id", [""])[0]
                    for link in at.get("page_link")}


def _open_tab(at: AppTest, label: str) -> None:
    """Opens one of the edit tabs, as a click on it does: only the open tab is drawn."""
    at.session_state["replay_edit_tab"] = label
    at.run()


def _drop_the_approval_rule(at: AppTest) -> None:
    prompt = next(t for t in at.text_area if t.label == "System prompt")
    assert RULE_2 in prompt.value
    prompt.set_value(prompt.value.replace(RULE_2 + "\n", "")).run()


def test_a_deep_link_shows_the_recorded_decision_and_its_rebuilt_request(store, asks_to_confirm):
    session_id, turn = asks_to_confirm
    at = app("replay", id=session_id, turn=str(turn))
    no_exceptions(at)
    shown = drawn(at)
    assert "Recorded decision · turn" in shown and "final · stop reason" in shown
    assert "Shall I go ahead?" in shown
    assert "matches the hash recorded with the call" in shown
    turns = switches(at)["Turn"]  # every decision a click away, the one shown marked
    assert [c.text for c in turns if c.link is None] == [str(turn)]
    assert all(parse_qs(urlsplit(c.link).query)["id"] == [session_id] for c in turns if c.link)
    assert _links(at)["Open this session"] == session_id
    # The editor and the run and fork controls wait for a click: a dozen kinds of widget the browser draws.
    assert not at.text_area and not [b for b in at.button if b.key in ("replay_run", "replay_fork")]
    # The request as JSON, once asked for: a link, sent to the browser only then.
    assert not at.json
    at = follow(html_links(at)["Show the request as JSON"])
    no_exceptions(at)
    assert json.loads(at.json[0].value) == replay.reconstruct(session_id, turn, db=str(store)).request
    assert "Hide the request as JSON" in html_links(at)
    at = follow(html_links(at)["Edit and re-run"])
    no_exceptions(at)
    assert at.query_params["edit"] == "1"  # kept in the URL: a reload or a link opens it again
    assert [t.label for t in at.text_area] == ["System prompt"]
    assert not at.button(key="replay_run").disabled and not at.button(key="replay_fork").disabled
    assert "Edit and re-run" not in html_links(at)


def test_without_the_approval_rule_the_rerun_refunds_at_once(store, asks_to_confirm):
    session_id, turn = asks_to_confirm
    at = app("replay", id=session_id, turn=str(turn), edit="1")
    _drop_the_approval_rule(at)
    at.button(key="replay_run").click().run()
    no_exceptions(at)
    assert "The decision changed" in at.warning[0].value
    assert "**1 of 1 trial** decided differently" in "\n".join(m.value for m in at.markdown)
    assert "Replayed · trial 1" in drawn(at) and "calls issue_refund with" in drawn(at)
    assert any("st-key-replay_run_out" in h.proto.body and "scrollIntoView" in h.proto.body for h in at.html)

    replay_id = next(sid for label, sid in _links(at).items() if label.startswith("Open the replay session"))
    with tracer.Store(str(store), read_only=True) as s:
        rerun = replay.reconstruct(replay_id, 1, db=s)
    assert rerun.origin.replay_session == session_id and rerun.origin.replay_kind == "run"
    assert [use["name"] for use in rerun.decision.tool_uses] == ["issue_refund"]
    assert RULE_2 not in str(rerun.request["system"])
    with tracer.Store(str(store), read_only=True) as s:
        (entry,) = [e for e in s.audit_entries() if e.via == "dashboard"]
    assert (entry.action, entry.target, entry.detail["new_session"]) == ("replay", session_id, replay_id)
    assert entry.detail["edited"] == ["system"]


def test_trials_are_counted(store, asks_to_confirm):
    session_id, turn = asks_to_confirm
    at = app("replay", id=session_id, turn=str(turn), edit="1")
    _drop_the_approval_rule(at)
    at.number_input(key="replay_trials").set_value(3)
    at.button(key="replay_run").click().run()
    no_exceptions(at)
    assert "of 3 trials** decided differently" in "\n".join(m.value for m in at.markdown)
    assert len(at.dataframe[-1].value) == 3  # one row per trial


def test_a_fork_without_the_rule_diverges_at_the_edited_turn(store, asks_to_confirm):
    session_id, turn = asks_to_confirm
    at = app("replay", id=session_id, turn=str(turn), edit="1")
    _drop_the_approval_rule(at)
    at.button(key="replay_fork").click().run()
    no_exceptions(at)
    markdown = [m.value for m in at.markdown]
    assert f"**First divergence at turn {turn}**" in markdown
    trajectory = at.dataframe[-1].value
    assert trajectory.loc[trajectory["turn"] == turn, "replayed"].iloc[0].startswith("tool_use issue_refund")
    # The two sides are named for what they are, in the table and in the diff of the divergence.
    assert {"recorded", "replayed"} <= set(trajectory.columns) and not {"A", "B", "origin", "fork"} & set(
        trajectory.columns)
    assert any(c.value.startswith("--- recorded\n+++ replayed") for c in at.code)
    # The fork's cost and tokens beside the origin's over the same turns.
    spend = next(m for m in markdown if m.startswith(f"**Cost from turn {turn} on**"))
    assert "| recorded (origin) |" in spend and "| replayed (fork) |" in spend
    # The page scrolls to the result the button produced, once.
    assert any("st-key-replay_fork_out" in h.proto.body and "scrollIntoView" in h.proto.body for h in at.html)
    at.run()
    assert not any("scrollIntoView" in h.proto.body for h in at.html)
    fork_id = next(sid for label, sid in _links(at).items() if label.startswith("Open the fork session"))
    with tracer.Store(str(store), read_only=True) as s:
        assert replay.reconstruct(fork_id, turn, db=s).origin.replay_kind == "fork"
        (entry,) = [e for e in s.audit_entries() if e.via == "dashboard"]
    assert (entry.action, entry.target, entry.detail["new_session"]) == ("fork", session_id, fork_id)


def test_a_fork_of_a_looping_session_stops_at_the_agents_loop_guard(store):
    with tracer.Store(str(store), read_only=True) as s:
        session_id, reason = s.sql("SELECT session_id, status_reason FROM sessions WHERE status = 'guard:loop' "
                                   "ORDER BY session_id LIMIT 1")[0]
    at = app("replay", id=session_id, turn="1", edit="1")
    at.button(key="replay_fork").click().run()
    no_exceptions(at)
    ended = next(m.value for m in at.markdown if m.value.startswith("Ended "))
    assert ended.startswith("Ended **guard:loop** (the agent's own guard stopped it, as in production)")
    assert f"Why: {reason}" in [t.value for t in at.text]


def test_an_unknown_session_is_a_clear_error(store):
    at = app("replay", id="no-such-session", turn="1")
    assert not at.exception
    assert "no session 'no-such-session'" in at.error[0].value
    assert not [b for b in at.button if b.key == "replay_run"] and "Edit and re-run" not in html_links(at)


def test_a_turn_past_the_end_is_a_clear_error(store, asks_to_confirm):
    session_id, _ = asks_to_confirm
    at = app("replay", id=session_id, turn="99")
    assert not at.exception
    assert f"session {session_id} has no decision at turn 99; it has turns 1.." in at.error[0].value


def test_only_the_open_edit_tab_is_drawn_and_edits_in_closed_tabs_are_kept(store, asks_to_confirm):
    session_id, turn = asks_to_confirm
    at = app("replay", id=session_id, turn=str(turn), edit="1")
    no_exceptions(at)
    # The first tab's editor only: no tool-result editor, no table of messages or tools.
    assert [t.label for t in at.text_area] == ["System prompt"]
    assert not at.dataframe
    _drop_the_approval_rule(at)
    _open_tab(at, "Tool results")
    no_exceptions(at)
    assert not [t for t in at.text_area if t.label == "System prompt"]
    (result,) = at.text_area  # one editor, for the result picked: the newest first
    picked = next(s for s in at.selectbox if s.key.startswith("replay_result_pick_")).value
    assert picked in result.label
    result.set_value(result.value + " (edited)").run()
    assert f"Edited: {result.label}" in [c.value for c in at.caption]
    _open_tab(at, "Tools")
    no_exceptions(at)
    # The edits made in tabs now closed are still the page's edits.
    at.session_state["raw_json_The edits, as the replay session records them"] = True
    at.run()
    edits = at.json[-1].value
    assert '"system"' in edits and f'"{picked}"' in edits


def test_an_edit_that_does_not_parse_says_so_and_cannot_run(store, asks_to_confirm):
    session_id, turn = asks_to_confirm
    at = app("replay", id=session_id, turn=str(turn), edit="1")
    _open_tab(at, "Tools")
    tool = next(t for t in at.text_area if t.label.startswith("Offer another tool"))
    tool.set_value("{not json").run()
    assert not at.exception
    assert "the tool definition is not valid JSON" in at.error[0].value
    assert at.button(key="replay_run").disabled


def test_a_custom_agents_session_asks_for_a_model_and_uses_the_one_named(tmp_path, monkeypatch):
    """A session of an agent that is not registered: the page says how to name a model, then uses it."""
    from tests.dashboard.conftest import DB_ENV, MODE_ENV
    from tests.replay import invoice_agent

    db = tmp_path / "clerk.duckdb"
    recorder = tracer.Recorder(str(db))
    try:
        session_id = invoice_agent.record(recorder)
    finally:
        recorder.shutdown()
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = app("replay", id=session_id, turn="2", edit="1")
    at.button(key="replay_run").click().run()
    assert not at.exception
    assert at.error[0].value.startswith("no model to ask: the session was recorded by agent 'invoice-clerk'")
    assert "put the endpoint in **Model URL** above" in at.info[0].value
    with invoice_agent.MODEL.serve() as url:
        at.text_input(key="replay_model_url").set_value(url).run()
        at.button(key="replay_run").click().run()
    no_exceptions(at)
    assert f"**0 of 1 trial** decided differently from the recording · answered by {url}" in "\n".join(
        m.value for m in at.markdown)
