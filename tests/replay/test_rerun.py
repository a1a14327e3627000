"""Deterministic re-execution: the agent's code against the recorded responses."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest
from click.testing import CliRunner

import replay
import tracer
from reference_agent import Agent, AgentConfig, SimulatedCrash, World, default_world_path, get_scenario
from tracer._cli import main
from tracer.testing import FakeClock


def test_the_unchanged_agent_takes_the_recorded_path(refund_session):
    result = CliRunner().invoke(main, ["replay", "rerun", refund_session, "--recorded"])
    assert result.exit_code == 0, result.output
    assert "the agent took the recorded path (4 decisions checked)" in result.output


def changed_agent(max_tokens: int) -> replay.RerunAgent:
    """The reference agent's rerun, with a code change: another max_tokens."""

    def agent(ctx: replay.RerunContext) -> None:
        recorder = tracer.Recorder(os.path.join(ctx.workdir, "t.duckdb"))
        try:
            with World(os.path.join(ctx.workdir, "w.sqlite")) as world:
                Agent(world, recorder, config=AgentConfig(max_tokens=max_tokens),
                      client_factory=lambda spec, config: ctx.client).run(
                    get_scenario(ctx.recorded.origin.scenario), seed=ctx.recorded.origin.seed)
        finally:
            recorder.shutdown()

    return agent


def test_a_change_in_the_agent_is_the_first_divergence(refund_session):
    result = replay.rerun(refund_session, agent=changed_agent(512))
    assert not result.same_path
    assert result.first_divergence is not None and result.first_divergence.turn == 1
    assert "max_tokens 1024 → 512" in result.first_divergence.what


def test_a_tool_that_now_returns_something_else_is_reported_with_the_message(refund_session, monkeypatch):
    from reference_agent import _tools

    real = _tools._IMPLEMENTATIONS["get_order"]
    monkeypatch.setitem(_tools._IMPLEMENTATIONS, "get_order", lambda call: {**real(call), "note": "new field"})
    result = CliRunner().invoke(main, ["replay", "rerun", refund_session, "--recorded"])
    assert result.exit_code == 1, result.output
    assert "first divergence at turn 2: the messages differ from message 2 on" in result.output
    assert "new field" in result.output  # the differing message itself, not just two hashes


def record_with(play: Callable[[Agent], object], *, config: AgentConfig | None = None,
                clock: tracer.Clock | None = None) -> str:
    """Records whatever ``play`` does with a fresh agent; returns the (one) session's id."""
    db = os.environ["FLIGHTREC_DB"]
    recorder = tracer.Recorder(db)
    try:
        with World(default_world_path(db)) as world:
            play(Agent(world, recorder, config=config, clock=clock))
    finally:
        recorder.shutdown()
    store = tracer.Store(db, read_only=True)
    try:
        return store.list_sessions()[0].session_id
    finally:
        store.close()


def rerun_ok(sid: str) -> replay.RerunResult:
    result = replay.rerun(sid)
    assert result.same_path, result.first_divergence
    return result


def test_a_streamed_session_is_served_as_a_stream():
    sid = record_with(lambda a: a.run(get_scenario("order_status")), config=AgentConfig(stream=True))
    assert rerun_ok(sid).turns_checked >= 2


def test_a_session_approved_by_a_human_is_rerun_through_the_approval():
    def play(agent: Agent) -> None:
        out = agent.run(get_scenario("refund_over_threshold"))
        assert out.status == "waiting_human"
        agent.approve(out.session_id, note="photo checked")

    rerun_ok(record_with(play))


def test_an_approval_that_expired_is_rerun_through_the_expiry_and_rebuilds_exactly():
    def play(agent: Agent) -> None:
        out = agent.run(get_scenario("approval_timeout"))
        assert agent.expire_approval(out.session_id, force=True).tickets == 1  # type: ignore[union-attr]

    sid = record_with(play)
    rerun_ok(sid)
    with tracer.Store(os.environ["FLIGHTREC_DB"], read_only=True) as store:
        verified = store.verify_requests()
    assert verified.total >= 4 and verified.exact == verified.total, verified.failures[:3]


def test_a_rejection_with_a_note_is_rerun_with_the_same_note():
    def play(agent: Agent) -> None:
        out = agent.run(get_scenario("refund_over_threshold"))
        agent.reject(out.session_id, note="needs a photo of the damage")

    rerun_ok(record_with(play))


def test_a_crash_and_resume_is_reenacted():
    """The recording has the refund done twice (the resume replays it under its idempotency key);
    the rerun crashes at the same place, so the resumed refund is an idempotent replay again."""

    def play(agent: Agent) -> None:
        def crash(name, outcome):
            session = tracer.current_session()
            if name == "issue_refund" and session is not None:
                raise SimulatedCrash(session.id, name)

        crashing = Agent(agent.world, agent.recorder, after_tool=crash)
        with pytest.raises(SimulatedCrash) as info:
            crashing.run(get_scenario("refund_under_threshold"))
        assert agent.resume(info.value.session_id).status == "ok"

    rerun_ok(record_with(play))


