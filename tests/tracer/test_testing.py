"""tracer.testing: the public fake Messages API, driven through the real anthropic clients."""

from __future__ import annotations

import asyncio
from typing import Any

import anthropic
import httpx2
import pytest

import tracer
from tracer.testing import FakeModel, ScriptExhausted, error, reply, text, thinking, tool_use

ASK = {"model": "claude-haiku-4-5", "max_tokens": 256, "messages": [{"role": "user", "content": "Weather in Paris?"}]}
TOOLS = [{"name": "get_weather", "description": "The weather in a city.",
          "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]


def _dump(message: Any) -> dict[str, Any]:
    """A message as the agent sees it, less its id (one per call, by design)."""
    out = message.model_dump(exclude_none=True)
    out.pop("id")
    for block in out["content"]:
        block.pop("parsed_output", None)  # messages.stream() parses text blocks; create() does not
    return out


def _after(answered: Any, result: str) -> dict[str, Any]:
    """ASK, continued with ``answered`` and the result of the tool it called."""
    tool_id = next(b.id for b in answered.content if b.type == "tool_use")
    return {**ASK, "messages": [
        *ASK["messages"], {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in answered.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_id, "content": result}]}]}


def _rich() -> dict[str, Any]:
    return reply(thinking("The user wants weather."), "Let me look.", tool_use("get_weather", {"city": "Paris"}),
                 input_tokens=50, output_tokens=20)


def test_a_script_answers_in_order_and_keeps_every_request():
    fake = FakeModel([reply("first"), reply("second")])
    client = fake.client()
    first = client.messages.create(**ASK)
    second = client.messages.create(**{**ASK, "messages": [{"role": "user", "content": "And Rome?"}]})
    assert [first.content[0].text, second.content[0].text] == ["first", "second"]
    assert fake.calls == 2 and fake.requests[1]["messages"][0]["content"] == "And Rome?"
    assert fake.requests[0]["model"] == first.model == "claude-haiku-4-5"  # the model asked for
    assert first.id != second.id
    fake.check_done()


def test_a_string_answer_is_a_text_reply_that_ends_the_turn():
    message = FakeModel(["Sunny."]).client().messages.create(**ASK)
    assert [(b.type, b.text) for b in message.content] == [("text", "Sunny.")]
    assert message.stop_reason == "end_turn"


def test_tool_use_ids_are_filled_and_the_same_for_the_same_request():
    script = [reply(tool_use("get_weather", {"city": "Paris"}), tool_use("get_weather", {"city": "Rome"}))]
    a = FakeModel(script).client().messages.create(**ASK, tools=TOOLS)
    b = FakeModel(script).client().messages.create(**ASK, tools=TOOLS)
    other = FakeModel(script).client().messages.create(**{**ASK, "messages": [{"role": "user", "content": "Rome?"}]})
    ids = [block.id for block in a.content]
    assert all(i.startswith("toolu_") for i in ids) and len(set(ids)) == 2
    assert [block.id for block in b.content] == ids
    assert not {block.id for block in other.content} & set(ids)
    assert a.stop_reason == "tool_use"
    given = FakeModel([reply(tool_use("get_weather", id="toolu_mine"))]).client().messages.create(**ASK)
    assert given.content[0].id == "toolu_mine"


def test_usage_is_estimated_from_the_text_unless_given():
    fake = FakeModel(["Sunny.", "Sunny.", reply("Sunny.", input_tokens=1200, output_tokens=7,
                                                cache_read_input_tokens=1000, cache_creation_input_tokens=30)])
    client = fake.client()
    short = client.messages.create(**ASK).usage
    long = client.messages.create(**{**ASK, "system": "You are a weather bot. " * 40}).usage
    given = client.messages.create(**ASK).usage
    assert 0 < short.input_tokens < long.input_tokens and short.output_tokens >= 1
    assert long.input_tokens > len("You are a weather bot. " * 40) // 5  # about 4 characters a token
    assert (given.input_tokens, given.output_tokens, given.cache_read_input_tokens,
            given.cache_creation_input_tokens) == (1200, 7, 1000, 30)


def test_an_overloaded_answer_is_retried_by_the_sdk_then_the_next_answer_comes():
    fake = FakeModel([error(529), "Sunny."])
    message = fake.client(max_retries=2).messages.create(**ASK)
    assert message.content[0].text == "Sunny." and fake.calls == 2
    assert fake.requests[0] == fake.requests[1]  # the same request, sent again
    fake.check_done()


def test_an_error_is_the_apis_error_when_not_retried():
    fake = FakeModel([error(429, "slow down")])
    with pytest.raises(anthropic.RateLimitError) as caught:
        fake.client(max_retries=0).messages.create(**ASK)
    assert caught.value.status_code == 429
    assert caught.value.body == {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}


def test_a_script_that_runs_out_answers_400_and_check_done_says_so():
    fake = FakeModel(["only one"])
    client = fake.client()
    client.messages.create(**ASK)
    with pytest.raises(anthropic.BadRequestError, match="script has 1 answers and this is call 2"):
        client.messages.create(**ASK)
    assert fake.calls == 2  # a 400 is not retried
    with pytest.raises(ScriptExhausted, match="script has 1 answers and the agent made 2 model calls"):
        fake.check_done()


