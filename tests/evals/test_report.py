"""The reports agree with the gate: what JUnit fails, what Markdown and the terminal call a case."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import evals
from tests.evals.test_compare import STABLE, run


def _junit(base: dict[str, list[bool]], cand: dict[str, list[bool]]) -> tuple[evals.Comparison, ET.Element]:
    a, b = run("a", base), run("b", cand)
    c = evals.compare(*a, *b)
    suite = ET.fromstring(evals.junit(*b, c)).find("testsuite")
    assert suite is not None
    return c, suite


def _testcases(suite: ET.Element) -> dict[str, ET.Element]:
    return {tc.get("name", ""): tc for tc in suite.iter("testcase")}


def test_a_flaky_case_passes_in_junit_with_a_note_when_nothing_regressed():
    c, suite = _junit({**STABLE, "x": [True, True, False, True, True]},
                      {**STABLE, "x": [True, False, True, False, True]})
    assert c.verdict == "no regression" and c.flaky == ["x"]
    assert suite.get("failures") == "0"  # a "no regression" verdict never turns CI red
    x = _testcases(suite)["x"]
    assert x.find("failure") is None
    assert x.findtext("system-out", "").startswith("worse: 4/5 → 3/5 trials passed (p = 0.5 > 0.025: within noise); "
                                                   "not a regression")
    gate = _testcases(suite)["regression gate"]
    assert gate.find("failure") is None and "one case's own test catches" in gate.findtext("system-out", "")


def test_a_case_that_regressed_fails_in_junit_and_is_listed_as_a_regression_not_flaky():
    c, suite = _junit({**STABLE, "x": [True, True, False, True, True], "y": [True, False, True, True, True]},
                      {**STABLE, "x": [False] * 5, "y": [True, True, False, True, True]})
    assert c.verdict == "regression" and c.regressions == ["x"] and c.flaky == ["y"]
    cases = _testcases(suite)
    assert suite.get("failures") == "2"  # x and the gate; y is flaky and passes
    assert cases["x"].find("failure").get("message") == (  # type: ignore[union-attr]
        "regressed: 4/5 → 0/5 trials passed (p = 0.024 ≤ 0.025: a significant drop on its own)")
    assert cases["y"].find("failure") is None
    assert cases["regression gate"].find("failure") is not None

    text = evals.comparison_text(c)
    assert "regressed x\n" in text and "flaky     y\n" in text
    assert "  regression x: 4/5 → 0/5 (p = 0.024 ≤ 0.025: a significant drop on its own)" in text
    assert "gate      aggregate sign-flip p = 0.5000 vs 0.025 (ok) · per case (Fisher exact, Holm-Tarone from " \
           "0.025, first level 0.025) 1 regressed · false-alarm budget 0.05 in all" in text
    md = evals.markdown(*run("b", {**STABLE, "x": [False] * 5, "y": [True, True, False, True, True]}), c)
    assert "**Regressed:** x." in md and "**Flaky** (mixed outcomes, no regression; they pass): y." in md
    assert "| x | 4/5 | 0/5 | regression: p = 0.024 ≤ 0.025: a significant drop on its own |" in md


def test_without_a_baseline_junit_fails_cases_below_their_threshold_and_markdown_states_the_power():
    b = run("b", {"ok": [True] * 5, "flaky": [True, False, True, True, True]})
    suite = ET.fromstring(evals.junit(*b, None)).find("testsuite")
    assert suite is not None
    cases = _testcases(suite)
    assert cases["flaky"].find("failure") is not None and cases["ok"].find("failure") is None
    assert "regression gate" not in cases
    md = evals.markdown(*b, None)
    assert ("**What a comparison at this trial count could catch:** With 5 baseline and 5 candidate trials per case "
            "(level 0.025), one case's own test catches a case falling 100% → 0% (100% of the time); it does not "
            "reliably catch 100% → 40% (34% of the time), 90% → 60% (5% of the time).") in md


def test_without_a_baseline_a_case_at_its_pass_threshold_passes_with_a_note():
    b = run("b", {"four": [True, True, False, True, True], "three": [True, False, True, False, True]})
    suite = ET.fromstring(evals.junit(*b, None, thresholds={"four": 0.8, "three": 0.8})).find("testsuite")
    assert suite is not None
    cases = _testcases(suite)
    assert cases["four"].find("failure") is None
    assert cases["four"].findtext("system-out", "").startswith(
        "flaky: 4/5 trials passed, at or above the case's pass threshold of 80%")
    assert cases["three"].find("failure").get("message") == (  # type: ignore[union-attr]
        "3/5 trials passed, below the case's pass threshold of 80%")
    md = evals.markdown(*b, None, thresholds={"four": 0.8, "three": 0.8})
    assert "**Below their pass threshold:** three 3/5 (threshold 80%)." in md
