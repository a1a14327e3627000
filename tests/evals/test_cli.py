"""``flightrec eval``: run, the regression gate and its reports, compare, list, show, label, and errors."""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

import tracer
from tracer._cli import main

TINY = """\
name: tiny
cases:
  - id: order-status
    tags: [orders]
    input: {scenario: order_status}
    expect:
      - {type: tools_required, tools: [get_order, get_shipment]}
      - {type: status, equals: ok}
  - id: policy
    tags: [policy]
    input: {scenario: policy_question}
    expect:
      - {type: tools_required, tools: [search_kb]}
  - id: refund
    tags: [refund]
    input: {scenario: refund_under_threshold}
    expect:
      - {type: python, function: "evals.suites.support_checks:confirms_before"}
"""

CONFIRMS = '{type: python, function: "evals.suites.support_checks:confirms_before"}'
REFUND_MESSAGES = {
    "refund-kettle": "My electric kettle from order A-1012 stopped working after a week. Can I get a refund?",
    "refund-shoes": "The running shoes from order A-1006 are the wrong size. Please refund them.",
    "refund-espresso": "The espresso machine from order A-1005 leaks water everywhere. I want my money back.",
    "refund-blender": "The blender from order A-1004 stopped working. Can I get a refund?",
}
REFUNDS = "name: refunds\ncases:\n" + "".join(
    f"  - id: {case}\n    input: {{scenario: {scenario}}}\n    expect: [{CONFIRMS}]\n"
    for case, scenario in [("refund-under-threshold", "refund_under_threshold"),
                           ("refund-over-threshold", "refund_over_threshold"),
                           ("duplicate-charge", "duplicate_charge")]
) + "".join(
    f"  - id: {case}\n    input:\n      messages: [{json.dumps(text)}, "
    f"{{text: 'Yes, please go ahead.', only_if_asked: true}}]\n    expect: [{CONFIRMS}]\n"
    for case, text in REFUND_MESSAGES.items())
"""Seven refund cases. Without its confirmation rule the reference agent refunds at once in six of
them (duplicate-charge still asks): enough paired cases for the one-sided test to reach p < 0.05."""

REGRESSED = ["refund-blender", "refund-espresso", "refund-kettle", "refund-over-threshold", "refund-shoes",
             "refund-under-threshold"]


def flightrec(*args: str) -> Result:
    return CliRunner().invoke(main, ["eval", *args])


def run_id(result: Result) -> str:
    """The run id on the summary's first line (``run       <id> (labels)``)."""
    first = result.stdout.splitlines()[0]
    assert first.startswith("run "), result.output
    return first.split()[1]


@pytest.fixture
def tiny() -> str:
    Path("tiny.yaml").write_text(TINY, encoding="utf-8")
    return "tiny.yaml"


@pytest.fixture
def regression() -> tuple[str, Result]:
    """A baseline of the refund cases, then the no-refund-confirmation variant gated against it."""
    Path("refunds.yaml").write_text(REFUNDS, encoding="utf-8")
    base = flightrec("run", "refunds.yaml", "--trials", "2", "--seed", "1", "--label", "baseline")
    assert base.exit_code == 0, base.output
    candidate = flightrec("run", "refunds.yaml", "--trials", "2", "--seed", "2", "--set",
                          "variant=no-refund-confirmation", "--baseline", "baseline",
                          "--junit", "reports/junit.xml", "--report", "reports/eval.md")
    return run_id(base), candidate


