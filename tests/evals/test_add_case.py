"""``flightrec eval add-case``: a recorded session becomes a draft case that reproduces it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tracer
from evals._dataset import load_dataset
from reference_agent import Agent, World, default_world_path, get_scenario
from tests.replay.conftest import record
from tracer._cli import main

EXISTING_YAML = """\
# Our support suite: reviewed by hand, keep the comments.
name: ours
cases:
    # the smoke case
    - id: order-status
      input: {scenario: order_status}   # the headphones order
      expect:
          - {type: status, equals: ok}
"""


def flightrec(*args: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args])


def add(session_id: str, dataset: str, *args: str) -> Result:
    return flightrec("add-case", session_id, "--dataset", dataset, *args)


def test_a_session_becomes_a_loadable_draft_case():
    sid = record("refund_under_threshold")
    result = add(sid, "new.yaml")
    assert result.exit_code == 0, result.output
    case = load_dataset("new.yaml").cases[0]
    assert result.stdout.startswith(f"added case {case.id} to new.yaml with 6 draft expectations")
    assert "Review them" in result.stdout
    assert case.id.startswith("refund_under_threshold-") and sid.replace("-", "").endswith(case.id[-8:])
    with tracer.Store(read_only=True) as store:
        assert [(e.action, e.target, e.via, e.detail) for e in store.audit_entries()] == [
            ("export", sid, "cli", {"to": "dataset", "dataset": "new.yaml", "case": case.id})]
    assert case.tags == ("from-production", "draft")
    assert sid in (case.description or "")
    assert case.input.scenario == "refund_under_threshold"
    scenario = get_scenario("refund_under_threshold")
    assert [(m.text, m.only_if_asked) for m in case.input.messages] == [
        (m.text, m.only_if_asked) for m in scenario.messages]
    assert {s["type"]: s for s in case.expect} == {
        "status": {"type": "status", "equals": "ok"},
        "tools_required": {"type": "tools_required", "tools": ["get_order", "issue_refund"]},
        "tool_order": {"type": "tool_order", "tools": ["get_order", "issue_refund"], "mode": "subsequence"},
        "no_redundant_calls": {"type": "no_redundant_calls"},
        "guards": {"type": "guards", "none": True},
        "max_turns": {"type": "max_turns", "turns": 6},  # the session's 4, and some room
    }


@pytest.mark.parametrize("scenario", ["order_status", "tool_outage"])
def test_the_draft_passes_against_the_agent_it_was_drawn_from(scenario):
    # tool_outage retries get_order until the circuit breaker opens: the draft allows its own retries
    add(record(scenario), "new.yaml")
    result = flightrec("run", "new.yaml", "--trials", "2", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "passed    2/2 trials (100%)" in result.stdout


def test_a_draft_keeps_the_follow_ups_that_were_sent_without_a_question():
    # long_conversation's customer goes on regardless; only the "yes" answers the agent's question
    add(record("long_conversation"), "new.yaml")
    messages = load_dataset("new.yaml").cases[0].input.messages
    assert [(m.text, m.only_if_asked) for m in messages] == [
        (m.text, m.only_if_asked) for m in get_scenario("long_conversation").messages]


def test_a_draft_keeps_the_simulated_misbehaviour_it_ran_with():
    db = os.environ["FLIGHTREC_DB"]
    recorder = tracer.Recorder(db)
    try:
        with World(default_world_path(db)) as world:
            sid = Agent(world, recorder).run(get_scenario("policy_question"), misbehave=("loop",)).session_id
    finally:
        recorder.shutdown()
    assert add(sid, "new.yaml").exit_code == 0
    case = load_dataset("new.yaml").cases[0]
    assert case.input.misbehave == ("loop",)
    assert {"type": "status", "equals": "guard:loop"} in case.expect
    result = flightrec("run", "new.yaml", "--trials", "1", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "passed    1/1 trials (100%)" in result.stdout


def test_adding_to_a_yaml_dataset_keeps_its_comments_and_indentation():
    Path("ours.yaml").write_text(EXISTING_YAML, encoding="utf-8")
    result = add(record("policy_question"), "ours.yaml")
    assert result.exit_code == 0, result.output
    text = Path("ours.yaml").read_text(encoding="utf-8")
    assert text.startswith(EXISTING_YAML)
    assert "\n    - id: policy_question-" in text  # the new item lines up with the existing one
    dataset = load_dataset("ours.yaml")
    assert dataset.name == "ours"
    assert [c.id.split("-")[0] for c in dataset.cases] == ["order", "policy_question"]


def test_two_sessions_of_one_scenario_become_two_cases():
    # sessions recorded a second apart share the start of their ids (they are time-ordered)
    first, second = record("order_status", seed=0), record("order_status", seed=1)
    assert add(first, "new.yaml").exit_code == 0
    result = add(second, "new.yaml")
    assert result.exit_code == 0, result.output
    text = Path("new.yaml").read_text(encoding="utf-8")
    assert "&id" not in text and "*id" not in text  # YAML anchors would clash between cases
    assert len({c.id for c in load_dataset("new.yaml").cases}) == 2


def test_adding_to_a_jsonl_dataset_appends_a_line():
    line = json.dumps({"id": "order-status", "input": {"scenario": "order_status"},
                       "expect": [{"type": "status", "equals": "ok"}]})
    Path("ours.jsonl").write_text(line, encoding="utf-8")  # no newline at the end
    sid = record("policy_question")
    result = add(sid, "ours.jsonl")
    assert result.exit_code == 0, result.output
    lines = Path("ours.jsonl").read_text(encoding="utf-8").splitlines()
    assert lines[0] == line and len(lines) == 2
    added = json.loads(lines[1])
    assert added["input"]["scenario"] == "policy_question"
    assert [c.id for c in load_dataset("ours.jsonl").cases] == ["order-status", added["id"]]


def test_adding_the_same_id_twice_fails_and_suggests_id():
    sid = record("order_status")
    assert add(sid, "new.yaml").exit_code == 0
    before = Path("new.yaml").read_text(encoding="utf-8")
    case_id = load_dataset("new.yaml").cases[0].id
    again = add(sid, "new.yaml")
    assert again.exit_code == 2
    assert again.stderr == f"error: new.yaml already has a case '{case_id}'; pass --id to name the new one.\n"
    assert Path("new.yaml").read_text(encoding="utf-8") == before
    renamed = add(sid, "new.yaml", "--id", "order-status-again")
    assert renamed.exit_code == 0, renamed.output
    assert [c.id for c in load_dataset("new.yaml").cases] == [case_id, "order-status-again"]


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param("cases:\n  - {id: a, expect: [{type: status, equals: ok}]}\n"
                 "scorers:\n  - {type: max_turns, turns: 9}\n",
                 "ours.yaml: add-case appends to the `cases:` list, so it must be the file's last top-level key; "
                 "move it to the end of the file.", id="cases not last"),
    pytest.param("name: ours\ncases: [{id: a, expect: [{type: status, equals: ok}]}]\n",
                 "ours.yaml: add-case appends `- id: …` items under `cases:`, so the list must be written one item "
                 "per line (block style), not as `cases: [...]`.", id="flow-style cases"),
])
def test_a_yaml_it_cannot_append_to_is_left_unchanged(text, expected):
    Path("ours.yaml").write_text(text, encoding="utf-8")
    result = add(record("order_status"), "ours.yaml")
    assert result.exit_code == 2
    assert result.stderr == f"error: {expected}\n"
    assert Path("ours.yaml").read_text(encoding="utf-8") == text


def test_an_unknown_session_exits_2_and_writes_nothing():
    record("order_status")  # a store with a session, just not this one
    result = add("0123abcd", "new.yaml")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no session '0123abcd' in ")
    assert "flightrec traces list" in result.stderr
    assert not Path("new.yaml").exists()


def test_a_session_recorded_without_content_cannot_become_a_case():
    result = add(record("order_status", content="none"), "new.yaml")
    assert result.exit_code == 2
    assert "has no customer messages on record" in result.stderr
    assert "Record with content='full' or 'redacted'" in result.stderr
    assert not Path("new.yaml").exists()