def test_a_follow_up_message_is_sent_again():
    def play(agent: Agent) -> None:
        out = agent.run(get_scenario("order_status"))
        agent.say(out.session_id, "And what is your returns policy?")

    rerun_ok(record_with(play))


def test_model_faults_and_retries_do_not_count_as_a_divergence():
    rerun_ok(record_with(lambda a: a.run(get_scenario("api_overloaded"))))


def test_a_fallback_to_another_model_is_served_the_recorded_failure_and_reenacted():
    sid = record_with(lambda a: a.run(get_scenario("model_fallback")))
    assert rerun_ok(sid).turns_checked >= 3


def test_a_timeout_fallback_is_reenacted():
    config = AgentConfig(model="claude-sonnet-4-5", fallback_model="claude-haiku-4-5", max_retries=0)
    sid = record_with(lambda a: a.run(get_scenario("order_status"), faults=("timeout@1/claude-sonnet-4-5",)),
                      config=config)
    assert rerun_ok(sid).turns_checked >= 2


def test_a_compacted_context_is_compacted_again_on_the_recorded_path():
    sid = record_with(lambda a: a.run(get_scenario("context_overflow")))
    assert rerun_ok(sid).turns_checked >= 15


def test_a_wall_clock_stop_happens_at_the_same_turn():
    # Every reading of the agent's clock is 25 s after the last, when recorded and when rerun, so the
    # 60 s limit fires at the same reading however fast the machine is (the rerun's clock also adds
    # the recorded model time, milliseconds here).
    sid = record_with(lambda a: a.run(get_scenario("order_status")), config=AgentConfig(time_limit_s=60),
                      clock=FakeClock(tick=25))
    store = tracer.Store(os.environ["FLIGHTREC_DB"], read_only=True)
    assert store.get_session(sid).status == "guard:time_limit"
    store.close()
    # The same path means the same requests and the stop after the same number of them.
    result = replay.rerun(sid, clock=FakeClock(tick=25))
    assert result.same_path, result.first_divergence


def test_the_rerun_clock_adds_the_recorded_model_time():
    """Served calls return at once; the agent's clock moves by what each call took when recorded."""
    sid = record_with(lambda a: a.run(get_scenario("order_status"), faults=("latency:60",)))
    readings: list[float] = []

    def agent(ctx: replay.RerunContext) -> None:
        readings.append(ctx.clock.now())
        ctx.client.messages.create(**ctx.recorded.first_request)
        readings.append(ctx.clock.now())

    replay.rerun(sid, agent=agent, clock=FakeClock())
    assert readings[0] == 0.0
    assert readings[1] >= 0.06  # the simulated model took at least its 60 ms of latency


def test_an_agent_with_side_effects_serves_recorded_tool_results(refund_session):
    """Any agent can rerun without touching the world: ``tool_results`` has what each call returned."""
    served: list[str] = []

    def agent(ctx: replay.RerunContext) -> None:
        messages = list(ctx.recorded.first_request["messages"])
        params = {k: v for k, v in ctx.recorded.first_request.items() if k != "messages"}
        while True:
            reply = ctx.client.messages.create(messages=messages, **params)
            messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in reply.content]})
            uses = [b for b in reply.content if b.type == "tool_use"]
            if not uses:
                return
            results = []
            for use in uses:
                recorded = ctx.recorded.tool_results[use.id]
                served.append(recorded.name)
                results.append({"type": "tool_result", "tool_use_id": use.id, "content": recorded.content,
                                **({"is_error": True} if recorded.is_error else {})})
            messages.append({"role": "user", "content": results})

    result = replay.rerun(refund_session, agent=agent)
    # The reference agent asks the customer in between; this minimal loop does not, so it stops there.
    assert served and result.first_divergence is not None and result.turns_checked >= 2


def test_an_agent_that_raises_is_a_divergence(refund_session):
    def agent(ctx: replay.RerunContext) -> None:
        raise KeyError("order_id")

    result = replay.rerun(refund_session, agent=agent)
    assert result.first_divergence is not None
    assert result.first_divergence.what == "the agent raised KeyError: 'order_id'"


def test_rerun_without_recorded_is_a_clear_error(refund_session):
    result = CliRunner().invoke(main, ["replay", "rerun", refund_session])
    assert result.exit_code == 2 and "rerun needs --recorded" in result.output


def test_rerun_of_an_unknown_session_is_a_clear_error(refund_session):
    result = CliRunner().invoke(main, ["replay", "rerun", "nope-nope-nope", "--recorded"])
    assert result.exit_code == 2 and "no session 'nope-nope-nope'" in result.output


def test_stored_runs_are_public(refund_session):
    store = tracer.Store(os.environ["FLIGHTREC_DB"], read_only=True)
    try:
        runs = store.session_runs(refund_session)
    finally:
        store.close()
    assert [r.attributes["flightrec.run"] for r in runs] == ["start"]
    assert runs[0].attributes["flightrec.scenario"] == "refund_over_threshold"
