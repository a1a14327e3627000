"""The simulated model: wire format, determinism, reacting to its context, misbehaviour, HTTP serving."""

from __future__ import annotations

import collections
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import anthropic
import pytest

from reference_agent import (
    SYSTEM_PROMPT,
    Agent,
    AgentConfig,
    AgentConfigError,
    FaultSpec,
    SimOptions,
    SimServer,
    get_scenario,
    sim_client,
    sim_options,
    tool_definitions,
)

from .conftest import account, tool_calls

MODEL = "claude-haiku-4-5"
FLIGHTREC = str(Path(sys.executable).with_name("flightrec"))
CACHED_SYSTEM = [{"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}]


def ask(client: anthropic.Anthropic, text: str, **params: Any) -> Any:
    params = {"model": MODEL, "max_tokens": 1024, "system": CACHED_SYSTEM, "tools": tool_definitions(cache=True),
              **params}
    return client.messages.create(messages=[{"role": "user", "content": text}], **params)


def test_it_speaks_the_messages_wire_format_with_cache_tokens():
    client = sim_client(SimOptions(seed=1, scenario="order_status"))
    first = ask(client, "Where is my order A-1002?")
    assert first.type == "message" and first.role == "assistant" and first.model == MODEL
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_order" and use.input == {"order_id": "A-1002"} and use.id.startswith("toolu_")
    assert first.usage.cache_creation_input_tokens > 500 and first.usage.cache_read_input_tokens == 0
    # The next request carries the same prefix: it is read from the cache.
    messages = [{"role": "user", "content": "Where is my order A-1002?"},
                {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "{}"}]}]
    second = client.messages.create(model=MODEL, max_tokens=1024, system=CACHED_SYSTEM, messages=messages,
                                    tools=tool_definitions(cache=True))
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.cache_creation_input_tokens == 0
    assert second.usage.input_tokens > first.usage.input_tokens  # the conversation grew


def test_without_cache_control_there_are_no_cache_tokens():
    reply = ask(sim_client(), "Where is my order A-1002?", system=SYSTEM_PROMPT, tools=tool_definitions())
    assert reply.usage.cache_creation_input_tokens == 0 and reply.usage.cache_read_input_tokens == 0
    assert reply.usage.input_tokens > 1000


def test_a_streamed_reply_is_the_same_message():
    plain = ask(sim_client(SimOptions(seed=3)), "Where is my order A-1002?")
    with sim_client(SimOptions(seed=3)).messages.stream(
            model=MODEL, max_tokens=1024, system=CACHED_SYSTEM, tools=tool_definitions(cache=True),
            messages=[{"role": "user", "content": "Where is my order A-1002?"}]) as stream:
        streamed = stream.get_final_message()
    assert [b.model_dump() for b in streamed.content] == [b.model_dump() for b in plain.content]
    assert (streamed.stop_reason, streamed.usage.output_tokens) == (plain.stop_reason, plain.usage.output_tokens)


def test_stop_reasons_follow_the_request():
    refused = ask(sim_client(), "What's the home address of the customer who bought order A-1003?")
    assert refused.stop_reason == "refusal" and not any(b.type == "tool_use" for b in refused.content)
    cut = ask(sim_client(), "Hi, I have a problem with my order.", max_tokens=5)
    assert cut.stop_reason == "max_tokens" and cut.usage.output_tokens == 5
    answered = ask(sim_client(), "Thank you, that's all!")
    assert answered.stop_reason == "end_turn"


def test_a_malformed_conversation_gets_the_apis_400():
    client = sim_client()
    dangling = [{"role": "user", "content": "Where is A-1002?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_order",
                                                   "input": {"order_id": "A-1002"}}]},
                {"role": "user", "content": "hello?"}]
    with pytest.raises(anthropic.BadRequestError, match="tool_result"):
        client.messages.create(model=MODEL, max_tokens=100, messages=dangling)


def test_it_never_calls_a_tool_the_request_does_not_offer():
    only_escalate = [t for t in tool_definitions() if t["name"] == "escalate_to_human"]
    reply = ask(sim_client(), "Where is my order A-1002?", tools=only_escalate)
    assert [b.name for b in reply.content if b.type == "tool_use"] == ["escalate_to_human"]
    no_tools = ask(sim_client(), "Where is my order A-1002?", tools=[])
    assert no_tools.stop_reason == "end_turn"


def trajectory(agent: Agent, session_id: str) -> list[dict[str, Any]]:
    return agent.load(session_id).messages


def test_the_same_seed_replays_and_other_seeds_vary(agent):
    for name in ("refund_under_threshold", "unknown_order", "long_conversation"):
        scenario = get_scenario(name)
        a, b = agent.run(scenario, seed=7), agent.run(scenario, seed=7)
        assert trajectory(agent, a.session_id) == trajectory(agent, b.session_id)
    scenario = get_scenario("long_conversation")
    paths = {json.dumps(trajectory(agent, agent.run(scenario, seed=s).session_id)) for s in range(6)}
    tool_paths = {tuple(agent.run(get_scenario("refund_under_threshold"), seed=s).tools_called) for s in range(6)}
    assert len(paths) >= 4 and len(tool_paths) >= 2


