"""LLM spans from other instrumentation, mapped onto the fields flightrec derives for its own.

Four conventions are recognised (docs/otlp-mapping.md has the tables):

- the anthropic SDK's own spans (its ``open_telemetry=`` client option), scope ``com.anthropic.sdk.python``;
- OpenInference (``openinference.span.kind``, flattened ``llm.input_messages.N.message.*``);
- OpenLLMetry / traceloop (``gen_ai.prompt.N.*``, ``gen_ai.completion.N.*``, ``traceloop.*``);
- the plain OpenTelemetry GenAI conventions (``gen_ai.operation.name``, JSON ``gen_ai.input.messages``).

None of them records the exact request body that was sent, so every call mapped here carries the
reason it cannot be rebuilt. Messages are turned into Messages API shapes (text, tool_use,
tool_result blocks) so that the same readers show them; what a shape cannot hold is named in the
mapping document. Nothing here runs for flightrec's own spans.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from . import _attributes as A
from ._decision import ToolKinds, decide

Convention = Literal["anthropic-sdk", "openinference", "openllmetry", "genai"]
Role = Literal["llm", "tool", "agent"]

ANTHROPIC_SCOPE = "com.anthropic.sdk.python"
RECORDER_MARKER = "flightrec.tracer.version"
"""A resource attribute the Recorder sets: its process's anthropic calls are already flightrec ``chat`` spans."""

_OPENINFERENCE_KIND = "openinference.span.kind"
_TRACELOOP_KIND = "traceloop.span.kind"
_SESSION_KEYS = ("session.id", "traceloop.association.properties.session_id",
                 "traceloop.association.properties.conversation_id")
_GENAI_CHAT_OPS = frozenset({"chat", "text_completion", "generate_content"})
_OPENINFERENCE_ROLES: dict[str, Role] = {"LLM": "llm", "TOOL": "tool", "AGENT": "agent"}
_TRACELOOP_ROLES: dict[str, Role] = {"tool": "tool", "agent": "agent", "workflow": "agent"}
# Finish reasons of every convention and API, in the Messages API's words (decide() reads those,
# and the store keeps them so). Keys are lower case: Gemini writes its reasons in capitals.
_STOP_WORDS = {
    "tool_call": "tool_use", "tool_calls": "tool_use", "function_call": "tool_use", "tool_use": "tool_use",
    "stop": "end_turn", "end_turn": "end_turn", "complete": "end_turn", "completed": "end_turn",
    "length": "max_tokens", "max_tokens": "max_tokens", "max_output_tokens": "max_tokens",
    "content_filter": "refusal", "safety": "refusal", "recitation": "refusal", "blocklist": "refusal",
    "prohibited_content": "refusal", "spii": "refusal", "refusal": "refusal",
    "stop_sequence": "stop_sequence", "pause_turn": "pause_turn", "error": "error",
}

_REASONS: dict[Convention, str] = {
    "anthropic-sdk": "it was recorded by the anthropic SDK's own spans, which keep the messages (in content mode) "
                     "but not the tool definitions, tool_choice or every parameter sent",
    "openinference": "it was recorded with the OpenInference conventions, which keep the messages and parameters "
                     "as flattened attributes, not the exact request body sent",
    "openllmetry": "it was recorded with the OpenLLMetry conventions, which keep the prompts and tool names as "
                   "flattened attributes, not the exact request body sent",
    "genai": "it was recorded with the OpenTelemetry GenAI conventions, which keep messages as parts, not the "
             "exact request body sent",
}


@dataclass(frozen=True)
class ForeignCall:
    """One LLM call of another instrumentation, in flightrec's terms (``None``: not recorded)."""

    convention: Convention
    model: str | None
    response_model: str | None
    response_id: str | None
    stop_reason: str | None
    action: str | None
    tools_available: list[str] | None
    tools_chosen: list[str] | None
    reasoning: str | None
    total_input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    stream: bool
    ttft_ms: float | None
    error_type: str | None
    system: Any
    messages: list[dict[str, Any]] | None
    tools: list[Any] | None
    params: dict[str, Any]
    response: dict[str, Any] | None
    not_rebuildable: str


@dataclass(frozen=True)
class ForeignTool:
    name: str
    call_id: str | None
    arguments: str | None
    result: str | None


