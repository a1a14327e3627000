"""The research sub-agent: ``delegated_research`` hands a policy question to a child session."""

from __future__ import annotations

import json

import pytest

import tracer
from reference_agent import Agent, AgentConfig, get_scenario

SEEDS = (0, 1, 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_a_delegated_question_is_a_child_session_whose_cost_rolls_up(agent, recorder, seed):
    out = agent.run(get_scenario("delegated_research"), seed=seed)
    assert (out.status, out.tools_called) == ("ok", ["ask_researcher"])
    assert "Canada" in out.reply and "KB-004" in out.reply  # the sub-agent's answer, passed on
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        [(child, agent_name, status, route)] = store.sql(
            "SELECT session_id, agent, status, route FROM sessions WHERE parent_session_id = ?", [out.session_id])
        assert (agent_name, status, route) == ("researcher", "ok", "delegated_research")
        # The child made its own calls with its own tool set: a search, then the answer.
        research = store.session_account(child)
        calls = [c for t in research.turns for c in t.llm_calls]
        assert [c.tools_available for c in calls] == [["search_kb"], ["search_kb"]]
        assert [c.tool_name for t in research.turns for c in t.tool_calls] == ["search_kb"]
        # The parent was told the child's answer, and its tool span names the child.
        parent = store.session_account(out.session_id)
        [asked] = [c for t in parent.turns for c in t.tool_calls]
        assert asked.tool_name == "ask_researcher" and json.loads(asked.result)["research_session_id"] == child
        [(attrs,)] = store.sql("SELECT attributes FROM spans WHERE span_id = ?", [asked.span_id])
        assert json.loads(attrs)["flightrec.tool.child_session_id"] == child
        # Costs add up: the tree's total is the parent's own and the child's.
        tree = store.session_tree(out.session_id)
        assert [(n.session_id, n.depth) for n in tree.nodes] == [(out.session_id, 0), (child, 1)]
        own, sub = parent.session.cost_usd, research.session.cost_usd
        assert own and sub and tree.root.cost_usd == pytest.approx(own)
        assert tree.root.subtree_cost_usd == pytest.approx(own + sub)
        # The parent's token budget counted the child's tokens too.
        child_tokens = sum(c.input_tokens + (c.cache_read_tokens or 0) + (c.cache_write_tokens or 0)
                           + c.output_tokens for c in calls)
        assert out.tokens > child_tokens
        # Every request of both sessions rebuilds exactly.
        for sid in (out.session_id, child):
            verified = store.verify_requests(sid)
            assert verified.total >= 2 and verified.exact == verified.total, verified.failures


def test_without_the_setting_the_question_is_answered_by_the_support_agent_itself(world, recorder):
    agent = Agent(world, recorder, config=AgentConfig(research_subagent=False))
    scenario = get_scenario("delegated_research").model_copy(update={"config": {}})
    out = agent.run(scenario)
    assert "ask_researcher" not in out.tools_called and "search_kb" in out.tools_called
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        assert store.sql("SELECT count(*) FROM sessions WHERE parent_session_id IS NOT NULL") == [(0,)]


def test_the_researcher_never_runs_a_tool_it_was_not_given(world, recorder):
    """A model that names another of the support agent's tools (the demo's hallucinating model did:
    get_shipment, found by tools.hallucinated) is refused, and the call is never made."""
    from reference_agent._research import research
    from reference_agent._tools import Toolbox, ToolPolicy
    from tracer.testing import FakeClock, FakeModel, reply, tool_use

    model = FakeModel([reply(tool_use("get_shipment", {"order_id": "A-1001"})), reply("We ship to Canada.")])
    toolbox = Toolbox(world, "s1", policy=ToolPolicy(), outages={}, clock=FakeClock())
    with recorder.session("support", session_id="parent"):
        found = research("Do you ship to Canada?", recorder=recorder, client=recorder.instrument(model.client()),
                         toolbox=toolbox, model="claude-haiku-4-5", max_tokens=256, attributes={})
    assert found.answer == "We ship to Canada."
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        [call] = [c for t in store.session_account(found.session_id).turns for c in t.tool_calls]
    assert (call.tool_name, call.status, call.error_type) == ("get_shipment", "error", "invalid_arguments")
    assert json.loads(call.result)["error"]["message"] == "there is no tool named 'get_shipment'."
    assert "Use one of: search_kb." in call.result