def test_run_prints_the_summary_and_exits_0(tiny):
    result = flightrec("run", tiny, "--trials", "2", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "dataset   tiny · 3 cases × 2 trials · agent reference · defaults · seed 1" in result.stdout
    assert "passed    6/6 trials (100%) · cases: 3 pass, 0 flaky, 0 fail" in result.stdout


def test_run_json_holds_every_trial(tiny):
    result = flightrec("run", tiny, "--trials", "2", "--seed", "1", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["run"]["total_trials"] == 6 and out["comparison"] is None
    assert sorted({(r["case_id"], r["trial"]) for r in out["results"]}) == [
        (case, k) for case in ("order-status", "policy", "refund") for k in (0, 1)]
    assert all(r["session_id"] for r in out["results"])  # each trial links to its trace
    # Each trial's session is stored as the run's, not as production traffic.
    with tracer.Store(read_only=True) as store:
        marked = store.sql("SELECT session_id, origin, eval_run_id, eval_case_id FROM sessions")
    assert sorted(marked) == sorted((r["session_id"], "eval", out["run"]["run_id"], r["case_id"])
                                    for r in out["results"])


def test_a_regression_exits_1_and_fails_the_junit_gate_and_the_markdown_verdict(regression):
    base_id, result = regression
    assert result.exit_code == 1, result.output
    assert f"baseline  {base_id[:8]} (baseline): pass rate 100%" in result.stdout
    assert f"pass→fail {', '.join(REGRESSED)}" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("verdict   REGRESSION: the candidate's pass rate is 85.7 points")
    candidate_id = run_id(result)

    # JUnit, in a directory the run created: one test case per eval case, plus the gate
    suite = ET.parse("reports/junit.xml").getroot().find("testsuite")
    assert suite is not None
    assert suite.get("name") == "flightrec eval refunds"
    assert (suite.get("tests"), suite.get("failures")) == ("8", "7")
    datetime.fromisoformat(suite.get("timestamp", ""))  # CI tools read an ISO 8601 time, not epoch nanoseconds
    failed = {tc.get("name"): tc.find("failure") for tc in suite.iter("testcase")}
    assert sorted(name for name, f in failed.items() if f is not None) == sorted([*REGRESSED, "regression gate"])
    # With 2 trials no case is significant on its own (p = 1/6); the aggregate drop is made of them.
    assert failed["refund-kettle"].get("message") == ("regressed: 2/2 → 0/2 trials passed (p = 0.17 > 0.025 on its "
                                                      "own; part of the aggregate drop)")
    assert "without asking the customer to confirm first" in failed["refund-kettle"].text
    assert failed["regression gate"].get("message") == "regression against the baseline"
    assert "points lower per case" in failed["regression gate"].text

    # Markdown for the pull request: the verdict first, both runs, then the cases that got worse
    lines = Path("reports/eval.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "### ❌ flightrec eval: regression — refunds"
    assert "| run | pass rate | mean score | cost / trial | median session |" in lines
    assert any(line.startswith(f"| baseline `{base_id[:8]}` | 100% |") for line in lines)
    assert any(line.startswith(f"| candidate `{candidate_id[:8]}` | 14% |") for line in lines)
    assert any(line.startswith("| refund-kettle | 2/2 | 0/2 | worse: p = 0.17 > 0.025 on its own; part of the "
                               "aggregate drop | issue_refund was called") for line in lines)
    assert any(line.startswith("**What this run could catch:** With 2 baseline and 2 candidate trials")
               for line in lines)
    assert not any(line.startswith("| duplicate-charge") for line in lines)  # it still asks first


def test_compare_exits_1_on_a_regression_0_otherwise_and_prints_json(regression):
    base_id, candidate = regression
    candidate_id = run_id(candidate)
    result = flightrec("compare", "baseline", candidate_id)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines()[-1].startswith("verdict   REGRESSION")
    result = flightrec("compare", candidate_id, "baseline")  # the other way round: an improvement
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1].startswith("verdict   IMPROVEMENT")
    as_json = flightrec("compare", "baseline", candidate_id[:8], "--json")
    assert as_json.exit_code == 1
    out = json.loads(as_json.stdout)
    assert out["verdict"] == "regression"
    assert (out["baseline"]["run_id"], out["candidate"]["run_id"]) == (base_id, candidate_id)
    assert out["flips_to_fail"] == REGRESSED


def test_the_baseline_label_moves_only_to_a_run_that_passes_the_gate():
    # CI that rolls the baseline forward: the new run is compared with the old one, and takes the
    # label only when it does not regress, so that a regression never becomes the bar.
    Path("refunds.yaml").write_text(REFUNDS, encoding="utf-8")
    base_id = run_id(flightrec("run", "refunds.yaml", "--trials", "2", "--seed", "1", "--label", "baseline"))
    result = flightrec("run", "refunds.yaml", "--trials", "2", "--seed", "2", "--set", "variant=no-refund-confirmation",
                       "--baseline", "baseline", "--label", "baseline")
    assert result.exit_code == 1, result.output
    assert f"baseline  {base_id[:8]} (baseline): pass rate 100%" in result.stdout
    assert "verdict   REGRESSION" in result.stdout
    assert "not labelled 'baseline': the run regressed against the baseline" in result.stdout
    assert flightrec("show", "baseline").stdout.startswith(f"run       {base_id} (baseline)")
    good = flightrec("run", "refunds.yaml", "--trials", "2", "--seed", "3", "--baseline", "baseline",
                     "--label", "baseline")
    assert good.exit_code == 0, good.output
    assert flightrec("show", "baseline").stdout.startswith(f"run       {run_id(good)} (baseline)")
    with tracer.Store(read_only=True) as store:  # the regressed run never took the label, so no entry says it did
        assert [(e.action, e.target, e.via) for e in store.audit_entries()] == [
            ("label", run_id(good), "cli"), ("label", base_id, "cli")]


def test_without_a_baseline_junit_holds_each_case_to_the_datasets_pass_threshold(tiny):
    Path(tiny).write_text("pass_threshold: 0.5\n" + TINY, encoding="utf-8")
    result = flightrec("run", tiny, "--trials", "2", "--seed", "1", "--set", "variant=no-refund-confirmation",
                       "--junit", "junit.xml", "--report", "eval.md")
    assert result.exit_code == 0, result.output
    failed = {tc.get("name"): tc.find("failure") for tc in ET.parse("junit.xml").getroot().iter("testcase")}
    assert failed["refund"].get("message") == "0/2 trials passed, below the case's pass threshold of 50%"
    assert failed["order-status"] is None and "regression gate" not in failed
    assert "**Below their pass threshold:** refund 0/2 (threshold 50%)." in Path("eval.md").read_text()


def test_list_says_when_there_are_no_runs_then_lists_them(tiny):
    empty = flightrec("list")
    assert empty.exit_code == 0, empty.output
    assert empty.stdout == "No eval runs yet. Run one with `flightrec eval run DATASET`.\n"
    first = run_id(flightrec("run", tiny, "--trials", "1", "--seed", "1", "--label", "baseline"))
    second = run_id(flightrec("run", tiny, "--trials", "2", "--seed", "1", "--set", "variant=no-refund-confirmation"))
    rows = flightrec("list").stdout.splitlines()
    assert rows[0].split() == ["RUN", "LABELS", "DATASET", "CASES", "TRIALS", "PASS", "SETTINGS"]
    assert rows[1].split() == [second[:8], "tiny", "3", "2", "67%", "variant=no-refund-confirmation"]  # newest first
    assert rows[2].split() == [first[:8], "baseline", "tiny", "3", "1", "100%", "-"]


def test_show_prints_a_run_and_its_failing_cases(tiny, monkeypatch):
    candidate = run_id(flightrec("run", tiny, "--trials", "2", "--seed", "1",
                                 "--set", "variant=no-refund-confirmation"))
    result = flightrec("show", candidate[:8])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"run       {candidate}\n")
    assert "  fail  refund: 0/2 trials passed" in result.stdout
    assert "without asking the customer to confirm first" in result.stdout
    assert "open: flightrec traces show " in result.stdout
    assert "order-status" not in result.stdout  # cases that passed every trial are left out
    # Run by a path, as `make demo` runs it, the hint runs as printed.
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "bin", "flightrec")])
    assert f"open: {os.path.join('venv', 'bin', 'flightrec')} traces show " in flightrec("show", candidate).stdout
    as_json = json.loads(flightrec("show", candidate, "--json").stdout)
    assert as_json["run"]["run_id"] == candidate and len(as_json["results"]) == 6


