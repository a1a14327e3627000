"""Scorers built from dataset specs, scored against hand-built trajectories."""

from __future__ import annotations

import sys
import textwrap
from typing import Any

import httpx2
import pytest

from evals._errors import ScorerError
from evals._judge import sim_judge_client
from evals._scorers import SCORER_TYPES, Score, build_scorer, score_trial
from evals._trajectory import DecisionStep, ToolStep, Trajectory


@pytest.fixture(autouse=True)
def _no_judge_model(monkeypatch):
    monkeypatch.delenv("FLIGHTREC_JUDGE_MODEL", raising=False)


def call(name: str, turn: int, *, error: bool = False, result: str = "ok", **arguments: Any) -> ToolStep:
    return ToolStep(turn=turn, name=name, arguments=arguments, result=result, is_error=error, start_ns=turn * 10 + 5)


def traj(calls: list[ToolStep] = (), *, final: str | None = "Your order A-1001 ships tomorrow.", status: str = "ok",
         status_reason: str | None = None, guards: list[str] = (), cost: float | None = 0.0123,
         latency: float = 1800.0, user: str = "Where is my order A-1001?") -> Trajectory:
    """A trajectory: one decision per turn that made tool calls, then a final answer on the next turn."""
    calls = list(calls)
    turns = sorted({c.turn for c in calls})
    decisions = [DecisionStep(turn=n, action="tool_use", text=None, tools_chosen=[c.name for c in calls if c.turn == n],
                          start_ns=n * 10) for n in turns]
    last = (turns[-1] if turns else 0) + 1
    if final is not None:
        decisions.append(DecisionStep(turn=last, action="final", text=final, tools_chosen=[], start_ns=last * 10))
    return Trajectory(session_id="s-test", status=status, status_reason=status_reason, user_messages=[user],
                      final_answer=final, decisions=decisions, tool_calls=calls, guards=list(guards), events=[],
                      turns=len(decisions), input_tokens=1200, output_tokens=300, cost_usd=cost, latency_ms=latency)


def run(spec: dict[str, Any], t: Trajectory) -> Score:
    return build_scorer(spec)(t)


# -- specs -------------------------------------------------------------------------------------


def test_the_label_is_the_name_else_the_type_and_weight_defaults_to_one():
    t = traj([call("get_order", 1, order_id="A-1001")])
    named = run({"type": "tools_required", "tools": ["get_order"], "weight": 2, "name": "looks the order up"}, t)
    plain = run({"type": "tools_required", "tools": "get_order"}, t)
    assert (named.scorer, named.weight) == ("looks the order up", 2.0)
    assert (plain.scorer, plain.weight) == ("tools_required", 1.0)


def test_an_unknown_field_suggests_the_right_one_and_lists_the_fields():
    with pytest.raises(ScorerError) as e:
        build_scorer({"type": "tools_required", "tool": ["get_order"]})
    assert str(e.value) == ("scorer 'tools_required': unknown field 'tool' (did you mean 'tools'?); "
                            "fields are: tools, weight, name.")


def test_an_unknown_type_suggests_one_and_lists_them_all():
    with pytest.raises(ScorerError) as e:
        build_scorer({"type": "tool_required", "tools": ["get_order"]})
    assert "unknown scorer type 'tool_required' (did you mean 'tools_required'?)" in str(e.value)
    assert all(kind in str(e.value) for kind in SCORER_TYPES)


@pytest.mark.parametrize("spec", [{"tools": ["get_order"]}, {"type": 3}, ["tools_required"]],
                         ids=["no-type", "type-not-text", "not-a-mapping"])
def test_a_spec_without_a_usable_type_lists_the_types(spec):
    with pytest.raises(ScorerError, match="the types are: final_contains, .*python"):
        build_scorer(spec)


