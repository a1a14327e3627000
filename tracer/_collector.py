"""The OTLP/HTTP collector: the store's single writer for agents in any process or language.

uvicorn serves OTLP/HTTP on an event loop of its own thread (``_App``, ``_Protocol``); each
request is decoded (``_otlp.py``) on a worker thread a slice at a time, each slice queued for one
writer thread, which groups whatever is waiting into one transaction (group commit), and the next
slice decoded once it has committed. A request is answered only after the transaction holding its
last slice has committed, so an acknowledged span survives a ``kill -9``: DuckDB's write-ahead log
has it. While DuckDB checkpoints that log, which takes a second or more and lets no commit through
(``_CHECKPOINT_WAL_BYTES``), the writer appends the slices it takes to the spill (``_spill.py``), syncs
it and answers them from there, and commits them once the checkpoint is over: a restart after a kill
stores what the spill holds.

One client cannot hurt the others: memory is bounded by bytes (``max_pending_bytes``: bodies,
decompressed, decoded and queued, a decoded slice charged by its bytes or, when denser, by its
objects) and by spans waiting for the writer (``max_pending_spans``);
past either, a request is answered 503 with ``Retry-After`` (the OTLP exporters back off and
retry), never queued. Connections are capped, and idle or slow ones closed (``_Protocol``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import importlib.abc
import ipaddress
import logging
import os
import queue
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from ._config import content_mode
from ._errors import ConfigError, FlightrecError, StoreError, StoreInvalidatedError, UnstorableError
from ._ingest import Batch, Ingestor, SpanRecord
from ._lake import COMMIT_INTERVAL_S
from ._otlp import MAX_BODY, SLICE_BYTES, Decoded, OtlpError, decode_slices, encode_response, is_compressed
from ._redact import ContentPolicy
from ._spill import Segment, Spill, spill_dir
from ._store import Store, default_db_path

log = logging.getLogger("flightrec.collector")

MAX_PENDING_SPANS = 100_000
"""Spans decoded and waiting for the writer; more are refused with 503 until it catches up."""
_GROUP_SPANS = 20_000
"""Spans the writer commits in one transaction at most."""
_GATHER_MAX_S = 0.05
"""Longest the writer waits, with nothing queued, for the next slice of a request under way before
it commits the group it has, and never longer than its last commit took. A commit's cost is mostly
fixed (about 35 ms of statements and COMMIT on the benchmark's payload, however few its spans,
benchmarks/RESULTS.md §60, §62): four requests' slices in one commit cost far less than in four, and
a request waits for that commit no longer than for the one before it."""
_GROUP_BYTES = 8 * 1024 * 1024
"""Payload bytes of the slices the writer gathers into one group at most: the group's rows, held
until its commit, take 0.75 (realistic spans) to 2 bytes (one-byte attributes) a payload byte; the
benchmark's four senders' requests of 512 spans (2 MB each) still share one commit (RESULTS §62)."""
_GROUP_AGE_S = 0.5
"""Longest the writer adds slices to one group while requests keep coming (a file; a lake waits
``COMMIT_INTERVAL_S``): the first request in it is answered no later than this, plus the commit."""
_GATHER_POLL_S = 0.005
"""How often a gathering writer looks again whether every request under way waits: a safety net, since the
request that completes that state wakes it (``_EVERYONE_WAITS``)."""
_CHECKPOINT_WAL_BYTES = 224 * 1024 * 1024
"""Write-ahead log past which the writer checkpoints it, on a thread of its own (DuckDB's default is
16MB): fewer, larger checkpoints cost less CPU per span (benchmarks/RESULTS.md §12) and fewer bytes on
disk (§74: with one every 64MB of log, files were 15% larger), and a restart after a crash replays
about this much log at most. One takes 1.0-1.7 s at this size, and DuckDB 2.0 lets no commit
through meanwhile, into any table (§74): the writer answers from the spill until it is over
(``_hold``). Under a load with pauses, the writer checkpoints sooner, while idle
(``IDLE_CHECKPOINT_S``). A process bounded by ``max_resident_bytes`` checkpoints on the writer's thread
(``_checkpoint_due``)."""
_DUCKDB_CHECKPOINT_WAL = "256MB"
"""DuckDB's own checkpoint, which the commit that passes it runs, and its requests wait for: a safety net,
the writer's own coming first (``_CHECKPOINT_WAL_BYTES``)."""
_HELD_BYTES = 8 * 8 * 1024 * 1024
"""Payload bytes of the slices the writer answers from the spill and holds in memory during one
checkpoint, at most (a second and a half at 10,000 spans a second of the benchmark's spans); past
it, the writer waits for the checkpoint, and the requests for their commit."""
IDLE_CHECKPOINT_S = 1.0
"""Seconds with nothing to write after which the writer checkpoints a log of ``IDLE_CHECKPOINT_BYTES`` or more."""
IDLE_CHECKPOINT_BYTES = 16 * 1024 * 1024
"""Smaller logs are left for later: a checkpoint's cost is mostly fixed, and a short log replays fast."""
PRESSURE_BYTES = 64 * 1024 * 1024
"""Within this of ``max_resident_bytes``, the writer checkpoints after each commit a log of
``IDLE_CHECKPOINT_BYTES`` or more. DuckDB holds the rows a checkpoint has not written yet in memory
(up to ``_DUCKDB_MEMORY_MB``), and they are what grows in the process as it stores: with one-byte
attributes, the process's memory rose with them from 443 to 510 MB between two checkpoints
(benchmarks/RESULTS.md §64), past the 500 MB it must stay under."""
MAX_PENDING_BYTES = 128 * 1024 * 1024
"""Bytes that requests in flight may hold (bodies, decompressed, decoded, waiting for the writer);
more are refused with 503 until some are answered. Four 14 MB requests at once (each charged its
body and 16 × a slice: 31 MB; a request dense in objects is decoded in slices small enough to hold
about that much), or dozens of small ones. What the process holds besides (its imports,
what its first write allocates for good, DuckDB's rows awaiting a checkpoint) is bounded in serve by
``MAX_RESIDENT_BYTES`` (benchmarks/RESULTS.md §32, §39)."""
DECODED_BYTES_PER_BYTE = 16
"""Memory a byte of OTLP payload takes in process once parsed, decoded into span records and
written, for realistic spans with content (about 18 MB a 1 MiB slice in flight, benchmarks/RESULTS.md
§32, §47). Every request is charged this for the part of it decoded at once (``SLICE_BYTES``; an
OTLP/JSON body whole) before its first slice is decoded, and ``DECODED_BYTES_PER_OBJECT`` once
that slice shows it is denser."""
DECODED_BYTES_PER_OBJECT = 660
"""Memory a decoded slice takes in process per span and per attribute, event and link it holds:
cost grows with objects rather than bytes, and a byte of spans of one-byte attributes holds 19
times the objects of realistic spans (a 1 MiB slice took about 57 MB in flight against 18,
benchmarks/RESULTS.md §47). A request is charged the larger of its slice's bytes and objects, and the
slices of a request dense in objects are made smaller, each to hold about what the request is charged."""
MAX_RESIDENT_BYTES = 440 * 1024 * 1024
"""The resident memory past which ``flightrec serve --no-dashboard`` takes a request only when no other is in flight
(503 with ``Retry-After`` meanwhile): a bound on what the byte budget's estimates miss, with room
under 500 MB for the one request it always takes (benchmarks/RESULTS.md §39). On top of what the
store's keys take (``Store.key_bytes``), which grows with the store and which no checkpoint frees for
long: counted in, on a store of 1M spans the bound passed for them alone halved serve's speed (§81)."""
_DUCKDB_MEMORY_MB = 48
"""What DuckDB may hold in a process bounded by ``max_resident_bytes``: it keeps the rows of the
write-ahead log in memory until a checkpoint (``_CHECKPOINT_WAL_BYTES``: 126 MB of them for 112 MB of
spans of one-byte attributes), and spills to a temporary file past this instead. A checkpoint takes
what it is let: at 96 MB it held 90 MB of rows, and the process went past 500 MB (benchmarks/RESULTS.md §64)."""
BOUNDED_KNOWN_HASHES = 100_000
"""Content hashes and chain nodes the ingestor of a process bounded by ``max_resident_bytes`` remembers having
sent, so as not to send them again (the store's key would ignore them): 15 MB, against 73 MB for the
500,000 it remembers otherwise (benchmarks/RESULTS.md §80, §81)."""
KEYS_WARN_SHARE = 0.25
"""Share of ``max_resident_bytes`` past which serve warns that the store's keys, on top of it, grow its memory."""
MAX_CONNECTIONS = 1000
"""Connections and requests in progress at once; a request past it is answered 503 by uvicorn."""
HEADER_TIMEOUT_S = 5.0
"""A request's headers must arrive within this of its first byte (or of the connection)."""
IDLE_TIMEOUT_S = 15.0
"""A kept-alive connection with no request for this long is closed: above the OTel SDKs' 5 s
export interval, so that an exporter's connection is not closed just as it sends."""
BODY_TIMEOUT_S = 10.0
BODY_RATE = 1024 * 1024
"""A body must arrive within ``BODY_TIMEOUT_S`` plus its length at this many bytes a second
(26 s for 16 MB): loopback and any LAN do much better; a slow client holds its budget no longer."""
_EXPORT_THREADS = 32
"""Requests decoded or waiting for their commit at once; more wait for a thread, their body read."""
_ACK_TIMEOUT_S = 60.0
SESSION_TIMEOUT_S = 30 * 60.0
"""Inactivity after which a session that no span ended is closed (``flightrec serve --session-timeout``)."""
_LAKE_COMMIT_TRIES = 3
"""Times a collector makes a commit that conflicts with other collectors' (after DuckLake's own retries)."""
_GC_YOUNG = 50_000
"""Container objects allocated (less those freed) between two collections of the garbage collector's
youngest generation in a collector process; Python's default is 700. Decoding and ingest allocate a
dozen containers a span that all live until their batch is written, so at 700 each was scanned by
every generation in turn: 13 µs of CPU a span, against 1 µs at this (benchmarks/RESULTS.md §29)."""


