"""Span attribute names: the OpenTelemetry GenAI conventions (v1.41) plus flightrec's own.

Kept in one place so that capture, ingest and the collector can never drift apart.
"""

from __future__ import annotations

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
ERROR_TYPE = "error.type"
HTTP_STATUS = "http.response.status_code"

# flightrec's own.
TURN_INDEX = "flightrec.turn.index"
ATTEMPT = "flightrec.attempt"
CONTENT_MODE = "flightrec.content.mode"
REQUEST_SHA256 = "flightrec.request.sha256"
REQUEST_BODY = "flightrec.request.body"
REQUEST_STREAM = "flightrec.request.stream"
RESPONSE_BODY = "flightrec.response.body"
TTFT_MS = "flightrec.response.time_to_first_token_ms"
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

# Context segments, in the order they are shown.
SEGMENTS = ("system", "tools", "history", "tool_results", "retrieved")

# Attributes that carry content: the ingest moves them out of the raw span into the
# content-addressed tables, and `content="none"` never sets them.
CONTENT_ATTRIBUTES = frozenset({REQUEST_BODY, RESPONSE_BODY, REASONING, TOOL_ARGUMENTS, TOOL_RESULT})
