"""flightrec's evals: run a dataset of cases against an agent K times each, score every trial
from its trace, compare with a baseline through the regression gate (a paired test over all
cases, each case's own test, a stricter rule for critical cases), and gate CI on real regressions.
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

from . import detectors
from ._add_case import add_case, draft_case
from ._agents import REFERENCE, AgentFactory, EvalAgent, load_agent
from ._compare import CaseComparison, Comparison, RunSide, collapsed, compare, compare_stored, failing_turn
from ._dataset import Case, CaseInput, Dataset, Message, load_dataset
from ._errors import AgentLoadError, DatasetError, EvalError, ScorerError
from ._protocol import INPUT_ATTRIBUTE, agent
from ._report import comparison_text, junit, markdown, run_text
from ._runner import DEFAULT_CONCURRENCY, DEFAULT_TRIALS, EvalRun, run_eval, trial_seed
from ._scorers import SCORER_TYPES, Score, Scorer, build_scorer, score_trial
from ._stats import (
    CRITICAL_TAG,
    CaseTest,
    GateResult,
    RegressionTest,
    case_status,
    detection_power,
    fisher_exact_worse,
    gate,
    holm_tarone,
    min_attainable_p,
    paired_test,
    trials_needed,
)
from ._trajectory import Decision, ToolStep, Trajectory, trajectory_of

__all__ = [
    "CRITICAL_TAG",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TRIALS",
    "REFERENCE",
    "SCORER_TYPES",
    "AgentFactory",
    "AgentLoadError",
    "INPUT_ATTRIBUTE",
    "Case",
    "CaseComparison",
    "CaseInput",
    "CaseTest",
    "Comparison",
    "Dataset",
    "DatasetError",
    "Decision",
    "EvalAgent",
    "EvalError",
    "EvalRun",
    "GateResult",
    "Message",
    "RegressionTest",
    "RunSide",
    "Score",
    "Scorer",
    "ScorerError",
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
    "markdown",
    "min_attainable_p",
    "paired_test",
    "run_eval",
    "run_text",
    "score_trial",
    "trajectory_of",
    "trial_seed",
    "trials_needed",
]
