"""Requests reconstructed from semantic conventions.

A call that other instrumentation recorded (the anthropic SDK's own spans, OpenInference,
OpenLLMetry, the OpenTelemetry GenAI conventions) keeps no exact request body, so there is no
hash to check a rebuild against. Most of them keep the parts of one, though: the input messages,
the system instructions, the tool definitions and the request parameters, which ingest stores in
``llm_calls`` as it does for flightrec's own calls. From those parts this module builds a Messages
API request that can be shown, edited and sent again, normalising the conventions' shapes (OpenAI
function tools, unsigned reasoning, parts the API does not take) and naming, in ``notes``, every
change it had to make and everything it had to leave out. What the API needs and the recording
lacks (``model``, ``max_tokens``) is listed in ``missing`` for an edit to supply.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from tracer import CallParts, ServedStore, Store

from ._errors import IncompleteRequestError, NoContentError
from ._records import Decision, Reconstruction


@dataclass(frozen=True)
class Convention:
    """Who recorded a foreign call, and how its user turns content capture on."""

    label: str
    capture: str
    """What to do so that the instrumentation records the messages, in a few words."""


_SDK = Convention("the anthropic SDK's own spans", "create the anthropic client with "
                  "open_telemetry={'traces': {'content_mode': 'content'}}")
_OPENINFERENCE = Convention("OpenInference", "unset OPENINFERENCE_HIDE_INPUTS and OPENINFERENCE_HIDE_INPUT_MESSAGES "
                            "(TraceConfig(hide_inputs=False, hide_input_messages=False))")
_OPENLLMETRY = Convention("OpenLLMetry", "set TRACELOOP_TRACE_CONTENT=true (Traceloop.init(trace_content=True))")
_GENAI = Convention("the OpenTelemetry GenAI conventions", "turn on your instrumentation's content capture "
                    "(OpenLLMetry: TRACELOOP_TRACE_CONTENT=true; OpenTelemetry's own GenAI instrumentations: "
                    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true)")

_SDK_SCOPE = "com.anthropic.sdk.python"
_OPENLLMETRY_KEYS = ("traceloop.", "gen_ai.prompt.", "gen_ai.completion.", "llm.request.type")

# Parameters of a Messages API request besides model, max_tokens, system, messages and tools. The
# SDK's signatures are not the list: temperature, top_p and top_k ride in its extra_body.
_PARAMS = frozenset({
    "tool_choice", "temperature", "top_p", "top_k", "stop_sequences", "metadata", "thinking", "service_tier",
    "container", "context_management", "mcp_servers", "output_config", "output_format", "inference_geo", "speed",
    "cache_control"})
_QUIET = frozenset({"stream", "extra_headers", "extra_query", "extra_body", "timeout"})
"""Client-side arguments some conventions keep among the parameters: not part of the request, not worth a note."""

# Content blocks the Messages API takes as they are.
_API_BLOCKS = frozenset({
    "text", "image", "document", "search_result", "tool_use", "tool_result", "thinking", "redacted_thinking",
    "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
    "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "tool_search_tool_result",
    "container_upload", "mcp_tool_use", "mcp_tool_result"})
_RESULT_BLOCKS = frozenset({"text", "image", "document", "search_result"})
_DATA_URL = re.compile(r"data:([^;,]+)?(?:;([^,]*))?,(.*)", re.DOTALL)
_EMPTY_SCHEMA: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass
class _Notes:
    """What a reconstruction changed or left out, in the user's words, each said once."""

    lines: list[str] = field(default_factory=list)

    def add(self, line: str) -> None:
        if line not in self.lines:
            self.lines.append(line)


@dataclass(frozen=True)
class SemanticRequest:
    """A foreign call's request, reconstructed."""

    body: dict[str, Any]
    convention: Convention
    notes: list[str]
    missing: list[str]
    betas: list[str] | None


def convention_of(parts: CallParts) -> Convention:
    """The convention of the span that recorded a call, from its scope and attribute names."""
    keys = parts.attribute_keys
    if parts.scope == _SDK_SCOPE:
        return _SDK
    if "openinference.span.kind" in keys:
        return _OPENINFERENCE
    if any(k.startswith(_OPENLLMETRY_KEYS) for k in keys):
        return _OPENLLMETRY
    return _GENAI


