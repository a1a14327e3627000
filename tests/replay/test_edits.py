"""Each edit kind, applied to a request body, and edits that do not apply."""

from __future__ import annotations

import json

import pytest

from replay import EditError, Edits, apply_edits, load_edits

BODY = {
    "model": "claude-haiku-4-5", "max_tokens": 1024,
    "system": [{"type": "text", "text": "Rule one.\nRule two.", "cache_control": {"type": "ephemeral"}}],
    "tools": [{"name": "get_order", "input_schema": {"type": "object"}},
              {"name": "send_email", "input_schema": {"type": "object"}}],
    "messages": [
        {"role": "user", "content": "Where is A-1?"},
        {"role": "assistant",
         "content": [{"type": "tool_use", "id": "tu_1", "name": "get_order", "input": {"id": "A-1"}}]},
        {"role": "user",
         "content": [{"type": "tool_result", "tool_use_id": "tu_1", "content": "{\"status\": \"shipped\"}"}]},
    ],
}


def test_system_replace_append_and_remove():
    out = apply_edits(BODY, Edits(system="New prompt."))
    assert out["system"] == [{"type": "text", "text": "New prompt.", "cache_control": {"type": "ephemeral"}}]
    out = apply_edits(BODY, Edits(system_append="Rule three."))
    assert out["system"][0]["text"] == "Rule one.\nRule two.\n\nRule three."
    out = apply_edits(BODY, Edits(system_replace=[("Rule two.", "")]))
    assert out["system"][0]["text"] == "Rule one.\n"
    assert BODY["system"][0]["text"] == "Rule one.\nRule two."  # the input is untouched


def test_message_drop_replace_insert_use_original_indices():
    new = {"role": "user", "content": "Hello"}
    out = apply_edits(BODY, Edits(drop_messages=[1, 2]))
    assert out["messages"] == [BODY["messages"][0]]
    out = apply_edits(BODY, Edits(replace_messages={0: new}))
    assert out["messages"][0] == new and len(out["messages"]) == 3
    out = apply_edits(BODY, Edits(insert_messages=[(0, new), (3, new)]))
    assert len(out["messages"]) == 5 and out["messages"][0] == out["messages"][4] == new


def test_tool_result_and_tool_definitions():
    out = apply_edits(BODY, Edits(tool_results={"tu_1": {"status": "lost"}}))
    assert json.loads(out["messages"][2]["content"][0]["content"]) == {"status": "lost"}
    out = apply_edits(BODY, Edits(remove_tools=["send_email"], add_tools=[{"name": "refund", "description": "x"}]))
    assert [t["name"] for t in out["tools"]] == ["get_order", "refund"]


def test_model_temperature_max_tokens():
    out = apply_edits(BODY, Edits(model="claude-sonnet-4-5", temperature=0.2, max_tokens=10))
    assert (out["model"], out["temperature"], out["max_tokens"]) == ("claude-sonnet-4-5", 0.2, 10)


@pytest.mark.parametrize(("edits", "message"), [
    (Edits(drop_messages=[40]), "cannot drop message 40: the request has 3 messages"),
    (Edits(replace_messages={-1: {"role": "user", "content": "x"}}), "cannot replace message -1"),
    (Edits(insert_messages=[(4, {"role": "user", "content": "x"})]), "cannot insert before message 4"),
    (Edits(insert_messages=[(0, {"content": "x"})]), "must be an object with role"),
    (Edits(tool_results={"tu_9": "x"}), "no tool result for tool_use id tu_9"),
    (Edits(remove_tools=["nope"]), "cannot remove tool nope: the request offers only get_order, send_email"),
    (Edits(system_replace=[("Rule nine.", "")]), "does not contain 'Rule nine.'"),
    (Edits(max_tokens=0), "max_tokens must be at least 1"),
])
def test_edits_that_do_not_apply_say_why(edits, message):
    with pytest.raises(EditError, match=message):
        apply_edits(BODY, edits)


def test_edit_file(tmp_path):
    path = tmp_path / "edits.json"
    path.write_text(json.dumps({"system_replace": [["Rule two.", ""]], "drop_messages": [2], "temperature": 0}))
    edits = load_edits(path)
    assert edits.system_replace == [("Rule two.", "")] and edits.drop_messages == [2]
    path.write_text('{"drop_mesages": [2]}')
    with pytest.raises(EditError, match="drop_mesages: unknown setting"):
        load_edits(path)
    path.write_text("{not json")
    with pytest.raises(EditError, match="is not valid JSON"):
        load_edits(path)
    with pytest.raises(EditError, match="cannot read the edit file"):
        load_edits(tmp_path / "missing.json")


def test_yaml_edit_file(tmp_path):
    path = tmp_path / "edits.yaml"
    path.write_text("system_replace:\n  - ['Rule two.', '']\nmax_tokens: 64\nremove_tools: [send_email]\n")
    edits = load_edits(path)
    assert edits.system_replace == [("Rule two.", "")] and edits.max_tokens == 64
    assert edits.remove_tools == ["send_email"]
    path.write_text("remove_tools: [unclosed\n")
    with pytest.raises(EditError, match="is not valid YAML"):
        load_edits(path)
