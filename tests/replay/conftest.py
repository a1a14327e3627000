"""Fixtures for replay: sessions of the reference agent recorded into the test's temp store."""

from __future__ import annotations

import os

import pytest

import tracer
from reference_agent import Agent, AgentConfig, World, default_world_path, get_scenario

RULE_2 = ("2. Before calling issue_refund, confirm the exact amount and order with the customer and wait for "
          "their explicit yes.")
"""The reference agent's refund-confirmation rule; without it the simulated model refunds at once."""


def record(scenario: str, *, seed: int = 0, content: tracer.ContentMode = "full",
           config: AgentConfig | None = None) -> str:
    """Runs one scenario into ``$FLIGHTREC_DB`` and returns its session id (the store is closed after)."""
    db = os.environ["FLIGHTREC_DB"]
    recorder = tracer.Recorder(db, content=content)
    try:
        with World(default_world_path(db)) as world:
            outcome = Agent(world, recorder, config=config).run(get_scenario(scenario), seed=seed)
    finally:
        recorder.shutdown()
    return outcome.session_id


@pytest.fixture
def refund_session() -> str:
    """A refund_over_threshold session: turn 3 asks the customer to confirm, turn 4 refunds."""
    return record("refund_over_threshold")
