"""The demo's plan: where it plants the failures that take a production's history to show."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from reference_agent import Agent, AgentConfig, get_scenario
from reference_agent._demo import DEFAULT_SESSIONS, plan
from tests.conftest import DEMO_SESSIONS

from .conftest import account, tool_calls


def test_the_first_round_plants_a_broken_key_a_long_wait_and_an_expiry():
    planted = {p.scenario.name: p for p in plan(DEMO_SESSIONS) if p.index < 28}
    assert (planted["email_receipt"].crash_after, planted["email_receipt"].idempotency_scope) == ("send_email", "turn")
    assert planted["email_unknown_recipient"].human == "away"
    assert planted["approval_timeout"].human == "expire"
    assert sum(p.idempotency_scope == "turn" for p in plan(DEFAULT_SESSIONS)) == 1


def test_the_last_sessions_run_the_build_wired_to_every_integration():
    sessions = plan(DEMO_SESSIONS)
    assert [p.index for p in sessions if p.integration_tools] == list(range(DEMO_SESSIONS - 12, DEMO_SESSIONS))


def test_a_full_demo_has_a_busy_route_whose_last_sessions_lose_a_tool():
    """Enough history for tools.diversity (10 recent sessions against at least 25 before them), and the
    collapse at the end of the route, held to its end."""
    route = [p for p in plan(DEFAULT_SESSIONS) if p.scenario.name == "lost_package"]
    assert len(route) >= 35
    assert [bool(p.withheld_tools) for p in route] == [False] * (len(route) - 10) + [True] * 10
    # The round-robin still reaches every scenario; a short demo has no busy route.
    assert {p.scenario.name for p in plan(DEFAULT_SESSIONS)} == {p.scenario.name for p in plan(DEMO_SESSIONS)}
    assert not any(p.withheld_tools for p in plan(DEMO_SESSIONS))


def test_a_build_without_get_order_hands_a_lost_parcel_over_at_once(world, recorder):
    out = Agent(world, recorder, config=AgentConfig(withheld_tools=("get_order",))).run(get_scenario("lost_package"))
    acc = account(recorder, out.session_id)
    assert out.status == "ok" and [c.tool_name for c in tool_calls(acc)] == ["escalate_to_human"]
    assert all("get_order" not in c.tools_available for t in acc.turns for c in t.llm_calls)


def test_withholding_a_tool_that_does_not_exist_names_the_tools():
    with pytest.raises(ValidationError, match="withheld_tools names no tool get_orders; the tools are get_customer"):
        AgentConfig(withheld_tools=("get_orders",))
