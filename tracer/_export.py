"""The in-process exporter: a span processor that writes finished spans into the store.

The agent's thread converts each ended span to a ``SpanRecord``, appends it to the spill beside
the store (``_spill.py``: from then on a ``kill -9`` of the process cannot lose it) and puts it on
a bounded queue; a worker thread builds and commits batches. When the queue is full the span is
dropped and counted, never waited for. When the store cannot be opened (locked by another process,
unwritable path) spans wait in the queue while the worker retries; whatever is still queued at
shutdown stays in the spill, and the next open of the store for writing stores it. Nothing here
raises into the agent.
"""

from __future__ import annotations

import collections
import logging
import os
import queue
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from . import _attributes as A
from ._errors import ConfigError, FlightrecError
from ._ingest import Batch, Ingestor, SpanRecord, from_readable
from ._redact import ContentPolicy
from ._spill import Segment, Spill
from ._store import Store
from ._validate import check, describe

log = logging.getLogger("flightrec")

MAX_QUEUE = 50_000
_MAX_BATCH = 16_384
# A DuckDB transaction has a fixed cost of several milliseconds, so spans are gathered for a
# moment before they are written; a flush or shutdown cuts the wait short.
_BATCH_WINDOW_S = 0.25
_POLL_S = 0.5
# The worker converts spans in slices and lets the agent's thread take the GIL in between, so
# that the agent never waits behind a whole batch.
_SLICE = 16
_REOPEN_INTERVAL_S = 1.0
_SHUTDOWN_TIMEOUT_S = 30.0
_WAKE: Any = object()


@dataclass
class ExportStats:
    """What the exporter has done so far. Read it to see whether tracing is keeping up."""

    written: int = 0
    """Spans committed to the store."""
    dropped: int = 0
    """Spans lost, for the reasons in ``drop_reasons``."""
    drop_reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    """Dropped span counts by reason."""
    capture_errors: int = 0
    """LLM calls that went on untraced because capture failed."""
    kept: int = 0
    """Spans this process did not store (the store was locked, a write failed) but kept in the spill
    beside the store: the next process that opens the store for writing stores them."""