@pytest.mark.parametrize("spec, expected", [
    ({"type": "max_turns"}, "missing field 'turns'"),
    ({"type": "max_turns", "turns": 5, "weight": 0, "name": "short"},
     "scorer 'short' (max_turns): field 'weight': Input should be greater than 0 (got 0)"),
    ({"type": "tool_order", "tools": ["a"], "mode": "strict"}, "field 'mode': Input should be 'exact' or "
                                                                 "'subsequence' (got \"strict\")"),
    ({"type": "final_regex", "pattern": "(unclosed"}, "field 'pattern': not a valid regular expression"),
    ({"type": "final_contains", "text": []}, "field 'text': Value should have at least 1 item"),
    ({"type": "guards"}, "nothing to check: give 'fired', 'not_fired' or 'none: true'"),
    ({"type": "guards", "none": True, "fired": ["time_limit"]}, "'none: true' contradicts 'fired'"),
    ({"type": "tool_args", "tool": "issue_refund", "args": {"amount": {"gte": "lots"}}},
     "argument 'amount': 'gte' must be a number"),
    ({"type": "tool_args", "tool": "issue_refund", "args": {"reason": {"in": "damaged"}}},
     "argument 'reason': 'in' must be a list"),
    ({"type": "tool_args", "tool": "issue_refund", "args": {}}, "field 'args': Dictionary should have at least 1"),
    ({"type": "python", "function": "my_scorers.polite"}, "field 'function': must be 'module:function'"),
    ({"type": "judge", "rubric": ["ok"], "threshold": 1.5}, "field 'threshold': Input should be less than or equal"),
])
def test_bad_parameters_say_which_field_and_what_is_wrong(spec, expected):
    with pytest.raises(ScorerError) as e:
        build_scorer(spec)
    assert expected in str(e.value)
    assert str(e.value).endswith(f"fields are: {', '.join(SCORER_TYPES[spec['type']].fields())}.")


# -- the final answer ----------------------------------------------------------------------------


def test_final_contains_all_and_any():
    t = traj(final="Order A-1001 ships TOMORROW by courier.")
    ok = run({"type": "final_contains", "text": ["a-1001", "tomorrow"]}, t)
    half = run({"type": "final_contains", "text": ["A-1001", "refund"]}, t)
    any_ = run({"type": "final_contains", "text": ["refund", "courier"], "all": False}, t)
    cased = run({"type": "final_contains", "text": "tomorrow", "case_sensitive": True}, t)
    assert ok.passed and ok.value == 1.0
    assert not half.passed and half.value == 0.5
    assert 'lacks "refund" (it has "A-1001")' in half.reason
    assert any_.passed
    assert not cased.passed


def test_final_answer_scorers_fail_without_a_final_answer_except_not_contains():
    t = traj([call("get_order", 1, order_id="A-1001")], final=None, status="guard:max_tool_calls")
    assert "no final answer" in run({"type": "final_contains", "text": "A-1001"}, t).reason
    assert not run({"type": "final_regex", "pattern": "."}, t).passed
    forbidden = run({"type": "final_not_contains", "text": "refund issued"}, t)
    assert forbidden.passed and "no final answer" in forbidden.reason


def test_final_not_contains():
    t = traj(final="I have issued a refund of $40 for order A-1001.")
    bad = run({"type": "final_not_contains", "text": ["Refund", "guarantee"]}, t)
    assert not bad.passed and bad.value == 0.5
    assert 'contains "Refund"' in bad.reason
    assert run({"type": "final_not_contains", "text": "Refund", "case_sensitive": True}, t).passed


def test_final_regex():
    t = traj(final="Your ticket is HT-2291.")
    assert run({"type": "final_regex", "pattern": r"HT-\d{4}"}, t).reason == ('the final answer matches /HT-\\d{4}/ '
                                                                               'at "HT-2291"')
    assert run({"type": "final_regex", "pattern": r"ht-\d+", "ignore_case": True}, t).passed
    miss = run({"type": "final_regex", "pattern": r"ht-\d+"}, t)
    assert not miss.passed and "does not match" in miss.reason


_REFUND_SCHEMA = {"type": "object", "required": ["order_id", "amount"],
                  "properties": {"order_id": {"type": "string"}, "amount": {"type": "number", "maximum": 100}}}


