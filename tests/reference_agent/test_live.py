"""The agent against the real Anthropic API. Skipped unless FLIGHTREC_LIVE_TESTS=1 and ANTHROPIC_API_KEY are set."""

from __future__ import annotations

import os

import pytest

from reference_agent import Agent, AgentConfig, get_scenario

from .conftest import account

# Read at import: the suite's autouse fixture removes the key from every test's environment.
_KEY = os.environ.get("ANTHROPIC_API_KEY")
_MODEL = os.environ.get("FLIGHTREC_LIVE_MODEL", "claude-haiku-4-5")

pytestmark = pytest.mark.skipif(os.environ.get("FLIGHTREC_LIVE_TESTS") != "1" or not _KEY,
                                reason="live API tests run only with FLIGHTREC_LIVE_TESTS=1 and ANTHROPIC_API_KEY")


def test_a_real_model_runs_a_scenario_through_the_same_loop(world, recorder, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", _KEY or "")
    agent = Agent(world, recorder, config=AgentConfig(model=_MODEL, max_tool_calls=8, token_budget=40_000))
    out = agent.run(get_scenario("order_status"), real=True)
    assert out.status in ("ok", "guard:max_tool_calls", "guard:token_budget")
    acc = account(recorder, out.session_id)
    assert acc.session.llm_calls >= 1 and acc.turns[0].llm_calls[-1].model == _MODEL
