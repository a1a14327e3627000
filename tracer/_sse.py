"""The Messages API's server-sent event stream, both ways: the events a message streams as, and
the message a stream of events adds up to."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from ._canonical import loads


def sse_events(message: dict[str, Any], *, chunk: int = 64) -> Iterator[bytes]:
    """The server-sent events the API streams for a whole ``message``, one byte chunk per event.

    Text and tool input arrive in deltas of ``chunk`` characters, as they would from the API; the
    accumulated stream is ``message`` again (``accumulate_sse``).
    """
    usage = message["usage"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start}),
                                                ("ping", {"type": "ping"})]

    def deltas(i: int, kind: str, field: str, text: str) -> None:
        for j in range(0, len(text), chunk):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": kind, field: text[j:j + chunk]}}))

    for i, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {**block, "text": ""}}))
            deltas(i, "text_delta", "text", block["text"])
        elif block["type"] == "thinking":
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {"type": "thinking", "thinking": "",
                                                                     "signature": ""}}))
            deltas(i, "thinking_delta", "thinking", block["thinking"])
            events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                   "delta": {"type": "signature_delta",
                                                             "signature": block["signature"]}}))
        elif "input" in block:
            events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                   "content_block": {**block, "input": {}}}))
            deltas(i, "input_json_delta", "partial_json", json.dumps(block["input"], ensure_ascii=False))
        else:  # blocks that arrive whole (redacted thinking, server tool results)
            events.append(("content_block_start", {"type": "content_block_start", "index": i, "content_block": block}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"],
                                               "stop_sequence": message.get("stop_sequence")},
                                     "usage": {"output_tokens": usage["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    for name, data in events:
        yield f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def accumulate_sse(raw: bytes) -> dict[str, Any] | None:
    """The final Message that a Messages API event stream describes, or ``None`` if it has none.

    A stream cut short gives the message as far as it got, with ``stop_reason`` left ``None``.
    """
    message: dict[str, Any] | None = None
    partial_json: dict[int, str] = {}
    for event in raw.decode("utf-8", "replace").split("\n\n"):
        data = "".join(line[5:].lstrip() for line in event.split("\n") if line.startswith("data:"))
        if not data:
            continue
        try:
            ev = loads(data)
        except ValueError:
            continue
        kind = ev.get("type")
        if kind == "message_start":
            message = dict(ev["message"])
            message["content"] = list(message.get("content") or [])
        elif message is None:
            continue
        elif kind == "content_block_start":
            message["content"].append(dict(ev["content_block"]))
        elif kind == "content_block_delta":
            idx, delta = ev["index"], ev["delta"]
            block = message["content"][idx]
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta["text"]
            elif dtype == "input_json_delta":
                partial_json[idx] = partial_json.get(idx, "") + delta.get("partial_json", "")
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta["thinking"]
            elif dtype == "signature_delta":
                block["signature"] = block.get("signature", "") + delta["signature"]
            elif dtype == "citations_delta":
                block.setdefault("citations", []).append(delta["citation"])
        elif kind == "content_block_stop":
            idx = ev["index"]
            if idx in partial_json:
                raw_json = partial_json.pop(idx)
                message["content"][idx]["input"] = loads(raw_json) if raw_json else {}
        elif kind == "message_delta":
            message.update(ev.get("delta") or {})
            message["usage"] = {**(message.get("usage") or {}), **(ev.get("usage") or {})}
    return message
