"""Span attribute names: the OpenTelemetry GenAI conventions plus flightrec's own.

Kept in one place so that capture, ingest and the collector can never drift apart. Where the
conventions name a thing, the name comes from the ``opentelemetry-semantic-conventions`` package.
"""

from __future__ import annotations

from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as _genai
from opentelemetry.semconv.attributes import server_attributes as _server

# GenAI semantic conventions.
OPERATION = "gen_ai.operation.name"
PROVIDER = "gen_ai.provider.name"
CONVERSATION_ID = "gen_ai.conversation.id"
AGENT_NAME = "gen_ai.agent.name"
REQUEST_MODEL = "gen_ai.request.model"
REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
REQUEST_TEMPERATURE = "gen_ai.request.temperature"
REQUEST_TOP_P = "gen_ai.request.top_p"
REQUEST_TOP_K = "gen_ai.request.top_k"
REQUEST_STOP_SEQUENCES = "gen_ai.request.stop_sequences"
RESPONSE_ID = "gen_ai.response.id"
RESPONSE_MODEL = "gen_ai.response.model"
RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
USAGE_INPUT = "gen_ai.usage.input_tokens"
USAGE_OUTPUT = "gen_ai.usage.output_tokens"
USAGE_CACHE_READ = "gen_ai.usage.cache_read.input_tokens"
USAGE_CACHE_CREATION = "gen_ai.usage.cache_creation.input_tokens"
TOOL_NAME = "gen_ai.tool.name"
TOOL_CALL_ID = "gen_ai.tool.call.id"
TOOL_TYPE = "gen_ai.tool.type"
TOOL_ARGUMENTS = "gen_ai.tool.call.arguments"
TOOL_RESULT = "gen_ai.tool.call.result"
REQUEST_STREAM = _genai.GEN_AI_REQUEST_STREAM
TTFT_S = _genai.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
"""Seconds to the first chunk of a streamed response."""
INPUT_MESSAGES = _genai.GEN_AI_INPUT_MESSAGES
OUTPUT_MESSAGES = _genai.GEN_AI_OUTPUT_MESSAGES
SYSTEM_INSTRUCTIONS = _genai.GEN_AI_SYSTEM_INSTRUCTIONS
TOOL_DEFINITIONS = _genai.GEN_AI_TOOL_DEFINITIONS
SERVER_ADDRESS = _server.SERVER_ADDRESS
SERVER_PORT = _server.SERVER_PORT
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"

# flightrec's own.
TURN_INDEX = "flightrec.turn.index"
ATTEMPT = "flightrec.attempt"
CONTENT_MODE = "flightrec.content.mode"
REQUEST_SHA256 = "flightrec.request.sha256"
REQUEST_BODY = "flightrec.request.body"
REQUEST_BETAS = "flightrec.request.betas"
"""The ``anthropic-beta`` header's values: replay sends them again so the beta features stay on."""
RESPONSE_BODY = "flightrec.response.body"
CACHE_WRITE_1H = "flightrec.usage.cache_write_1h.input_tokens"
COST_USD = "flightrec.cost.usd"
ACTION = "flightrec.decision.action"
TOOLS_AVAILABLE = "flightrec.decision.tools_available"
TOOLS_CHOSEN = "flightrec.decision.tools_chosen"
REASONING = "flightrec.decision.reasoning"
CONTEXT_PREFIX = "flightrec.decision.context."
CONTEXT_WINDOW = "flightrec.decision.context.window"
CONTEXT_UTILISATION = "flightrec.decision.context.utilisation"
SESSION_STATUS = "flightrec.session.status"
SESSION_STATUS_REASON = "flightrec.session.status_reason"
TOOL_STATUS = "flightrec.tool.status"
TOOL_IDEMPOTENCY_KEY = "flightrec.tool.idempotency_key"
TOOL_RETRIES = "flightrec.tool.retries"
TOOL_CIRCUIT_STATE = "flightrec.tool.circuit_state"
ROUTE = "flightrec.route"
"""The route (the entry point or queue) a session came in through: a dimension of costs and alerts."""
SCENARIO = "flightrec.scenario"
"""The reference agent's scenario; the route of a session that names no route (as the detectors read it)."""
TAGS = "flightrec.tags"
"""Labels an agent puts on a session (a list of strings): a dimension of costs."""
PARENT_SESSION_ID = "flightrec.parent_session_id"
"""On a session's root span: the session that started it (a sub-agent's, a handoff's), whose cost it
adds to (``sessions.parent_session_id``). Any sender may set it."""
OUTCOME_SESSION = "flightrec.outcome.session_id"
"""On a span sent after the fact by any process: the session it records the outcome of (else the span's
``gen_ai.conversation.id``). A span with ``OUTCOME_RESOLVED`` or ``OUTCOME_SCORE`` is an outcome, not part
of the session's timeline (``tracer._ingest``)."""
OUTCOME_RESOLVED = "flightrec.outcome.resolved"
"""Whether the customer's problem was solved (a boolean)."""
OUTCOME_SCORE = "flightrec.outcome.score"
"""A rating from 0 to 1 (a thumbs-up 1, a thumbs-down 0)."""
OUTCOME_NOTE = "flightrec.outcome.note"
OUTCOME_SOURCE = "flightrec.outcome.source"
"""Where the outcome came from (``thumbs``, ``ticket`` …); default ``otlp``."""
EVAL_RUN_ID = "flightrec.eval.run_id"
EVAL_CASE_ID = "flightrec.eval.case_id"
EVAL_TRIAL = "flightrec.eval.trial"
REPLAY_KIND = "flightrec.replay.kind"
"""``run`` (a replay of one decision) or ``fork`` (a session carried on from a turn); set by replay."""
REPLAY_SESSION = "flightrec.replay.session"
"""The session a replay or fork was made from; set by replay."""

# Names flightrec used before the conventions had them; ingest still reads them from older senders.
LEGACY_REQUEST_STREAM = "flightrec.request.stream"
LEGACY_TTFT_MS = "flightrec.response.time_to_first_token_ms"

# Context segments, in the order they are shown.
SEGMENTS = ("system", "tools", "history", "tool_results", "retrieved")

# Attributes that carry content: the ingest moves them out of the raw span into the
# content-addressed tables, and `content="none"` never sets them.
CONTENT_ATTRIBUTES = frozenset({REQUEST_BODY, RESPONSE_BODY, REASONING, TOOL_ARGUMENTS, TOOL_RESULT, INPUT_MESSAGES,
                                OUTPUT_MESSAGES, SYSTEM_INSTRUCTIONS, TOOL_DEFINITIONS})

# OpenInference's span kind (AGENT, CHAIN, LLM, TOOL …), which Arize Phoenix reads before anything else.
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