def is_loopback(host: str) -> bool:
    """Whether a server bound to ``host`` is reachable from this machine only: ``localhost``,
    127.0.0.0/8 or ``::1``. Any other name or address (``0.0.0.0``, ``""``, a LAN address) is not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


RETAIN_EVERY_S = 3600.0
"""How often the writer looks for sessions its retention policy lets go (``serve --retain``), once
the previous round found none left: an hour late at most, on a policy counted in days."""


def check_exposure(host: str, token: str | None) -> None:
    """Refuses a non-loopback ``host`` without a bearer token: one rule for every transport.

    Raises:
        ConfigError: ``host`` is not loopback and ``token`` is empty.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(f"binding to {host} exposes the collector beyond this machine: give a bearer token "
                          "(--token or FLIGHTREC_TOKEN), or bind to 127.0.0.1.")


@dataclass
class _Job:
    """A slice of spans for the writer. It ingests the slice into the group it is gathering as soon as
    it takes it (``taken``; the request then decodes its next slice) and commits the group later
    (``done``)."""

    records: list[SpanRecord]
    size: int = 0
    """Payload bytes of the slice, about."""
    retained: bool = True
    """The writer keeps the records until the commit, to write them again alone if their group fails.
    A request over HTTP or gRPC does not: it sends the slice again itself (``alone``), decoded anew
    from its body, so that a slice's decoded form is dropped once ingested."""
    alone: bool = False
    """Committed in a transaction of its own, at once: sent again after its group failed."""
    taken: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    final: bool = False
    """The error is the spans' own (they can never be stored): answered 400, not 503 "retry"."""
    blocking: threading.Event | None = None
    """The event of this job that a request's thread waits for (counted in ``Collector._blocked``)."""


_EVERYONE_WAITS = "everyone waits"
"""Put on the writer's queue by the request whose wait, or end, leaves every request under way waiting for the
writer: a gathering writer commits at once instead of at its next poll (``_GATHER_POLL_S``, RESULTS §67)."""

_CHECKPOINTED = "checkpointed"
"""Put on the writer's queue by the checkpoint's thread as it ends: the writer commits what it held meanwhile."""

_REGROUP = "the transaction it shared with other requests failed"
"""A job's error when its group failed and its records were not retained: its request sends it again alone."""


@dataclass
class _Task:
    """Work for the writer's thread, between two commits: ``fn`` gets the store (``Collector.maintain``)."""

    fn: Callable[[Store], Any]
    done: threading.Event = field(default_factory=threading.Event)
    result: Any = None
    error: BaseException | None = None


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
    spans_held: int = 0
    """Spans answered from the spill while a checkpoint ran, and committed after it."""
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def count(self, **counts: int) -> None:
        """Adds to counters; safe from any thread (requests are answered on many at once)."""
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + n)


def tune_gc() -> None:
    """Sets the garbage collector of a process that runs a ``Collector`` for its throughput.

    The objects alive now (the modules imported so far, the hooks) are moved out of the garbage
    collector's reach (``gc.freeze``), and the youngest generation is collected every
    ``_GC_YOUNG`` allocations instead of 700. Reference counting frees the collector's data as
    before; only reference cycles wait longer. Process-wide: call it once, from the command that
    owns the process (``flightrec serve``), after its imports; never from a library.
    """
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])


def skip_pandas() -> None:
    """Keeps pyarrow from importing pandas into a process that has no use for it (``flightrec serve
    --no-dashboard``): 43 MB of memory for good, out of the 500 MB a collector may take.

    pyarrow asks once, on its first conversion of Python objects (``pa.array``, which every write
    of the store runs), whether pandas can be imported, to tell a pandas Series from a list; DuckDB
    before 2.0 asks on every statement with parameters, and does not keep the answer. Neither has
    a switch to skip the question, so ``import pandas`` fails in the process from then on, as if
    pandas were not installed: lists convert as before, and a pandas conversion
    (``Table.to_pandas``, ``Store.frame``) fails. Process-wide: call it once, from the command that
    owns the process, before it starts threads. A no-op where pandas is imported already.
    """
    if "pandas" in sys.modules:
        return
    sys.meta_path.insert(0, _NoPandas())


