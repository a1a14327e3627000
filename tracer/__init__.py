"""flightrec's tracer: capture every agent decision as OpenTelemetry spans in a DuckDB store.

Quick start::

    import anthropic, tracer

    rec = tracer.configure()                       # ./flightrec.duckdb
    client = rec.instrument(anthropic.Anthropic())

    @tracer.tool
    def get_order(order_id: str) -> dict: ...

    with rec.session(agent="support"):
        ...  # your agent loop
"""

from ._approvals import PendingApproval, pending_approvals
from ._audit import ACTOR_ENV, AUDIT_ACTIONS, AUDIT_VIAS, AuditAction, AuditVia, actor_name
from ._canonical import canonical_json, sha256_hex
from ._clock import Clock, SystemClock
from ._config import content_mode
from ._connect import ServedStore, connect
from ._decision import ToolKinds
from ._errors import (
    ConfigError,
    FlightrecError,
    NotRebuildableError,
    SchemaTooNewError,
    StoreError,
    StoreLockedError,
    StoreMemoryError,
    UnknownAlertError,
    UnknownEvalRunError,
    UnknownSessionError,
    UnstorableError,
    validation_problems,
)
from ._export import ExportStats, StoreSpanProcessor
from ._format import clip_text, format_ms, format_tokens, format_usd, format_wait
from ._ingest import Ingestor, SpanRecord
from ._lake import is_lake
from ._loops import (
    VOLATILE_PATTERNS,
    Loop,
    LoopCall,
    LoopGuard,
    LoopRules,
    call_keys,
    canonical_arguments,
    find_loops,
    normalise_outcome,
    outcome_key,
    outcome_key_sql,
)
from ._origin import ORIGINS, Origin, eval_trial
from ._presidio import presidio_redactor
from ._pricing import ModelPrice, PriceTable, Usage
from ._recorder import Recorder, __version__, configure
from ._records import (
    AgentRun,
    AlertRecord,
    AuditEntry,
    CallOutline,
    CallParts,
    EvalResultRecord,
    EvalRunRecord,
    LlmCall,
    OutcomeRecord,
    PruneResult,
    ReviewRecord,
    SessionAccount,
    SessionNode,
    SessionScore,
    SessionSummary,
    SessionTree,
    ToolCallRecord,
    Turn,
    VerifyResult,
)
from ._redact import (
    BUILTIN_REDACTORS,
    ContentMode,
    ContentPolicy,
    Redactor,
    redact_api_key,
    redact_bearer,
    redact_card,
    redact_email,
    redact_iban,
    redact_ip,
    redact_jwt,
    redact_phone,
    redact_ssn,
)
from ._retention import reference_problems
from ._session import Session, ToolCall, current_session, tool
from ._sse import sse_events
from ._store import DEFAULT_DB, QUEUED_BY, REVIEW_VERDICTS, Store, default_db_path, store_exists
from ._target import TargetError, did_you_mean, import_target

__all__ = [
    "ACTOR_ENV",
    "AUDIT_ACTIONS",
    "AUDIT_VIAS",
    "AgentRun",
    "AlertRecord",
    "AuditAction",
    "AuditEntry",
    "AuditVia",
    "BUILTIN_REDACTORS",
    "CallOutline",
    "CallParts",
    "Clock",
    "ConfigError",
    "EvalResultRecord",
    "EvalRunRecord",
    "ContentMode",
    "ContentPolicy",
    "DEFAULT_DB",
    "ExportStats",
    "FlightrecError",
    "Ingestor",
    "LlmCall",
    "OutcomeRecord",
    "Loop",
    "LoopCall",
    "LoopGuard",
    "LoopRules",
    "ModelPrice",
    "NotRebuildableError",
    "ORIGINS",
    "Origin",
    "PendingApproval",
    "PriceTable",
    "PruneResult",
    "QUEUED_BY",
    "REVIEW_VERDICTS",
    "ReviewRecord",
    "Recorder",
    "Redactor",
    "SchemaTooNewError",
    "ServedStore",
    "Session",
    "SessionAccount",
    "SessionNode",
    "SessionScore",
    "SessionSummary",
    "SessionTree",
    "SpanRecord",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoreMemoryError",
    "StoreSpanProcessor",
    "SystemClock",
    "TargetError",
    "ToolCall",
    "ToolCallRecord",
    "ToolKinds",
    "Turn",
    "UnknownAlertError",
    "UnknownEvalRunError",
    "UnknownSessionError",
    "UnstorableError",
    "Usage",
    "VOLATILE_PATTERNS",
    "VerifyResult",
    "__version__",
    "actor_name",
    "call_keys",
    "canonical_arguments",
    "canonical_json",
    "clip_text",
    "configure",
    "content_mode",
    "eval_trial",
    "connect",
    "current_session",
    "default_db_path",
    "store_exists",
    "is_lake",
    "did_you_mean",
    "find_loops",
    "format_ms",
    "format_tokens",
    "format_usd",
    "format_wait",
    "import_target",
    "normalise_outcome",
    "outcome_key",
    "outcome_key_sql",
    "pending_approvals",
    "presidio_redactor",
    "redact_api_key",
    "redact_bearer",
    "redact_card",
    "redact_email",
    "redact_iban",
    "redact_ip",
    "redact_jwt",
    "redact_phone",
    "redact_ssn",
    "reference_problems",
    "sha256_hex",
    "sse_events",
    "tool",
    "validation_problems",
]
