"""flightrec's detectors: loops, cost blow-ups, unreliable tools, unsafe content and falling scores, found in the
store with SQL, online as sessions end or in batch over history, each finding an alert with its
evidence, delivered to sinks (the console, a log, a JSONL file, a webhook, Slack).

A detector is a scorer of live traces, so it lives under ``evals``; it imports ``tracer`` and
nothing of the eval harness, so that ``flightrec serve`` runs it without loading ``anthropic``,
the judge or the statistics.

Quick start::

    import tracer
    from evals import detectors

    with tracer.Store() as store:
        result = detectors.detect(store, config=detectors.load_config("detect.yaml"))
    dispatcher = detectors.Dispatcher([detectors.sink_from_spec("console")])
    dispatcher.publish(result.alerts)
    dispatcher.close()
"""

from ._alerts import FAMILIES, SEVERITIES, Alert, AlertStatus, Severity
from ._config import (
    ApprovalLimits,
    ApprovalRule,
    BaselineLimits,
    Budget,
    CostLimits,
    DetectConfig,
    LoopLimits,
    ReliabilityLimits,
    SafetyLimits,
    ScoreLimits,
    StepLimits,
    ToolLimits,
    config_yaml,
)
from ._detect import DETECTORS, FAMILIES_OF, DetectResult, detect, load_config, parse_duration
from ._errors import AlertError, DeliveryError
from ._online import SERVE_INTERVAL_S, OnlineDetector, SessionWorker, serve_hook
from ._scope import Scope
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

__all__ = [
    "DETECTORS",
    "FAMILIES",
    "FAMILIES_OF",
    "SERVE_INTERVAL_S",
    "SEVERITIES",
    "Alert",
    "AlertError",
    "AlertStatus",
    "ApprovalLimits",
    "ApprovalRule",
    "BaselineLimits",
    "Budget",
    "ConsoleSink",
    "CostLimits",
    "DeliveryError",
    "DetectConfig",
    "DetectResult",
    "Dispatcher",
    "JsonlSink",
    "LoopLimits",
    "MemorySink",
    "OnlineDetector",
    "ReliabilityLimits",
    "SafetyLimits",
    "Scope",
    "SessionWorker",
    "ScoreLimits",
    "Severity",
    "Sink",
    "SinkStats",
    "StepLimits",
    "ToolLimits",
    "WebhookSink",
    "config_yaml",
    "detect",
    "load_config",
    "parse_duration",
    "parse_route",
    "serve_hook",
    "sink_from_spec",
]
