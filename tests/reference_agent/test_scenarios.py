"""Every bundled scenario, end to end: the real anthropic client, the in-process simulator, the tracer."""

from __future__ import annotations

import pytest

import tracer
from reference_agent import SCENARIOS, Agent, World, check_outcome

SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Each scenario under three seeds, recorded into one store; returns outcomes, accounts and the rebuild check."""
    path = tmp_path_factory.mktemp("scenarios")
    recorder = tracer.Recorder(path / "trace.duckdb")
    with World(path / "world.sqlite") as world:
        agent = Agent(world, recorder)
        outcomes = {(s.name, seed): agent.run(s, seed=seed) for s in SCENARIOS for seed in SEEDS}
    recorder.shutdown()
    with tracer.Store(path / "trace.duckdb") as store:
        accounts = {key: store.session_account(out.session_id) for key, out in outcomes.items()}
        verified = store.verify_requests()
    return outcomes, accounts, verified


def test_the_bundled_scenarios_cover_what_the_platform_measures():
    names = {s.name for s in SCENARIOS}
    assert len(SCENARIOS) >= 12
    assert {"billing_question", "refund_under_threshold", "refund_over_threshold", "unknown_order",
            "ambiguous_request", "policy_question", "kb_injection", "tool_outage", "long_conversation"} <= names
    long = next(s for s in SCENARIOS if s.name == "long_conversation")
    assert len(long.messages) >= 6


@pytest.mark.parametrize("name", [s.name for s in SCENARIOS])
def test_every_scenario_ends_as_expected_and_the_trace_agrees(runs, name):
    outcomes, accounts, _ = runs
    scenario = next(s for s in SCENARIOS if s.name == name)
    for seed in SEEDS:
        out = outcomes[(name, seed)]
        problems = check_outcome(scenario, status=out.status, tools_called=out.tools_called, refunds=out.refunds,
                                 tickets=out.tickets, reply=out.reply)
        assert problems == [], f"seed {seed}: {problems}"
        recorded = accounts[(name, seed)].session
        assert (recorded.status, recorded.turns, recorded.tool_calls) == (out.status, out.turns, out.tool_calls)
        assert recorded.agent == "support" and recorded.cost_usd and recorded.cost_usd > 0


def test_a_long_conversation_is_one_session_of_many_turns(runs):
    _, accounts, _ = runs
    for seed in SEEDS:
        acc = accounts[("long_conversation", seed)]
        assert acc.session.turns >= 10
        assert [t.index for t in acc.turns] == list(range(1, acc.session.turns + 1))
        # Later turns see the whole conversation so far, and the cached prefix is read, not rewritten.
        last = acc.turns[-1].llm_calls[-1]
        assert last.message_count >= 13 and last.cache_read_tokens and last.cache_read_tokens > 0


def test_every_recorded_call_rebuilds_to_its_hash(runs):
    _, _, verified = runs
    assert verified.total > 200 and verified.exact == verified.total, verified.failures[:3]
