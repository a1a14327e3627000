"""OTLP/gRPC beside OTLP/HTTP: ``TraceService/Export`` on the collector's rules.

Many SDKs (Java, Go, .NET, the OpenTelemetry Collector) export OTLP over gRPC on port 4317 by
default. The service hands each request's bytes, as received, to ``Collector.export``, so that one
decoder parses it once and a request is acknowledged only after its spans are committed, as over
HTTP. The collector's answer becomes a gRPC status the way the OTLP specification asks
(https://opentelemetry.io/docs/specs/otlp/#failures):

=========================  ============================================================
collector's answer         gRPC
=========================  ============================================================
200                        OK, ``ExportTraceServiceResponse`` (``partial_success`` when
                           spans were rejected; the client must not retry)
401                        UNAUTHENTICATED (final)
400, 413, 415              INVALID_ARGUMENT (final: the spec's code for data that can never
                           be taken; RESOURCE_EXHAUSTED would be retried by some clients)
503                        UNAVAILABLE (retried) with ``google.rpc.RetryInfo`` from
                           ``Retry-After``, in the status details and where the Python
                           exporter reads it (``google.rpc.retryinfo-bin``)
=========================  ============================================================

A request whose message does not arrive whole within ``receive_timeout_s`` is answered
DEADLINE_EXCEEDED (retried). gRPC itself answers RESOURCE_EXHAUSTED to a message over ``max_body``
(after decompression) and to a request past ``max_concurrent_rpcs``, and UNIMPLEMENTED to the
metrics and logs services.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from ._collector import Answer, Collector, check_exposure
from ._errors import ConfigError

_T = TypeVar("_T")

OTLP_GRPC_PORT = 4317
"""OTLP/gRPC's registered port."""
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_WORKERS = 8
"""Requests decoded and waiting for their commit at once, each on a thread of its own: a request
takes one only once its message has arrived whole, so a slow sender holds none."""
_MAX_CONCURRENT_RPCS = 16
"""Requests under way at once, arriving or served; past this many, gRPC answers RESOURCE_EXHAUSTED
at once. Each holds up to ``max_body`` bytes: 16 × 16 MiB is the most the messages take."""
_RECEIVE_TIMEOUT_S = 30.0
"""A request whose message has not arrived whole this long after it started is answered
DEADLINE_EXCEEDED (retryable) and lets go of its place: a stalled client cannot hold one."""
_IDLE_TIMEOUT_S = 120.0
"""A connection with no request for this long is closed (GOAWAY); the client reconnects when it
next exports, so idle agents hold nothing."""
_KEEPALIVE_S = 60.0
"""The server pings a connection silent for this long, and drops it if the ping goes unanswered for
``_KEEPALIVE_TIMEOUT_S``: a peer that vanished (a killed host, a dropped network) is let go."""
_KEEPALIVE_TIMEOUT_S = 20.0
_CLOSE_GRACE_S = 5.0
"""How long ``close()`` lets requests under way finish before cancelling them."""