def recognise(scope: str, attrs: dict[str, Any]) -> tuple[Convention, Role] | None:
    """The convention of a span and what it stands for, or ``None`` for a span to keep raw only."""
    kind = attrs.get(_OPENINFERENCE_KIND)
    if kind is not None:
        role = _OPENINFERENCE_ROLES.get(str(kind).upper())
        return ("openinference", role) if role else None
    op = attrs.get(A.OPERATION)
    if scope == ANTHROPIC_SCOPE and op == "chat":
        return "anthropic-sdk", "llm"
    kind = attrs.get(_TRACELOOP_KIND)
    if kind is not None:
        role = _TRACELOOP_ROLES.get(str(kind).lower())
        return ("openllmetry", role) if role else None
    if "llm.request.type" in attrs or "gen_ai.prompt.0.role" in attrs or "gen_ai.completion.0.role" in attrs:
        return "openllmetry", "llm"
    if op in _GENAI_CHAT_OPS:
        return "genai", "llm"
    return None


# Attributes of other conventions that hold content. Once a span is mapped, its content lives in the
# content-addressed tables (messages as a chain, tools by hash, arguments and results in tool_calls),
# so the raw copy of the span drops them: kept whole, every call would repeat the whole history.
_CONTENT_PREFIXES = ("llm.input_messages.", "llm.output_messages.", "llm.tools.", "llm.prompts",
                     "gen_ai.prompt.", "gen_ai.completion.", "llm.request.functions.")
_CONTENT_KEYS = frozenset({"input.value", "output.value", "traceloop.entity.input", "traceloop.entity.output",
                           "anthropic.tool_result.content", "gen_ai.tool.call.arguments", "gen_ai.tool.call.result"})


def is_content(key: str) -> bool:
    """Whether a mapped span's attribute holds content that the mapping stored elsewhere."""
    return key in _CONTENT_KEYS or key.startswith(_CONTENT_PREFIXES)


def session_of(attrs: dict[str, Any]) -> str | None:
    """The session id another convention gives (flightrec's own, ``gen_ai.conversation.id``, is read first)."""
    for key in _SESSION_KEYS:
        value = attrs.get(key)
        if value is not None and value != "":
            return str(value)
    return None


def agent_name(convention: Convention, span_name: str, attrs: dict[str, Any]) -> str:
    if convention == "openinference":
        return str(attrs.get("agent.name") or span_name)
    return str(attrs.get("traceloop.entity.name") or attrs.get("traceloop.workflow.name") or span_name)


def tool_call(convention: Convention, span_name: str, attrs: dict[str, Any]) -> ForeignTool:
    if convention == "openinference":
        return ForeignTool(
            name=str(attrs.get("tool.name") or span_name),
            call_id=as_text(attrs.get("tool_call.id") or attrs.get("tool.id")),
            arguments=as_text(attrs.get("input.value")),
            result=as_text(attrs.get("output.value")))
    return ForeignTool(name=str(attrs.get("traceloop.entity.name") or span_name),
                       call_id=as_text(attrs.get(A.TOOL_CALL_ID)),
                       arguments=_traceloop_arguments(attrs.get("traceloop.entity.input")),
                       result=as_text(attrs.get("traceloop.entity.output")))


def _traceloop_arguments(value: Any) -> str | None:
    """OpenLLMetry's ``@tool`` input, ``{"args": [], "kwargs": {…}}``, as the arguments the model gave
    (the keyword arguments, when there are no positional ones), so that loop rules compare calls alike."""
    parsed = _json_value(value)
    if isinstance(parsed, dict) and set(parsed) <= {"args", "kwargs"} and not parsed.get("args"):
        kwargs = parsed.get("kwargs")
        if isinstance(kwargs, dict):
            return json.dumps(kwargs, ensure_ascii=False)
    return as_text(value)