def test_final_json_schema_finds_the_json_in_prose_and_validates_it():
    good = traj(final='Done. ```json\n{"order_id": "A-1001", "amount": 40}\n``` Anything else?')
    bad = traj(final='[note] {"order_id": "A-1001", "amount": 400}')
    prose = traj(final="I refunded {your order}.")
    spec = {"type": "final_json_schema", "schema": _REFUND_SCHEMA}
    assert run(spec, good).passed
    failed = run(spec, bad)
    assert not failed.passed and "at $.amount: 400 is greater than the maximum of 100" in failed.reason
    assert "holds no JSON object or array" in run(spec, prose).reason


def test_final_json_schema_rejects_a_bad_schema_and_a_missing_jsonschema(monkeypatch):
    with pytest.raises(ScorerError, match="'schema' is not a valid JSON Schema"):
        build_scorer({"type": "final_json_schema", "schema": {"type": "whole-number"}})
    with pytest.raises(ScorerError, match="unknown field 'json_schema'"):
        build_scorer({"type": "final_json_schema", "json_schema": {}})
    monkeypatch.setitem(sys.modules, "jsonschema", None)
    with pytest.raises(ScorerError, match="needs the jsonschema package: pip install jsonschema"):
        build_scorer({"type": "final_json_schema", "schema": _REFUND_SCHEMA})


# -- tool calls ----------------------------------------------------------------------------------


def _refund_path() -> Trajectory:
    return traj([call("get_order", 1, order_id="A-1001"), call("search_kb", 2, query="refund policy damaged"),
                 call("issue_refund", 3, order_id="A-1001", amount=40.0, reason="damaged")])


def test_tools_required_and_forbidden():
    t = _refund_path()
    assert run({"type": "tools_required", "tools": ["get_order", "issue_refund"]}, t).reason == (
        "called get_order (turn 1), issue_refund (turn 3)")
    missing = run({"type": "tools_required", "tools": ["get_order", "escalate_to_human"]}, t)
    assert not missing.passed and missing.value == 0.5
    assert missing.reason == ("never called escalate_to_human; the calls were: get_order → search_kb → "
                              "issue_refund")
    assert missing.turn is None  # no decision to point at: the whole session left it out
    forbidden = run({"type": "tools_forbidden", "tools": ["issue_refund", "delete_account"]}, t)
    assert not forbidden.passed and forbidden.reason == "issue_refund was called at turn 3"
    assert forbidden.turn == 3
    both = run({"type": "tools_forbidden", "tools": ["issue_refund", "search_kb"]}, t)
    assert both.reason.startswith("issue_refund was called at turn 3") and both.turn == 2  # the first offence
    assert run({"type": "tools_forbidden", "tools": ["delete_account"]}, t).passed


def test_tool_order_subsequence_and_exact():
    t = _refund_path()
    assert run({"type": "tool_order", "tools": ["get_order", "issue_refund"]}, t).passed
    backwards = run({"type": "tool_order", "tools": ["search_kb", "get_order"]}, t)
    assert not backwards.passed and backwards.value == 0.5
    assert "then no get_order (get_order was called only before that, at turn 1)" in backwards.reason
    assert backwards.turn == 2  # search_kb's turn, after which get_order never came
    exact = {"type": "tool_order", "tools": ["get_order", "issue_refund"], "mode": "exact"}
    off = run(exact, t)
    assert not off.passed
    assert "call 2 was search_kb (turn 2), expected issue_refund" in off.reason and off.turn == 2
    assert run({**exact, "tools": ["get_order", "search_kb", "issue_refund"]}, t).passed


def test_tool_args_predicates():
    t = _refund_path()

    def args(predicates: dict[str, Any], **extra: Any) -> Score:
        return run({"type": "tool_args", "tool": "issue_refund", "args": predicates, **extra}, t)

    assert args({"order_id": "A-1001", "amount": {"gte": 10, "lte": 50}, "reason": {"in": ["damaged", "late"]}}).passed
    assert args({"order_id": {"regex": r"^A-\d+$"}, "reason": {"contains": "dam"}}).passed
    assert args({"amount": {"lte": "45.5"}}).passed
    over = args({"amount": {"lte": 25}})
    assert not over.passed and "amount is 40.0, above 25" in over.reason and over.turn == 3
    assert args({"order_id": "A-1001", "customer": "c-1"}).reason.endswith("at turn 3: customer is missing")
    assert args({"order_id": "A-1001", "customer": "c-1"}).value == 0.5
    assert not args({"amount": {"equals": True}}).passed  # a bool is not the number 1
    never = run({"type": "tool_args", "tool": "escalate_to_human", "args": {"priority": "high"}}, t)
    assert not never.passed and never.reason.startswith("escalate_to_human was never called") and never.turn is None


