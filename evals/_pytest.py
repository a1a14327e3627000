"""The pytest plugin: run an eval suite as a test, for teams whose CI is pytest.

Installed with flightrec (entry point ``pytest11``), it gives every test the ``flightrec_eval``
fixture::

    def test_no_regression(flightrec_eval):
        gate = flightrec_eval("evals/suites/support.yaml", baseline="baseline")
        gate.assert_no_regression()      # fails with the comparison: flips, reasons, sessions

The run is stored like ``flightrec eval run``'s, in ``--flightrec-db`` (default: ``$FLIGHTREC_DB``
or ``./flightrec.duckdb``), so a failure opens in ``flightrec traces show`` and ``replay``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

import tracer

from ._compare import Comparison, compare_stored
from ._report import comparison_text, run_text
from ._runner import DEFAULT_CONCURRENCY, DEFAULT_TRIALS, EvalRun, run_eval


class Gate:
    """One eval run, and its comparison with the baseline when one was named."""

    def __init__(self, run: EvalRun, comparison: Comparison | None) -> None:
        self.run = run
        self.comparison = comparison

    def assert_no_regression(self) -> None:
        """Fails the test when the run regresses against the baseline (the CLI's exit 1)."""
        if self.comparison is None:
            raise AssertionError("no baseline to compare with: pass baseline=LABEL|RUN_ID to flightrec_eval")
        if self.comparison.verdict == "regression":
            pytest.fail(comparison_text(self.comparison), pytrace=False)

    def assert_pass_rate(self, at_least: float) -> None:
        """Fails the test when fewer than ``at_least`` (0..1) of the trials passed."""
        r = self.run.run
        if r.passed_trials < at_least * r.total_trials:
            pytest.fail(f"{r.passed_trials}/{r.total_trials} trials passed, below {at_least:.0%}\n"
                        f"{run_text(r, self.run.results)}", pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--flightrec-db", metavar="PATH", default=None,
                     help="flightrec_eval: the store runs and traces go to "
                          "(default $FLIGHTREC_DB or ./flightrec.duckdb)")


@pytest.fixture
def flightrec_eval(request: pytest.FixtureRequest) -> Callable[..., Gate]:
    """Runs a dataset; returns a ``Gate`` to assert on. Keyword arguments are ``run_eval``'s."""
    db = request.config.getoption("--flightrec-db") or os.environ.get("FLIGHTREC_DB")

    def run(dataset: str | os.PathLike[str], *, baseline: str | None = None, agent: str | None = None,
            settings: Mapping[str, str] | None = None, trials: int = DEFAULT_TRIALS,
            concurrency: int = DEFAULT_CONCURRENCY, tags: Sequence[str] = (), **kwargs: Any) -> Gate:
        result = run_eval(dataset, agent=agent, settings=settings, trials=trials, concurrency=concurrency, tags=tags,
                          db=db, **kwargs)
        comparison = None
        if baseline is not None:
            with tracer.Store(db, read_only=True) as store:
                comparison = compare_stored(store, baseline, result.run.run_id)
        return Gate(result, comparison)

    return run