def llm_call(convention: Convention, attrs: dict[str, Any], kinds: ToolKinds) -> ForeignCall:
    """The call a foreign LLM span records. Never raises on a well-typed span; a malformed value
    (JSON that does not parse …) leaves its field unknown."""
    if convention == "openinference":
        fields = _openinference(attrs)
    elif convention == "openllmetry":
        fields = _openllmetry(attrs)
    else:
        fields = _genai(attrs, convention)
    system, messages, tools, output, usage, finish = (fields[k] for k in (
        "system", "messages", "tools", "output", "usage", "finish"))
    params = fields["params"]
    output = _one_block_per_tool_use(output) if output is not None else None
    if messages is not None:
        messages = [{**m, "content": _one_block_per_tool_use(m["content"])} for m in messages]
    stop = normalise_finish(finish)
    response = decision = None
    if output is not None:
        if stop is None:
            stop = "tool_use" if any(b.get("type") == "tool_use" for b in output) else "end_turn"
        response = {"type": "message", "role": "assistant", "content": output, "stop_reason": stop,
                    "model": fields["response_model"] or fields["model"], "id": fields["response_id"]}
        decision = decide(response, kinds)
    elif stop is not None:
        decision = decide({"content": [], "stop_reason": stop}, kinds)
    action = decision.action if decision else None
    if decision is not None and output is None and stop == "tool_use":
        action = "tool_use"  # the finish reason says so, though the calls themselves were not recorded
    ttft = attrs.get("gen_ai.response.time_to_first_chunk")
    return ForeignCall(
        convention=convention, model=fields["model"], response_model=fields["response_model"],
        response_id=fields["response_id"], stop_reason=stop, action=action,
        tools_available=_tool_names(tools) if tools is not None else None,
        tools_chosen=list(decision.tools_chosen) if decision is not None and output is not None else None,
        reasoning=(decision.reasoning or None) if decision is not None else None,
        total_input_tokens=usage[0], output_tokens=usage[1], cache_read_tokens=usage[2], cache_write_tokens=usage[3],
        stream=bool(attrs.get(A.REQUEST_STREAM) or attrs.get("gen_ai.is_streaming") or attrs.get("llm.is_streaming")
                    or params.get("stream")),
        ttft_ms=ttft * 1000 if isinstance(ttft, (int, float)) else None,
        error_type=as_text(attrs.get(A.ERROR_TYPE)), system=system, messages=messages, tools=tools, params=params,
        response=response, not_rebuildable=_not_rebuildable(convention, messages),
    )


def normalise_finish(reason: Any) -> str | None:
    """A finish reason of any convention in the Messages API's words (``tool_call`` → ``tool_use``,
    ``stop`` → ``end_turn``, ``length`` → ``max_tokens`` …); one we do not know is kept, in lower case."""
    if reason is None or reason == "":
        return None
    word = str(reason).strip().lower().removeprefix("finish_reason_")
    return _STOP_WORDS.get(word, word)


def _not_rebuildable(convention: Convention, messages: list[dict[str, Any]] | None) -> str:
    reason = _REASONS[convention]
    if messages is None:
        reason += "; no messages were recorded either (content capture was off)"
    return reason