def test_tool_args_call_selects_any_all_or_first():
    t = traj([call("get_order", 1, order_id="a-1001"), call("get_order", 2, order_id="A-1001")])
    spec = {"type": "tool_args", "tool": "get_order", "args": {"order_id": "A-1001"}}
    assert run(spec, t).reason == 'the get_order call at turn 2 matches: {"order_id":"A-1001"}'
    all_ = run({**spec, "call": "all"}, t)
    assert not all_.passed and all_.value == 0.5
    assert all_.reason == '1 of 2 get_order call(s) do not match; at turn 1: order_id is "a-1001", expected "A-1001"'
    assert all_.turn == 1
    first = run({**spec, "call": "first"}, t)
    assert not first.passed and first.turn == 1


def test_tool_args_says_when_no_arguments_were_recorded():
    t = traj([call("get_order", 1)])
    assert "was the session traced without content?" in run(
        {"type": "tool_args", "tool": "get_order", "args": {"order_id": "A-1001"}}, t).reason


def test_no_redundant_calls():
    t = traj([call("get_order", 1, order_id="A-1001"), call("get_order", 2, order_id="A-1001"),
              call("get_order", 3, order_id="A-1001"), call("get_order", 3, order_id="A-1002")])
    spec = {"type": "no_redundant_calls"}
    looped = run(spec, t)
    assert not looped.passed and looped.value == 0.5
    assert looped.reason == ('2 of 4 calls are redundant: get_order({"order_id":"A-1001"}) was called 3 times '
                             '(at turns 1, 2, 3), more than 1')
    assert looped.turn == 2  # the first call one too many, not the first of the three
    assert run({**spec, "max_repeats": 3}, t).passed
    assert run(spec, traj()).reason == "no tool calls, so none redundant"


def test_steps_vs_minimal():
    t = _refund_path()
    assert run({"type": "steps_vs_minimal", "minimal": 2}, t).value == pytest.approx(2 / 3)
    assert run({"type": "steps_vs_minimal", "minimal": 2}, t).passed  # 3 <= 2 x 1.5
    tight = run({"type": "steps_vs_minimal", "minimal": 2, "slack": 1.0}, t)
    assert not tight.passed and tight.reason == "3 tool calls against a minimal 2: over the 2 allowed (slack 1)"


def test_recovers_after_error():
    spec = {"type": "recovers_after_error"}
    assert run(spec, _refund_path()).reason == "no tool call errored, so there was nothing to recover from"
    retried = traj([call("get_order", 1, error=True, order_id="A-1001"), call("get_order", 2, order_id="A-1001")])
    escalated = traj([call("get_order", 1, error=True), call("escalate_to_human", 2, reason="lookup down")],
                     final=None, status="waiting_human")
    answered = traj([call("get_order", 1, error=True)], final="Our order system is down; please try later.")
    stuck = traj([call("get_order", 1, error=True), call("get_order", 2, error=True)], final=None,
                 status="guard:circuit_breaker")
    assert run(spec, retried).passed and run(spec, escalated).passed and run(spec, answered).passed
    failed = run(spec, stuck)
    assert not failed.passed and failed.value == 0.0
    assert failed.reason.startswith("get_order failed at turn 1 and was followed by no successful get_order, no "
                                    "escalate_to_human and no final answer")
    assert failed.turn == 1
    custom = {**spec, "fallback_tools": ["transfer_to_billing"]}
    assert not run(custom, escalated).passed


# -- guards, status, budgets ---------------------------------------------------------------------


