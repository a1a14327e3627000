"""Edits to a rebuilt request: what a counterfactual re-run changes, and the edit file format.

An edit file is JSON or YAML with the fields of ``Edits``::

    {"system_replace": [["2. Before calling issue_refund, confirm", "2. Never confirm"]],
     "drop_messages": [3], "insert_messages": [[2, {"role": "user", "content": "Hi"}]],
     "tool_results": {"toolu_01": "{\\"status\\": \\"lost\\"}"}, "remove_tools": ["send_email"],
     "model": "claude-haiku-4-5", "temperature": 0.0, "max_tokens": 512}
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tracer import validation_problems

from ._errors import EditError
from ._records import Edits


def load_edits(path: str | os.PathLike[str]) -> Edits:
    """Reads an edit file (``.json``, or ``.yaml``/``.yml``).

    Raises:
        EditError: the file is missing, not valid JSON/YAML, or has unknown or mistyped fields.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise EditError(f"cannot read the edit file {p}: {exc.strerror}. Check the path.") from None
    is_yaml = p.suffix in (".yaml", ".yml")
    try:
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except Exception as exc:  # json's ValueError, or any of PyYAML's errors
        raise EditError(f"the edit file {p} is not valid {'YAML' if is_yaml else 'JSON'}: "
                        f"{str(exc).splitlines()[0]}.") from None
    try:
        return Edits.model_validate(data or {})
    except ValidationError as exc:
        raise EditError(f"the edit file {p} is not valid: {validation_problems(exc, most=1)}. See the Edits fields "
                        "in the README's Replay section.") from None


def _system_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The system prompt as text blocks (a plain string becomes one block)."""
    system = body.get("system")
    if system is None:
        return []
    if isinstance(system, str):
        return [{"type": "text", "text": system}]
    return system


def _set_system(body: dict[str, Any], blocks: list[dict[str, Any]], was_str: bool) -> None:
    if was_str and len(blocks) == 1 and set(blocks[0]) == {"type", "text"}:
        body["system"] = blocks[0]["text"]
    else:
        body["system"] = blocks


def _check_index(i: int, count: int, what: str, *, allow_end: bool = False) -> None:
    top = count if allow_end else count - 1
    if not 0 <= i <= top:
        raise EditError(f"cannot {what} message {i}: the request has {count} messages (indices 0..{count - 1}"
                        f"{f', or {count} to append' if allow_end else ''}). `flightrec replay show` lists them.")


def _check_message(message: Any, what: str) -> None:
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant") or "content" not in message:
        raise EditError(f"the message to {what} must be an object with role (user or assistant) and content.")


def apply_edits(body: dict[str, Any], edits: Edits) -> dict[str, Any]:
    """A copy of ``body`` with ``edits`` applied; the input is not changed.

    Raises:
        EditError: an edit does not apply (an index outside the messages, an unknown tool or
            tool_use id, system text that does not occur).
    """
    out = copy.deepcopy(body)
    was_str = isinstance(body.get("system"), str)
    blocks = _system_blocks(out)
    if edits.system is not None:
        # The first block's other keys (cache_control) stay: the prompt is still a cached prefix.
        first = {k: v for k, v in (blocks[0] if blocks else {"type": "text"}).items()}
        blocks = [{**first, "text": edits.system}]
    for old, new in edits.system_replace:
        if not any(old in b.get("text", "") for b in blocks):
            raise EditError(f"the system prompt does not contain {old[:60]!r}; nothing to replace. Check the text "
                            "with `flightrec replay show`.")
        blocks = [{**b, "text": b["text"].replace(old, new)} if "text" in b else b for b in blocks]
    if edits.system_append is not None:
        if blocks:
            last = blocks[-1]
            blocks = [*blocks[:-1], {**last, "text": f"{last.get('text', '')}\n\n{edits.system_append}"}]
        else:
            blocks = [{"type": "text", "text": edits.system_append}]
            was_str = True
    if edits.system is not None or edits.system_replace or edits.system_append is not None:
        _set_system(out, blocks, was_str)

    messages: list[dict[str, Any]] = out.get("messages") or []
    count = len(messages)
    for i, message in edits.replace_messages.items():
        _check_index(i, count, "replace")
        _check_message(message, "put in")
    for i in edits.drop_messages:
        _check_index(i, count, "drop")
    inserts: dict[int, list[dict[str, Any]]] = {}
    for i, message in edits.insert_messages:
        _check_index(i, count, "insert before", allow_end=True)
        _check_message(message, "insert")
        inserts.setdefault(i, []).append(message)
    if edits.tool_results:
        found = set()
        for message in messages:
            content = message.get("content")
            if not isinstance(content, list):
                continue
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_result":
                    tid = block.get("tool_use_id")
                    if tid in edits.tool_results:
                        new = edits.tool_results[tid]
                        block["content"] = new if isinstance(new, (str, list)) else json.dumps(new, ensure_ascii=False)
                        found.add(tid)
        missing = sorted(set(edits.tool_results) - found)
        if missing:
            raise EditError(f"no tool result for tool_use id {', '.join(missing)} in this request; the ids are in "
                            "the user messages' tool_result blocks (`flightrec replay show`).")
    dropped = set(edits.drop_messages)
    rebuilt: list[dict[str, Any]] = []
    for i in range(count + 1):
        rebuilt += inserts.get(i, [])
        if i < count and i not in dropped:
            rebuilt.append(copy.deepcopy(edits.replace_messages[i]) if i in edits.replace_messages else messages[i])
    if "messages" in out or rebuilt:
        out["messages"] = rebuilt

    if edits.remove_tools or edits.add_tools:
        tools: list[dict[str, Any]] = list(out.get("tools") or [])
        names = [t.get("name") for t in tools]
        unknown = [n for n in edits.remove_tools if n not in names]
        if unknown:
            raise EditError(f"cannot remove tool {', '.join(unknown)}: the request offers only "
                            f"{', '.join(str(n) for n in names) or 'no tools'}.")
        tools = [t for t in tools if t.get("name") not in set(edits.remove_tools)]
        for tool in edits.add_tools:
            if not isinstance(tool, dict) or not tool.get("name"):
                raise EditError("a tool to add needs at least a name (and a description and an input_schema).")
            tool = {"input_schema": {"type": "object", "properties": {}}, **tool}
            tools = [t for t in tools if t.get("name") != tool["name"]] + [tool]
        out["tools"] = tools
    if edits.model is not None:
        out["model"] = edits.model
    if edits.temperature is not None:
        out["temperature"] = edits.temperature
    if edits.max_tokens is not None:
        if edits.max_tokens < 1:
            raise EditError(f"max_tokens must be at least 1, not {edits.max_tokens}.")
        out["max_tokens"] = edits.max_tokens
    return out
