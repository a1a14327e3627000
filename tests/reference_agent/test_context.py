"""Context management: a warning at 70% of the window, a compaction at 85%, both on record, and every
compacted request rebuilt exactly."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import replay
import tracer
from reference_agent import Agent, AgentConfig, World, check_outcome, get_scenario
from reference_agent._context import SUMMARY_HEAD, compact, estimate_tokens
from reference_agent._sim import check_request
from tests.reference_agent.conftest import account, events
from tracer._cli import main


def _run(tmp_path, name: str, *, seed: int = 0, config: AgentConfig | None = None, **recorder_options):
    recorder = tracer.Recorder(tmp_path / f"{name}-{seed}.duckdb", **recorder_options)
    try:
        with World(tmp_path / f"{name}-{seed}.world.sqlite") as world:
            out = Agent(world, recorder, config=config).run(get_scenario(name), seed=seed)
        return out, account(recorder, out.session_id), recorder.db_path
    finally:
        recorder.shutdown()


@pytest.fixture(scope="module")
def overflow(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("overflow"), "context_overflow")


def test_the_scenario_warns_then_compacts_and_still_serves_the_customer(overflow):
    out, acc, _ = overflow
    assert check_outcome(get_scenario("context_overflow"), status=out.status, tools_called=out.tools_called,
                         refunds=out.refunds, tickets=out.tickets, reply=out.reply) == []
    warnings, compactions = events(acc, "context_warning"), events(acc, "context_compacted")
    assert warnings and compactions
    first = warnings[0]
    assert first["action"] == "warn" and first["threshold"] == 0.7 and first["window"] == 3000
    assert 0.7 <= first["utilisation"] < 0.85
    assert "compacts older turns at 85%" in first["reason"]
    for n, c in enumerate(compactions, 1):
        assert c["compaction"] == n and c["threshold"] == 0.85
        assert c["utilisation_before"] >= 0.85 > c["utilisation_after"]
        assert c["tokens_after"] < c["tokens_before"]
        assert c["messages_after"] < c["messages_before"]
        assert c["dropped_messages"] == c["dropped_to"] - c["dropped_from"] + 1 > 0
        assert c["dropped_tool_results"] > 0 and c["pinned_facts"] > 0 and c["summary_chars"] > 0
    # Pinned facts accumulate: the second summary carries the first one's.
    if len(compactions) > 1:
        assert compactions[1]["pinned_facts"] > compactions[0]["pinned_facts"]


def test_the_compacted_request_is_what_the_model_saw_next(overflow):
    _, acc, db = overflow
    turn = next(t for t in acc.turns if any(e["name"] == "context_compacted" for e in t.events))
    compacted = next(e["attributes"] for e in turn.events if e["name"] == "context_compacted")
    call = next(c for c in turn.llm_calls if c.status == "ok")
    assert call.message_count == compacted["messages_after"]
    request = replay.reconstruct(acc.session.session_id, turn.index, db=db).request
    earlier = replay.reconstruct(acc.session.session_id, turn.index - 1, db=db).request
    assert request["system"] == earlier["system"] and request["tools"] == earlier["tools"]  # kept as they were
    task, summary = request["messages"][0]["content"]
    assert task["text"].startswith("Hi, this is Ada")  # the customer's task, kept
    assert summary["text"].startswith(SUMMARY_HEAD) and "A-1002" in summary["text"]  # pinned facts


def test_every_request_of_a_compacted_session_rebuilds_exactly(overflow):
    _, acc, db = overflow
    with tracer.Store(db, read_only=True) as store:
        result = store.verify_requests(acc.session.session_id)
    assert result.total == acc.session.llm_calls and result.exact == result.total and not result.failures


def test_replay_verify_on_the_command_line_rebuilds_the_compacted_calls(tmp_path):
    out, _, db = _run(tmp_path, "context_overflow", seed=1)
    result = CliRunner().invoke(main, ["replay", "verify", "--db", str(db)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "calls rebuilt exactly" in result.output
    shown = CliRunner().invoke(main, ["traces", "show", out.session_id, "--db", str(db)], catch_exceptions=False)
    assert "context_compacted (" in shown.output and "pinned facts" in shown.output


def test_utilisation_is_stated_against_the_agents_own_window(overflow):
    """The agent works to 3,000 tokens, not its model's 200,000: every decision, before the first
    context event as after, is measured against the window the agent compacts by."""
    out, acc, db = overflow
    calls = [c for t in acc.turns for c in t.llm_calls if c.status == "ok"]
    assert calls and {c.context_window for c in calls} == {3000}
    first = calls[0]
    seen = first.input_tokens + (first.cache_read_tokens or 0) + (first.cache_write_tokens or 0)
    assert first.context_utilisation == pytest.approx(seen / 3000)
    warned = events(acc, "context_warning")[0]
    assert any(c.context_utilisation >= warned["threshold"] for c in calls)
    shown = CliRunner().invoke(main, ["traces", "show", out.session_id, "--db", str(db)], catch_exceptions=False)
    assert f"= {seen / 3000:.1%} of 3,000:" in shown.output and "of 200,000" not in shown.output


def test_a_session_that_declares_no_window_is_measured_against_its_models(tmp_path):
    out, acc, _ = _run(tmp_path, "order_status")
    calls = [c for t in acc.turns for c in t.llm_calls if c.status == "ok"]
    assert calls and {c.context_window for c in calls} == {tracer.PriceTable.load().context_window(calls[0].model)}


def test_the_context_diff_across_a_compaction_shows_what_was_kept_and_what_the_summary_replaced(overflow):
    _, acc, db = overflow
    sid = acc.session.session_id
    turn = next(t for t in acc.turns if any(e["name"] == "context_compacted" for e in t.events))
    compacted = next(e["attributes"] for e in turn.events if e["name"] == "context_compacted")
    d = replay.diff(f"{sid}:{turn.index - 1}", f"{sid}:{turn.index}", context=True, db=db)
    assert not d.system_changed and not d.tools_added and not d.tools_removed  # kept as they were
    # The customer's task is in common, with the summary added to it; the tail after the dropped turns is kept.
    assert d.messages_common == 1 and [e["index"] for e in d.messages_amended] == [0]
    assert d.messages_amended[0]["preview"].startswith("Hi, this is Ada")
    assert d.messages_amended[0]["added"].startswith(SUMMARY_HEAD)
    assert d.messages_kept == compacted["messages_after"] - 1 - len(d.messages_added) > 0
    # The dropped turns are replaced by the summary, not merely removed.
    assert [e["index"] for e in d.messages_replaced] == list(range(compacted["dropped_from"],
                                                                    compacted["dropped_to"] + 1))
    assert d.messages_removed == []
    shown = CliRunner().invoke(main, ["replay", "diff", f"{sid}:{turn.index - 1}", f"{sid}:{turn.index}",
                                      "--context", "--db", str(db)], catch_exceptions=False).output
    assert f"messages: 1 in common at the start (1 with blocks added in B), {d.messages_kept} kept after it" in shown
    assert "replaced in B by the blocks added (only in A):" in shown and "removed (only in A)" not in shown


def test_the_context_diff_of_turns_without_a_compaction_only_adds(overflow):
    _, acc, db = overflow
    sid = acc.session.session_id
    d = replay.diff(f"{sid}:2", f"{sid}:3", context=True, db=db)
    assert d.messages_common > 1 and d.messages_added
    assert (d.messages_amended, d.messages_kept, d.messages_replaced, d.messages_removed) == ([], 0, [], [])


def test_the_same_seed_compacts_the_same_way(tmp_path, overflow):
    out, acc, _ = overflow
    again, acc2, _ = _run(tmp_path, "context_overflow")
    assert again.tools_called == out.tools_called and again.turns == out.turns
    assert events(acc2, "context_compacted") == events(acc, "context_compacted")
    assert events(acc2, "context_warning") == events(acc, "context_warning")
    assert [c.request_sha256 for t in acc2.turns for c in t.llm_calls] == \
        [c.request_sha256 for t in acc.turns for c in t.llm_calls]


def test_events_carry_counts_not_content(tmp_path):
    _, acc, _ = _run(tmp_path, "context_overflow", content="none")
    recorded = events(acc, "context_compacted") + events(acc, "context_warning")
    assert recorded
    text = json.dumps(recorded)
    for secret in ("Ada", "ada@example.com", "A-1001", "carafe"):
        assert secret not in text


def test_a_window_too_small_for_any_compaction_is_a_warning_that_says_what_to_do(tmp_path):
    out, acc, _ = _run(tmp_path, "order_status", config=AgentConfig(context_window=1000))
    warnings = events(acc, "context_warning")
    assert warnings and warnings[0]["action"] == "cannot_compact"
    assert "raise context_window" in warnings[0]["reason"]
    assert not events(acc, "context_compacted") and out.status == "ok"


def test_a_session_under_the_window_records_no_context_event(tmp_path):
    _, acc, _ = _run(tmp_path, "long_conversation")  # 200k tokens from the price table: far from full
    assert not events(acc, "context_warning") and not events(acc, "context_compacted")


# -- the compaction rule --------------------------------------------------------------------------


def _use(i: int, name: str, **args) -> dict:
    return {"type": "tool_use", "id": f"toolu_{i}", "name": name, "input": args}


def _result(i: int, value: dict, *, error: bool = False) -> dict:
    block = {"type": "tool_result", "tool_use_id": f"toolu_{i}", "content": json.dumps(value)}
    return {**block, "is_error": True} if error else block


CONVERSATION = [
    {"role": "user", "content": "Where is order A-1002?"},
    {"role": "assistant", "content": [_use(1, "get_order", order_id="A-1002")]},
    {"role": "user", "content": [_result(1, {"order_id": "A-1002", "total_cents": 18900, "status": "shipped",
                                             "item": "headphones"})]},
    {"role": "assistant", "content": [{"type": "text", "text": "It shipped."}]},
    {"role": "user", "content": "Refund order A-1009, please."},
    {"role": "assistant", "content": [_use(2, "issue_refund", order_id="A-1009", amount_cents=2999)]},
    {"role": "user", "content": [_result(2, {"error": {"code": "needs_confirmation"}}, error=True)]},
    {"role": "assistant", "content": [{"type": "text", "text": "Shall I refund $29.99?"}]},
    {"role": "user", "content": "Yes."},
]


def test_compaction_keeps_the_task_and_the_latest_exchange_and_pins_ids_and_amounts():
    done = compact(CONVERSATION)
    assert done is not None
    assert (done.dropped_from, done.dropped_to) == (1, 6)
    assert done.dropped_customer_messages == 1 and done.dropped_tool_results == 2
    first, *tail = done.messages
    assert first["content"][0] == {"type": "text", "text": "Where is order A-1002?"}
    assert tail == CONVERSATION[7:]  # the reply the customer answers, and the answer
    assert done.pinned == (
        '- get_order({"order_id":"A-1002"}) → order_id=A-1002, total_cents=18900, status=shipped',
        "- customer: Refund order A-1009, please.",
        '- issue_refund({"amount_cents":2999,"order_id":"A-1009"}) → error needs_confirmation',
    )
    assert check_request({"model": "m", "max_tokens": 1, "messages": done.messages}) is None
    assert estimate_tokens({"messages": done.messages}) < estimate_tokens({"messages": CONVERSATION})


def test_a_second_compaction_replaces_the_summary_and_carries_its_facts():
    first = compact(CONVERSATION)
    assert first is not None
    longer = [*first.messages,
              {"role": "assistant", "content": [_use(3, "issue_refund", order_id="A-1009", amount_cents=2999)]},
              {"role": "user", "content": [_result(3, {"refund_id": "R-0001", "amount_cents": 2999})]},
              {"role": "assistant", "content": [{"type": "text", "text": "Done: R-0001."}]},
              {"role": "user", "content": "Thanks!"}]
    second = compact(longer, first.pinned)
    assert second is not None
    assert second.pinned[:3] == first.pinned
    assert '→ refund_id=R-0001, amount_cents=2999' in second.pinned[-1]
    blocks = second.messages[0]["content"]
    assert len(blocks) == 2 and blocks[0]["text"] == "Where is order A-1002?"  # one summary, not two
    assert check_request({"model": "m", "max_tokens": 1, "messages": second.messages}) is None


def test_a_conversation_with_nothing_older_than_its_exchange_is_not_compacted():
    assert compact(CONVERSATION[:3]) is None


def test_the_warning_threshold_must_come_before_the_compaction_one():
    with pytest.raises(ValueError, match="context_warn_at .0.9. is above context_compact_at"):
        AgentConfig(context_warn_at=0.9)