def test_check_done_also_catches_answers_never_asked_for():
    fake = FakeModel(["one", "two"])
    fake.client().messages.create(**ASK)
    with pytest.raises(ScriptExhausted, match="2 answers and the agent made 1"):
        fake.check_done()


@pytest.mark.parametrize("chunked", [True, False], ids=["event-by-event", "pre-read"])
def test_streaming_gives_the_same_message_as_create(chunked):
    client = FakeModel([_rich(), _rich(), _rich()], chunked=chunked).client()
    created = client.messages.create(**ASK, tools=TOOLS)
    with client.messages.stream(**ASK, tools=TOOLS) as stream:
        streamed = stream.get_final_message()
    events = list(client.messages.create(**ASK, tools=TOOLS, stream=True))
    assert _dump(streamed) == _dump(created)
    assert created.content[2].input == {"city": "Paris"} and created.content[0].thinking == "The user wants weather."
    assert events[0].type == "message_start" and events[-1].type == "message_stop"
    deltas = [e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta"]
    assert "".join(deltas) == "Let me look."


def test_the_async_client_creates_and_streams():
    fake = FakeModel([_rich(), _rich()])

    async def main() -> tuple[Any, Any]:
        client = fake.async_client()
        created = await client.messages.create(**ASK, tools=TOOLS)
        async with client.messages.stream(**ASK, tools=TOOLS) as stream:
            streamed = await stream.get_final_message()
        return created, streamed

    created, streamed = asyncio.run(main())
    assert _dump(streamed) == _dump(created) and created.content[2].name == "get_weather"
    fake.check_done()


def _weather_policy(body: dict[str, Any]) -> Any:
    last = body["messages"][-1]["content"]
    if isinstance(last, str):
        return reply("Let me look.", tool_use("get_weather", {"city": last.split()[-1].rstrip("?")}))
    return f"It is {last[0]['content']}."


def test_a_policy_gives_the_same_answer_to_the_same_request():
    fake = FakeModel(policy=_weather_policy)
    client = fake.client()
    first, again = client.messages.create(**ASK, tools=TOOLS), client.messages.create(**ASK, tools=TOOLS)
    assert _dump(first) == _dump(again) and first.content[1].input == {"city": "Paris"}
    follow_up = client.messages.create(**_after(first, "sunny"), tools=TOOLS)
    assert follow_up.content[0].text == "It is sunny." and follow_up.stop_reason == "end_turn"
    fake.check_done()  # a policy has no script to finish


def test_a_policy_that_raises_is_an_unretried_500_and_check_done_reraises_it():
    def broken(body: dict[str, Any]) -> Any:
        return body["no such key"]

    fake = FakeModel(policy=broken)
    with pytest.raises(anthropic.InternalServerError, match="policy raised KeyError"):
        fake.client(max_retries=2).messages.create(**ASK)
    assert fake.calls == 1
    with pytest.raises(KeyError, match="no such key"):
        fake.check_done()


def test_serve_answers_over_loopback_http():
    fake = FakeModel([_rich(), _rich(), "Bye."])
    with fake.serve() as url:
        assert url.startswith("http://127.0.0.1:")
        client = anthropic.Anthropic(base_url=url, api_key="fake", max_retries=0)
        created = client.messages.create(**ASK, tools=TOOLS)
        with client.messages.stream(**ASK, tools=TOOLS) as stream:
            streamed = stream.get_final_message()
        assert _dump(streamed) == _dump(created) and created.content[2].input == {"city": "Paris"}
        assert client.messages.create(**ASK).content[0].text == "Bye."
        missing = httpx2.get(f"{url}/v1/models")
    assert missing.status_code == 404
    assert "serves POST /v1/messages only, not GET /v1/models" in missing.json()["error"]["message"]
    fake.check_done()


def test_a_wrong_path_gets_404_that_says_what_the_fake_serves():
    fake = FakeModel(["unused"])
    with pytest.raises(anthropic.NotFoundError, match=r"serves POST /v1/messages only, not GET /v1/models"):
        fake.client().models.list()
    assert fake.calls == 0


def test_a_script_and_a_policy_together_are_refused():
    with pytest.raises(ValueError, match="a script or a policy, not both"):
        FakeModel(["hi"], policy=_weather_policy)


def test_a_recorded_session_stores_the_exact_request():
    fake = FakeModel([reply("Let me look.", tool_use("get_weather", {"city": "Paris"})), reply(text("Sunny."))])
    rec = tracer.Recorder()
    client = rec.instrument(fake.client())
    with rec.session(agent="weather") as session:
        first = client.messages.create(**ASK, tools=TOOLS, system="Be brief.")
        client.messages.create(**_after(first, "sunny"), tools=TOOLS, system="Be brief.")
    rec.shutdown()
    with tracer.Store(rec.db_path, read_only=True) as store:
        hashes = [r[0] for r in store._query("SELECT request_sha256 FROM llm_calls ORDER BY start_ns")]
        account = store.session_account(session.id)
        verified = store.verify_requests()
    assert hashes == [tracer.sha256_hex(tracer.canonical_json(body)) for body in fake.requests]
    assert verified.exact == verified.total == 2
    assert account.turns[0].llm_calls[0].tools_chosen == ["get_weather"]
    fake.check_done()
