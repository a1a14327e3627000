"""The OTLP/HTTP collector: the store's single writer for agents in any process or language.

Requests are decoded on the HTTP threads (``_otlp.py``), then queued for one writer thread,
which groups whatever is waiting into one transaction (group commit). A request is answered
only after the transaction holding its spans has committed, so an acknowledged span survives a
``kill -9``: DuckDB's write-ahead log has it. Memory is bounded by the spans waiting for the
writer: past ``max_pending_spans`` a request is answered 503 with ``Retry-After`` (the OTLP
exporters back off and retry), never queued.
"""

from __future__ import annotations

import hmac
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ._errors import ConfigError, FlightrecError, UnstorableError
from ._ingest import Batch, Ingestor, SpanRecord
from ._otlp import MAX_BODY, OtlpError, decode_request, encode_response
from ._store import Store, default_db_path

log = logging.getLogger("flightrec.collector")

MAX_PENDING_SPANS = 100_000
"""Spans decoded and waiting for the writer; more are refused with 503 until it catches up."""
_GROUP_SPANS = 20_000
"""Spans the writer commits in one transaction at most."""
_CHECKPOINT_WAL = "128MB"
"""Write-ahead log the writer lets grow before DuckDB checkpoints it (its default is 16MB): fewer,
larger checkpoints cost the writer less CPU per span (benchmarks/RESULTS.md §12), and a restart
after a crash replays about this much log at most."""
_ACK_TIMEOUT_S = 60.0
SESSION_TIMEOUT_S = 30 * 60.0
"""Inactivity after which a session that no span ended is closed (``flightrec serve --session-timeout``)."""
_LOOPBACK = ("127.0.0.1", "::1", "localhost")


def check_exposure(host: str, token: str | None) -> None:
    """Refuses a non-loopback ``host`` without a bearer token: one rule for every transport.

    Raises:
        ConfigError: ``host`` is not loopback and ``token`` is empty.
    """
    if host not in _LOOPBACK and not token:
        raise ConfigError(f"binding to {host} exposes the collector beyond this machine: give a bearer token "
                          "(--token or FLIGHTREC_TOKEN), or bind to 127.0.0.1.")


@dataclass
class _Job:
    records: list[SpanRecord]
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    final: bool = False
    """The error is the spans' own (they can never be stored): answered 400, not 503 "retry"."""


@dataclass(frozen=True)
class Answer:
    """How the collector answers one export, whatever carried it: HTTP statuses, which the gRPC
    service maps to its codes (400 → INVALID_ARGUMENT, 503 → UNAVAILABLE, …)."""

    status: int
    body: bytes
    """The ``ExportTraceServiceResponse`` when ``status`` is 200, else the message as text."""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)
    rejected: int = 0
    """Spans of an accepted request that were rejected (OTLP partial success)."""

    @property
    def message(self) -> str:
        """What went wrong, for a status other than 200."""
        return self.body.decode(errors="replace").strip() if self.status != 200 else ""


@dataclass
class CollectorStats:
    """What the collector has done since it started."""

    requests: int = 0
    spans_committed: int = 0
    spans_rejected: int = 0
    refused_busy: int = 0
    """Requests answered 503 because the writer was behind."""
    bad_requests: int = 0
    """Requests answered 4xx."""
    transactions: int = 0


