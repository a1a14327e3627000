"""flightrec's evals: run a dataset of cases against an agent K times each, score every trial
from its trace, compare with a baseline through the regression gate (a paired test over all
cases, each case's own test, a stricter rule for critical cases), and gate CI on real regressions.
The detectors are scorers of live traces: they flag loops, cost blow-ups, unreliable tools and
unsafe content in the store, online as sessions end or in batch, and deliver alerts to sinks.

Quick start::

    import evals, tracer

    run = evals.run_eval("evals/suites/support.yaml", trials=5, label="baseline")
    candidate = evals.run_eval("evals/suites/support.yaml", settings={"variant": "no-refund-confirmation"})
    with tracer.Store() as store:
        verdict = evals.compare_stored(store, "baseline", candidate.run.run_id).verdict   # "regression"
"""

from ._add_case import add_case, draft_case
from ._agents import REFERENCE, EvalAgent, EvalAgentFactory, load_agent
from ._alerts import FAMILIES, SEVERITIES, Alert, AlertStatus, Severity
from ._compare import CaseComparison, Comparison, RunSide, collapsed, compare, compare_stored, failing_turn
from ._dataset import Case, CaseInput, Dataset, Message, load_dataset
from ._detect import (
    DETECTORS,
    ApprovalRule,
    BaselineLimits,
    Budget,
    CostLimits,
    DetectConfig,
    DetectResult,
    LoopLimits,
    OnlineDetector,
    ReliabilityLimits,
    SafetyLimits,
    Scope,
    StepLimits,
    config_yaml,
    detect,
    load_config,
)
from ._errors import AgentLoadError, DatasetError, DeliveryError, EvalError, ScorerError
from ._protocol import INPUT_ATTRIBUTE, agent
from ._report import comparison_text, junit, markdown, run_text
from ._runner import DEFAULT_CONCURRENCY, DEFAULT_TRIALS, EvalRun, run_eval, trial_seed
from ._scorers import SCORER_TYPES, Score, Scorer, build_scorer, score_trial
from ._sinks import (
    ConsoleSink,
    Dispatcher,
    JsonlSink,
    MemorySink,
    Sink,
    SinkStats,
    WebhookSink,
    parse_route,
    sink_from_spec,
)
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
from ._trajectory import DecisionStep, ToolStep, Trajectory, trajectory_of

__all__ = [
    "CRITICAL_TAG",
    "DEFAULT_CONCURRENCY",
    "DEFAULT_TRIALS",
    "DETECTORS",
    "FAMILIES",
    "REFERENCE",
    "SCORER_TYPES",
    "SEVERITIES",
    "AgentLoadError",
    "INPUT_ATTRIBUTE",
    "Alert",
    "AlertStatus",
    "ApprovalRule",
    "BaselineLimits",
    "Budget",
    "Case",
    "CaseComparison",
    "CaseInput",
    "CaseTest",
    "Comparison",
    "ConsoleSink",
    "CostLimits",
    "Dataset",
    "DatasetError",
    "DecisionStep",
    "DeliveryError",
    "DetectConfig",
    "DetectResult",
    "Dispatcher",
    "EvalAgent",
    "EvalAgentFactory",
    "EvalError",
    "EvalRun",
    "GateResult",
    "JsonlSink",
    "LoopLimits",
    "MemorySink",
    "Message",
    "OnlineDetector",
    "RegressionTest",
    "ReliabilityLimits",
    "RunSide",
    "SafetyLimits",
    "Scope",
    "Score",
    "Scorer",
    "ScorerError",
    "Severity",
    "StepLimits",
    "Sink",
    "SinkStats",
    "ToolStep",
    "Trajectory",
    "WebhookSink",
    "add_case",
    "agent",
    "build_scorer",
    "case_status",
    "collapsed",
    "compare",
    "compare_stored",
    "comparison_text",
    "config_yaml",
    "detect",
    "detection_power",
    "draft_case",
    "failing_turn",
    "fisher_exact_worse",
    "gate",
    "holm_tarone",
    "junit",
    "load_agent",
    "load_config",
    "load_dataset",
    "markdown",
    "min_attainable_p",
    "paired_test",
    "parse_route",
    "run_eval",
    "run_text",
    "score_trial",
    "sink_from_spec",
    "trajectory_of",
    "trial_seed",
    "trials_needed",
]
