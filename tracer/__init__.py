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

from ._canonical import canonical_json, sha256_hex
from ._connect import ServedStore, connect
from ._decision import ToolKinds
from ._errors import (
    ConfigError,
    FlightrecError,
    NotRebuildableError,
    SchemaTooNewError,
    StoreError,
    StoreLockedError,
    UnknownAlertError,
    UnknownEvalRunError,
    UnknownSessionError,
    UnstorableError,
)
from ._export import ExportStats, StoreSpanProcessor
from ._ingest import Ingestor, SpanRecord
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
from ._pricing import ModelPrice, PriceTable, Usage
from ._recorder import ContentMode, Recorder, __version__, configure
from ._records import (
    AgentRun,
    AlertRecord,
    CallOutline,
    CallParts,
    EvalResultRecord,
    EvalRunRecord,
    LlmCall,
    PruneResult,
    SessionAccount,
    SessionSummary,
    ToolCallRecord,
    Turn,
    VerifyResult,
)
from ._redact import BUILTIN_REDACTORS, Redactor, redact_api_key, redact_card, redact_email, redact_phone
from ._session import Session, ToolCall, current_session, tool
from ._sse import sse_events
from ._store import DEFAULT_DB, Store, default_db_path

__all__ = [
    "AgentRun",
    "AlertRecord",
    "BUILTIN_REDACTORS",
    "CallOutline",
    "CallParts",
    "ConfigError",
    "EvalResultRecord",
    "EvalRunRecord",
    "ContentMode",
    "DEFAULT_DB",
    "ExportStats",
    "FlightrecError",
    "Ingestor",
    "LlmCall",
    "Loop",
    "LoopCall",
    "LoopGuard",
    "LoopRules",
    "ModelPrice",
    "NotRebuildableError",
    "PriceTable",
    "PruneResult",
    "Recorder",
    "Redactor",
    "SchemaTooNewError",
    "ServedStore",
    "Session",
    "SessionAccount",
    "SessionSummary",
    "SpanRecord",
    "Store",
    "StoreError",
    "StoreLockedError",
    "StoreSpanProcessor",
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
    "call_keys",
    "canonical_arguments",
    "canonical_json",
    "configure",
    "connect",
    "current_session",
    "default_db_path",
    "find_loops",
    "normalise_outcome",
    "outcome_key",
    "outcome_key_sql",
    "redact_api_key",
    "redact_card",
    "redact_email",
    "redact_phone",
    "sha256_hex",
    "sse_events",
    "tool",
]
