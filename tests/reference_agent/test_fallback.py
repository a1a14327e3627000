"""Model fallback: a model that stays overloaded or times out past the retries is replaced by the
fallback model, on record, and each model's calls are priced at its own price."""

from __future__ import annotations

import json

import pytest

import tracer
from reference_agent import Agent, AgentConfig, World, check_outcome, get_scenario
from reference_agent._sim import FaultSpec
from tests.reference_agent.conftest import account, events

SONNET, HAIKU = "claude-sonnet-4-5", "claude-haiku-4-5"


def _run(tmp_path, name: str, *, seed: int = 0, config: AgentConfig | None = None, faults=None, tag: str = ""):
    recorder = tracer.Recorder(tmp_path / f"{name}-{seed}{tag}.duckdb")
    try:
        with World(tmp_path / f"{name}-{seed}{tag}.world.sqlite") as world:
            out = Agent(world, recorder, config=config).run(get_scenario(name), seed=seed, faults=faults)
        acc = account(recorder, out.session_id)
        with tracer.Store(recorder.db_path) as store:
            verified = store.verify_requests(out.session_id)
        return out, acc, verified
    finally:
        recorder.shutdown()


@pytest.fixture(scope="module")
def fell_back(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("fallback"), "model_fallback")


def test_a_fault_can_target_one_model():
    spec = FaultSpec.parse("529@1x9/claude-sonnet-4-5")
    assert (spec.kind, spec.call, spec.times, spec.model) == ("529", 1, 9, SONNET)
    assert spec.hits(1, 4, 0.0, SONNET) and not spec.hits(1, 0, 0.0, HAIKU)
    assert FaultSpec.parse("529%100/claude-haiku-4-5").hits(7, 0, 0.5, HAIKU)
    assert FaultSpec.parse("529").hits(0, 0, 0.0, HAIKU)  # no model: every model


def test_the_scenario_falls_back_and_the_customer_gets_an_answer(fell_back):
    out, acc, _ = fell_back
    assert check_outcome(get_scenario("model_fallback"), status=out.status, tools_called=out.tools_called,
                         refunds=out.refunds, tickets=out.tickets, reply=out.reply) == []
    (fallback,) = events(acc, "model_fallback")
    assert fallback == {"from_model": SONNET, "to_model": HAIKU, "reason": "overloaded",
                        "detail": f"{SONNET} answered HTTP 529 (overloaded_error) after 4 retries"}


def test_the_calls_show_which_model_answered_each_priced_at_its_own_price(fell_back):
    _, acc, _ = fell_back
    turn = next(t for t in acc.turns if any(e["name"] == "model_fallback" for e in t.events))
    failed = [c for c in turn.llm_calls if c.status != "ok"]
    assert len(failed) == 5 and {c.model for c in failed} == {SONNET} and {c.http_status for c in failed} == {529}
    calls = [c for t in acc.turns for c in t.llm_calls if c.status == "ok"]
    before = [c for c in calls if c.turn_index < turn.index]
    after = [c for c in calls if c.turn_index >= turn.index]
    assert before and {c.model for c in before} == {SONNET}
    assert after and {c.model for c in after} == {HAIKU}  # the session stays on the fallback
    prices = tracer.PriceTable.load()
    for c in calls:
        usage = tracer.Usage(input_tokens=c.input_tokens or 0, output_tokens=c.output_tokens or 0,
                             cache_read_tokens=c.cache_read_tokens or 0,
                             cache_write_5m_tokens=c.cache_write_tokens or 0)
        assert c.cost_usd == pytest.approx(prices.cost(c.model, usage))
    assert acc.session.cost_usd == pytest.approx(sum(c.cost_usd for c in calls))


def test_every_request_around_a_fallback_rebuilds_exactly(fell_back):
    _, acc, verified = fell_back
    assert verified.total == acc.session.llm_calls and verified.exact == verified.total


def test_the_same_seed_falls_back_the_same_way(tmp_path, fell_back):
    out, acc, _ = fell_back
    again, acc2, _ = _run(tmp_path, "model_fallback")
    assert (again.turns, again.tools_called, again.reply) == (out.turns, out.tools_called, out.reply)
    assert events(acc2, "model_fallback") == events(acc, "model_fallback")
    assert [(c.model, c.status, c.request_sha256) for t in acc2.turns for c in t.llm_calls] == \
        [(c.model, c.status, c.request_sha256) for t in acc.turns for c in t.llm_calls]


def test_a_timeout_past_the_retries_falls_back_too(tmp_path):
    config = AgentConfig(model=SONNET, fallback_model=HAIKU, max_retries=0)
    out, acc, verified = _run(tmp_path, "order_status", config=config, faults=("timeout@0/claude-sonnet-4-5",))
    assert out.status == "ok"
    (fallback,) = events(acc, "model_fallback")
    assert fallback["reason"] == "timeout" and fallback["to_model"] == HAIKU
    assert verified.exact == verified.total


def test_without_a_fallback_model_the_session_stops_and_says_what_to_do(tmp_path):
    out, acc, _ = _run(tmp_path, "model_fallback", config=AgentConfig(model=SONNET, fallback_model=None))
    assert out.status == "error" and not events(acc, "model_fallback")
    assert "HTTP 529 (overloaded_error) after 4 retries" in out.reason
    assert "set a fallback_model" in out.reason and "resume" in out.reason


def test_a_fallback_model_that_fails_too_stops_the_session_after_one_fallback(tmp_path):
    out, acc, _ = _run(tmp_path, "model_fallback", faults=("529@1x9",))  # every model overloaded
    assert out.status == "error" and len(events(acc, "model_fallback")) == 1
    assert out.reason.startswith(f"the model API: {HAIKU} answered HTTP 529")


def test_the_command_line_takes_a_fallback_model_and_a_fault_on_one_model():
    from click.testing import CliRunner

    from tracer._cli import main

    result = CliRunner().invoke(main, ["agent", "run", "--scenario", "order_status", "--model", SONNET,
                                       "--fallback-model", HAIKU, "--fault", f"529@0x9/{SONNET}", "--json"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sid = json.loads(result.output[result.output.index("{"):])["session_id"]
    shown = CliRunner().invoke(main, ["traces", "show", sid], catch_exceptions=False)
    assert f"model_fallback (from_model={SONNET}, to_model={HAIKU}, reason=overloaded" in " ".join(shown.output.split())
