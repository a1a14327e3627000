"""``diff_context``: what the model saw in two requests, with messages aligned rather than compared place by place."""

from __future__ import annotations

from replay._diff import diff_context


def _user(*texts: str) -> dict:
    return {"role": "user", "content": [{"type": "text", "text": t} for t in texts]}


def _assistant(text: str) -> dict:
    return {"role": "assistant", "content": [{"type": "text", "text": text}]}


def test_a_message_changed_in_the_middle_leaves_the_ones_after_it_kept():
    a = {"messages": [_user("task"), _assistant("one"), _user("two"), _assistant("three")]}
    b = {"messages": [_user("task"), _assistant("ONE"), _user("two"), _assistant("three")]}
    d = diff_context(a, b)
    assert d.messages_common == 1 and d.messages_kept == 2
    assert [e["index"] for e in d.messages_removed] == [1] and [e["index"] for e in d.messages_added] == [1]
    assert d.messages_amended == [] and d.messages_replaced == []


def test_a_summary_added_to_the_task_replaces_the_turns_dropped():
    a = {"messages": [_user("task"), _assistant("a"), _user("b"), _assistant("c"), _user("latest")]}
    b = {"messages": [_user("task", "summary of a and b"), _assistant("c"), _user("latest"), _assistant("reply")]}
    d = diff_context(a, b)
    assert d.messages_common == 1 and d.messages_amended[0]["added"] == "summary of a and b"
    assert d.messages_kept == 2
    assert [e["index"] for e in d.messages_replaced] == [1, 2] and d.messages_removed == []
    assert [e["index"] for e in d.messages_added] == [3]


def test_a_shortened_first_message_is_truncated_not_amended():
    a = {"messages": [_user("a long tool result, in full")]}
    b = {"messages": [_user("a long tool result…")]}
    d = diff_context(a, b)
    assert d.messages_common == 0 and d.messages_amended == [] and [e["index"] for e in d.messages_truncated] == [0]
