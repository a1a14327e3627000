"""Deterministic re-execution: the agent's code against the recorded responses."""

from __future__ import annotations

import os

from click.testing import CliRunner

import replay
import tracer
from reference_agent import Agent, AgentConfig, World, get_scenario
from tracer._cli import main


def test_the_unchanged_agent_takes_the_recorded_path(refund_session):
    result = CliRunner().invoke(main, ["replay", "rerun", refund_session, "--recorded"])
    assert result.exit_code == 0, result.output
    assert "the agent took the recorded path (4 decisions checked)" in result.output


def changed_agent(max_tokens: int):
    """The reference agent's rerun, with a code change: another max_tokens."""

    def agent(origin, client, workdir, first):
        recorder = tracer.Recorder(os.path.join(workdir, "t.duckdb"))
        try:
            with World(os.path.join(workdir, "w.sqlite")) as world:
                Agent(world, recorder, config=AgentConfig(max_tokens=max_tokens),
                      client_factory=lambda spec, config: client).run(get_scenario(origin.scenario), seed=origin.seed)
        finally:
            recorder.shutdown()

    return agent


def test_a_change_in_the_agent_is_the_first_divergence(refund_session):
    result = replay.rerun(refund_session, agent=changed_agent(512))
    assert not result.same_path
    assert result.first_divergence is not None and result.first_divergence.turn == 1
    assert "max_tokens 1024 → 512" in result.first_divergence.what


def test_rerun_without_recorded_is_a_clear_error(refund_session):
    result = CliRunner().invoke(main, ["replay", "rerun", refund_session])
    assert result.exit_code == 2 and "rerun needs --recorded" in result.output