class _NoPandas(importlib.abc.MetaPathFinder):
    """Fails ``import pandas`` as if pandas were not installed (``skip_pandas``)."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> None:
        if fullname == "pandas":
            raise ImportError("pandas is kept out of this process (tracer._collector.skip_pandas)")
        return None


class Collector:
    """An OTLP/HTTP receiver on ``/v1/traces`` that writes into one store.

    It serves with uvicorn on an event loop of its own thread; each request's export runs on a
    worker thread, so a slow commit never holds up the loop. Memory is bounded by bytes: a
    request is admitted only while the bytes held by requests in flight (read, decompressed,
    decoded, queued) stay under ``max_pending_bytes``, else answered 503 with ``Retry-After``.
    Slow and idle connections are closed (the timeouts below), and connections are capped.

    Args:
        db: The store (default ``$FLIGHTREC_DB`` or ``./flightrec.duckdb``); opened for writing.
        host: Interface to bind; loopback by default. Any other needs ``token``.
        port: 4318 is OTLP/HTTP's; 0 picks a free one (see ``url``).
        token: Bearer token requests must carry (``Authorization: Bearer …``).
        max_body: Largest request body accepted, after decompression.
        max_pending_spans: Spans that may wait for the writer.
        max_pending_bytes: Bytes that requests in flight may hold, counted from their
            ``Content-Length``, their decompressed size and what their spans take once decoded.
        max_resident_bytes: The process's resident memory past which (with the bytes held) a
            request is refused unless none other is in flight, DuckDB's memory then limited to
            ``_DUCKDB_MEMORY_MB``; for a process that is the collector's own (``flightrec serve
            --no-dashboard`` passes ``MAX_RESIDENT_BYTES``). ``None`` bounds requests by
            ``max_pending_bytes`` alone.
        max_connections: Connections and requests in progress at once (uvicorn's
            ``limit_concurrency``): a request past it is answered 503.
        header_timeout_s: A connection whose request headers take longer is closed.
        idle_timeout_s: A kept-alive connection with no request for this long is closed.
        body_timeout_s: A body must arrive within this, plus its length at ``body_rate``
            bytes a second, or the connection is closed.
        body_rate: See ``body_timeout_s``.
        on_sessions_ended: Called on the writer's thread with the ids of sessions whose end a
            transaction just committed (``evals.OnlineDetector``), or that were closed for
            inactivity; must return quickly.
        session_timeout_s: A session still running with no span for this long is closed (many
            producers never send a span that ends a session); ``None`` never closes one.
        retain_s: Sessions whose last span ended longer ago than this are removed whole, by the
            writer, a bounded step at a time between its commits (``Store.prune_step``), at start
            and then every ``RETAIN_EVERY_S``; ``None`` keeps them.
        retain_content_s: The same for the sessions' content alone (their tokens, costs and
            decisions stay); at most ``retain_s``.
        clock: Nanoseconds since the epoch, for the inactivity check (tests pass their own).
        content: The content mode applied to the spans received (``ContentPolicy.records``), with the
            built-in redactors: ``full`` stores them as sent; default ``$FLIGHTREC_CONTENT``, else
            ``flightrec.toml``'s, else full, as for a ``Recorder``.

    Raises:
        ConfigError: a non-loopback host without a token, a limit out of range, or a bad content mode.
        OSError: the port cannot be bound.
        StoreLockedError, StoreError: the store cannot be opened for writing.
    """

    def __init__(self, db: str | os.PathLike[str] | None = None, *, host: str = "127.0.0.1", port: int = 4318,
                 token: str | None = None, max_body: int = MAX_BODY, max_pending_spans: int = MAX_PENDING_SPANS,
                 max_pending_bytes: int = MAX_PENDING_BYTES, max_resident_bytes: int | None = None,
                 max_connections: int = MAX_CONNECTIONS,
                 header_timeout_s: float = HEADER_TIMEOUT_S, idle_timeout_s: float = IDLE_TIMEOUT_S,
                 body_timeout_s: float = BODY_TIMEOUT_S, body_rate: int = BODY_RATE,
                 on_sessions_ended: Callable[[list[str]], None] | None = None,
                 session_timeout_s: float | None = SESSION_TIMEOUT_S, retain_s: float | None = None,
                 retain_content_s: float | None = None, clock: Callable[[], int] = time.time_ns,
                 content: str | None = None) -> None:
        if session_timeout_s is not None and session_timeout_s <= 0:
            raise ConfigError(f"the session timeout must be above 0 seconds, not {session_timeout_s:g}.")
        if min(retain_s or 1, retain_content_s or 1) <= 0:
            raise ConfigError("retention periods must be above 0 seconds.")
        if retain_s and retain_content_s and retain_content_s > retain_s:
            raise ConfigError(f"content retention ({_duration(retain_content_s)}) is longer than session retention "
                              f"({_duration(retain_s)}), which removes sessions whole, content included: give a "
                              "shorter content retention, or none.")
        if min(header_timeout_s, idle_timeout_s, body_timeout_s, body_rate, max_connections) <= 0:
            raise ConfigError("the collector's timeouts, body rate and connection limit must be above 0.")
        check_exposure(host, token)
        self.policy = ContentPolicy(content_mode(content))
        """What of the content of the spans received reaches the store."""
        self._socket = _bind(host, port)  # before the store: a port in use leaves the file alone
        try:
            self.store = Store(default_db_path(db))  # fails now if another process holds the file
        except BaseException:
            self._socket.close()
            raise
        self.store.defer_checkpoints(_DUCKDB_CHECKPOINT_WAL)
        # A lake's commit writes a Parquet file a table: requests are gathered for up to seconds, not
        # taken at once (RESULTS §52).
        self._gather_s = COMMIT_INTERVAL_S if self.store.lake else 0.0
        if max_resident_bytes is not None:  # else DuckDB keeps every row the log holds in memory too, up to 256 MB
            self.store.limit_memory(_DUCKDB_MEMORY_MB)
        self._keys_warned = False
        self.token = token
        self.max_body = max_body
        self.max_pending_spans = max_pending_spans
        self.budget = _Budget(max_pending_bytes, max_resident_bytes, self.store.key_bytes)
        self.stats = CollectorStats()
        self._on_sessions_ended = on_sessions_ended
        self.session_timeout_s = session_timeout_s
        self._clock = clock
        # Checked ten times per timeout, at most once a minute: a session closes at most 10% late.
        self._sweep_every_s = min(session_timeout_s / 10, 60.0) if session_timeout_s else None
        self.retain_s = retain_s
        self.retain_content_s = retain_content_s
        self._jobs: queue.Queue[_Job | _Task | str | None] = queue.Queue()
        self._pending = 0
        self._requests = 0
        """Requests between the first byte of their body (``under_way``) and their answer."""
        self._blocked = 0
        """Requests under way whose thread waits for the writer: to take its slice, or to commit. The others
        are receiving their body or decoding a slice: the writer waits for it before it commits."""
        self._last_commit_s = _GATHER_MAX_S  # until a commit is timed
        self._lock = threading.Lock()
        self._ingestor = Ingestor() if max_resident_bytes is None else Ingestor(BOUNDED_KNOWN_HASHES)
        self._spill = None if self.store.lake else Spill(spill_dir(self.store.path))
        """Where the writer keeps the slices it answers during a checkpoint (a lake has no checkpoint to wait for)."""
        self._checkpointer: threading.Thread | None = None
        """The checkpoint under way, until the writer has committed what it held meanwhile (``_end_checkpoint``)."""
        self._held: list[tuple[Batch, int, dict[Segment, int]]] = []
        """Batches answered from the spill during the checkpoint: each with its spans and their segments."""
        self._held_bytes = 0
        self._note_keys()
        self._writer = threading.Thread(target=self._write_loop, name="flightrec-collector-writer", daemon=True)
        self._writer.start()

        class Protocol(_Protocol):
            deadlines = _Deadlines(header_timeout_s, body_timeout_s, body_rate)

        self._app = _App(self, _EXPORT_THREADS)
        config = uvicorn.Config(self._app, http=Protocol, lifespan="off", access_log=False, log_config=None,
                                log_level="warning", server_header=False, limit_concurrency=max_connections,
                                timeout_keep_alive=idle_timeout_s,  # type: ignore[arg-type]
                                timeout_graceful_shutdown=int(_ACK_TIMEOUT_S))
        self._server = _Server(config)
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()
        self.fatal: StoreInvalidatedError | None = None
        """Why the collector stopped on its own: DuckDB invalidated the store (``_invalidated``)."""
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def start(self) -> Collector:
        """Serves on a background thread; returns once it is listening."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="flightrec-collector", daemon=True)
            self._thread.start()
            while not self._server.serving.wait(0.05):
                if not self._thread.is_alive():
                    raise FlightrecError("the collector's HTTP server did not start; its log says why")
        return self

    def serve_forever(self) -> None:
        """Serves until ``close()`` is called from another thread, or Ctrl-C (``KeyboardInterrupt``,
        which this thread receives: the caller's ``close()`` then writes what is queued)."""
        self.start()
        self._stopped.wait()

    def close(self) -> None:
        """Stops taking requests, answers those in progress, lets the writer finish what is queued,
        and closes the store."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(_ACK_TIMEOUT_S + 10)
        self._socket.close()
        self._app.pool.shutdown(wait=True)
        self._jobs.put(None)
        self._writer.join(_ACK_TIMEOUT_S)
        if self._spill is not None:
            self._spill.close()  # what a failed commit left in it, the next open stores
        self.store.close()
        self._stopped.set()

    def __enter__(self) -> Collector:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _serve(self) -> None:
        try:
            # On this thread of its own uvicorn installs no signal handlers: the caller keeps its own.
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException:  # noqa: BLE001 (SystemExit from a failed startup too): say so, and let waiters go
            log.exception("flightrec collector: the HTTP server stopped")
        finally:
            self._stopped.set()

    # -- the HTTP side -----------------------------------------------------------------------

    def submit(self, records: list[SpanRecord], *, admitted: bool = False, size: int = 0, retained: bool = True,
               alone: bool = False) -> _Job | None:
        """Queues spans for the writer; ``None`` when too many are already waiting, unless they are a
        later slice of a request ``admitted`` already (refusing it then would waste what was stored)."""
        with self._lock:
            if self._pending + len(records) > self.max_pending_spans and self._pending > 0 and not admitted:
                return None
            self._pending += len(records)
        job = _Job(records, size, retained=retained, alone=alone)
        self._jobs.put(job)
        return job

    def _wait(self, job: _Job, event: threading.Event, timeout_s: float) -> bool:
        """Waits for ``event`` of ``job``, counted among the requests that wait for the writer; whether it came."""
        with self._lock:
            if not event.is_set():
                job.blocking = event
                self._blocked += 1
                self._wake_if_everyone_waits()
        came = event.wait(timeout_s)
        self._unblock(job)
        return came

    def _wake_if_everyone_waits(self) -> None:
        # Under ``_lock``. Only while a request is under way: an idle writer need not hear of it.
        if self._requests and self._blocked >= self._requests:
            self._jobs.put(_EVERYONE_WAITS)

    def _unblock(self, job: _Job, event: threading.Event | None = None) -> None:
        # Called by the writer as it sets ``event`` (any: the commit's), so that it never counts a
        # request as waiting once it has let it go on; and by the request, in case it stopped waiting
        # first (a time-out).
        with self._lock:
            if job.blocking is not None and event in (None, job.blocking):
                job.blocking = None
                self._blocked -= 1

    def authorized(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` value (header or gRPC metadata) carries the token."""
        if self.token is None:
            return True
        return hmac.compare_digest((authorization or "").encode(), f"Bearer {self.token}".encode())

    def unauthorized(self) -> Answer:
        return self.refuse(401, "missing or wrong bearer token: send Authorization: Bearer <token>",
                           {"WWW-Authenticate": "Bearer"})

    def busy(self) -> Answer:
        """The 503 for a request that the byte budget cannot take now; the exporters retry."""
        self.stats.count(refused_busy=1)
        return self.refuse(503, "the collector holds as many request bytes as it may; retry shortly",
                           {"Retry-After": "1"})

    def refuse(self, status: int, message: str, headers: dict[str, str] | None = None) -> Answer:
        """An answer that stores nothing; 4xx are counted as bad requests."""
        if status < 500:
            self.stats.count(bad_requests=1)
        return Answer(status, (message + "\n").encode(), headers=headers or {})

    def export(self, body: bytes, content_type: str | None, content_encoding: str | None = None) -> Answer:
        """Decodes one OTLP export request, stores its spans and answers only once they are
        committed (or can never be). Blocks the calling thread meanwhile; any thread may call it.

        ``body``, then its decompressed and decoded forms as it is decompressed (before it is
        decoded), are reserved from the byte budget; past the budget the answer is 503 with
        ``Retry-After``.
        """
        own = len(body)
        if not self.budget.take(own):
            return self.busy()
        try:
            with self.under_way():
                return self.export_held(body, content_type, content_encoding, own)
        finally:
            self.budget.give(own)

    @contextlib.contextmanager
    def under_way(self) -> Iterator[None]:
        """Counts a request from its body's first byte to its answer: the writer gathers the slices of
        the requests under way into one commit (``_GATHER_MAX_S``, ``_GROUP_AGE_S``)."""
        with self._lock:
            self._requests += 1
        try:
            yield
        finally:
            with self._lock:
                self._requests -= 1
                self._wake_if_everyone_waits()

    def export_held(self, body: bytes, content_type: str | None, content_encoding: str | None, own: int) -> Answer:
        """``export``, for a transport that already holds ``own`` bytes of the budget, ``body``'s
        among them (the HTTP transport reserves its ``Content-Length`` before reading it): a
        request that holds all that is held is never refused for the budget."""
        held = payload = decoding = 0  # ``decoding``: of ``held``, the charge for what is decoded at once
        # An OTLP/protobuf request is decoded a slice at a time; OTLP/JSON is parsed whole.
        decoded_at_once = self.max_body if "json" in (content_type or "") else SLICE_BYTES
        copied = is_compressed(content_encoding)  # else the payload is the body, which ``own`` holds

        def take(cost: int, *, refusable: bool = True) -> None:
            nonlocal held
            if not self.budget.take(cost, own + held, force=not refusable):
                raise _Busy
            held += cost

        def reserve(size: int) -> None:
            nonlocal payload, decoding
            # The decompressed copy, and what the part of the payload decoded at once takes.
            at_once = min(payload + size, decoded_at_once) - min(payload, decoded_at_once)
            take(size * copied + DECODED_BYTES_PER_BYTE * at_once)
            payload += size
            decoding += DECODED_BYTES_PER_BYTE * at_once

        def measure(decoded: Decoded, records: list[SpanRecord], refusable: bool) -> None:
            # A slice denser in objects than its bytes said is charged what it holds before the writer
            # gets it: the request is refused (503) if that does not fit, unless some of it is stored.
            nonlocal decoding
            cost = DECODED_BYTES_PER_OBJECT * sum(1 + len(r.attributes) + len(r.events) + len(r.links)
                                                  for r in records)
            if cost > decoding:
                take(cost - decoding, refusable=refusable)
                decoding = cost
            if cost and decoded.sliced_bytes:  # the next slice holds about what the request is charged for
                decoded.slice_bytes = min(SLICE_BYTES, decoded.sliced_bytes * decoding // cost)

        try:
            return self._export(body, content_type, content_encoding, reserve, measure)
        except _Busy:
            return self.busy()
        finally:
            self.budget.give(held)

    def _export(self, body: bytes, content_type: str | None, content_encoding: str | None,
                reserve: Callable[[int], None], measure: Callable[[Decoded, list[SpanRecord], bool], None]) -> Answer:
        try:
            decoded = decode_slices(body, content_type, content_encoding, max_body=self.max_body, reserve=reserve,
                                    slice_bytes=SLICE_BYTES)
            answer = self._store_slices(decoded, measure)
            if answer == _REGROUP:
                # A transaction it shared failed: its slices go again, each alone, decoded anew from the
                # body (whose bytes it holds reserved already), so that only what cannot be stored fails.
                decoded = decode_slices(body, content_type, content_encoding, max_body=self.max_body,
                                        slice_bytes=SLICE_BYTES)
                answer = self._store_slices(decoded, measure, alone=True)
        except _Busy:
            raise
        except OtlpError as exc:
            return self.refuse(exc.status, str(exc))
        except Exception as exc:  # a body shaped in a way the decoder did not foresee still gets an answer
            log.warning("flightrec collector: a request could not be decoded (%s)", type(exc).__name__)
            return self.refuse(400, f"malformed OTLP request ({type(exc).__name__}); send a valid "
                                    "ExportTraceServiceRequest")
        if isinstance(answer, Answer):
            return answer
        reply_type = "application/json" if "json" in (content_type or "") else "application/x-protobuf"
        return Answer(200, encode_response(decoded.rejected, decoded.message, reply_type), reply_type,
                      rejected=decoded.rejected)

    def _store_slices(self, decoded: Decoded, measure: Callable[[Decoded, list[SpanRecord], bool], None],
                      *, alone: bool = False) -> Answer | str | None:
        """Hands the request's spans to the writer a slice at a time, each decoded once the writer has
        taken the one before into the group it is gathering (``alone``, or dense in objects: once it
        has committed it), so that a large request's decoded form is never in memory whole; ``None``
        once every slice is stored, ``_REGROUP`` if a transaction that other requests shared failed
        (send it again, ``alone``), else the answer. Each slice is ``measure``d before the writer gets it, which sizes
        the next slice and raises ``_Busy`` to refuse the request (it may before any slice is sent).

        A slice that fails for the store's sake gets the request a 503: the client's retry is safe,
        since the store skips the spans it has already. A slice whose spans can never be stored is
        counted rejected, and the others are stored (a 200 with partial success), or, when none
        can be, the request is answered 400 as a whole.
        """
        jobs: list[tuple[_Job, int]] = []
        for records in decoded.slices():
            self.policy.records(records)
            measure(decoded, records, not jobs)
            # OTLP/JSON's slices are of about ``slice_bytes`` each (their ``sliced_bytes`` is not counted).
            job = self.submit(records, admitted=bool(jobs), size=decoded.sliced_bytes or decoded.slice_bytes,
                              retained=False, alone=alone)
            count = len(records)
            del records  # the writer drops the spans once ingested: only the next slice is then held
            if job is None:
                self.stats.count(refused_busy=1)
                return self.refuse(503, "the collector's writer is behind; retry shortly", {"Retry-After": "1"})
            jobs.append((job, count))
            # A request dense in objects, whose slices ``measure`` made smaller, decodes its next slice
            # only once the one before has committed, as its charge assumes: its rows held meanwhile
            # took the process past 500 MB (RESULTS §62).
            ahead = not alone and decoded.slice_bytes >= SLICE_BYTES
            if not self._wait(job, job.taken if ahead else job.done, _ACK_TIMEOUT_S):
                return self._not_stored(decoded, jobs, "the write timed out")
            if job.done.is_set() and job.error is not None and not job.final:
                break  # the store's trouble: the slices after it would fare no better
        if jobs and not self._wait(jobs[-1][0], jobs[-1][0].done, _ACK_TIMEOUT_S):
            return self._not_stored(decoded, jobs, "the write timed out")
        if any(job.error == _REGROUP for job, _ in jobs):
            return _REGROUP
        failed, error = 0, ""
        for job, count in jobs:
            if job.error is not None and not job.final:
                return self._not_stored(decoded, jobs, job.error)
            if job.final:
                failed += count
                error = job.error or ""
        stored = sum(count for _, count in jobs) - failed
        self.stats.count(spans_rejected=decoded.rejected + failed)
        if not stored and failed:
            return self.refuse(400, f"{error}; they were not stored, and would not be if sent again")
        if not stored and decoded.rejected:
            return self.refuse(400, f"{decoded.message}; nothing in this request can be stored: fix these spans, "
                                    "sending them again will not help")
        if failed:
            decoded.reject(failed, error)
        return None

    def _not_stored(self, decoded: Decoded, jobs: list[tuple[_Job, int]], error: str) -> Answer:
        """The 503 for a request some of whose slices were not stored, for the store's sake or a time-out."""
        stored = sum(count for job, count in jobs if job.done.is_set() and job.error is None)
        some = f"{stored} of its spans were stored, the rest " if stored else ""
        self.stats.count(spans_rejected=decoded.rejected)
        return self.refuse(503, f"{some}not stored: {error}; retry (spans stored already are not stored twice)",
                           {"Retry-After": "2"})

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
        except StoreInvalidatedError as exc:
            self._invalidated(exc)
        except FlightrecError as exc:  # the next sweep tries again; spans keep being taken meanwhile
            log.warning("flightrec collector: closing inactive sessions failed: %s", exc)

    def _invalidated(self, exc: StoreInvalidatedError) -> None:
        """Stops serving once DuckDB has invalidated the store: every commit would fail from then on, and
        the clients, answered 503, would retry for ever (benchmarks/RESULTS.md §80). ``serve_forever``
        returns, and ``flightrec serve`` exits with an error, for its supervisor to start it again: the
        next open replays the log, which holds every acknowledged span."""
        if self.fatal is not None:
            return
        self.fatal = exc
        log.error("flightrec collector: %s. It stops: start it again (every acknowledged span is in the store's "
                  "log, which the next start replays)", exc)
        self._stopped.set()

    def maintain(self, fn: Callable[[Store], Any]) -> Any:
        """Runs ``fn(store)`` on the writer's thread between two commits and returns its result (or
        raises its error). For the store's maintenance writes (a prune step, a deletion): made by
        the writer, they never remove content that a batch being built refers to, and the ingestor
        forgets what it has written before it builds the next batch. Blocks until done.

        Raises:
            StoreError: the collector is closing, so the writer takes no more work.
        """
        task = _Task(fn)
        if self._closed:
            raise StoreError("flightrec serve is stopping and takes no more work; run the command again once it "
                             "has stopped, on the file itself.")
        self._jobs.put(task)
        while not task.done.wait(1.0):
            if not self._writer.is_alive():
                raise StoreError("flightrec serve's writer stopped before it ran this; run the command again.")
        if task.error is not None:
            raise task.error
        return task.result

    def _run(self, task: _Task) -> None:
        try:
            task.result = task.fn(self.store)
        except BaseException as exc:  # noqa: BLE001 (handed to the caller's thread, which raises it)
            task.error = exc
        finally:
            self._ingestor.forget_stored()  # whatever it removed must be written again when referred to
            task.done.set()

    def _retain(self) -> bool:
        """One step of the retention policy (each period's oldest sessions, a bounded batch);
        returns whether more are due, so that the writer takes the next step after one commit."""
        now = self._clock()
        more = removed = False
        for keep_s, content_only in ((self.retain_s, False), (self.retain_content_s, True)):
            if not keep_s:
                continue
            try:
                step = self.store.prune_step(now - int(keep_s * 1e9), content_only=content_only)
            except FlightrecError as exc:  # the next round tries again; spans keep being taken meanwhile
                log.warning("flightrec collector: retention failed: %s", exc)
                return False
            if step.removed():
                removed = True
                try:  # serve's own policy: the actor is whoever runs serve ($FLIGHTREC_ACTOR, else the OS user)
                    self.store.audit(None, "prune", "store", {"policy": "serve --retain-content" if content_only
                                                              else "serve --retain", "older_than_s": keep_s,
                                                              "content_only": content_only,
                                                              "sessions": step.sessions})
                except FlightrecError as exc:
                    log.warning("flightrec collector: recording retention in the audit log failed: %s", exc)
                log.info("flightrec collector: retention removed %s%d sessions that ended over %s ago",
                         "the content of " if content_only else "", step.sessions, _duration(keep_s))
            more = more or step.more
        if removed:
            self._ingestor.forget_stored()
            if not more:  # the round is over: free the blocks it emptied for new data
                try:
                    self.store.checkpoint()
                except FlightrecError as exc:
                    log.info("flightrec collector: %s", exc)
        return more

    def _write_loop(self) -> None:
        sweep_every = self._sweep_every_s
        next_sweep = time.monotonic() + sweep_every if sweep_every else None
        next_retain = time.monotonic() if self.retain_s or self.retain_content_s else None  # a first round at once
        pending: _Task | None = None  # taken from the queue while gathering a group; run next
        next_idle_checkpoint: float | None = None  # set by a commit: a checkpoint is due if nothing follows it
        while True:
            # Sweeps, retention steps and idle checkpoints write: they wait for a checkpoint under way,
            # whose end wakes the writer (``_CHECKPOINTED``).
            free = self._checkpointer is None
            if free and next_idle_checkpoint is not None and time.monotonic() >= next_idle_checkpoint:
                next_idle_checkpoint = None
                self.idle_checkpoint()
            if free and next_sweep is not None and time.monotonic() >= next_sweep:
                self._sweep()
                next_sweep = time.monotonic() + (sweep_every or 0)
            if free and next_retain is not None and time.monotonic() >= next_retain:
                next_retain = time.monotonic() + (0 if self._retain() else RETAIN_EVERY_S)
            if pending is not None:
                job, pending = pending, None
            else:
                due = [t for t in (next_sweep, next_retain, next_idle_checkpoint) if t is not None and free]
                try:
                    job = self._jobs.get(timeout=max(min(due) - time.monotonic(), 0) if due else None)
                except queue.Empty:  # nothing to write: time for a sweep, a retention step or a checkpoint
                    continue
            if job is None:
                self._end_checkpoint()
                return
            if job is _EVERYONE_WAITS:  # heard after its group was committed
                continue
            if job is _CHECKPOINTED:
                self._end_checkpoint()
                continue
            if isinstance(job, _Task):
                self._end_checkpoint()
                self._run(job)
                continue
            pending = self._gather(job)
            self._checkpoint_due()
            next_idle_checkpoint = time.monotonic() + IDLE_CHECKPOINT_S
            job = None  # let the group's spans go now, not when the next request comes

    def _gather(self, job: _Job) -> _Task | None:
        """Ingests ``job`` and the slices that follow it into one batch and commits it, once every
        request under way waits for this commit (their next slice would come only after it), or
        nothing came for a while (``_GATHER_MAX_S``), or the group is full (``_GROUP_SPANS``,
        ``_GROUP_BYTES``, ``_GROUP_AGE_S``). Returns a task taken meanwhile, which the writer runs
        next; the end of the queue (``None``) is put back."""
        group: list[_Job] = []
        batch, spans, size, broken = Batch(), 0, 0, None
        # A checkpoint under way lets no commit through: the group is answered from the spill instead.
        holding, spilled = self._holding(), {}
        idle_s = self._gather_s or min(_GATHER_MAX_S, self._last_commit_s)
        closes = time.monotonic() + max(self._gather_s, _GROUP_AGE_S)
        taken: _Job | _Task | str | None = job
        last = time.monotonic()  # when the last slice came
        while True:
            if isinstance(taken, _Job) and not taken.alone and broken is None:
                group.append(taken)
                spans += len(taken.records)
                size += taken.size
                try:
                    self._ingestor.build(taken.records, batch)
                except Exception as exc:  # spans that ingest cannot take: theirs, not the store's
                    broken = self._failure(exc, len(taken.records))
                if holding and broken is None:
                    holding = self._spilled(taken.records, spilled)
                if not taken.retained:
                    taken.records = []
                taken.taken.set()
                self._unblock(taken, taken.taken)
                taken, last = None, time.monotonic()
            if taken is not None or broken is not None or spans >= _GROUP_SPANS or size >= _GROUP_BYTES:
                break
            with self._lock:
                everyone_waits = self._blocked >= self._requests
            wait = 0 if everyone_waits else min(last + idle_s, closes) - time.monotonic()
            try:
                taken = self._jobs.get(timeout=min(wait, _GATHER_POLL_S)) if wait > 0 else self._jobs.get_nowait()
            except queue.Empty:
                if wait > 0:
                    continue  # a poll: a request under way may have ended, or begun to wait
                break
            if taken is None:
                self._jobs.put(None)
                break
            if taken is _EVERYONE_WAITS:
                taken = None  # look again at once
        if group and not (holding and broken is None and self._hold(group, batch, spans, size, spilled)):
            if spilled:  # not answered from the spill after all: the commit does
                self._spill.release(spilled)
            self._end_checkpoint()
            began = time.monotonic()
            self._commit(group, batch, spans, broken)
            self._last_commit_s = time.monotonic() - began
        if isinstance(taken, _Job):  # sent alone, after its group failed
            self._end_checkpoint()
            self._commit([taken], None, len(taken.records), None)
            return None
        return taken

    # -- checkpoints: the writer answers from the spill while one runs ---------------------------

    def _checkpoint_due(self) -> None:
        """After a group: starts a checkpoint on a thread of its own when the log holds
        ``_CHECKPOINT_WAL_BYTES``. A process bounded by ``max_resident_bytes`` checkpoints on the writer's
        thread instead, at that size too or when within ``PRESSURE_BYTES`` of its bound: with DuckDB held
        to ``_DUCKDB_MEMORY_MB`` and the spill's way on, a commit failed for memory in 3 of 7 runs of the
        sustained load, and DuckDB then refused the file until a restart; this way never did, in 5 runs
        (benchmarks/RESULTS.md §74). The keys' indexes, not counted in DuckDB's bound then, are a likely
        cause: counted, the spill's way failed no commit in 7 runs, and its p99 was lower at the sustained
        load, but at twice that load held memory took serve to its bound: 37 answers of 503 against 5 (§81). The
        bound here leaves the store's keys out (``_Budget.keys``). Either way the checkpoint waits while
        a read is under way or memory is lent (``Store.checkpoint``); DuckDB's own at
        ``_DUCKDB_CHECKPOINT_WAL`` waits for neither, and one during which lent memory was taken back
        left the file up to 70% larger (§75)."""
        wal = self._wal_bytes()
        if self.budget.resident_limit is not None:
            if wal >= _CHECKPOINT_WAL_BYTES or self.budget.resident() > self.budget.resident_limit - PRESSURE_BYTES:
                self.idle_checkpoint()
            return
        if self._checkpointer is None and self._spill is not None and wal >= _CHECKPOINT_WAL_BYTES:
            self._checkpointer = threading.Thread(target=self._checkpoint, name="flightrec-collector-checkpoint",
                                                  daemon=True)
            self._checkpointer.start()

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(f"{self.store.path}.wal")
        except OSError:  # no log: nothing to checkpoint
            return 0

    def _checkpoint(self) -> None:
        try:
            if not self.store.checkpoint():
                log.info("flightrec collector: a checkpoint waits for a read under way; the next commit tries again")
        except StoreInvalidatedError as exc:
            self._invalidated(exc)
        except FlightrecError as exc:  # the next commit's check tries again; spans keep being taken
            log.warning("flightrec collector: %s", exc)
        finally:
            self._jobs.put(_CHECKPOINTED)

    def _holding(self) -> bool:
        """Whether the group the writer gathers now is answered from the spill: a checkpoint runs, and
        what was held during it is below ``_HELD_BYTES``."""
        return (self._checkpointer is not None and self._checkpointer.is_alive()
                and self._held_bytes < _HELD_BYTES)

    def _spilled(self, records: list[SpanRecord], segments: dict[Segment, int]) -> bool:
        """Appends ``records`` to the spill, counting them in ``segments``; whether it could."""
        spill = self._spill
        if spill is None:
            return False
        with spill.lock:
            for r in records:
                segment = spill.append(r)
                if segment is None:
                    return False
                segments[segment] = segments.get(segment, 0) + 1
        return True

    def _hold(self, group: list[_Job], batch: Batch, spans: int, size: int, segments: dict[Segment, int]) -> bool:
        """Answers ``group`` from the spill once it is synced, and keeps ``batch`` to commit after the
        checkpoint; false, doing nothing, if the spill cannot be synced (the caller commits the group)."""
        with self._spill.lock:
            if not self._spill.sync():
                return False
        self._held.append((batch, spans, segments))
        self._held_bytes += size
        self.stats.count(spans_held=spans)
        self._answer(group, spans, [None] * len(group))
        return True

    def _end_checkpoint(self) -> None:
        """Waits for the checkpoint under way, if any, then commits what the writer held meanwhile, in
        the order it came, and frees its spill. A batch that fails now stays in the spill, which the
        next start of serve stores (its requests were answered)."""
        if self._checkpointer is None:
            return
        self._checkpointer.join()
        self._checkpointer = None
        held, self._held, self._held_bytes = self._held, [], 0
        for batch, spans, segments in held:
            failed = self._write(batch, spans)
            if failed is None:
                self._spill.release(segments)
            else:
                log.warning("flightrec collector: %d spans answered during a checkpoint cannot be stored now (%s); "
                            "the spill beside the store keeps them, and the next start of serve stores them",
                            spans, failed[0])

    def _note_keys(self) -> None:
        """Warns, once, when the indexes of the store's primary keys take more than ``KEYS_WARN_SHARE`` of
        the memory a bounded process holds itself to: DuckDB holds them whole (``Store.limit_memory``),
        on top of that bound, and they grow with the store."""
        limit = self.budget.resident_limit
        if limit is None or self._keys_warned:
            return
        keys = self.store.key_bytes()
        if keys > limit * KEYS_WARN_SHARE:
            self._keys_warned = True
            log.warning("flightrec collector: the store's keys take about %d MB of memory on top of the %d MB this "
                        "process holds itself to, and grow with the store (DuckDB holds their indexes in memory "
                        "whole). To keep the process's memory in bounds, remove old sessions (flightrec serve "
                        "--retain 30d, or flightrec prune), or move to a lake (the README's \"Scale out\")",
                        keys >> 20, limit >> 20)

    def idle_checkpoint(self) -> bool:
        """Checkpoints when the write-ahead log holds ``IDLE_CHECKPOINT_BYTES`` or more; the writer
        calls it once nothing was written for ``IDLE_CHECKPOINT_S``. Returns whether it checkpointed."""
        if self._wal_bytes() < IDLE_CHECKPOINT_BYTES:
            return False
        try:
            done = self.store.checkpoint()
            self._note_keys()
            return done
        except StoreInvalidatedError as exc:
            self._invalidated(exc)
            return False
        except FlightrecError as exc:  # DuckDB checkpoints on its own at _DUCKDB_CHECKPOINT_WAL; spans keep being taken
            log.info("flightrec collector: %s", exc)
            return False

    def _commit(self, group: list[_Job], batch: Batch | None, spans: int, broken: tuple[str, bool] | None) -> None:
        """Commits ``batch``, into which ``group`` is ingested (``None``: a job alone, ingested now), and
        answers the jobs."""
        if broken is not None and batch is not None:
            self._ingestor.rollback(batch)  # ingest stopped part way: the content it noted was not stored
        outcome = broken or self._write(batch if batch is not None else self._built(group[0].records), spans)
        outcomes = [outcome] * len(group)
        if outcome is not None and len(group) > 1:
            # One request that cannot be stored must not fail the others that shared its transaction:
            # each is committed alone, and only what fails alone is answered so. A request that did not
            # leave its records here sends them again itself.
            outcomes = [self._write(self._built(job.records), len(job.records)) if job.retained
                        else (_REGROUP, False) for job in group]
        self._answer(group, spans, outcomes)

    def _answer(self, group: list[_Job], spans: int, outcomes: list[tuple[str, bool] | None]) -> None:
        """Lets the requests of ``group`` go on, each with its outcome."""
        with self._lock:
            self._pending -= spans
        for job, failed in zip(group, outcomes):
            job.error, job.final = failed or (None, False)
            job.records = []  # the request's thread holds its job while it decodes its next slice
            job.taken.set()
            job.done.set()
            self._unblock(job)

    def _built(self, records: list[SpanRecord]) -> Batch | tuple[str, bool]:
        """``records`` ingested into a batch of their own, or why they cannot be."""
        batch = Batch()
        try:
            return self._ingestor.build(records, batch)
        except Exception as exc:
            self._ingestor.rollback(batch)
            return self._failure(exc, len(records))

    def _write(self, batch: Batch | tuple[str, bool], spans: int) -> tuple[str, bool] | None:
        """Commits ``batch`` in one transaction; ``None``, or the error and whether it is the spans'
        own (final) rather than the store's (worth a retry). On a lake, a commit that lost to other
        writers' commits more often than DuckLake retries it is made again whole, while its requests
        still wait for their answer. The ingestor forgets a batch that was not committed."""
        if isinstance(batch, tuple):  # ingest refused it (``_built``)
            return batch
        for _ in range(_LAKE_COMMIT_TRIES - 1 if self.store.lake else 0):
            failed = self._write_once(batch, spans)
            if failed is None or failed[1] or "conflict" not in failed[0].lower():
                break
        else:
            failed = self._write_once(batch, spans)
        if failed is not None:
            # Nothing was committed: forget the content so that the client's retry sends it again.
            self._ingestor.rollback(batch)
        return failed

    def _write_once(self, batch: Batch, spans: int) -> tuple[str, bool] | None:
        try:
            self.store.write(batch)
        except Exception as exc:
            return self._failure(exc, spans)
        self.stats.count(spans_committed=spans, transactions=1)
        self._sessions_ended([d.session_id for d in batch.sessions.values() if d.ended])
        return None

    def _failure(self, exc: Exception, spans: int) -> tuple[str, bool]:
        """Why ``spans`` were not stored, and whether that is final (theirs) or worth a retry (the store's)."""
        if isinstance(exc, StoreInvalidatedError):  # worth a retry, once serve has started again
            self._invalidated(exc)
            return str(exc), False
        if isinstance(exc, UnstorableError):  # _validate let through a value the schema refuses: a bug to fix there
            log.warning("flightrec collector: %d spans hold a value the store's schema refuses", spans)
            log.debug("flightrec collector: %s", exc)  # the message may quote content: never above DEBUG
            return str(exc), True
        if isinstance(exc, FlightrecError):  # the store's own trouble (disk full, lock): worth a retry
            log.warning("flightrec collector: %d spans were not stored, and are answered 503 for a retry: %s",
                        spans, exc)
            return str(exc), False
        # Spans that ingest or the store's types cannot take: theirs, not the store's.
        log.warning("flightrec collector: %d spans cannot be stored (%s)", spans, type(exc).__name__)
        log.debug("flightrec collector: ingesting %d spans failed", spans, exc_info=True)
        return f"these spans cannot be stored ({type(exc).__name__})", True


# -- the HTTP transport ------------------------------------------------------------------------


class _Busy(Exception):
    """The byte budget is spent: the request is answered 503 with ``Retry-After``."""


class _Budget:
    """Bytes held by requests in flight: bodies read, decompressed, decoded and waiting for the writer.

    A reservation is refused once ``limit`` would be passed, or, with ``resident_limit``, once the
    process's resident memory plus all that is held and asked for would pass it: the bytes held
    are estimates, and the process holds more than they count (memory its allocators keep once
    freed, DuckDB's tables waiting for a checkpoint). Either way a request that holds all that is
    held (``own``) goes through: one request of any accepted size is always served, so a large one
    is never refused for ever, and so does a later slice of a request already partly stored (``force``):
    refusing it then would waste what was stored.
    """

    def __init__(self, limit: int, resident_limit: int | None = None, keys: Callable[[], int] = lambda: 0) -> None:
        self.limit = limit
        self.resident_limit = resident_limit
        self.keys = keys
        """What the store's keys take (``Store.key_bytes``), which ``resident_limit`` is on top of: they
        grow with the store, and no checkpoint frees them for long."""
        self.held = 0
        self._lock = threading.Lock()

    def resident(self) -> int:
        """The process's resident memory less the store's keys: what ``resident_limit`` bounds."""
        return resident_bytes() - self.keys()

    def take(self, n: int, own: int = 0, *, force: bool = False) -> bool:
        with self._lock:
            if not force and self.held > own and (self.held + n > self.limit or (
                    self.resident_limit is not None and self.resident() + self.held + n > self.resident_limit)):
                return False
            self.held += n
            return True

    def give(self, n: int) -> None:
        with self._lock:
            self.held -= n


_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def resident_bytes() -> int:
    """This process's resident memory (VmRSS, from ``/proc/self/statm``: a read of a few µs), or 0
    where there is no ``/proc`` (only the byte budget then bounds requests)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_BYTES
    except OSError:
        return 0


@dataclass(frozen=True)
class _Deadlines:
    header_s: float
    body_s: float
    body_rate: int


class _Protocol(H11Protocol):
    """uvicorn's HTTP/1.1 protocol, with the deadlines it lacks.

    uvicorn (0.55, ``h11_impl.py`` and ``httptools_impl.py`` alike) times out only a kept-alive
    connection idle after a response (``timeout_keep_alive``). A connection that never sends a
    request, one whose headers trickle in (each byte cancels the keep-alive timer
    and arms nothing), and a body that trickles in are held for ever. Here the request's headers must
    arrive within ``header_s`` of its first byte (or of the connection, for the first request),
    and its body within ``body_s`` plus its length at ``body_rate`` bytes a second; past either,
    the connection is closed (the application then reads ``http.disconnect``). The same body
    deadline bounds a body drained after an early answer (401, 404, 413, 503).
    """

    deadlines: ClassVar[_Deadlines]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[arg-type]
        self._timer: asyncio.TimerHandle | None = None
        self._phase: str | None = None
        self._arm("headers", self.deadlines.header_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._arm(None, 0)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._phase is None and self.conn.their_state is h11.IDLE:
            self._arm("headers", self.deadlines.header_s)  # the next request on a kept-alive connection
        super().data_received(data)

    def handle_events(self) -> None:
        super().handle_events()
        state = self.conn.their_state
        if self._phase == "headers" and state is not h11.IDLE:
            if state is h11.SEND_BODY:
                length = dict(self.headers or []).get(b"content-length", b"")
                size = int(length) if length.isdigit() else 0
                self._arm("body", self.deadlines.body_s + size / self.deadlines.body_rate)
            else:
                self._arm(None, 0)
        elif self._phase == "body" and state is not h11.SEND_BODY:
            self._arm(None, 0)

    def _arm(self, phase: str | None, seconds: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._phase = phase
        self._timer = self.loop.call_later(seconds, self._expire) if phase else None

    def _expire(self) -> None:
        log.debug("flightrec collector: closing a connection whose request %s did not arrive in time", self._phase)
        self._timer = self._phase = None
        if not self.transport.is_closing():
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server, saying when it is listening."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.serving = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.serving.set()


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


async def _reply(send: Callable[[dict[str, Any]], Awaitable[None]], answer: Answer) -> None:
    headers = [(b"content-type", answer.content_type.encode()), (b"content-length", str(len(answer.body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in answer.headers.items()]
    await send({"type": "http.response.start", "status": answer.status, "headers": headers})
    await send({"type": "http.response.body", "body": answer.body})


async def _drain(receive: Callable[[], Awaitable[dict[str, Any]]]) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect" or not message.get("more_body"):
            return


async def _read_body(receive: Callable[[], Awaitable[dict[str, Any]]], size: int) -> bytearray | None:
    """The request's body of ``size`` bytes (its ``Content-Length``, which h11 holds the body to),
    or ``None`` when the client went away (or was timed out) first. Read into one buffer as it
    arrives: the pieces and their join held a body twice over."""
    body = bytearray(size)
    got = 0
    with memoryview(body) as view:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            piece = message.get("body", b"")
            view[got:got + len(piece)] = piece
            got += len(piece)
            if not message.get("more_body"):
                return body


class _App:
    """The collector's ASGI application: health on ``/`` and ``/health``, OTLP on ``/v1/traces``.

    A plain ASGI callable rather than Starlette: three routes, and the body must be read under
    the byte budget and handed to a worker thread as it is, which Starlette's request object
    would only wrap.
    """

    def __init__(self, collector: Collector, workers: int) -> None:
        self.collector = collector
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="flightrec-export")

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        owner = self.collector
        if scope["method"] in ("GET", "HEAD"):
            if scope["path"] in ("/", "/health"):
                await _reply(send, Answer(200, b"flightrec collector: POST OTLP/HTTP traces to /v1/traces\n"))
            else:
                await _reply(send, owner.refuse(404, "not found: POST OTLP traces to /v1/traces"))
            return
        if scope["method"] != "POST":
            await _reply(send, owner.refuse(405, f"{scope['method']} is not served: POST OTLP traces to /v1/traces",
                                            {"Allow": "GET, HEAD, POST"}))
            return
        owner.stats.count(requests=1)
        if scope["path"] != "/v1/traces":
            answer = owner.refuse(404, f"no OTLP endpoint at {scope['path']}: send traces to /v1/traces")
            await self._refuse(scope, receive, send, answer)
            return
        if not owner.authorized(_header(scope, b"authorization")):
            await self._refuse(scope, receive, send, owner.unauthorized())
            return
        length = _header(scope, b"content-length")
        if length is None or not length.isdigit():
            await _reply(send, owner.refuse(411, "a Content-Length is required", {"Connection": "close"}))
            return
        size = int(length)
        if size > owner.max_body:
            answer = owner.refuse(413, f"request body of {size} bytes is over the limit of {owner.max_body}; "
                                       "send smaller batches")
            await self._refuse(scope, receive, send, answer)
            return
        if _header(scope, b"transfer-encoding") is not None:  # h11 would frame the body by it, not by its length
            await _reply(send, owner.refuse(400, "a body with both a Content-Length and a Transfer-Encoding; send "
                                                 "it with a Content-Length alone", {"Connection": "close"}))
            return
        if not owner.budget.take(size):
            await self._refuse(scope, receive, send, owner.busy())
            return
        try:
            with owner.under_way():
                body = await _read_body(receive, size)
                if body is None:
                    return
                answer = await asyncio.get_running_loop().run_in_executor(
                    self.pool, owner.export_held, body, _header(scope, b"content-type"),
                    _header(scope, b"content-encoding"), size)
                del body
        finally:
            owner.budget.give(size)
        await _reply(send, answer)

    async def _refuse(self, scope: dict[str, Any], receive: Callable[[], Awaitable[dict[str, Any]]],
                      send: Callable[[dict[str, Any]], Awaitable[None]], answer: Answer) -> None:
        """Answers without taking the body. A body of moderate size is read away first, a piece at
        a time and kept nowhere, so that the client hears the answer rather than a broken pipe
        (urllib, for one, sends ``Connection: close`` and reads only once its body is sent); a
        larger one is not worth reading, and the connection closes after the answer."""
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > 4 * self.collector.max_body):
            answer = Answer(answer.status, answer.body, answer.content_type, {**answer.headers, "Connection": "close"})
        else:
            await _drain(receive)
        await _reply(send, answer)


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket for uvicorn, bound here so that ``url`` names the real port of ``port=0``."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.create_server(address[:2], family=family, backlog=2048)
    return sock


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