class Collector:
    """An OTLP/HTTP receiver on ``/v1/traces`` that writes into one store.

    Args:
        db: The store (default ``$FLIGHTREC_DB`` or ``./flightrec.duckdb``); opened for writing.
        host: Interface to bind; loopback by default. Any other needs ``token``.
        port: 4318 is OTLP/HTTP's; 0 picks a free one (see ``url``).
        token: Bearer token requests must carry (``Authorization: Bearer …``).
        max_body: Largest request body accepted, after decompression.
        max_pending_spans: Spans that may wait for the writer.
        on_sessions_ended: Called on the writer's thread with the ids of sessions whose end a
            transaction just committed (``evals.OnlineDetector``), or that were closed for
            inactivity; must return quickly.
        session_timeout_s: A session still running with no span for this long is closed (many
            producers never send a span that ends a session); ``None`` never closes one.
        clock: Nanoseconds since the epoch, for the inactivity check (tests pass their own).

    Raises:
        ConfigError: a non-loopback host without a token.
        StoreLockedError, StoreError: the store cannot be opened for writing.
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1", port: int = 4318,
                 token: str | None = None, max_body: int = MAX_BODY, max_pending_spans: int = MAX_PENDING_SPANS,
                 on_sessions_ended: Callable[[list[str]], None] | None = None,
                 session_timeout_s: float | None = SESSION_TIMEOUT_S, clock: Callable[[], int] = time.time_ns) -> None:
        if session_timeout_s is not None and session_timeout_s <= 0:
            raise ConfigError(f"the session timeout must be above 0 seconds, not {session_timeout_s:g}.")
        check_exposure(host, token)
        self.store = Store(default_db_path(db))  # fails now if another process holds the file
        self.store.defer_checkpoints(_CHECKPOINT_WAL)
        self.token = token
        self.max_body = max_body
        self.max_pending_spans = max_pending_spans
        self.stats = CollectorStats()
        self._on_sessions_ended = on_sessions_ended
        self.session_timeout_s = session_timeout_s
        self._clock = clock
        # Checked ten times per timeout, at most once a minute: a session closes at most 10% late.
        self._sweep_every_s = min(session_timeout_s / 10, 60.0) if session_timeout_s else None
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._pending = 0
        self._lock = threading.Lock()
        self._ingestor = Ingestor()
        self._writer = threading.Thread(target=self._write_loop, name="flightrec-collector-writer", daemon=True)
        self._writer.start()
        collector = self

        class Handler(_Handler):
            owner = collector

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> Collector:
        """Serves on a background thread; returns at once."""
        self._thread = threading.Thread(target=self._server.serve_forever, name="flightrec-collector", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serves on this thread until ``close()`` (or Ctrl-C)."""
        self._server.serve_forever()

    def close(self) -> None:
        """Stops taking requests, lets the writer finish what is queued, and closes the store."""
        self._server.shutdown()
        self._server.server_close()
        self._jobs.put(None)
        self._writer.join(_ACK_TIMEOUT_S)
        self.store.close()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the HTTP side -----------------------------------------------------------------------

    def submit(self, records: list[SpanRecord]) -> _Job | None:
        """Queues spans for the writer; ``None`` when too many are already waiting."""
        with self._lock:
            if self._pending + len(records) > self.max_pending_spans and self._pending > 0:
                return None
            self._pending += len(records)
        job = _Job(records)
        self._jobs.put(job)
        return job

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value (header or gRPC metadata) carries the token."""
        if self.token is None:
            return True
        return hmac.compare_digest((authorization or "").encode(), f"Bearer {self.token}".encode())

    def unauthorized(self) -> Answer:
        return self.refuse(401, "missing or wrong bearer token: send Authorization: Bearer <token>",
                           {"WWW-Authenticate": "Bearer"})

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
        """An answer that stores nothing; 4xx are counted as bad requests."""
        if status < 500:
            self.stats.bad_requests += 1
        return Answer(status, (message + "\n").encode(), headers=headers or {})

    def export(self, body: bytes, content_type: str | None, content_encoding: str | None = None) -> Answer:
        """Decodes one OTLP export request, stores its spans and answers only once they are
        committed (or can never be). Blocks the calling thread meanwhile; any thread may call it.
        """
        try:
            records, rejected, message = decode_request(body, content_type, content_encoding, max_body=self.max_body)
        except OtlpError as exc:
            return self.refuse(exc.status, str(exc))
        except Exception as exc:  # a body shaped in a way the decoder did not foresee still gets an answer
            log.warning("flightrec collector: a request could not be decoded (%s)", type(exc).__name__)
            return self.refuse(400, f"malformed OTLP request ({type(exc).__name__}); send a valid "
                                    "ExportTraceServiceRequest")
        self.stats.spans_rejected += rejected
        if not records and rejected:
            return self.refuse(400, f"{message}; nothing in this request can be stored: fix these spans, sending "
                                    "them again will not help")
        if records:
            job = self.submit(records)
            if job is None:
                self.stats.refused_busy += 1
                return self.refuse(503, "the collector's writer is behind; retry shortly", {"Retry-After": "1"})
            if job.done.wait(_ACK_TIMEOUT_S) and job.final:
                return self.refuse(400, f"{job.error}; they were not stored, and would not be if sent again")
            if not job.done.is_set() or job.error is not None:
                return self.refuse(503, f"not stored: {job.error or 'the write timed out'}; retry", {"Retry-After": "2"})
        reply_type = "application/json" if "json" in (content_type or "") else "application/x-protobuf"
        return Answer(200, encode_response(rejected, message, reply_type), reply_type, rejected=rejected)

    # -- the writer --------------------------------------------------------------------------

    def close_inactive_sessions(self) -> list[str]:
        """Closes the running sessions with no span for ``session_timeout_s``; returns their ids.

        The writer calls it when idle and between commits; the detectors see the sessions it closes.
        """
        if not self.session_timeout_s:
            return []
        before = self._clock() - int(self.session_timeout_s * 1e9)
        reason = (f"no span for {_duration(self.session_timeout_s)} and none ended the session; "
                  "closed by flightrec serve (--session-timeout)")
        closed = self.store.close_inactive(before, reason)
        self._sessions_ended(closed)
        return closed

    def _sessions_ended(self, session_ids: list[str]) -> None:
        if session_ids and self._on_sessions_ended is not None:
            try:
                self._on_sessions_ended(session_ids)
            except Exception:
                log.warning("flightrec collector: the sessions-ended hook failed", exc_info=True)

    def _sweep(self) -> None:
        try:
            self.close_inactive_sessions()
        except FlightrecError as exc:  # the next sweep tries again; spans keep being taken meanwhile
            log.warning("flightrec collector: closing inactive sessions failed: %s", exc)

    def _write_loop(self) -> None:
        every = self._sweep_every_s
        next_sweep = time.monotonic() + every if every else None
        while True:
            try:
                job = self._jobs.get(timeout=max(next_sweep - time.monotonic(), 0) if next_sweep else None)
                idle = False
            except queue.Empty:  # nothing to write: time to look for inactive sessions
                job, idle = None, True
            if next_sweep is not None and time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + (every or 0)
            if idle:
                continue
            if job is None:
                return
            group = [job]
            spans = len(job.records)
            while spans < _GROUP_SPANS:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._jobs.put(None)
                    break
                group.append(more)
                spans += len(more.records)
            self._commit(group, spans)

    def _commit(self, group: list[_Job], spans: int) -> None:
        outcome = self._write([r for job in group for r in job.records], spans)
        outcomes = [outcome] * len(group)
        if outcome is not None and len(group) > 1:
            # One request that cannot be stored must not fail the others that shared its
            # transaction: each is committed alone, and only what fails alone is answered so.
            outcomes = [self._write(job.records, len(job.records)) for job in group]
        with self._lock:
            self._pending -= spans
        for job, failed in zip(group, outcomes):
            job.error, job.final = failed or (None, False)
            job.done.set()

    def _write(self, records: list[SpanRecord], spans: int) -> tuple[str, bool] | None:
        """Ingests and commits ``records`` in one transaction; ``None``, or the error and whether it
        is the spans' own (final) rather than the store's (worth a retry)."""
        batch = Batch()
        try:
            self._ingestor.build(records, batch)
            self.store.write(batch)
        except UnstorableError as exc:  # _validate let through a value the schema refuses: a bug to fix there
            log.warning("flightrec collector: %d spans hold a value the store's schema refuses", spans)
            log.debug("flightrec collector: %s", exc)  # the message may quote content: never above DEBUG
            failed = (str(exc), True)
        except FlightrecError as exc:  # the store's own trouble (disk full, lock): worth a retry
            failed = (str(exc), False)
        except Exception as exc:  # spans that ingest or the store's types cannot take: theirs, not the store's
            log.warning("flightrec collector: %d spans cannot be stored (%s)", spans, type(exc).__name__)
            log.debug("flightrec collector: ingesting %d spans failed", spans, exc_info=True)
            failed = (f"these spans cannot be stored ({type(exc).__name__})", True)
        else:
            with self._lock:
                self.stats.spans_committed += spans
                self.stats.transactions += 1
            self._sessions_ended([d.session_id for d in batch.sessions.values() if d.ended])
            return None
        # Nothing was committed: forget the content so that the client's retry sends it again.
        self._ingestor.rollback(batch)
        return failed


class Replying(BaseHTTPRequestHandler):
    """What flightrec's HTTP handlers share: keep-alive, replies with a length, quiet logs."""

    protocol_version = "HTTP/1.1"  # keep-alive: clients send many requests on one connection
    server_version = "flightrec-collector"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the stdlib's name)
        log.debug("%s " + format, self.address_string(), *args)  # never content, never at INFO

    def _reply(self, status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
               headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


class _Handler(Replying):
    owner: Collector

    def _answer(self, answer: Answer) -> None:
        self._reply(answer.status, answer.body, answer.content_type, answer.headers)

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path in ("/", "/health"):
            self._reply(200, b"flightrec collector: POST OTLP/HTTP traces to /v1/traces\n")
        else:
            self._answer(self.owner.refuse(404, "not found: POST OTLP traces to /v1/traces"))

    def do_POST(self) -> None:  # noqa: N802
        owner = self.owner
        owner.stats.requests += 1
        if self.path.split("?", 1)[0] != "/v1/traces":
            self._discard()
            self._answer(owner.refuse(404, f"no OTLP endpoint at {self.path}: send traces to /v1/traces"))
            return
        if not owner.authorized(self.headers.get("Authorization")):
            self._discard()
            self._answer(owner.unauthorized())
            return
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            self._answer(owner.refuse(411, "a Content-Length is required", {"Connection": "close"}))
            self.close_connection = True
            return
        if int(length) > owner.max_body:
            # Read a moderately oversized body away, so that the client hears the 413 instead of a
            # broken pipe; an absurd one is not worth reading, and the connection closes.
            if int(length) <= 4 * owner.max_body:
                remaining = int(length)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 1 << 16))
                    if not chunk:
                        break
                    remaining -= len(chunk)
            self._answer(owner.refuse(413, f"request body of {length} bytes is over the limit of {owner.max_body}; "
                                           "send smaller batches", {"Connection": "close"}))
            self.close_connection = True
            return
        body = self.rfile.read(int(length))
        self._answer(owner.export(body, self.headers.get("Content-Type"), self.headers.get("Content-Encoding")))

    def _discard(self) -> None:
        length = self.headers.get("Content-Length")
        if length and length.isdigit() and int(length) <= self.owner.max_body:
            self.rfile.read(int(length))
        else:
            self.close_connection = True


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def wait_until_serving(url: str, timeout_s: float = 10.0) -> None:
    """Blocks until a collector answers at ``url`` (for scripts that start one in another process)."""
    import urllib.request

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