class StoreSpanProcessor(SpanProcessor):
    """Writes spans to a ``Store`` from a background thread. Never blocks, never raises.

    Args:
        open_store: Makes the store; called on the worker thread, retried while it fails.
        max_queue: Spans that may wait; more are dropped and counted.
        spill: The spill directory of the store (``<db>.spill``), or ``None`` for no spill (an
            in-memory store). Each span is appended to it on the agent's thread before it is queued.
        policy: The content policy every span passes before it is spilled or stored.
    """

    def __init__(self, open_store: Callable[[], Store], *, max_queue: int = MAX_QUEUE,
                 max_batch: int = _MAX_BATCH, on_sessions_ended: Callable[[list[str]], None] | None = None,
                 spill: str | os.PathLike[str] | None = None, policy: ContentPolicy | None = None) -> None:
        self._open_store = open_store
        self._policy = policy or ContentPolicy()
        self._on_sessions_ended = on_sessions_ended
        self._spill = Spill(Path(spill)) if spill is not None else None
        self._queue: queue.Queue[tuple[SpanRecord, Segment | None]] = queue.Queue(max_queue)
        self._max_batch = max_batch
        self._store: Store | None = None
        self._threads_before: int | None = None  # DuckDB's thread limit before the store's was set
        self._store_error: str | None = None
        self._ingestor = Ingestor()
        self.stats = ExportStats()
        self._cond = threading.Condition()
        self._enqueued = 0
        self._settled = 0
        self._stopping = False
        self._hurry = threading.Event()
        self._worker = threading.Thread(target=self._run, name="flightrec-exporter", daemon=True)
        self._worker.start()

    # -- agent side --------------------------------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        try:
            if self._stopping:
                self._drop(1, "span ended after shutdown")
                return
            record = from_readable(self._policy.span(span))
            spill = self._spill
            if spill is None:
                self._queue.put_nowait((record, None))
            else:
                with spill.lock:  # the span is in the spill before the writer can take it
                    segment = spill.append(record)
                    try:
                        self._queue.put_nowait((record, segment))
                    except queue.Full:
                        if segment is not None:
                            spill.undo(segment)  # not queued, not kept: the queue bounds the spill
                        raise
            with self._cond:
                self._enqueued += 1
        except queue.Full:
            self._drop(1, "queue full")
        except Exception:  # never into the agent
            self._drop(1, "exporter error")

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Waits until every span queued so far is written or dropped."""
        deadline = time.monotonic() + timeout_millis / 1000
        self._hurry.set()
        self._wake()
        with self._cond:
            target = self._enqueued
            self._cond.notify_all()
            while self._settled < target:
                left = deadline - time.monotonic()
                # With the store down nothing can be written: waiting would only stall the agent.
                if left <= 0 or not self._worker.is_alive() or (self._store is None and self._store_error):
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def shutdown(self) -> None:
        if self._stopping:
            return
        self.force_flush(int(_SHUTDOWN_TIMEOUT_S * 1000))
        self._stopping = True
        self._hurry.set()
        self._wake()
        self._worker.join(_SHUTDOWN_TIMEOUT_S)
        # Whatever the worker could not write (store never opened) stays in the spill, or is lost.
        self._settle_unwritten([item for item in list(self._queue.queue) if item is not _WAKE],
                               self._store_error or "not written before shutdown")
        if self._store is not None:
            try:
                if self._threads_before is not None:
                    self._store.limit_threads(self._threads_before)
                self._store.close()
            except FlightrecError:
                pass
        if self._spill is not None:
            self._spill.close()
        if self.stats.dropped:
            reasons = ", ".join(f"{n} {why}" for why, n in self.stats.drop_reasons.most_common())
            log.warning("flightrec: %d span(s) were dropped and not stored (%s).", self.stats.dropped, reasons)
        if self.stats.kept and self._spill is not None:
            log.warning("flightrec: %d span(s) were not stored (%s); they are kept in %s, and the next process "
                        "that opens the store for writing stores them.", self.stats.kept,
                        self._store_error or "a write failed", self._spill.directory)

    # -- worker side -------------------------------------------------------------------------

    def _wake(self) -> None:
        """Lets the worker stop waiting for more spans."""
        try:
            self._queue.put_nowait(_WAKE)
        except queue.Full:
            pass  # a full queue wakes it anyway

    def _drop(self, n: int, reason: str) -> None:
        if not n:
            return
        with self._cond:
            self.stats.dropped += n
            self.stats.drop_reasons[reason] += n

    def _settle_unwritten(self, items: list[tuple[SpanRecord, Segment | None]], reason: str) -> None:
        """Counts spans this process will not store: kept when they are in the spill, else dropped."""
        kept = sum(1 for _, segment in items if segment is not None)
        with self._cond:
            self.stats.kept += kept
        self._drop(len(items) - kept, reason)

    def _settle(self, n: int) -> None:
        with self._cond:
            self._settled += n
            self._cond.notify_all()

    def _ensure_store(self) -> Store | None:
        if self._store is not None:
            return self._store
        try:
            self._store = self._open_store()
            # The agent's process writes a few spans a commit: for statements that small a second DuckDB
            # thread costs more to schedule than it saves, and takes a core from the agent (RESULTS §48:
            # an eval run's CPU −23%). Set back on shutdown, for the process's other handles on the file.
            try:
                self._threads_before = self._store.limit_threads(1)
            except FlightrecError:  # only a saving: the store is open, and writes on DuckDB's own threads
                pass
            if self._store_error:
                log.warning("flightrec: the trace store is available again; writing resumes.")
            self._store_error = None
        except FlightrecError as exc:
            if self._store_error is None:
                log.warning("flightrec: cannot write traces: %s Spans wait until it can.", exc)
            self._store_error = f"store unavailable: {exc}"
        except Exception as exc:  # an unexpected failure must not kill the worker
            self._store_error = f"store unavailable: {exc!r}"
            log.warning("flightrec: opening the trace store failed", exc_info=True)
        return self._store

    def _run(self) -> None:
        while True:
            if self._ensure_store() is None:
                if self._stopping:
                    return
                # Spans stay queued while the store is unavailable; a full queue drops new ones.
                with self._cond:
                    self._cond.notify_all()  # wake flushes, which give up while the store is down
                    self._cond.wait(_REOPEN_INTERVAL_S)
                continue
            spans = self._take()
            if spans:
                self._write(spans)
                self._settle(len(spans))
            elif self._stopping:
                return

    def _take(self) -> list[tuple[SpanRecord, Segment | None]]:
        """The next batch: what arrives within the batch window after the first span."""
        try:
            first = self._queue.get(timeout=_POLL_S)
        except queue.Empty:
            return []
        spans = [first]
        deadline = time.monotonic() + _BATCH_WINDOW_S
        while len(spans) < self._max_batch:
            left = deadline - time.monotonic()
            try:
                if self._hurry.is_set() or left <= 0:
                    spans.append(self._queue.get_nowait())
                else:
                    spans.append(self._queue.get(timeout=left))
            except queue.Empty:
                break
        if self._queue.empty():
            self._hurry.clear()
        return [s for s in spans if s is not _WAKE]

    def _write(self, spans: list[tuple[SpanRecord, Segment | None]]) -> None:
        assert self._store is not None
        batch = None
        rejected: set[int] = set()  # ids of the items dropped by the check: settled, not unwritten
        try:
            batch = Batch()
            notes: collections.Counter[str] = collections.Counter()
            for i in range(0, len(spans), _SLICE):
                records = []
                for item in spans[i:i + _SLICE]:
                    reason = check(item[0], notes, from_sdk=True)
                    if reason is None:
                        records.append(item[0])
                    else:  # never storable: dropped and counted now, so that the rest of the batch is stored
                        self._drop(1, reason)
                        rejected.add(id(item))
                self._ingestor.build(records, batch)
                time.sleep(0)  # hand the GIL to the agent if it is waiting
            if notes:
                log.warning("flightrec: %s", describe(collections.Counter(), notes))
            self._store.write(batch)
            with self._cond:
                self.stats.written += len(spans) - len(rejected)
            if self._spill is not None:  # the rejected too: recovery could never store them either
                self._spill.release(collections.Counter(segment for _, segment in spans if segment is not None))
            ended = [d.session_id for d in batch.sessions.values() if d.ended]
            if ended and self._on_sessions_ended is not None:
                try:
                    self._on_sessions_ended(ended)
                except Exception:  # a hook's failure is the hook's, never the export's
                    log.warning("flightrec: the sessions-ended hook failed", exc_info=True)
        except FlightrecError as exc:
            log.warning("flightrec: %s", exc)
            self._settle_unwritten([item for item in spans if id(item) not in rejected], "write failed")
        except Exception:
            log.warning("flightrec: exporting %d spans failed", len(spans), exc_info=True)
            self._settle_unwritten([item for item in spans if id(item) not in rejected], "exporter error")
        else:
            return
        # The failed batch was not stored: forget its content (a later call resends it) and the
        # sessions it would have joined.
        if batch is not None:
            self._ingestor.rollback(batch)


_TRACES_PATH = "/v1/traces"
_ANTHROPIC_SCOPE = "com.anthropic.sdk.python"
# What our own collector answers on GET /health (its Server header, and its text behind a proxy).
_COLLECTOR_MARK = "flightrec"
_PROBE_TIMEOUT_S = 2.0
_BODY_ATTRIBUTES = (A.REQUEST_BODY, A.RESPONSE_BODY)
_STANDARD_CONTENT = (A.INPUT_MESSAGES, A.OUTPUT_MESSAGES, A.SYSTEM_INSTRUCTIONS, A.TOOL_DEFINITIONS)
_USAGE_PREFIX = "gen_ai.usage."


def _checked_url(url: str, where: str) -> str:
    parsed = urllib.parse.urlsplit(url.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ConfigError(f"{where} {url!r} is not an http(s) URL: give the OTLP/HTTP collector's address, "
                          "like http://127.0.0.1:4318.")
    return url.strip()


def traces_url(endpoint: str | None = None, *, use_environment: bool = True) -> str | None:
    """The URL that spans are posted to, or ``None`` when no collector is named.

    An ``endpoint`` given in code is a collector's base address, and ``/v1/traces`` is added
    unless it already ends so. Otherwise, as the OpenTelemetry specification says,
    ``$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is used as it is, and ``$OTEL_EXPORTER_OTLP_ENDPOINT`` is
    a base that gets ``/v1/traces``. Raises ``ConfigError`` for a value that is not an http(s) URL.
    """
    if endpoint:
        url = _checked_url(endpoint, "endpoint")
        return url if url.rstrip("/").endswith(_TRACES_PATH) else url.rstrip("/") + _TRACES_PATH
    if not use_environment:
        return None
    signal = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    if signal:
        return _checked_url(signal, "$OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    base = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if base:
        return _checked_url(base, "$OTEL_EXPORTER_OTLP_ENDPOINT").rstrip("/") + _TRACES_PATH
    return None


def is_flightrec_collector(url: str) -> bool | None:
    """Whether the collector behind a traces URL is ``flightrec serve``; ``None`` when it did not answer.

    Blocks for up to two seconds: it runs on the exporter's thread, never on the agent's.
    """
    base = url.rstrip("/")
    base = base[: -len(_TRACES_PATH)] if base.endswith(_TRACES_PATH) else base
    try:
        with urllib.request.urlopen(f"{base}/health", timeout=_PROBE_TIMEOUT_S) as response:
            server, text = response.headers.get("Server", ""), response.read(200)
    except urllib.error.HTTPError as exc:  # an answer all the same: another backend
        server, text = exc.headers.get("Server", "") if exc.headers else "", b""
    except (OSError, ValueError):
        return None
    return server.startswith(_COLLECTOR_MARK) or text.startswith(_COLLECTOR_MARK.encode())


class OtlpSpanProcessor(BatchSpanProcessor):
    """Sends spans to an OTLP/HTTP collector with the standard exporter, counting what landed.

    The collector commits before it answers, so ``written`` counts committed spans; a batch the
    exporter gives up on (after its retries) is counted as dropped.

    Args:
        url: The traces URL (see ``traces_url``).
        bodies: Whether the exact request and response bodies travel. ``None`` sends them only to
            ``flightrec serve`` (asked once, on the exporter's thread), which needs them for
            replay; another backend reads the conventions' content attributes instead.
        policy: The content policy every span passes before it is sent.
    """

    def __init__(self, url: str, *, max_queue: int = MAX_QUEUE, bodies: bool | None = None,
                 policy: ContentPolicy | None = None) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        token = os.environ.get("FLIGHTREC_TOKEN")
        self.stats = ExportStats()
        self.outbound = _Outbound(OTLPSpanExporter(
            endpoint=url, headers={"Authorization": f"Bearer {token}"} if token else None), url, bodies,
            policy or ContentPolicy())
        super().__init__(_Counting(self.outbound, self.stats), max_queue_size=max_queue)


class _Outbound(SpanExporter):
    """Shapes spans for where they go.

    To ``flightrec serve``: as they are, less the conventions' content attributes (the exact
    bodies carry the same, and the collector keeps only those). To another backend: without the
    exact bodies unless asked (every call repeats the whole conversation in them), and the anthropic
    SDK's own chat spans, which duplicate flightrec's, lose their token counts and are marked as
    OpenInference ``CHAIN`` spans, so that no backend counts a call's tokens and cost twice.
    """

    def __init__(self, inner: SpanExporter, url: str, bodies: bool | None, policy: ContentPolicy) -> None:
        self._inner = inner
        self._policy = policy
        self._url = url
        self._bodies = bodies
        self.flightrec: bool | None = None
        """Whether the endpoint is ``flightrec serve``, once it has answered."""

    def _destination(self) -> bool | None:
        if self.flightrec is None:
            self.flightrec = is_flightrec_collector(self._url)
            if self.flightrec is not None:
                log.info("flightrec: %s is %s", self._url, "flightrec serve" if self.flightrec else
                         "another OpenTelemetry backend: spans carry the GenAI content attributes"
                         + ("" if self._bodies else ", not the exact bodies (otlp_bodies=True sends them)"))
        return self.flightrec

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            spans = [self._policy.span(s) for s in spans]
        except Exception:  # not sent as they are: that would leak what the policy keeps in
            log.warning("flightrec: applying the content policy failed; the spans are dropped", exc_info=True)
            return SpanExportResult.FAILURE
        try:
            flightrec = self._destination()
            # Not known yet (no answer): everything goes, which is right for either kind of backend.
            bodies = self._bodies if self._bodies is not None else flightrec is not False
            spans = [_shaped(s, bodies=bodies, flightrec=flightrec) for s in spans]
        except Exception:  # shaping must never cost the spans
            log.warning("flightrec: shaping spans for %s failed; they are sent as they are", self._url,
                        exc_info=True)
        return self._inner.export(spans)

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)


def _shaped(span: ReadableSpan, *, bodies: bool, flightrec: bool | None) -> ReadableSpan:
    attrs = span.attributes or {}
    drop: tuple[str, ...] = ()
    add: dict[str, Any] = {}
    scope = span.instrumentation_scope.name if span.instrumentation_scope else ""
    if scope == "flightrec":
        drop = (() if bodies else _BODY_ATTRIBUTES) + (_STANDARD_CONTENT if flightrec and bodies else ())
    elif scope == _ANTHROPIC_SCOPE and attrs.get(A.OPERATION) == "chat" and flightrec is not True:
        drop = tuple(k for k in attrs if k.startswith(_USAGE_PREFIX))
        add = {A.OPENINFERENCE_SPAN_KIND: "CHAIN"}
    if not add and not any(k in attrs for k in drop):
        return span
    kept = {k: v for k, v in attrs.items() if k not in drop}
    kept.update(add)
    return ReadableSpan(
        name=span.name, context=span.context, parent=span.parent, resource=span.resource, attributes=kept,
        events=span.events, links=span.links, kind=span.kind, status=span.status, start_time=span.start_time,
        end_time=span.end_time, instrumentation_scope=span.instrumentation_scope)


class _Counting(SpanExporter):
    def __init__(self, inner: SpanExporter, stats: ExportStats) -> None:
        self._inner = inner
        self._stats = stats

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        result = self._inner.export(spans)
        if result is SpanExportResult.SUCCESS:
            self._stats.written += len(spans)
        else:
            self._stats.dropped += len(spans)
            self._stats.drop_reasons["the collector did not take them"] += len(spans)
        return result

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return self._inner.force_flush(timeout_millis)
