"""The pytest plugin (entry point ``pytest11``): a team's own test file, run by pytest, with the
``flightrec_eval`` fixture and its ``--flightrec-db`` option."""

from __future__ import annotations

import pytest

import tracer

SUITE = """\
name: plugin
cases:
  - id: order-status
    tags: [plugin]
    input: {scenario: order_status}
    expect:
      - {type: status, equals: ok}
  - id: never
    tags: [impossible]
    input: {scenario: order_status}
    expect:
      - {type: status, equals: "guard:loop"}
"""
"""A case the reference agent passes (tagged ``plugin``), and one it cannot (``impossible``)."""

TEAM_TESTS = """\
def test_a_baseline(flightrec_eval):
    flightrec_eval("suite.yaml", trials=1, seed=1, label="baseline", tags=["plugin"]).assert_pass_rate(1.0)


def test_the_same_agent_does_not_regress(flightrec_eval):
    flightrec_eval("suite.yaml", trials=1, seed=2, baseline="baseline", tags=["plugin"]).assert_no_regression()


def test_a_case_that_fails(flightrec_eval):
    flightrec_eval("suite.yaml", trials=1, tags=["impossible"]).assert_pass_rate(0.5)


def test_no_baseline_to_compare_with(flightrec_eval):
    flightrec_eval("suite.yaml", trials=1, tags=["plugin"]).assert_no_regression()
"""


@pytest.fixture
def team(pytester: pytest.Pytester) -> pytest.Pytester:
    """A team's project: the suite and its test file."""
    pytester.makefile(".yaml", suite=SUITE)
    pytester.makepyfile(test_team=TEAM_TESTS)
    return pytester


def test_the_fixture_runs_suites_and_gates_them_in_the_named_store(team):
    db = team.path / "runs.duckdb"
    result = team.runpytest(f"--flightrec-db={db}", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines([
        "*test_a_case_that_fails*",
        "*0/1 trials passed, below 50%*",
        "*test_no_baseline_to_compare_with*",
        "*no baseline to compare with: pass baseline=LABEL|RUN_ID to flightrec_eval*",
    ])
    with tracer.Store(str(db), read_only=True) as store:
        assert store.sql("SELECT count(*) FROM eval_runs") == [(4,)]


def test_the_option_is_listed_in_pytest_help(pytester):
    pytester.runpytest("--help").stdout.fnmatch_lines(["*--flightrec-db=PATH*flightrec_eval: the store*"])