def semantic_request(store: Store | ServedStore, decision: Decision) -> SemanticRequest:
    """The request of a call recorded by other instrumentation, reconstructed from what it kept.

    Raises:
        NoContentError: no messages were recorded (content capture was off); the message names the
            instrumentation's setting that turns it on.
    """
    where = f"turn {decision.turn} of session {decision.session_id}"
    parts = store.call_parts(decision.span_id)
    convention = convention_of(parts)
    if parts.messages is None:
        raise NoContentError(
            f"{where} cannot be replayed: no messages were recorded for it by {convention.label} (content capture "
            "was off). "
            f"To replay such calls, {convention.capture}, and record the session again.")
    if parts.content_missing:
        raise NoContentError(f"{where} cannot be replayed: content its recording refers to is missing from the "
                             f"store {store.path}. `flightrec replay verify` checks the store.")
    notes = _Notes()
    params, betas = _params(parts.params or {}, notes)
    body: dict[str, Any] = {}
    model = params.pop("model", None) or decision.model
    max_tokens = params.pop("max_tokens", None)
    if model:
        body["model"] = model
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    system = _system(parts.system, notes) if parts.system is not None else None
    if system:
        body["system"] = system
    body["messages"] = _messages(parts.messages, notes)
    if parts.tools is None:
        uses = any(b.get("type") == "tool_use" for m in body["messages"] if isinstance(m.get("content"), list)
                   for b in m["content"])
        notes.add("the tool definitions were not recorded, so the request offers no tools; add them with "
                  "--add-tool JSON" + (" (the Anthropic API refuses a history with tool_use blocks and no tools)"
                                       if uses else ""))
    else:
        body["tools"] = _tools(parts.tools, notes)
    body.update(params)
    missing = [k for k in ("model", "max_tokens") if k not in body]
    return SemanticRequest(body=body, convention=convention, notes=notes.lines, missing=missing, betas=betas)


def check_complete(rec: Reconstruction, body: dict[str, Any]) -> None:
    """Raises ``IncompleteRequestError`` when a reconstructed request, edited, still lacks what the API requires."""
    if rec.reconstructed_from is None:
        return
    flags = {"model": "--model NAME", "max_tokens": "--max-tokens N"}
    lacking = [k for k in ("model", "max_tokens") if body.get(k) in (None, "")]
    if lacking:
        raise IncompleteRequestError(
            f"turn {rec.turn} of session {rec.session_id} was recorded by other instrumentation "
            f"({rec.reconstructed_from}) without "
            f"{' or '.join(lacking)}, which the Messages API requires; pass {' and '.join(flags[k] for k in lacking)} "
            f"(Edits({', '.join(f'{k}=…' for k in lacking)}) from Python).")


# -- parameters ------------------------------------------------------------------------------------


def _params(recorded: dict[str, Any], notes: _Notes) -> tuple[dict[str, Any], list[str] | None]:
    out: dict[str, Any] = {}
    betas: list[str] | None = None
    left_out = []
    for key, value in recorded.items():
        if value is None:
            continue
        if key == "betas":  # OpenInference keeps a beta call's betas among its invocation parameters
            if isinstance(value, list) and all(isinstance(b, str) for b in value):
                betas = list(value) or None
            continue
        if key == "max_tokens_to_sample":
            key = "max_tokens"
        if key in ("model", "max_tokens") or key in _PARAMS:
            out[key] = value
        elif key not in _QUIET:
            left_out.append(key)
    if isinstance(out.get("max_tokens"), (float, str)):
        try:
            out["max_tokens"] = int(out["max_tokens"])
        except ValueError:
            del out["max_tokens"]
    if isinstance(out.get("stop_sequences"), str):
        out["stop_sequences"] = [out["stop_sequences"]]
    if left_out:
        notes.add(f"left out parameters the Messages API does not take: {', '.join(sorted(left_out))}")
    return out, betas


# -- system prompt --------------------------------------------------------------------------------


def _system(system: Any, notes: _Notes) -> str | list[dict[str, Any]] | None:
    if isinstance(system, str):
        return system or None
    blocks = []
    for b in system if isinstance(system, list) else [system]:
        if isinstance(b, str):
            blocks.append({"type": "text", "text": b})
        elif isinstance(b, dict) and b.get("type", "text") == "text" and isinstance(b.get("text"), str):
            blocks.append({**b, "type": "text"})
        elif isinstance(b, dict) and isinstance(b.get("content"), str) and b.get("type") in (None, "text"):
            blocks.append({"type": "text", "text": b["content"]})  # a GenAI part the ingest did not rewrite
        else:
            notes.add(f"left out a system instruction part of type {_kind(b)!r}: the system prompt takes text only")
    blocks = [b for b in blocks if b["text"]]
    if not blocks:
        return None
    if len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
        return blocks[0]["text"]
    return blocks


# -- messages -------------------------------------------------------------------------------------