def _one_block_per_tool_use(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drops the second record of a tool use and tool uses with no name.

    Some instrumentation writes one ``tool_use`` block twice (OpenInference's anthropic
    instrumentation, as a content part and as a tool call), so that a decision would show a
    phantom tool named ``None``. A tool use without a name says nothing a named one does not.
    """
    def call(block: dict[str, Any]) -> str:
        return json.dumps([block.get("name"), block.get("input")], sort_keys=True, default=str)

    uses = [b for b in blocks if b.get("type") == "tool_use"]
    ids = [b.get("id") for b in uses]
    if all(ids) and all(b.get("name") for b in uses) and len(set(map(str, ids))) == len(ids):
        return blocks  # the usual case, and every message of the history is checked on every call
    uses = [b for b in uses if b.get("name")]
    with_id = {call(b) for b in uses if b.get("id")}
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for block in blocks:
        if block.get("type") != "tool_use":
            kept.append(block)
            continue
        if not block.get("name"):
            continue
        # One record per id; a record without an id is the same call as a record with one.
        key = str(block["id"]) if block.get("id") else call(block)
        if key in seen or (not block.get("id") and key in with_id):
            continue
        seen.add(key)
        kept.append(block)
    return kept


# -- the anthropic SDK's spans and the GenAI conventions ------------------------------------------


def _genai(a: dict[str, Any], convention: Convention) -> dict[str, Any]:
    inputs = _json_value(a.get("gen_ai.input.messages"))
    system_parts = _json_value(a.get("gen_ai.system_instructions"))
    system: Any = None
    messages: list[dict[str, Any]] | None = None
    if isinstance(inputs, list):
        messages = []
        for m in inputs:
            if not isinstance(m, dict):
                continue
            blocks = _parts_to_blocks(m.get("parts"))
            if m.get("role") == "system":  # some SDKs put the instructions among the messages
                system = (system or []) + blocks
            else:
                messages.append({"role": _role(m.get("role")), "content": blocks})
    if isinstance(system_parts, list):
        system = _parts_to_blocks(system_parts)
    outputs = _json_value(a.get("gen_ai.output.messages"))
    output = finish = None
    if isinstance(outputs, list) and outputs and isinstance(outputs[0], dict):
        output = _parts_to_blocks(outputs[0].get("parts"))
        finish = as_text(outputs[0].get("finish_reason"))
    reasons = a.get(A.RESPONSE_FINISH_REASONS)
    if reasons:
        finish = as_text(reasons[0]) if isinstance(reasons, (list, tuple)) else as_text(reasons)
    finish = as_text(a.get("anthropic.message.stop_reason")) or finish
    tools = _json_value(a.get("gen_ai.tool.definitions"))
    params = {key: a[name] for key, name in (
        ("max_tokens", A.REQUEST_MAX_TOKENS), ("temperature", A.REQUEST_TEMPERATURE), ("top_p", A.REQUEST_TOP_P),
        ("top_k", A.REQUEST_TOP_K), ("stop_sequences", A.REQUEST_STOP_SEQUENCES)) if name in a}
    if a.get(A.REQUEST_MODEL):
        params["model"] = a[A.REQUEST_MODEL]
    write = a.get(A.USAGE_CACHE_CREATION, a.get("gen_ai.usage.cache_write.input_tokens"))
    return {
        "model": as_text(a.get(A.REQUEST_MODEL)), "response_model": as_text(a.get(A.RESPONSE_MODEL)),
        "response_id": as_text(a.get(A.RESPONSE_ID)), "system": system, "messages": messages,
        "tools": tools if isinstance(tools, list) else None, "output": output, "finish": finish, "params": params,
        # The GenAI conventions count cached tokens in input_tokens, as the anthropic SDK's spans do.
        "usage": (_int(a.get(A.USAGE_INPUT)), _int(a.get(A.USAGE_OUTPUT)), _int(a.get(A.USAGE_CACHE_READ)),
                  _int(write)),
    }


def _parts_to_blocks(parts: Any) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for p in parts if isinstance(parts, list) else ():
        if not isinstance(p, dict):
            continue
        kind = p.get("type")
        if kind == "text":
            blocks.append({"type": "text", "text": str(p.get("content", ""))})
        elif kind == "reasoning":
            blocks.append({"type": "thinking", "thinking": str(p.get("content", ""))})
        elif kind == "tool_call":
            args = p.get("arguments")
            blocks.append({"type": "tool_use", "id": p.get("id"), "name": p.get("name"),
                           "input": _json_value(args) if isinstance(args, str) else args})
        elif kind == "tool_call_response":
            # The conventions name the value "response"; some producers write "result".
            value = p.get("response", p.get("result"))
            blocks.append({"type": "tool_result", "tool_use_id": p.get("id"), "content": _result(value)})
        else:
            blocks.append(dict(p))  # kept as the convention wrote it
    return blocks


# -- OpenInference ----------------------------------------------------------------------------------


def _openinference(a: dict[str, Any]) -> dict[str, Any]:
    params = _json_value(a.get("llm.invocation_parameters"))
    params = params if isinstance(params, dict) else {}
    model = as_text(a.get("llm.request.model_name") or a.get("llm.model_name") or params.get("model"))
    inputs = _indexed(a, "llm.input_messages.")
    system: Any = None
    messages: list[dict[str, Any]] | None = None
    if inputs:
        messages = []
        for m in inputs:
            role = m.get("message.role")
            if role == "system":
                system = (system or []) + _oi_blocks(m)
            elif m.get("message.tool_call_id") is not None or role in ("tool", "function"):
                # The anthropic instrumentation writes a tool result as a user message with its call id.
                messages.append({"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": m.get("message.tool_call_id"),
                    "content": as_text(m.get("message.content")) or ""}]})
            else:
                messages.append({"role": _role(role), "content": _oi_blocks(m)})
    outputs = _indexed(a, "llm.output_messages.")
    output = _oi_blocks(outputs[0]) if outputs else None
    tools = [_json_value(t.get("tool.json_schema")) for t in _indexed(a, "llm.tools.")] or None
    if tools is None and isinstance(params.get("tools"), list):
        tools = params["tools"]
    finish = as_text(a.get("llm.finish_reason"))
    # For the anthropic instrumentation, input.value and output.value hold the Messages API's request
    # and response as JSON: exact where the flattened messages are lossy (several text blocks or tool
    # results of one message overwrite each other there). Other providers' requests have other shapes.
    anthropic = "anthropic" in (str(a.get("llm.provider", "")).lower(), str(a.get("llm.system", "")).lower())
    request = _json_value(a.get("input.value")) if anthropic else None
    if isinstance(request, dict) and isinstance(request.get("messages"), list):
        messages = [m for m in request["messages"] if isinstance(m, dict)]
        system = request.get("system", system)
        tools = request["tools"] if isinstance(request.get("tools"), list) else tools
        params = {k: v for k, v in request.items() if k not in ("messages", "system", "tools")} | params
    response = _json_value(a.get("output.value")) if anthropic else None
    if isinstance(response, dict) and isinstance(response.get("content"), list):
        output = [b for b in response["content"] if isinstance(b, dict)]
        finish = as_text(response.get("stop_reason")) or finish
    prompt = _int(a.get("llm.token_count.prompt"))
    return {
        "model": model, "response_model": as_text(a.get("llm.response.model_name") or a.get("llm.model_name")),
        "response_id": as_text(response.get("id")) if isinstance(response, dict) else None,
        "system": system, "messages": messages, "tools": tools, "output": output,
        "finish": finish, "params": {**params, **({"model": model} if model else {})},
        # OpenInference counts cached tokens in the prompt count too.
        "usage": (prompt, _int(a.get("llm.token_count.completion")),
                  _int(a.get("llm.token_count.prompt_details.cache_read")),
                  _int(a.get("llm.token_count.prompt_details.cache_write"))),
    }


def _oi_blocks(m: dict[str, Any]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    contents = _indexed(m, "message.contents.")
    for c in contents:
        kind = c.get("message_content.type", "text")
        if kind == "text":
            blocks.append({"type": "text", "text": str(c.get("message_content.text", ""))})
        elif kind == "tool_use":  # the same call as in message.tool_calls; one of the two is dropped later
            blocks.append({"type": "tool_use", "id": c.get("tool_call.id"), "name": c.get("tool_call.function.name"),
                           "input": _json_value(c.get("tool_call.function.arguments"))})
        elif kind == "reasoning":
            if c.get("message_content.data") is not None:
                blocks.append({"type": "redacted_thinking", "data": c["message_content.data"]})
            else:
                blocks.append({"type": "thinking", "thinking": str(c.get("message_content.text", "")),
                               **({"signature": c["message_content.signature"]}
                                  if c.get("message_content.signature") else {})})
        else:
            blocks.append({k.removeprefix("message_content."): v for k, v in c.items()})
    if not contents and m.get("message.content") is not None:
        blocks.append({"type": "text", "text": str(m["message.content"])})
    for call in _indexed(m, "message.tool_calls."):
        blocks.append({"type": "tool_use", "id": call.get("tool_call.id"), "name": call.get("tool_call.function.name"),
                       "input": _json_value(call.get("tool_call.function.arguments"))})
    return blocks


# -- OpenLLMetry -------------------------------------------------------------------------------------


def _openllmetry(a: dict[str, Any]) -> dict[str, Any]:
    prompts = _indexed(a, "gen_ai.prompt.")
    system: Any = None
    messages: list[dict[str, Any]] | None = None
    if prompts:
        messages = []
        for m in prompts:
            role = m.get("role")
            if role == "system":
                system = (system or []) + _tl_blocks(m)
            elif role == "tool":
                messages.append({"role": "user", "content": [{
                    "type": "tool_result", "tool_use_id": m.get("tool_call_id"),
                    "content": as_text(m.get("content"))}]})
            else:
                messages.append({"role": _role(role), "content": _tl_blocks(m)})
    completions = _indexed(a, "gen_ai.completion.")
    output = _tl_blocks(completions[0]) if completions else None
    finish = as_text(completions[0].get("finish_reason")) if completions else None
    finish = finish or as_text(a.get("llm.response.stop_reason") or a.get("llm.response.finish_reason"))
    tools = _indexed(a, "llm.request.functions.") or None
    model = as_text(a.get(A.REQUEST_MODEL))
    params = {key: a[name] for key, name in (
        ("max_tokens", A.REQUEST_MAX_TOKENS), ("temperature", A.REQUEST_TEMPERATURE), ("top_p", A.REQUEST_TOP_P),
        ("top_k", "llm.top_k")) if name in a}
    if model:
        params["model"] = model
    prompt_tokens = a.get("gen_ai.usage.prompt_tokens", a.get("gen_ai.usage.input_tokens",
                                                               a.get("llm.usage.prompt_tokens")))
    completion_tokens = a.get("gen_ai.usage.completion_tokens", a.get("gen_ai.usage.output_tokens",
                                                                      a.get("llm.usage.completion_tokens")))
    return {
        "model": model, "response_model": as_text(a.get(A.RESPONSE_MODEL)),
        "response_id": as_text(a.get(A.RESPONSE_ID)),
        "system": system, "messages": messages, "tools": tools, "output": output, "finish": finish, "params": params,
        # OpenLLMetry's prompt_tokens include what the prompt cache read and wrote.
        "usage": (_int(prompt_tokens), _int(completion_tokens),
                  _int(a.get("gen_ai.usage.cache_read_input_tokens")),
                  _int(a.get("gen_ai.usage.cache_creation_input_tokens"))),
    }


def _tl_blocks(m: dict[str, Any]) -> list[dict[str, Any]]:
    content = m.get("content")
    blocks: list[dict[str, Any]]
    parsed = _json_value(content) if isinstance(content, str) and content[:1] == "[" else None
    if isinstance(parsed, list) and all(isinstance(b, dict) for b in parsed):
        blocks = list(parsed)  # the anthropic instrumentation writes a list of content blocks as JSON
    elif content is not None:
        blocks = [{"type": "text", "text": str(content)}]
    else:
        blocks = []
    for call in _indexed(m, "tool_calls."):
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": call.get("name"),
                       "input": _json_value(call.get("arguments"))})
    return blocks


# -- shared helpers ----------------------------------------------------------------------------------

_INDEX = re.compile(r"(\d+)\.(.+)")


def _indexed(attrs: dict[str, Any], prefix: str) -> list[dict[str, Any]]:
    """``prefix.N.rest`` attributes as a list of ``{rest: value}`` dicts, in index order."""
    found: dict[int, dict[str, Any]] = {}
    for key, value in attrs.items():
        if key.startswith(prefix):
            m = _INDEX.fullmatch(key, len(prefix))
            if m:
                found.setdefault(int(m.group(1)), {})[m.group(2)] = value
    return [found[i] for i in sorted(found)]


def _tool_names(tools: list[Any]) -> list[str]:
    names = []
    for t in tools:
        if not isinstance(t, dict):
            continue
        fn = t.get("function")
        name = t.get("name") or (fn.get("name") if isinstance(fn, dict) else None) or t.get("type") or "?"
        names.append(str(name))
    return names


def _role(role: Any) -> str:
    return "assistant" if role in ("assistant", "model", "ai") else "user"


def _result(value: Any) -> Any:
    return value if isinstance(value, (str, list)) else json.dumps(value, ensure_ascii=False, default=str)


def _json_value(value: Any) -> Any:
    """A structured attribute, sent as a JSON string or as an OTLP array/kvlist value, as JSON data."""
    if not isinstance(value, str):
        return _as_json_data(value)
    try:
        return json.loads(value)
    except ValueError:
        return value if value else None


def _as_json_data(value: Any) -> Any:
    # OTLP arrays arrive as tuples (as the SDK holds them) and kvlists as dicts.
    if isinstance(value, (tuple, list)):
        return [_as_json_data(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _as_json_data(v) for k, v in value.items()}
    return value


def as_text(value: Any) -> str | None:
    """A text attribute as it is; any other value as JSON."""
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None
