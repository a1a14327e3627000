"""A Messages API call's content in the OpenTelemetry GenAI conventions' format.

Other backends (Arize Phoenix, Langfuse, Datadog …) read a chat span's conversation from
``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions`` and
``gen_ai.tool.definitions``: JSON strings of messages made of typed parts (``text``, ``tool_call``,
``tool_call_response``, ``reasoning``), as the conventions' JSON schemas define them. flightrec's
own store keeps the exact bodies instead; these attributes are for the rest of the world.

Blocks with no part of their own (images, documents, server tools' blocks …) keep their block as a
generic part typed ``anthropic_<type>``, without base64 data, so that nothing large travels twice.
"""

from __future__ import annotations

from typing import Any

from . import _attributes as A
from ._canonical import canonical_json

# The Messages API's stop reasons in the conventions' finish reasons; others pass through as they are.
_FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_call", "max_tokens": "length",
                   "model_context_window_exceeded": "length", "refusal": "content_filter"}
_BINARY_SOURCES = ("image", "document")


def _tool_result(content: Any) -> Any:
    if isinstance(content, list):
        return [_without_data(b) for b in content]
    return content


def _without_data(block: Any) -> Any:
    if isinstance(block, dict) and block.get("type") in _BINARY_SOURCES:
        source = block.get("source")
        kept = {k: v for k, v in source.items() if k != "data"} if isinstance(source, dict) else None
        return {"type": block["type"], **({"source": kept} if kept else {})}
    return block


def _part(block: Any) -> dict[str, Any]:
    if not isinstance(block, dict):
        return {"type": "text", "content": str(block)}
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "content": block.get("text", "")}
    if kind in ("thinking", "redacted_thinking"):
        return {"type": "reasoning", "content": block.get("thinking", "")}
    if kind in ("tool_use", "server_tool_use", "mcp_tool_use"):
        return {"type": "tool_call", "id": block.get("id"), "name": block.get("name"), "arguments": block.get("input")}
    if kind == "tool_result" or (isinstance(kind, str) and kind.endswith("_tool_result")):
        part = {"type": "tool_call_response", "id": block.get("tool_use_id"),
                "response": _tool_result(block.get("content"))}
        if block.get("is_error"):
            part["is_error"] = True
        return part
    generic = _without_data(block)
    return {**generic, "type": f"anthropic_{kind}"}


def parts(content: Any) -> list[dict[str, Any]]:
    """The parts of a message's ``content``: a string, or a list of content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, list):
        return [_part(b) for b in content]
    return [_part(content)]


def request_attributes(body: dict[str, Any]) -> dict[str, str]:
    """``gen_ai.input.messages``, ``gen_ai.system_instructions`` and ``gen_ai.tool.definitions`` of a request."""
    attrs = {A.INPUT_MESSAGES: canonical_json([
        {"role": str(m.get("role", "user")), "parts": parts(m.get("content"))}
        for m in body.get("messages") or () if isinstance(m, dict)])}
    if body.get("system") is not None:
        attrs[A.SYSTEM_INSTRUCTIONS] = canonical_json(parts(body["system"]))
    tools = body.get("tools")
    if tools:
        attrs[A.TOOL_DEFINITIONS] = canonical_json([_tool_definition(t) for t in tools if isinstance(t, dict)])
    return attrs


def _tool_definition(tool: dict[str, Any]) -> dict[str, Any]:
    if "input_schema" in tool:  # a client tool: the conventions' function tool
        definition = {"type": "function", "name": tool.get("name"), "description": tool.get("description", ""),
                      "parameters": tool["input_schema"]}
    else:  # a server tool (web_search_20250305 …): its own type, and the rest as the API has it
        definition = {k: v for k, v in tool.items() if k != "cache_control"}
        definition.setdefault("description", "")
    return definition


def finish_reason(stop_reason: str | None) -> str:
    """A Messages API stop reason as the conventions' finish reason (``tool_use`` is ``tool_call``)."""
    if not stop_reason:
        return "error"
    return _FINISH_REASONS.get(stop_reason, stop_reason)


def output_attributes(message: dict[str, Any]) -> dict[str, str]:
    """``gen_ai.output.messages`` of a response."""
    return {A.OUTPUT_MESSAGES: canonical_json([{
        "role": str(message.get("role", "assistant")), "parts": parts(message.get("content")),
        "finish_reason": finish_reason(message.get("stop_reason"))}])}
