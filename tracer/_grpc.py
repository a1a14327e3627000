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

gRPC itself answers RESOURCE_EXHAUSTED to a message over ``max_body`` (after decompression) and
to an RPC past the concurrency cap, and UNIMPLEMENTED to the metrics and logs services.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from google.protobuf.any_pb2 import Any as AnyMessage
from google.protobuf.duration_pb2 import Duration
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status

from ._collector import _ACK_TIMEOUT_S, Answer, Collector, check_exposure
from ._errors import ConfigError

log = logging.getLogger("flightrec.collector")

OTLP_GRPC_PORT = 4317
"""OTLP/gRPC's registered port."""
EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

_WORKERS = 8
"""Requests served at once. Each holds a thread while its message arrives and until its spans are
committed, and up to ``max_body`` bytes: 8 × 16 MiB is the most the received messages take."""
_MAX_CONCURRENT_RPCS = 64
"""Requests past ``_WORKERS`` wait for a thread, their messages mostly unread (HTTP/2 flow control
holds them back); past this many, gRPC answers RESOURCE_EXHAUSTED at once."""
_IDLE_TIMEOUT_S = 120.0
"""A connection with no request for this long is closed (GOAWAY); the client reconnects when it
next exports, so idle agents hold nothing."""
_MAX_CONNECTION_AGE_S = 600.0
"""Every connection is closed after this long, and the client reconnects. It is what bounds a
client that never finishes sending a request: the synchronous server waits for the message on
one of the ``_WORKERS`` threads."""
_CONNECTION_GRACE_S = _ACK_TIMEOUT_S + 5
"""A request under way when its connection ages out gets the collector's longest wait for a commit."""
_KEEPALIVE_S = 60.0
"""The server pings a connection silent for this long, and drops it if the ping goes unanswered for
``_KEEPALIVE_TIMEOUT_S``: a peer that vanished (a killed host, a dropped network) is let go."""
_KEEPALIVE_TIMEOUT_S = 20.0
_CLOSE_GRACE_S = 5.0
"""How long ``close()`` lets requests under way finish before cancelling them (a slow sender)."""


class GrpcReceiver:
    """OTLP/gRPC on ``collector``: the ``TraceService/Export`` method, with its token and limits.

    Binds at once (``port`` 0 picks a free one: see ``port``); ``start()`` serves. Close it before
    the collector, so that the requests under way are answered while the writer still runs.

    Args:
        collector: Decodes, stores and acknowledges what arrives; its ``token`` (``authorization``
            metadata, ``Bearer <token>``) and ``max_body`` (the largest message, after
            decompression) apply.
        host: Interface to bind; loopback by default. Any other needs the collector's token.
        port: 4317 is OTLP/gRPC's.
        workers: Requests served at once (see ``_WORKERS``).
        max_concurrent_rpcs: Requests accepted at once, serving or waiting for a worker.
        idle_timeout_s: A connection with no request for this long is closed.

    Raises:
        ConfigError: a non-loopback host without a token, or a port that cannot be bound.
    """

    def __init__(self, collector: Collector, *, host: str = "127.0.0.1", port: int = OTLP_GRPC_PORT,
                 workers: int = _WORKERS, max_concurrent_rpcs: int = _MAX_CONCURRENT_RPCS,
                 idle_timeout_s: float = _IDLE_TIMEOUT_S) -> None:
        check_exposure(host, collector.token)
        self.collector = collector
        self.host = host
        options = [
            ("grpc.max_receive_message_length", collector.max_body),
            ("grpc.max_connection_idle_ms", int(idle_timeout_s * 1000)),
            ("grpc.max_connection_age_ms", int(_MAX_CONNECTION_AGE_S * 1000)),
            ("grpc.max_connection_age_grace_ms", int(_CONNECTION_GRACE_S * 1000)),
            ("grpc.keepalive_time_ms", int(_KEEPALIVE_S * 1000)),
            ("grpc.keepalive_timeout_ms", int(_KEEPALIVE_TIMEOUT_S * 1000)),
            # gRPC sets SO_REUSEPORT by default, and a second server would then share the port
            # silently with the first; without it, a taken port fails here.
            ("grpc.so_reuseport", 0),
        ]
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flightrec-grpc")
        handler = grpc.method_handlers_generic_handler(
            EXPORT_METHOD.split("/")[1],
            # No deserializer: the collector parses the bytes, as it does a body over HTTP.
            {"Export": grpc.unary_unary_rpc_method_handler(self._export)},
        )
        self._server = grpc.server(self._pool, handlers=[handler], options=options,
                                   maximum_concurrent_rpcs=max_concurrent_rpcs)
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            self.port = self._server.add_insecure_port(address)
        except RuntimeError:
            self.port = 0
        if not self.port:
            self._pool.shutdown(wait=False)
            raise ConfigError(f"cannot listen for OTLP/gRPC on {address}: the port is taken or the address is not "
                              "this machine's; choose a free port (flightrec serve --grpc-port, or --no-grpc).")

    @property
    def url(self) -> str:
        """The endpoint to give an OTLP/gRPC exporter (``http://`` means without TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> GrpcReceiver:
        """Serves on gRPC's own threads; returns at once."""
        self._server.start()
        return self

    def close(self, grace_s: float = _CLOSE_GRACE_S) -> None:
        """Stops taking requests and waits for those under way to be answered (their spans
        committed, or refused), cancelling any still running after ``grace_s``.

        Blocks until every request has ended; the collector must still be open.
        """
        self._server.stop(grace_s).wait()
        self._pool.shutdown(wait=True)

    def __enter__(self) -> GrpcReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _export(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        collector = self.collector
        collector.stats.requests += 1
        metadata: dict[str, Any] = dict(context.invocation_metadata())
        if collector.authorized(metadata.get("authorization")):
            answer = collector.export(request, "application/x-protobuf")
        else:
            answer = collector.unauthorized()
        if answer.status == 200:
            return answer.body
        code, trailers = _status(answer)
        context.set_trailing_metadata(trailers)
        context.abort(code, answer.message)  # raises: gRPC answers with the status


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