def _messages(recorded: list[Any], notes: _Notes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, m in enumerate(recorded):
        if not isinstance(m, dict):
            notes.add(f"left out recorded message {i}: it is not a message object")
            continue
        role = m.get("role") if m.get("role") in ("user", "assistant") else "user"
        content = m.get("content")
        if isinstance(content, str):
            if content:
                out.append({"role": role, "content": content})
            else:
                notes.add(f"left out recorded message {i}: it is empty")
            continue
        blocks: list[dict[str, Any]] = []
        seen_uses: set[str] = set()
        for b in content if isinstance(content, list) else [content]:
            block = _block(b, i, notes)
            if block is None:
                continue
            if block["type"] == "tool_use" and block.get("id"):
                # OpenInference writes each tool_use block twice (as a content and as a tool call).
                if block["id"] in seen_uses:
                    continue
                seen_uses.add(block["id"])
            blocks.append(block)
        if blocks:
            out.append({"role": role, "content": blocks})
        else:
            notes.add(f"left out recorded message {i}: nothing in it can be sent to the Messages API")
    _pair_tool_ids(out, notes)
    return out


def _kind(b: Any) -> str:
    return str(b.get("type")) if isinstance(b, dict) else type(b).__name__


def _block(b: Any, i: int, notes: _Notes) -> dict[str, Any] | None:
    """One content block in Messages API shape, or ``None`` (with a note) when it cannot be one."""
    if isinstance(b, str):
        return {"type": "text", "text": b} if b else None
    if not isinstance(b, dict):
        notes.add(f"left out a content block of type {_kind(b)!r} in recorded message {i}")
        return None
    kind = b.get("type")
    if kind == "text" or (kind is None and "text" in b):
        text = b.get("text")
        kept = {k: b[k] for k in ("cache_control", "citations") if b.get(k)}
        return {"type": "text", "text": str(text), **kept} if text not in (None, "") else None
    if kind == "tool_use" or "tool_call.function.name" in b:
        return _tool_use(b, i, notes)
    if kind == "tool_result":
        return _tool_result(b, i, notes)
    if kind in ("thinking", "reasoning"):
        thought = b.get("thinking", b.get("text", b.get("content")))
        if b.get("signature") and isinstance(thought, str):
            return {"type": "thinking", "thinking": thought, "signature": b["signature"]}
        if kind == "reasoning" and b.get("data"):
            return {"type": "redacted_thinking", "data": b["data"]}
        notes.add("left out thinking recorded without its signature (the API takes only signed thinking back)")
        return None
    if kind == "redacted_thinking":
        return dict(b) if b.get("data") else None
    if kind == "image" and "source" not in b:
        url = b.get("image.image.url") or b.get("image_url") or b.get("url")
        source = _source(url) if isinstance(url, str) else None
        if source is None:
            notes.add(f"left out an image in recorded message {i}: its data was not recorded")
            return None
        return {"type": "image", "source": source}
    if kind in ("blob", "uri", "file"):
        return _media(b, i, notes)
    if kind in _API_BLOCKS:
        return dict(b)
    notes.add(f"left out a content block of type {kind!r} in recorded message {i}: the Messages API has no such "
              "block")
    return None


def _tool_use(b: dict[str, Any], i: int, notes: _Notes) -> dict[str, Any] | None:
    name = b.get("name") or b.get("tool_call.function.name")
    if not name:
        notes.add(f"left out a tool call without a name in recorded message {i}")
        return None
    args = b.get("input", b.get("arguments", b.get("tool_call.function.arguments")))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except ValueError:
            pass
    if args is None:
        args = {}
    if not isinstance(args, dict):
        notes.add(f"the arguments of tool call {name} in recorded message {i} are not a JSON object; sent as "
                  '{"value": …}')
        args = {"value": args}
    return {"type": "tool_use", "id": b.get("id") or b.get("tool_call.id"), "name": str(name), "input": args}


def _tool_result(b: dict[str, Any], i: int, notes: _Notes) -> dict[str, Any]:
    content = b.get("content", b.get("result"))
    if isinstance(content, list):
        kept = [x for x in (_block(c, i, notes) for c in content) if x is not None]
        if any(x["type"] not in _RESULT_BLOCKS for x in kept):
            content = json.dumps(content, ensure_ascii=False)
        else:
            content = kept
    elif content is not None and not isinstance(content, str):
        content = json.dumps(content, ensure_ascii=False)
    out = {"type": "tool_result", "tool_use_id": b.get("tool_use_id"), "content": content if content else ""}
    if b.get("is_error"):
        out["is_error"] = True
    return out


def _source(url: str) -> dict[str, Any] | None:
    """An image or document source for a URL: a ``data:`` URL's bytes, or the URL itself."""
    m = _DATA_URL.fullmatch(url)
    if m:
        media, encoding, data = m.groups()
        if (encoding or "").lower() != "base64" or not media or not data:
            return None
        try:
            base64.b64decode(data[:64] + "=" * (-len(data[:64]) % 4), validate=True)
        except binascii.Error:
            return None
        return {"type": "base64", "media_type": media, "data": data}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    return None


def _media(b: dict[str, Any], i: int, notes: _Notes) -> dict[str, Any] | None:
    """A GenAI ``blob`` or ``uri`` part as an image or document block."""
    mime = str(b.get("mime_type") or "")
    modality = b.get("modality")
    source: dict[str, Any] | None = None
    if b.get("type") == "blob":
        if mime and b.get("content"):
            source = {"type": "base64", "media_type": mime, "data": b["content"]}
    elif b.get("type") == "uri":
        source = _source(str(b.get("uri") or ""))
    kind = "image" if modality == "image" or mime.startswith("image/") else \
        "document" if mime == "application/pdf" or modality == "document" else None
    if source is None or kind is None:
        why = "a file id is not its content" if b.get("type") == "file" else "its data was not recorded"
        notes.add(f"left out a {b.get('type')} part ({modality or mime or 'unknown kind'}) in recorded message {i}: "
                  f"{why}")
        return None
    return {"type": kind, "source": source}


def _pair_tool_ids(messages: list[dict[str, Any]], notes: _Notes) -> None:
    """Tool calls recorded without ids get made-up ones, and the results that follow take them in order."""
    made = 0
    waiting: list[str] = []
    for m in messages:
        if not isinstance(m.get("content"), list):
            continue
        for b in m["content"]:
            if b["type"] == "tool_use":
                if not b.get("id"):
                    made += 1
                    b["id"] = f"toolu_semconv_{made:02d}"
                waiting.append(b["id"])
            elif b["type"] == "tool_result":
                if not b.get("tool_use_id") and waiting:
                    b["tool_use_id"] = waiting[0]
                    made += 1
                if b.get("tool_use_id") in waiting:
                    waiting.remove(b["tool_use_id"])
    if made:
        notes.add("tool calls and results recorded without ids were paired in order, with made-up ids")
    for i, m in enumerate(messages[:-1]):
        uses = [b["id"] for b in m["content"] if b["type"] == "tool_use"] \
            if m["role"] == "assistant" and isinstance(m.get("content"), list) else []
        after = messages[i + 1].get("content")
        answered = {b.get("tool_use_id") for b in after if b["type"] == "tool_result"} if isinstance(after, list) \
            else set()
        lost = [u for u in uses if u not in answered]
        if lost:
            notes.add(f"message {i} calls {', '.join(lost)} and message {i + 1} holds no result for it (the recording "
                      "did not keep it): the API refuses such a request; give the result with --replace-message "
                      f"{i + 1} JSON, or leave the calls out with --drop-message")


# -- tools ----------------------------------------------------------------------------------------


def _tools(recorded: list[Any], notes: _Notes) -> list[dict[str, Any]]:
    out = []
    for t in recorded:
        tool = _tool(t, notes)
        if tool is not None and all(x.get("name") != tool.get("name") for x in out):
            out.append(tool)
    return out


def _tool(t: Any, notes: _Notes) -> dict[str, Any] | None:
    if isinstance(t, str):
        try:
            t = json.loads(t)
        except ValueError:
            notes.add(f"left out a tool definition that is not JSON: {t[:40]!r}")
            return None
    if not isinstance(t, dict):
        notes.add(f"left out a tool definition of type {type(t).__name__}")
        return None
    if "input_schema" in t and t.get("name"):
        return dict(t)  # already a Messages API tool
    kind = t.get("type")
    fn = t.get("function") if isinstance(t.get("function"), dict) else t
    if "parameters" in fn or fn is not t:
        notes.add("tool definitions in OpenAI function shape were rewritten as Messages API tools")
    name = fn.get("name")
    if not name:
        notes.add("left out a tool definition without a name")
        return None
    if kind not in (None, "function", "custom") and "parameters" not in fn:
        return dict(t)  # a server tool (web_search_…, bash_…): its type says what it is
    schema = fn.get("parameters", fn.get("input_schema"))
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError:
            schema = None
    if not isinstance(schema, dict) or not schema:
        notes.add(f"tool {name} was recorded without an input schema; it is offered with an empty one")
        schema = dict(_EMPTY_SCHEMA)
    elif "type" not in schema:
        schema = {"type": "object", **schema}
    tool: dict[str, Any] = {"name": str(name)}
    if fn.get("description"):
        tool["description"] = str(fn["description"])
    tool["input_schema"] = schema
    return tool
