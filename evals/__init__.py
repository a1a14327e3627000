"""flightrec's evals: run a dataset of cases against an agent K times each, score every trial
from its trace, compare with a baseline through the regression gate (a paired test over all
cases, each case's own test, a stricter rule for critical cases), and gate CI on real regressions.
After deploy, a scoring policy samples production sessions as they end and scores them without a
dataset (``OnlineScorer``), feeding score trends, the review queue and the ``score.drop`` alert.
The detectors are scorers of live traces: they flag loops, cost blow-ups, unreliable tools and
unsafe content in the store, online as sessions end or in batch, and deliver alerts to sinks
(``evals.detectors``).

Quick start::

    import evals, tracer

    run = evals.run_eval("evals/suites/support.yaml", trials=5, label="baseline")
    candidate = evals.run_eval("evals/suites/support.yaml", settings={"variant": "no-refund-confirmation"})
    with tracer.Store() as store:
        verdict = evals.compare_stored(store, "baseline", candidate.run.run_id).verdict   # "regression"
"""

import importlib
from typing import Any

from . import detectors

# Where each name of the harness lives. A name is imported on first use, not with the package:
# ``flightrec serve`` imports ``evals.detectors``, and so this module, and must not pay for the
# harness (anthropic, the judge, numpy and the statistics) to run the detectors' SQL.
_HOMES: dict[str, tuple[str, ...]] = {
    "_add_case": ("add_case", "draft_case"),
    "_agents": ("REFERENCE", "EvalAgent", "EvalAgentFactory", "load_agent"),
    "_compare": ("CaseComparison", "Comparison", "RunSide", "collapsed", "compare", "compare_stored", "failing_turn"),
    "_dataset": ("Case", "CaseInput", "Dataset", "Message", "load_dataset"),
    "_errors": ("AgentLoadError", "DatasetError", "EvalError", "ScorerError"),
    "_online": ("POLICY_FILE", "OnlineScorer", "ReviewPolicy", "RouteRule", "ScoringPolicy", "load_scoring_policy",
                "sampled"),
    "_production": ("MIN_ROUTE_SESSIONS", "SuiteVsProduction", "suite_vs_production"),
    "_protocol": ("INPUT_ATTRIBUTE", "agent"),
    "_report": ("comparison_text", "junit", "markdown", "run_text"),
    "_runner": ("DEFAULT_CONCURRENCY", "DEFAULT_TRIALS", "EvalRun", "run_eval", "trial_seed"),
    "_scorers": ("SCORER_TYPES", "Score", "Scorer", "build_scorer", "score_trial"),
    "_stats": (
        "CRITICAL_TAG", "CaseTest", "GateResult", "RegressionTest", "case_status", "detection_power",
        "fisher_exact_worse", "gate", "holm_tarone", "min_attainable_p", "paired_test", "trials_needed",
    ),
    "_trajectory": ("DecisionStep", "ToolStep", "Trajectory", "trajectory_of"),
}
_HOME = {name: module for module, names in _HOMES.items() for name in names}


__all__ = [
    "CRITICAL_TAG",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TRIALS",
    "REFERENCE",
    "SCORER_TYPES",
    "AgentLoadError",
    "INPUT_ATTRIBUTE",
    "MIN_ROUTE_SESSIONS",
    "OnlineScorer",
    "POLICY_FILE",
    "ReviewPolicy",
    "RouteRule",
    "ScoringPolicy",
    "Case",
    "CaseComparison",
    "CaseInput",
    "CaseTest",
    "Comparison",
    "Dataset",
    "DatasetError",
    "DecisionStep",
    "EvalAgent",
    "EvalAgentFactory",
    "EvalError",
    "EvalRun",
    "GateResult",
    "Message",
    "RegressionTest",
    "RunSide",
    "Score",
    "Scorer",
    "ScorerError",
    "SuiteVsProduction",
    "ToolStep",
    "Trajectory",
    "add_case",
    "agent",
    "build_scorer",
    "case_status",
    "collapsed",
    "compare",
    "compare_stored",
    "comparison_text",
    "detection_power",
    "detectors",
    "draft_case",
    "failing_turn",
    "fisher_exact_worse",
    "gate",
    "holm_tarone",
    "junit",
    "load_agent",
    "load_dataset",
    "load_scoring_policy",
    "markdown",
    "min_attainable_p",
    "paired_test",
    "run_eval",
    "run_text",
    "sampled",
    "score_trial",
    "suite_vs_production",
    "trajectory_of",
    "trial_seed",
    "trials_needed",
]


def __getattr__(name: str) -> Any:
    module = _HOME.get(name)
    if module is None:
        raise AttributeError(f"module 'evals' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"evals.{module}"), name)
    globals()[name] = value  # the next lookup finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
