"""The recorder: one object that holds the tracer provider, the exporter and the capture settings."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from ._config import content_mode
from ._decision import ToolKinds
from ._errors import ConfigError
from ._export import MAX_QUEUE, ExportStats, OtlpSpanProcessor, StoreSpanProcessor, traces_url
from ._foreign import RECORDER_MARKER
from ._pricing import PriceTable
from ._redact import BUILTIN_REDACTORS, ContentMode, ContentPolicy, Redactor
from ._session import Session, SessionTracerProvider, open_session
from ._spill import spill_dir
from ._store import Store, check_outcome, default_db_path

Client = TypeVar("Client")

try:
    __version__ = version("flightrec")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0+unknown"


class _Provider(TracerProvider):
    """The recorder's tracer provider; it notes when a span processor of someone else's is added."""

    shared = False
    """Whether spans also go somewhere other than flightrec's own exporter."""

    def add_span_processor(self, span_processor: SpanProcessor) -> None:
        if not isinstance(span_processor, StoreSpanProcessor):
            self.shared = True
        super().add_span_processor(span_processor)


class Recorder:
    """Records agent sessions into a trace store.

    Args:
        db: The DuckDB file; default ``$FLIGHTREC_DB`` or ``./flightrec.duckdb``.
        content: ``full`` stores exact bodies; ``redacted`` runs the redactors over every string of
            content and free-text metadata first (the hash is still of the exact request); ``none``
            stores metadata only. Default ``$FLIGHTREC_CONTENT``, else ``content`` in
            ``flightrec.toml``, else ``full``.
        redactors: Extra redactors, run after the built-in ones (keys and tokens, JWTs, bearer
            credentials, e-mail, IBAN, US SSN, IP addresses, cards, phones); ``presidio_redactor()``
            adds Microsoft Presidio's recognisers.
        prices: A price file that extends the bundled table (default ``$FLIGHTREC_PRICES``).
        retrieval_tools: Tools whose results count as retrieved context (default: by name).
        handoff_tools: Tools whose use is a handoff (default: ``transfer_to_*``, ``escalate*``).
        service_name: The OpenTelemetry ``service.name`` of the spans.
        max_queue: Spans that may wait for the writer; more are dropped and counted.
        endpoint: An OTLP/HTTP collector (``flightrec serve``, ``http://127.0.0.1:4318``, or any
            other OpenTelemetry backend) to send spans to instead of writing a store; ``/v1/traces``
            is added unless the URL ends with it. When neither ``endpoint`` nor ``db`` is given,
            ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (used as it is) or ``$OTEL_EXPORTER_OTLP_ENDPOINT``
            (a base URL) names it. ``$FLIGHTREC_TOKEN`` is sent as its bearer token.
        otlp_bodies: Whether the exact request and response bodies (``flightrec.request.body``,
            ``flightrec.response.body``) travel to the endpoint. Each repeats the whole conversation
            so far. By default they go only to ``flightrec serve``, which needs them for replay (it
            is recognised when the exporter first sends); another backend gets the conventions'
            ``gen_ai.input.messages`` and friends instead. ``True`` or ``False`` decides for any.
        on_sessions_ended: Called on the writer's thread with the ids of the sessions whose
            session span a write just committed (``evals.OnlineDetector`` runs the detectors on
            them). It must return quickly; what it raises is logged and ignored.

    The store is opened lazily by the exporter's thread, so creating a recorder never fails
    because the store is locked; see ``stats`` for what was written, dropped and kept. Every span
    is appended to a spill beside the store (``<db>.spill/``) as it ends, so a ``kill -9`` of the
    process loses none that ended: the next open of the store for writing stores them. Call
    ``shutdown()`` (or let the interpreter exit) to flush.
    """

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        content: ContentMode | None = None,
        redactors: Iterable[Redactor] = (),
        prices: str | os.PathLike[str] | None = None,
        retrieval_tools: Iterable[str] | None = None,
        handoff_tools: Iterable[str] | None = None,
        service_name: str = "flightrec-agent",
        max_queue: int = MAX_QUEUE,
        on_sessions_ended: Callable[[list[str]], None] | None = None,
        endpoint: str | None = None,
        otlp_bodies: bool | None = None,
    ) -> None:
        self.content: ContentMode = content_mode(content)
        self.db_path = default_db_path(db)
        self.policy = ContentPolicy(self.content, (*BUILTIN_REDACTORS, *redactors))
        """What of each piece of content reaches the store or the endpoint."""
        self.prices = PriceTable.load(prices)
        self.tool_kinds = ToolKinds(
            retrieval=frozenset(retrieval_tools) if retrieval_tools is not None else None,
            handoff=frozenset(handoff_tools) if handoff_tools is not None else None,
        )
        # The marker tells ingest that this process's anthropic SDK spans duplicate flightrec's chat spans.
        self.provider = _Provider(resource=Resource.create({"service.name": service_name,
                                                                 RECORDER_MARKER: __version__}))
        # An explicit store wins over the environment's endpoint: a test or a demo that names its
        # file must not send its spans elsewhere because a shell exported OTEL_EXPORTER_OTLP_ENDPOINT.
        self.endpoint = traces_url(endpoint, use_environment=db is None)
        """The URL spans are posted to, or ``None`` when they are written to the store."""
        self.processor: StoreSpanProcessor | OtlpSpanProcessor
        if self.endpoint:
            if on_sessions_ended is not None:
                raise ConfigError("on_sessions_ended runs where the store is written: with an endpoint, that is "
                                  "`flightrec serve`, which runs the detectors itself.")
            self.processor = OtlpSpanProcessor(self.endpoint, max_queue=max_queue, bodies=otlp_bodies,
                                               policy=self.policy)
        else:
            self.processor = StoreSpanProcessor(
                lambda: Store(self.db_path), max_queue=max_queue, on_sessions_ended=on_sessions_ended,
                spill=None if self.db_path == ":memory:" else spill_dir(self.db_path),
                policy=self.policy)
        self.provider.add_span_processor(self.processor)
        self.tracer = self.provider.get_tracer("flightrec", __version__)

    @property
    def standard_content(self) -> bool:
        """Whether chat spans get the conventions' content attributes (``gen_ai.input.messages`` …).

        Only when spans leave flightrec's own store: through an endpoint, or a span processor added
        to ``provider``. The store keeps the exact bodies, so there they would be work for nothing.
        """
        return self.content != "none" and (self.endpoint is not None or self.provider.shared)

    @property
    def stats(self) -> ExportStats:
        """Spans written and dropped so far, and calls that went untraced."""
        return self.processor.stats

    def count_capture_error(self) -> None:
        self.processor.stats.capture_errors += 1

    def instrument(self, client: Client, *, native_spans: bool = False) -> Client:
        """A copy of an ``anthropic.Anthropic`` or ``AsyncAnthropic`` client that records every call.

        It appends flightrec's middleware to the client's own. The SDK's native spans are turned
        off unless ``native_spans`` is true, because flightrec's ``chat`` spans carry all they do
        and more; when on, they go to this recorder's provider, each API call's span in the turn of
        its decision (beside flightrec's chat spans of its attempts, which carry the tokens and cost).
        """
        # Imported here: the anthropic package takes a second to import, and the CLI never needs it.
        from ._capture import CaptureMiddleware

        capture = CaptureMiddleware(self, base_url=getattr(client, "base_url", None),
                                    default_headers=getattr(client, "default_headers", None))
        middleware = [*client.middleware, capture]  # type: ignore[attr-defined]
        telemetry: Any = {"tracer_provider": SessionTracerProvider(self.provider)} if native_spans else False
        return client.with_options(middleware=middleware, open_telemetry=telemetry)  # type: ignore[attr-defined]

    @contextmanager
    def session(self, agent: str, *, session_id: str | None = None, parent_session_id: str | None = None,
                links: Sequence[tuple[str, str]] = (), **attributes: Any) -> Iterator[Session]:
        """Runs the body as one agent session (an ``invoke_agent`` span).

        LLM calls through an instrumented client and tools decorated with ``@tool`` inside it
        are recorded under it, in this thread and in the asyncio tasks it starts. ``links`` are
        ``(trace_id, span_id)`` hex pairs of spans this session derives from (a replay's origin),
        recorded as OpenTelemetry span links.

        A session opened inside another session's body is a sub-agent's: the enclosing session is
        its parent (``flightrec.parent_session_id`` on its span, and a span link to the parent's
        span), its cost rolls up into the parent's (``Store.session_tree``), and it takes the
        parent's origin (an eval trial's, a replay's). ``parent_session_id`` names the parent
        instead: a session handed off from another process, or ``""`` for a session that is not
        part of the enclosing one's work.
        """
        with open_session(self, agent, session_id, attributes, links, parent_session_id=parent_session_id) as session:
            yield session

    def outcome(self, session_id: str, *, resolved: bool | None = None, score: float | None = None,
                note: str | None = None, source: str = "api") -> None:
        """Records what became of a session after the fact (the customer's problem was solved or not, a
        rating, a note), from this process or any other, as long after the session as it comes.

        It is sent as a span with ``flightrec.outcome.*`` attributes, the way any OpenTelemetry SDK can
        send one (docs/otlp-mapping.md): the store keeps it as an outcome of the session, not as a span
        of it. A session's newest outcome is its outcome; the Overview shows the share resolved.

        Raises:
            ConfigError: neither ``resolved`` nor ``score`` is given, the score is outside 0..1, or no
                session id.
        """
        from opentelemetry.context import Context

        from . import _attributes as A

        if not session_id:
            raise ConfigError("outcome() needs the id of the session it is the outcome of.")
        check_outcome(resolved, score)
        attributes: dict[str, Any] = {A.OUTCOME_SESSION: session_id, A.OUTCOME_SOURCE: source}
        if resolved is not None:
            attributes[A.OUTCOME_RESOLVED] = bool(resolved)
        if score is not None:
            attributes[A.OUTCOME_SCORE] = float(score)
        if note:
            attributes[A.OUTCOME_NOTE] = note
        # A root of its own (an empty context): inside a session it must not become a span of that session.
        self.tracer.start_span("flightrec.outcome", context=Context(), attributes=attributes).end()

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Blocks until every finished span is written or dropped; false on timeout."""
        return self.provider.force_flush(int(timeout_s * 1000))

    def shutdown(self) -> None:
        """Flushes and closes the store. Safe to call twice."""
        self.provider.shutdown()


def configure(db: str | os.PathLike[str] | None = None, **options: Any) -> Recorder:
    """The one-line global setup: a ``Recorder`` whose provider is also OpenTelemetry's global one.

    Other OpenTelemetry instrumentation in the process then records into the same store. Takes
    the same arguments as ``Recorder``. The store is flushed when the interpreter exits.
    """
    recorder = Recorder(db, **options)
    trace.set_tracer_provider(recorder.provider)
    return recorder