class GrpcReceiver:
    """OTLP/gRPC on ``collector``: the ``TraceService/Export`` method, with its token and limits.

    Binds at once (``port`` 0 picks a free one: see ``port``); ``start()`` serves. Close it before
    the collector, so that the requests under way are answered while the writer still runs.

    The server is gRPC's asyncio one, on an event loop of its own thread: a request's message
    arrives without holding a thread, and only a whole one is handed to ``Collector.export`` on one
    of ``workers`` threads, where it waits for its commit.

    Args:
        collector: Decodes, stores and acknowledges what arrives; its ``token`` (``authorization``
            metadata, ``Bearer <token>``) and ``max_body`` (the largest message, after
            decompression) apply.
        host: Interface to bind; loopback by default. Any other needs the collector's token.
        port: 4317 is OTLP/gRPC's.
        workers: Requests decoded and waiting for their commit at once.
        max_concurrent_rpcs: Requests under way at once, arriving or served.
        receive_timeout_s: Longest wait for a request's message to arrive whole.
        idle_timeout_s: A connection with no request for this long is closed.

    Raises:
        ConfigError: a non-loopback host without a token, or a port that cannot be bound.
    """

    def __init__(self, collector: Collector, *, host: str = "127.0.0.1", port: int = OTLP_GRPC_PORT,
                 workers: int = _WORKERS, max_concurrent_rpcs: int = _MAX_CONCURRENT_RPCS,
                 receive_timeout_s: float = _RECEIVE_TIMEOUT_S, idle_timeout_s: float = _IDLE_TIMEOUT_S) -> None:
        check_exposure(host, collector.token)
        self.collector = collector
        self.host = host
        self.receive_timeout_s = receive_timeout_s
        options = [
            ("grpc.max_receive_message_length", collector.max_body),
            ("grpc.max_connection_idle_ms", int(idle_timeout_s * 1000)),
            ("grpc.keepalive_time_ms", int(_KEEPALIVE_S * 1000)),
            ("grpc.keepalive_timeout_ms", int(_KEEPALIVE_TIMEOUT_S * 1000)),
            # gRPC sets SO_REUSEPORT by default, and a second server would then share the port
            # silently with the first; without it, a taken port fails here.
            ("grpc.so_reuseport", 0),
        ]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flightrec-grpc")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flightrec-grpc", daemon=True)
        self._thread.start()
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self._run(self._bind(address, options, max_concurrent_rpcs))
        except RuntimeError:
            self.port = 0
        if not self.port:
            self._stop_loop()
            raise ConfigError(f"cannot listen for OTLP/gRPC on {address}: the port is taken or the address is not "
                              "this machine's; choose a free port (flightrec serve --grpc-port, or --no-grpc).")

    async def _bind(self, address: str, options: list[tuple[str, Any]], max_concurrent_rpcs: int) -> int:
        # An asyncio server belongs to the loop it is made on: made here, on the receiver's own.
        # The method is served as stream-unary, which a unary client cannot tell apart on the
        # wire, so that the wait for its one message can be bounded (receive_timeout_s).
        handler = grpc.method_handlers_generic_handler(
            EXPORT_METHOD.split("/")[1],
            # No deserializer: the collector parses the bytes, as it does a body over HTTP.
            {"Export": grpc.stream_unary_rpc_method_handler(self._export)},
        )
        self._server = grpc.aio.server(handlers=[handler], options=options,
                                       maximum_concurrent_rpcs=max_concurrent_rpcs)
        return self._server.add_insecure_port(address)

    @property
    def url(self) -> str:
        """The endpoint to give an OTLP/gRPC exporter (``http://`` means without TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> GrpcReceiver:
        """Serves on the receiver's own thread; returns at once."""
        self._run(self._server.start())
        return self

    def close(self, grace_s: float = _CLOSE_GRACE_S) -> None:
        """Stops taking requests and waits for those under way to be answered (their spans
        committed, or refused), cancelling any still running after ``grace_s``.

        Blocks until every request has ended; the collector must still be open.
        """
        self._run(self._server.stop(grace_s))
        self._stop_loop()

    def __enter__(self) -> GrpcReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, work: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(work, self._loop).result()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
        self._pool.shutdown(wait=True)

    async def _export(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> bytes:
        collector = self.collector
        collector.stats.count(requests=1)
        metadata = dict(context.invocation_metadata() or ())
        if not collector.authorized(metadata.get("authorization")):  # refused before its message is read
            await self._refuse(context, collector.unauthorized())
        try:
            request = await asyncio.wait_for(anext(requests), self.receive_timeout_s)
        except TimeoutError:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED,
                                f"the request did not arrive whole within {self.receive_timeout_s:g} s; "
                                "send it again, faster, or in smaller batches")
        except StopAsyncIteration:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no request message: send one "
                                                                  "ExportTraceServiceRequest")
        # On a worker thread: the export blocks until the commit.
        answer = await asyncio.get_running_loop().run_in_executor(
            self._pool, collector.export, request, "application/x-protobuf")
        if answer.status != 200:
            await self._refuse(context, answer)
        return answer.body

    @staticmethod
    async def _refuse(context: grpc.aio.ServicerContext, answer: Answer) -> NoReturn:
        code, trailers = _status(answer)
        await context.abort(code, answer.message, trailers)


def _status(answer: Answer) -> tuple[grpc.StatusCode, tuple[tuple[str, bytes], ...]]:
    """The gRPC code for a refusal, and its trailing metadata (the retry delay, for UNAVAILABLE)."""
    if answer.status == 401:
        return grpc.StatusCode.UNAUTHENTICATED, ()
    if answer.status < 500:
        return grpc.StatusCode.INVALID_ARGUMENT, ()
    code = grpc.StatusCode.UNAVAILABLE
    retry_after = answer.headers.get("Retry-After", "")
    if not retry_after.isdigit():
        return code, ()
    info = RetryInfo(retry_delay=Duration(seconds=int(retry_after)))
    detail = AnyMessage()
    detail.Pack(info)
    status = Status(code=code.value[0], message=answer.message, details=[detail])
    # grpc-status-details-bin is where gRPC clients (Go, Java, .NET) read a status's details;
    # the Python OTLP exporter reads RetryInfo from a key of its own.
    return code, (("grpc-status-details-bin", status.SerializeToString()),
                  ("google.rpc.retryinfo-bin", info.SerializeToString()))
