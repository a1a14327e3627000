"""The LLM judge, through the real ``anthropic`` client: the simulated judge end to end, the request
a real model gets, odd answers and unreachable models."""

from __future__ import annotations

import os
from typing import Any

import anthropic
import httpx2
import pytest

from evals._errors import ScorerError
from evals._judge import UNCHECKABLE, default_judge_client, judge, sim_judge_client
from evals._trajectory import DecisionStep, ToolStep, Trajectory
from tracer.testing import FakeModel, error, reply

# Read at import: the suite's autouse fixture removes the key from every test's environment.
_KEY = os.environ.get("ANTHROPIC_API_KEY")
_LIVE_MODEL = os.environ.get("FLIGHTREC_LIVE_MODEL", "claude-haiku-4-5")


@pytest.fixture(autouse=True)
def _no_judge_model(monkeypatch):
    monkeypatch.delenv("FLIGHTREC_JUDGE_MODEL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def refund_session() -> Trajectory:
    """The agent looks the order up, hits an error, retries, then refunds: the final answer says little of it."""
    tools = [ToolStep(
        start_ns=15, turn=1, name="get_order", arguments={"order_id": "A-1001"}, result="lookup timed out",
                      is_error=True),
             ToolStep(
        start_ns=25, turn=2, name="get_order", arguments={"order_id": "A-1001"},
                      result='{"status": "delivered", "damaged": true}', is_error=False),
             ToolStep(
        start_ns=35, turn=3, name="issue_refund", arguments={"order_id": "A-1001", "amount": 40},
                      result='{"refund_id": "R-77"}', is_error=False)]
    decisions = [DecisionStep(
        start_ns=10, turn=1, action="tool_use", text="Let me look that up.", tools_chosen=["get_order"]),
                 DecisionStep(
        start_ns=20, turn=2, action="tool_use", text=None, tools_chosen=["get_order"]),
                 DecisionStep(
        start_ns=30, turn=3, action="tool_use", text=None, tools_chosen=["issue_refund"]),
                 DecisionStep(
        start_ns=40, turn=4, action="final", text="Done: you will see $40 back within 5 days.", tools_chosen=[])]
    return Trajectory(session_id="s-judge", status="ok", status_reason=None,
                      user_messages=["My order A-1001 arrived broken, I want my money back."],
                      final_answer=decisions[-1].text, decisions=decisions, tool_calls=tools, guards=[], events=[],
                      turns=4, input_tokens=3000, output_tokens=400, cost_usd=0.004, latency_ms=5200.0)


def client_for(fake: FakeModel) -> anthropic.Anthropic:
    return fake.client(api_key="test-key", base_url="http://judge.test", max_retries=0)


def judge_answer(*content: dict[str, Any], stop: str = "tool_use") -> dict[str, Any]:
    return reply(*content, stop_reason=stop, model="claude-sonnet-4-5", input_tokens=900, output_tokens=120)


def verdict_use(criteria: list[dict[str, Any]]) -> dict[str, Any]:
    return {"type": "tool_use", "id": "toolu_1", "name": "record_verdict", "input": {"criteria": criteria}}


# -- the simulated judge -------------------------------------------------------------------------


def test_the_simulated_judge_reads_the_whole_trajectory():
    v = judge(refund_session(), [
        'Calls "issue_refund" for "A-1001"',            # only in the tool calls, not in the final answer
        'Retries after "lookup timed out"',             # a tool error
        'Mentions "store credit"',                      # nowhere
        'Never says "guarantee" or "lawyer"',           # negated, absent
        'Does not promise a "refund"',                  # negated, present ("refund" in issue_refund)
        "Is empathetic and clear",                      # nothing quoted
    ], client=sim_judge_client())
    assert [c.met for c in v.criteria] == [True, True, False, True, False, True]
    assert v.share_met == pytest.approx(4 / 6)
    assert (v.model, v.simulated) == ("claude-haiku-4-5", True)
    first, _, absent, negated, present, vague = v.criteria
    assert first.reason.startswith('simulated judge: "issue_refund" and "A-1001" all appear in the transcript; '
                                   '"issue_refund" in: TOOL issue_refund({"order_id": "A-1001", "amount": 40})')
    assert absent.reason == 'simulated judge: "store credit" does not appear in the transcript'
    assert negated.reason == ('simulated judge: negated criterion, and none of "guarantee", "lawyer" appears in the '
                              'transcript')
    assert present.reason.startswith('simulated judge: negated criterion, but "refund" appears in the transcript: '
                                     'TOOL issue_refund(')
    assert vague.reason == UNCHECKABLE == "nothing checkable for the simulated judge; use a real judge model"
    assert [c.index for c in v.criteria] == [1, 2, 3, 4, 5, 6]


def test_the_simulated_judge_matches_case_insensitively_and_takes_curly_quotes():
    v = judge(refund_session(), ["Says \u201cDONE\u201d", "doesn\u2019t say \u201cmoney back guarantee\u201d"],
              client=sim_judge_client())
    assert [c.met for c in v.criteria] == [True, True]


def test_the_simulated_judge_speaks_the_messages_api():
    client = sim_judge_client()
    msg = client.messages.create(
        model="claude-sonnet-4-5", max_tokens=200,
        tools=[{"name": "record_verdict", "input_schema": {"type": "object"}}],
        tool_choice={"type": "tool", "name": "record_verdict"},
        messages=[{"role": "user", "content": '<rubric>\n1. Says "hello"\n</rubric>\n\n<transcript>\nAGENT: hello'
                                              '\n</transcript>'}])
    assert (msg.type, msg.role, msg.model, msg.stop_reason) == ("message", "assistant", "claude-sonnet-4-5",
                                                                "tool_use")
    assert msg.id.startswith("msg_") and msg.usage.input_tokens > 0 and msg.usage.output_tokens > 0
    assert msg.content[0].type == "tool_use" and msg.content[0].input["criteria"][0]["met"] is True
    with pytest.raises(anthropic.BadRequestError, match="only answers requests that force the record_verdict tool"):
        client.messages.create(model="m", max_tokens=10, messages=[{"role": "user", "content": "hi"}])


def test_an_empty_rubric_is_refused():
    with pytest.raises(ScorerError, match="at least one criterion"):
        judge(refund_session(), [], client=sim_judge_client())


# -- a real model's request and answers ----------------------------------------------------------


def test_the_request_forces_the_verdict_tool_at_temperature_zero_with_the_whole_transcript(monkeypatch):
    monkeypatch.setenv("FLIGHTREC_JUDGE_MODEL", "claude-sonnet-4-5")
    fake = FakeModel([judge_answer(verdict_use([{"index": 1, "met": True, "reason": "It refunds at turn 3."},
                                                {"index": 2, "met": False, "reason": "No apology."}]))])
    t = refund_session()
    v = judge(t, ["Refunds the damaged order", "Apologises"], client=client_for(fake))
    body = fake.requests[0]
    assert body["model"] == "claude-sonnet-4-5" and body["temperature"] == 0
    assert body["tool_choice"] == {"type": "tool", "name": "record_verdict"}
    assert body["tools"][0]["input_schema"]["properties"]["criteria"]["items"]["required"] == ["index", "met",
                                                                                               "reason"]
    assert "judge" in body["system"]
    prompt = body["messages"][0]["content"]
    assert "1. Refunds the damaged order\n2. Apologises" in prompt
    assert t.transcript() in prompt
    assert (v.simulated, v.model, v.share_met) == (False, "claude-sonnet-4-5", 0.5)
    assert [(c.met, c.reason) for c in v.criteria] == [(True, "It refunds at turn 3."), (False, "No apology.")]


def test_an_answer_without_a_verdict_fails_every_criterion_rather_than_the_run():
    text = client_for(FakeModel([judge_answer({"type": "text", "text": "I cannot judge this."}, stop="end_turn")]))
    v = judge(refund_session(), ["Refunds", "Apologises"], client=text)
    assert v.share_met == 0.0
    assert {c.reason for c in v.criteria} == {"the judge returned no verdict (stop_reason end_turn); re-run, or try "
                                              "another judge model"}


def test_criteria_the_judge_skipped_or_garbled_count_as_unmet():
    partial = client_for(FakeModel([judge_answer(verdict_use([
        {"index": 2, "met": True, "reason": "Sorry at turn 4."},
        {"index": 9, "met": True, "reason": "out of range"},
        {"index": 1, "met": "yes", "reason": "not a bool"}]))]))
    v = judge(refund_session(), ["Refunds", "Apologises"], client=partial)
    assert [c.met for c in v.criteria] == [False, True]
    assert v.criteria[0].reason.startswith("the judge returned no verdict on this criterion")


@pytest.mark.parametrize("answer, expected", [
    (error(500, "boom"), "answered HTTP 500: boom. Retry later"),
    (error(401, "invalid x-api-key"), "rejected the API key (HTTP 401): invalid x-api-key. Check ANTHROPIC_API_KEY"),
    (error(404, "model: claude-nope"), "does not exist (HTTP 404): model: claude-nope. Check the judge's model name"),
], ids=["500", "401", "404"])
def test_a_judge_that_answers_with_an_error_raises_scorer_error(answer, expected):
    with pytest.raises(ScorerError) as e:
        judge(refund_session(), ["Refunds"], model="claude-nope", client=client_for(FakeModel([answer])))
    assert expected in str(e.value)
    assert "the judge model claude-nope at http://judge.test" in str(e.value)


def test_an_unreachable_judge_raises_scorer_error():
    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("connection refused", request=request)

    unreachable = anthropic.Anthropic(api_key="test-key", base_url="http://judge.test", max_retries=0,
                                      http_client=httpx2.Client(transport=httpx2.MockTransport(refuse)))
    with pytest.raises(ScorerError, match="cannot reach the judge model claude-haiku-4-5 at http://judge.test.*"
                                          "unset FLIGHTREC_JUDGE_MODEL to use the simulated judge"):
        judge(refund_session(), ["Refunds"], client=unreachable)


# -- which judge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key, model, real", [
    (None, None, False), ("sk-test", None, False), (None, "claude-sonnet-4-5", False),
    ("sk-test", "claude-sonnet-4-5", True),
])
def test_the_real_api_needs_both_a_key_and_a_judge_model(monkeypatch, key, model, real):
    for name, value in (("ANTHROPIC_API_KEY", key), ("FLIGHTREC_JUDGE_MODEL", model)):
        if value:
            monkeypatch.setenv(name, value)
    client = default_judge_client()
    assert ("api.anthropic.com" in str(client.base_url)) is real
    if not real:  # the simulated judge answers offline
        assert judge(refund_session(), ['Says "Done"'], client=client).simulated


@pytest.mark.skipif(os.environ.get("FLIGHTREC_LIVE_TESTS") != "1" or not _KEY,
                    reason="live API tests run only with FLIGHTREC_LIVE_TESTS=1 and ANTHROPIC_API_KEY")
def test_a_real_judge_model_returns_a_verdict(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", _KEY or "")
    monkeypatch.setenv("FLIGHTREC_JUDGE_MODEL", _LIVE_MODEL)
    v = judge(refund_session(), ["The agent refunded the order", "The agent sent the customer a poem"],
              client=default_judge_client())
    assert not v.simulated and v.model.startswith(_LIVE_MODEL)
    assert [c.met for c in v.criteria] == [True, False]
