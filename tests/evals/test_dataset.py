"""Datasets: the bundled suite, YAML and JSONL files, and an error for every way a file can be wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import evals
from evals._dataset import load_dataset
from evals._errors import DatasetError

SUPPORT_YAML = Path(evals.__file__).with_name("suites") / "support.yaml"

CASE_A = "  - id: a\n    expect: [{type: status, equals: ok}]\n"
"""A valid YAML case, to put a bad one after."""


def error_of(name: str, text: str | None) -> str:
    """The message ``load_dataset`` raises for a file ``name`` holding ``text`` (``None``: no file)."""
    if text is not None:
        Path(name).write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError) as info:
        load_dataset(name)
    return str(info.value)


def test_the_bundled_support_suite_loads_by_name_and_by_path():
    by_name = load_dataset("support")
    by_path = load_dataset(SUPPORT_YAML)
    assert by_name.name == by_path.name == "support"
    assert len(by_name.cases) >= 30
    ids = [c.id for c in by_name.cases]
    assert len(set(ids)) == len(ids)
    assert by_name.sha256() == by_path.sha256()
    assert by_name.scorers  # the suite-wide max_turns, applied before each case's own
    assert by_name.expectations(by_name.cases[0])[0]["type"] == "max_turns"


def test_a_jsonl_dataset_loads_one_case_per_line():
    lines = [
        {"id": "order", "tags": ["orders"], "input": {"scenario": "order_status"},
         "expect": [{"type": "status", "equals": "ok"}]},
        {"id": "refund", "input": {"messages": ["Refund A-1001, please.",
                                                {"text": "Yes.", "only_if_asked": True}]},
         "expect": [{"type": "tools_required", "tools": ["issue_refund"]}]},
    ]
    Path("mine.jsonl").write_text(json.dumps(lines[0]) + "\n\n" + json.dumps(lines[1]) + "\n", encoding="utf-8")
    dataset = load_dataset("mine.jsonl")
    assert dataset.name == "mine"
    assert [c.id for c in dataset.cases] == ["order", "refund"]
    messages = dataset.cases[1].input.messages
    assert [(m.text, m.only_if_asked) for m in messages] == [("Refund A-1001, please.", False), ("Yes.", True)]


def test_a_missing_file_says_so_and_names_the_bundled_suites():
    message = error_of("suport", None)
    assert message.startswith("no dataset file at suport.")
    assert "Pass a .yaml or .jsonl file, or the name of a bundled suite (support)" in message


@pytest.mark.parametrize(("name", "text", "expected"), [
    pytest.param("broken.yaml", "cases:\n  - id: a\n    expect: [\n  foo: : bar\n",
                 ["broken.yaml is not valid YAML at line 4"], id="invalid YAML"),
    pytest.param("typo.yaml", "name: typo\ncase:\n" + CASE_A,
                 ["typo.yaml: a YAML dataset is a mapping with a `cases:` list", "top-level keys: name, case",
                  "see the format in the README"], id="no cases key"),
    pytest.param("empty.yaml", "cases: []\n",
                 ["empty.yaml: `cases` must be a non-empty list", "add at least one case"], id="empty cases"),
    pytest.param("noexpect.yaml", "cases:\n" + CASE_A + "  - id: b\n    input: {scenario: order_status}\n",
                 ["noexpect.yaml, case 2 ('b'): expect:", "needs at least one scorer",
                  "expect: [{type: status, equals: ok}]"], id="no expect"),
    pytest.param("extra.yaml", "cases:\n  - id: a\n    expected: []\n    expect: [{type: status, equals: ok}]\n",
                 ["extra.yaml, case 1 ('a'): expected: unknown field",
                  "the fields are: id, tags, description, input, expect"], id="unknown case field"),
    pytest.param("nested.yaml", "cases:\n  - id: a\n    input: {messages: [{txt: hi}]}\n"
                                "    expect: [{type: status, equals: ok}]\n",
                 ["nested.yaml, case 1 ('a'): input.messages.0.text: missing (add it)",
                  "input.messages.0.txt: unknown field; the fields are: text, only_if_asked"],
                 id="unknown message field"),
    pytest.param("badid.yaml", "cases:\n  - id: 'refund #1'\n    expect: [{type: status, equals: ok}]\n",
                 ["badid.yaml, case 1 ('refund #1'): id: use letters, digits, '-', '_' and '.'"], id="bad id"),
    pytest.param("dup.yaml", "cases:\n" + CASE_A + CASE_A,
                 ["dup.yaml, case 2 ('a'): the id 'a' is used twice; case ids must be unique"], id="duplicate id"),
    pytest.param("scorer.yaml", "cases:\n  - id: a\n    expect: [{type: tool_used}]\n",
                 ["scorer.yaml, case 1 ('a'): unknown scorer type 'tool_used'", "the types are:", "tools_required"],
                 id="unknown scorer"),
    pytest.param("field.yaml", "cases:\n  - id: a\n    expect: [{type: status, equal: ok}]\n",
                 ["field.yaml, case 1 ('a'): scorer 'status': unknown field 'equal' (did you mean 'equals'?)"],
                 id="bad scorer field"),
    pytest.param("shared.yaml", "scorers: [{type: max_turns, turns: many}]\ncases:\n" + CASE_A,
                 ["shared.yaml, shared scorers: scorer 'max_turns': field 'turns'"], id="bad shared scorer"),
    pytest.param("top.yaml", "nmae: top\ncases:\n" + CASE_A,
                 ["top.yaml: unknown top-level field(s) nmae",
                  "a dataset has name, description, agent, scorers, pass_threshold and cases"],
                 id="unknown top-level field"),
    pytest.param("cases.json", '{"cases": []}', ["cases.json: a dataset is a .yaml, .yml or .jsonl file"],
                 id="wrong suffix"),
    # a blank line is skipped, but still counted: the line number is the editor's
    pytest.param("bad.jsonl", '{"id": "a", "expect": [{"type": "status", "equals": "ok"}]}\n\n{"id": "b",\n',
                 ["bad.jsonl, line 3: not valid JSON"], id="bad JSON line"),
    pytest.param("case.jsonl", '{"id": "a", "expect": [{"type": "status", "equals": "ok"}]}\n\n{"id": "b"}\n',
                 ["case.jsonl, case 2 ('b') (line 3): expect:", "needs at least one scorer"], id="bad JSONL case"),
])
def test_a_bad_dataset_names_the_file_the_case_and_the_field(name, text, expected):
    message = error_of(name, text)
    for part in expected:
        assert part in message
    assert "\n" not in message  # the CLI prints it as one line


def test_select_picks_the_cases_with_any_of_the_tags():
    Path("tags.yaml").write_text(
        "cases:\n"
        "  - {id: order, tags: [orders, smoke], expect: [{type: status, equals: ok}]}\n"
        "  - {id: refund, tags: [refund], expect: [{type: status, equals: ok}]}\n"
        "  - {id: policy, tags: [policy, smoke], expect: [{type: status, equals: ok}]}\n", encoding="utf-8")
    dataset = load_dataset("tags.yaml")
    assert [c.id for c in dataset.select(["smoke"])] == ["order", "policy"]
    assert [c.id for c in dataset.select(["refund", "policy"])] == ["refund", "policy"]
    assert dataset.select(["nope"]) == ()
    assert dataset.select([]) == dataset.cases


def test_the_hash_changes_when_a_case_changes():
    template = ("cases:\n  - id: a\n    input: {{scenario: order_status}}\n"
                "    expect: [{{type: max_turns, turns: {}}}]\n")
    Path("one.yaml").write_text(template.format(4), encoding="utf-8")
    Path("same.yaml").write_text("# the same cases in another file\n" + template.format(4), encoding="utf-8")
    Path("two.yaml").write_text(template.format(5), encoding="utf-8")
    one, same, two = load_dataset("one.yaml"), load_dataset("same.yaml"), load_dataset("two.yaml")
    assert one.sha256() == same.sha256()  # comments and file names do not make two runs incomparable
    assert one.sha256() != two.sha256()


def test_pass_thresholds_default_to_every_trial_and_do_not_change_the_hash():
    case = "  - id: a\n    expect: [{type: status, equals: ok}]\n"
    Path("plain.yaml").write_text("cases:\n" + case + case.replace("id: a", "id: b"), encoding="utf-8")
    Path("lenient.yaml").write_text("pass_threshold: 0.6\ncases:\n" + case + case.replace("id: a", "id: b")
                                    + "    pass_threshold: 0.8\n", encoding="utf-8")
    plain, lenient = load_dataset("plain.yaml"), load_dataset("lenient.yaml")
    assert plain.thresholds() == {"a": 1.0, "b": 1.0}
    assert lenient.thresholds() == {"a": 0.6, "b": 0.8}
    # A threshold changes how a run is reported, not what it measures: old baselines still compare.
    assert plain.sha256() == lenient.sha256()


@pytest.mark.parametrize(("text", "expected"), [
    ("pass_threshold: 1.5\ncases:\n" + CASE_A, "t.yaml: pass_threshold: Input should be less than or equal to 1"),
    ("cases:\n" + CASE_A + "    pass_threshold: 0\n", "t.yaml, case 1 ('a'): pass_threshold: Input should be greater "
                                                      "than 0"),
])
def test_a_pass_threshold_out_of_range_names_its_field(text, expected):
    assert expected in error_of("t.yaml", text)