def test_guards():
    t = traj(final=None, status="guard:max_tool_calls", guards=["max_tool_calls"])
    assert run({"type": "guards", "fired": ["max_tool_calls"], "not_fired": ["time_limit"]}, t).passed
    quiet = run({"type": "guards", "none": True}, t)
    assert not quiet.passed and quiet.reason == "guards fired: max_tool_calls (guards fired: max_tool_calls)"
    half = run({"type": "guards", "fired": ["time_limit"], "not_fired": ["circuit_breaker"]}, t)
    assert half.value == 0.5 and half.reason.startswith("time_limit did not fire")
    assert run({"type": "guards", "none": True}, traj()).passed


def test_status():
    handed = traj(status="waiting_human", status_reason="customer asked for a person")
    assert run({"type": "status", "equals": ["ok", "waiting_human"]}, handed).passed
    assert run({"type": "status", "equals": "guard:*"}, traj(status="guard:time_limit")).passed
    wrong = run({"type": "status", "equals": "ok"}, handed)
    assert wrong.reason == ('the session ended with status "waiting_human" (customer asked for a person), '
                            'expected "ok"')


def test_budgets():
    t = traj([call("get_order", 1)], cost=0.0123, latency=1800.0)  # 2 turns
    assert run({"type": "max_turns", "turns": 2}, t).passed
    assert run({"type": "max_turns", "turns": 1}, t).reason == "2 turns, over the limit of 1"
    assert run({"type": "max_cost_usd", "usd": 0.05}, t).passed
    assert run({"type": "max_cost_usd", "usd": 0.01}, t).reason == "cost $0.0123, over the limit of $0.01"
    unknown = run({"type": "max_cost_usd", "usd": 1}, traj(cost=None))
    assert not unknown.passed and "the cost is unknown" in unknown.reason
    assert run({"type": "max_latency_ms", "ms": 2000}, t).passed
    assert not run({"type": "max_latency_ms", "ms": 1000}, t).passed


# -- the judge -----------------------------------------------------------------------------------


def test_judge_scorer_value_is_the_share_of_criteria_met():
    t = _refund_path()
    spec = {"type": "judge", "rubric": ['Looks the order up with "get_order"', 'Never says "guarantee"',
                                        'Mentions "store credit"']}
    two_of_three = build_scorer(spec, judge_client=sim_judge_client)(t)
    assert two_of_three.value == pytest.approx(2 / 3) and not two_of_three.passed  # threshold 0.7
    assert two_of_three.reason.startswith("2/3 criteria met by the simulated judge (threshold 0.7): 1. met: ")
    assert '3. NOT met: simulated judge: "store credit" does not appear' in two_of_three.reason
    assert build_scorer({**spec, "threshold": 0.6}, judge_client=sim_judge_client)(t).passed


def test_an_unreachable_judge_stops_the_trial():
    def down() -> Any:
        import anthropic

        def refuse(request: httpx2.Request) -> httpx2.Response:
            raise httpx2.ConnectError("connection refused", request=request)

        return anthropic.Anthropic(api_key="k", base_url="http://judge.test", max_retries=0,
                                   http_client=httpx2.Client(transport=httpx2.MockTransport(refuse)))

    scorers = [build_scorer({"type": "judge", "rubric": ["Is polite"]}, judge_client=down)]
    with pytest.raises(ScorerError, match="cannot reach the judge model"):
        score_trial(scorers, traj())


# -- custom scorers ------------------------------------------------------------------------------


