"""flightrec's evals: run a dataset of cases against an agent K times each, score every trial
from its trace, compare with a baseline using a paired test, and gate CI on real regressions.

Quick start::

    import evals, tracer

    run = evals.run_eval("evals/suites/support.yaml", trials=5, label="baseline")
    candidate = evals.run_eval("evals/suites/support.yaml", settings={"variant": "no-refund-confirmation"})
    with tracer.Store() as store:
        verdict = evals.compare_stored(store, "baseline", candidate.run.run_id).verdict   # "regression"
"""

from ._add_case import add_case, draft_case
from ._agents import REFERENCE, VARIANTS, AgentFactory, EvalAgent, ReferenceEvalAgent, load_agent
from ._compare import CaseComparison, Comparison, RunSide, compare, compare_stored
from ._dataset import Case, CaseInput, Dataset, Message, load_dataset
from ._errors import AgentLoadError, DatasetError, EvalError, ScorerError
from ._report import comparison_text, junit, markdown, run_text
from ._runner import DEFAULT_CONCURRENCY, DEFAULT_TRIALS, EvalRun, run_eval, trial_seed
from ._scorers import SCORER_TYPES, Score, Scorer, build_scorer, score_trial
from ._stats import RegressionTest, case_status, paired_test
from ._trajectory import Decision, ToolStep, Trajectory, trajectory_of

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TRIALS",
    "REFERENCE",
    "SCORER_TYPES",
    "VARIANTS",
    "AgentFactory",
    "AgentLoadError",
    "Case",
    "CaseComparison",
    "CaseInput",
    "Comparison",
    "Dataset",
    "DatasetError",
    "Decision",
    "EvalAgent",
    "EvalError",
    "EvalRun",
    "Message",
    "ReferenceEvalAgent",
    "RegressionTest",
    "RunSide",
    "Score",
    "Scorer",
    "ScorerError",
    "ToolStep",
    "Trajectory",
    "add_case",
    "build_scorer",
    "case_status",
    "compare",
    "compare_stored",
    "comparison_text",
    "draft_case",
    "junit",
    "load_agent",
    "load_dataset",
    "markdown",
    "paired_test",
    "run_eval",
    "run_text",
    "score_trial",
    "trajectory_of",
    "trial_seed",
]