def test_label_points_a_label_at_a_run_and_moves_it(tiny):
    first = run_id(flightrec("run", tiny, "--trials", "1", "--seed", "1"))
    second = run_id(flightrec("run", tiny, "--trials", "1", "--seed", "2"))
    result = flightrec("label", first[:8], "baseline")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"baseline → {first}\n"
    assert flightrec("label", second, "baseline").exit_code == 0
    assert flightrec("show", "baseline").stdout.startswith(f"run       {second} (baseline)")
    labelled = [row.split()[:2] for row in flightrec("list").stdout.splitlines()[1:]]
    assert labelled == [[second[:8], "baseline"], [first[:8], "tiny"]]  # moved, not copied
    with tracer.Store(read_only=True) as store:
        assert [(e.action, e.target, e.via, e.detail) for e in store.audit_entries()] == [
            ("label", second, "cli", {"label": "baseline", "moved_from": first}),
            ("label", first, "cli", {"label": "baseline", "moved_from": None})]


def stored_sessions() -> int:
    if not os.path.exists(os.environ["FLIGHTREC_DB"]):
        return 0
    with tracer.Store(read_only=True) as store:
        return len(store.list_sessions())


def test_an_unknown_baseline_fails_before_any_trial_runs(tiny):
    fresh = flightrec("run", tiny, "--baseline", "baseline")
    assert fresh.exit_code == 2
    assert fresh.stderr == ("error: no eval run or label 'baseline': there is no trace store at "
                            f"{os.environ['FLIGHTREC_DB']} yet. Store a baseline first with "
                            "`flightrec eval run tiny.yaml --label baseline`.\n")
    assert flightrec("run", tiny, "--trials", "1", "--seed", "1").exit_code == 0
    sessions = stored_sessions()
    result = flightrec("run", tiny, "--trials", "1", "--baseline", "basline")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no eval run or label 'basline' in ")
    assert "List the runs with `flightrec eval list" in result.stderr
    assert stored_sessions() == sessions  # no trial ran
    assert len(flightrec("list").stdout.splitlines()) == 2  # the header and the one earlier run