@pytest.fixture
def custom(tmp_path, monkeypatch):
    """A user's module of custom scorers, importable as ``my_scorers``."""
    (tmp_path / "my_scorers.py").write_text(textwrap.dedent('''
        from evals._scorers import Score

        def polite(trajectory, *, words=("please", "thank")):
            text = (trajectory.final_answer or "").lower()
            return sum(w in text for w in words) / len(words)

        def short(trajectory, limit=80):
            return len(trajectory.final_answer or "") <= limit

        def full(trajectory):
            return Score(scorer="mine", value=0.25, passed=False, weight=9, reason="a quarter of the way", turn=2)

        def broken(trajectory):
            return trajectory.tool_calls[0].arguments["order_id"]

        def chatty(trajectory):
            return "fine"

        def eager(trajectory):
            return 3

        NOT_A_FUNCTION = 42
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_scorers"
    sys.modules.pop("my_scorers", None)


def test_custom_scorer_results(custom):
    t = traj(final="Thank you! Please allow two days.")
    assert run({"type": "python", "function": "my_scorers:polite"}, t).value == 1.0
    half = run({"type": "python", "function": "my_scorers:polite", "params": {"words": ["please", "sorry"]},
                "threshold": 0.5}, t)
    assert half.passed and half.value == 0.5 and half.scorer == "my_scorers:polite"
    assert not run({"type": "python", "function": "my_scorers:polite", "params": {"words": ["please", "sorry"]}},
                   t).passed
    assert run({"type": "python", "function": "my_scorers:short", "params": {"limit": 10}}, t).value == 0.0
    full = run({"type": "python", "function": "my_scorers:full", "weight": 3, "name": "custom"}, t)
    assert (full.scorer, full.weight, full.value, full.reason, full.turn) == ("custom", 3.0, 0.25,
                                                                              "a quarter of the way", 2)


def test_a_custom_scorer_that_raises_or_misbehaves_fails_its_case_only(custom):
    t = traj()  # no tool calls: broken() raises IndexError
    raised = run({"type": "python", "function": "my_scorers:broken"}, t)
    assert not raised.passed and raised.value == 0.0
    assert raised.reason == "my_scorers:broken raised IndexError: list index out of range"
    assert "returned str; a custom scorer returns a Score" in run({"type": "python",
                                                                   "function": "my_scorers:chatty"}, t).reason
    assert "returned 3, outside 0..1" in run({"type": "python", "function": "my_scorers:eager"}, t).reason


@pytest.mark.parametrize("function, params, expected", [
    ("no_such_module:polite", {}, "cannot import 'no_such_module' (No module named 'no_such_module'). Check the "
                                  "module path, and run from the directory that holds it"),
    ("my_scorers:polit", {}, "'my_scorers' has no 'polit' (did you mean 'polite'?)"),
    ("my_scorers:NOT_A_FUNCTION", {}, "my_scorers:NOT_A_FUNCTION is a int, not a function"),
    ("my_scorers:short", {"limt": 10}, "my_scorers:short cannot be called with the trajectory and params ['limt']"),
])
def test_a_custom_scorer_that_cannot_be_loaded_fails_at_build(custom, function, params, expected):
    with pytest.raises(ScorerError) as e:
        build_scorer({"type": "python", "function": function, "params": params})
    assert expected in str(e.value)


def test_a_module_that_fails_to_import_is_named(tmp_path, monkeypatch):
    (tmp_path / "crashing_scorers.py").write_text("raise RuntimeError('needs a config file')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ScorerError, match="importing 'crashing_scorers' raised RuntimeError: needs a config file"):
        build_scorer({"type": "python", "function": "crashing_scorers:anything"})


# -- trials --------------------------------------------------------------------------------------


def test_score_trial_is_the_weighted_mean_and_passes_only_if_every_scorer_passes():
    t = _refund_path()
    scorers = [build_scorer({"type": "tools_required", "tools": ["get_order", "escalate_to_human"], "weight": 3}),
               build_scorer({"type": "status", "equals": "ok"})]
    value, passed, scores = score_trial(scorers, t)
    assert value == pytest.approx((0.5 * 3 + 1.0 * 1) / 4)
    assert not passed
    assert [s.scorer for s in scores] == ["tools_required", "status"]
    assert score_trial(scorers[1:], t)[:2] == (1.0, True)


def test_score_trial_needs_a_scorer():
    with pytest.raises(ScorerError, match="give the case at least one scorer"):
        score_trial([], traj())


def test_every_type_is_registered_with_documented_fields():
    assert set(SCORER_TYPES) == {
        "final_contains", "final_not_contains", "final_regex", "final_json_schema", "tools_required",
        "tools_forbidden", "tool_order", "tool_args", "no_redundant_calls", "steps_vs_minimal",
        "recovers_after_error", "guards", "status", "max_turns", "max_cost_usd", "max_latency_ms", "judge", "python"}
    for kind, entry in SCORER_TYPES.items():
        schema = entry.params.model_json_schema(by_alias=True)
        undocumented = [f for f, s in schema["properties"].items() if not s.get("description")]
        assert not undocumented, (kind, undocumented)