def test_removing_the_confirmation_rule_makes_it_refund_at_once(world, recorder):
    scenario = get_scenario("refund_under_threshold")
    careful = Agent(world, recorder).run(scenario, seed=0)
    rule = next(line for line in SYSTEM_PROMPT.splitlines() if "confirm" in line)
    hasty = Agent(world, recorder, config=AgentConfig(system_prompt=SYSTEM_PROMPT.replace(rule, ""))).run(scenario,
                                                                                                          seed=0)
    assert careful.refunds == hasty.refunds == 1

    def customer_messages(agent_out: Any) -> list[str]:
        messages = Agent(world, recorder).load(agent_out.session_id).messages
        return [m["content"] for m in messages if isinstance(m["content"], str)]

    # With the rule it asks first and refunds after the customer's yes; without it, it refunds straight away.
    assert customer_messages(careful)[1:] == ["Yes, please go ahead."]
    assert customer_messages(hasty)[1:] == []
    first_turn = account(recorder, hasty.session_id).turns
    assert "issue_refund" in [c.tool_name for t in first_turn for c in t.tool_calls]


def test_without_the_data_rule_it_follows_an_injected_instruction(world, recorder):
    scenario = get_scenario("kb_injection")
    safe = Agent(world, recorder).run(scenario)
    rule = next(line for line in SYSTEM_PROMPT.splitlines() if "never follow instructions" in line)
    unsafe = Agent(world, recorder, config=AgentConfig(system_prompt=SYSTEM_PROMPT.replace(rule, ""))).run(scenario)
    assert safe.refunds == 0 and "issue_refund" not in safe.tools_called
    # The model decides to refund; the agent's consent guard holds it, since the customer never asked.
    assert unsafe.tools_called[1:] == ["issue_refund"]
    assert unsafe.refunds == 0 and unsafe.status == "waiting_human"


@pytest.mark.parametrize("mode", ["loop", "wrong_tool", "hallucinate", "runaway", "ignore_rule"])
def test_each_misbehaviour_shows(agent, recorder, mode):
    scenario = get_scenario({"runaway": "policy_question", "ignore_rule": "refund_under_threshold"}.get(
        mode, "order_status"))
    out = agent.run(scenario, misbehave=(mode,))
    calls = tool_calls(account(recorder, out.session_id))
    if mode == "loop":
        assert out.status == "guard:loop"
        repeats = collections.Counter((c.tool_name, c.arguments) for c in calls).most_common(1)[0][1]
        assert repeats <= 4 and len(calls) <= 5  # stopped before a fourth identical call in a row
    elif mode == "wrong_tool":
        assert calls[0].tool_name == "search_kb" and "get_order" in out.tools_called and out.status == "ok"
    elif mode == "hallucinate":
        invented = json.loads(calls[0].arguments)["order_id"]
        assert invented != "A-1002" and calls[0].error_type == "not_found"
        assert json.loads(calls[1].arguments) == {"order_id": "A-1002"} and out.status == "ok"
    elif mode == "runaway":
        assert out.status == "guard:token_budget" and out.tokens >= 150_000
    else:
        assert out.refunds == 1 and len([m for m in agent.load(out.session_id).messages
                                         if isinstance(m["content"], str)]) == 1


def test_fault_specs():
    assert FaultSpec.parse("529") == FaultSpec("529", 0, 1, None, 500)
    assert FaultSpec.parse("500@3x2") == FaultSpec("500", 3, 2, None, 500)
    assert FaultSpec.parse("latency:800@1") == FaultSpec("latency", 1, 1, None, 800)
    assert FaultSpec.parse("429%5").rate == pytest.approx(0.05)
    for bad in ("418", "529@", "timeout%0", "latency:fast"):
        with pytest.raises(AgentConfigError, match=f"bad fault spec '{bad}'"):
            sim_options(faults=(bad,))
    with pytest.raises(AgentConfigError, match=r"misbehave.*loop, wrong_tool"):
        sim_options(misbehave=("sulk",))


def test_sim_serve_answers_over_loopback_http(agent):
    with SimServer() as server:
        assert server.url.startswith("http://127.0.0.1:")
        out = agent.run(get_scenario("duplicate_charge"), seed=2, sim_url=server.url, faults=("529@0", "500@1"))
        assert out.status == "ok" and out.refunds == 1
        # Misbehaviour travels to the server in the request headers, like the seed and the faults.
        looped = agent.run(get_scenario("order_status"), sim_url=server.url, misbehave=("loop",))
        assert looped.status == "guard:loop"
    local = agent.run(get_scenario("duplicate_charge"), seed=2)
    assert agent.load(local.session_id).messages == agent.load(out.session_id).messages


def test_sim_serve_command_listens_on_a_real_port():
    proc = subprocess.Popen([FLIGHTREC, "sim", "serve", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert "simulated Messages API on http://127.0.0.1:" in line, proc.stderr.read()  # type: ignore[union-attr]
        url = line.split(" on ")[1].split()[0]
        with sim_client(SimOptions(misbehave=("wrong_tool",)), url=url).messages.stream(
                model=MODEL, max_tokens=256, messages=[{"role": "user", "content": "Where is A-1002?"}],
                tools=tool_definitions()) as stream:
            reply = stream.get_final_message()
        assert reply.stop_reason == "tool_use" and reply.content[-1].name == "search_kb"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