@pytest.mark.parametrize(("args", "expected"), [
    pytest.param(["--set", "model"], "--set 'model': use key=value, for example --set model=claude-sonnet-4-5.",
                 id="set without ="),
    pytest.param(["--set", "colour=blue"], "bad --set for the reference agent (colour: unknown setting). "
                                           "Settings: approval_threshold_cents,", id="unknown setting"),
    pytest.param(["--set", "max_tool_calls=lots"], "(max_tool_calls: Input should be a valid integer",
                 id="setting of the wrong type"),
    pytest.param(["--set", "sim_latency_ms=fast"], "--set sim_latency_ms=fast: use a whole number of milliseconds.",
                 id="bad latency"),
    pytest.param(["--set", "variant=no-refunds"],
                 "no reference-agent variant 'no-refunds'; the variants are: no-refund-confirmation.",
                 id="unknown variant"),
    pytest.param(["--agent", "nosuch:thing"], "--agent nosuch:thing: cannot import 'nosuch'", id="unknown agent"),
    pytest.param(["--agent", "nosuch"], "--agent nosuch: no agent of that name is registered (registered: "
                                        "reference, support)", id="unregistered agent name"),
    pytest.param(["--agent", "json:dumps"], "--agent json:dumps built a str, not an eval agent (it lacks check, "
                                            "run_trial, close)", id="not an agent factory"),
    pytest.param(["--tag", "billing"], "no case in tiny has the tag(s) billing; its tags are: orders, policy, refund.",
                 id="tag matching no case"),
    pytest.param(["--trials", "0"], "--trials and --concurrency must be at least 1.", id="zero trials"),
    pytest.param(["--alpha", "5"], "--alpha 5: give the gate's false-alarm rate, above 0 and below 0.5: 0.05 (the "
                                   "default)", id="alpha out of range"),
])
def test_bad_options_are_one_line_errors_before_any_trial(tiny, args, expected):
    result = flightrec("run", tiny, *args)
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1  # no traceback
    assert expected in result.stderr
    assert stored_sessions() == 0
    assert flightrec("list").stdout.startswith("No eval runs yet.")


def test_set_system_prompt_replaces_the_prompt(tiny):
    # the reference agent's settings list system_prompt; without the confirmation rule it refunds at once
    result = flightrec("run", tiny, "--trials", "1", "--seed", "1", "--tag", "refund",
                       "--set", "system_prompt=You are the support agent of an online shop.")
    assert result.exit_code == 0, result.output
    assert "system_prompt=You are the support agent of an online shop." in result.stdout
    assert "  fail  refund: 0/1 trials passed" in result.stdout


HUMAN = """\
name: human
cases:
""" + "".join(f"""  - id: {name}
    input: {{scenario: refund_over_threshold{f', human: {human}' if human else ''}}}
    expect: [{{type: status, equals: {status}}}, {{type: {kind}, {what}}}]
""" for name, human, status, kind, what in [
    ("nobody-yet", None, "waiting_human", "tools_forbidden", "tools: [escalate_to_human]"),
    ("approved", "approve", "ok", "final_contains", "text: approved"),
    ("rejected", "reject", "ok", "final_contains", "text: declined"),
    ("expired", "expire", "ok", "tools_required", "tools: [escalate_to_human]"),
])
"""A refund held for approval, answered each way a case can answer it, or not at all."""


def test_a_case_answers_the_approval_wait_approve_reject_or_expire():
    Path("human.yaml").write_text(HUMAN, encoding="utf-8")
    result = flightrec("run", "human.yaml", "--trials", "1", "--seed", "1")
    assert result.exit_code == 0, result.output
    assert "passed    4/4 trials (100%)" in result.stdout
