"""OTLP/gRPC beside OTLP/HTTP: the standard gRPC exporter lands the same rows, and the collector's
token, limits, partial success and backpressure come out as the gRPC codes OTLP names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from google.rpc.error_details_pb2 import RetryInfo
from google.rpc.status_pb2 import Status
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from opentelemetry.sdk.trace.export import SpanExportResult

import tracer
from tests.tracer.test_collector import agent_spans, dump, post
from tracer._cli import main
from tracer._collector import Collector
from tracer._grpc import EXPORT_METHOD, GrpcReceiver


@pytest.fixture(scope="module")
def spans() -> list:
    return agent_spans()


@pytest.fixture
def served(tmp_path):
    """A collector with OTLP/gRPC beside it: (collector, receiver)."""
    with Collector(str(tmp_path / "g.duckdb"), port=0, max_body=1_000_000) as collector:
        with GrpcReceiver(collector, port=0) as receiver:
            yield collector, receiver


def call(receiver: GrpcReceiver, body: bytes, **kwargs) -> tuple[grpc.StatusCode, bytes | str, dict]:
    """One raw ``Export`` (the request's bytes as given): its code, the response or the message, and
    the trailing metadata."""
    with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
        try:
            reply = channel.unary_unary(EXPORT_METHOD)(body, timeout=30, **kwargs)
        except grpc.RpcError as error:
            return error.code(), error.details(), dict(error.trailing_metadata() or ())
        return grpc.StatusCode.OK, reply, {}


def stored(collector: Collector) -> int:
    return collector.store.sql("SELECT count(*) FROM spans")[0][0]


@pytest.mark.parametrize("compression", [None, grpc.Compression.Gzip], ids=["identity", "gzip"])
def test_the_grpc_exporter_lands_the_same_rows_as_otlp_http(tmp_path, spans, compression):
    over_http = str(tmp_path / "http.duckdb")
    with Collector(over_http, port=0) as collector:
        assert post(collector.url, encode_spans(spans).SerializeToString())[0] == 200
    over_grpc = str(tmp_path / "grpc.duckdb")
    with Collector(over_grpc, port=0) as collector, GrpcReceiver(collector, port=0) as receiver:
        exporter = OTLPSpanExporter(endpoint=receiver.url, insecure=True, compression=compression)
        assert exporter.export(spans) == SpanExportResult.SUCCESS  # answered once committed
        assert collector.stats.spans_committed == len(spans)
        exporter.shutdown()
    assert dump(over_grpc) == dump(over_http)


def test_the_token_is_required_in_the_authorization_metadata(tmp_path, monkeypatch, spans):
    with pytest.raises(tracer.ConfigError, match="bearer token"):
        with Collector(str(tmp_path / "open.duckdb"), port=0) as open_collector:
            GrpcReceiver(open_collector, host="0.0.0.0", port=0)
    body = encode_spans(spans).SerializeToString()
    with Collector(str(tmp_path / "t.duckdb"), port=0, token="s3cret") as collector, \
            GrpcReceiver(collector, port=0) as receiver:
        code, message, _ = call(receiver, body)
        assert code == grpc.StatusCode.UNAUTHENTICATED and "Bearer <token>" in message
        assert call(receiver, body, metadata=[("authorization", "Bearer wrong")])[0] == grpc.StatusCode.UNAUTHENTICATED
        assert stored(collector) == 0
        # As a user sets it: the exporter sends OTEL_EXPORTER_OTLP_HEADERS as metadata.
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer s3cret")
        exporter = OTLPSpanExporter(endpoint=receiver.url, insecure=True)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
        assert stored(collector) == len(spans)


def test_a_malformed_or_oversized_request_is_refused_for_good_and_stores_nothing(served, spans):
    collector, receiver = served
    good = encode_spans(spans).SerializeToString()
    for body in (good[: len(good) // 2], b"\xff" * 200):
        code, message, _ = call(receiver, body)
        assert code == grpc.StatusCode.INVALID_ARGUMENT  # OTLP's "do not retry"
        assert "ExportTraceServiceRequest" in message  # what was wrong, and what to send instead
    # gRPC's own limit is the collector's max_body, after decompression too (a gzip bomb).
    for body, compression in ((b"x" * 2_000_000, None), (b"\0" * 50_000_000, grpc.Compression.Gzip)):
        code, message, _ = call(receiver, body, compression=compression)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in message
    assert stored(collector) == 0 and collector.stats.bad_requests == 2
    assert call(receiver, good)[0] == grpc.StatusCode.OK  # still serving
    assert call(receiver, b"")[:2] == (grpc.StatusCode.OK, b"")  # an empty request is a success (OTLP)


def test_rejected_spans_are_reported_as_a_partial_success(served, spans):
    collector, receiver = served
    request = encode_spans(spans)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\0" * 16
    code, reply, _ = call(receiver, request.SerializeToString())
    assert code == grpc.StatusCode.OK
    partial = ExportTraceServiceResponse.FromString(reply).partial_success
    assert partial.rejected_spans == 1 and "trace_id" in partial.error_message
    assert stored(collector) == len(spans) - 1


def held_writer(collector: Collector, receiver: GrpcReceiver, spans: list) -> grpc.Future:
    """Sends one request while the writer is held (``collector.store._lock``, taken by the caller)
    and returns once it waits for its commit: the request's future."""
    queued = threading.Event()
    real = collector.submit

    def submit(*args: Any, **kwargs: Any) -> Any:
        job = real(*args, **kwargs)
        queued.set()  # the request was decoded and queued for the writer
        return job

    collector.submit = submit  # type: ignore[method-assign]
    channel = grpc.insecure_channel(f"127.0.0.1:{receiver.port}")
    future = channel.unary_unary(EXPORT_METHOD).future(encode_spans(spans).SerializeToString(), timeout=60)
    future.add_done_callback(lambda _: channel.close())
    assert queued.wait(30), future
    collector.submit = real  # type: ignore[method-assign]
    return future


def test_a_busy_writer_answers_unavailable_with_the_retry_delay(tmp_path, spans):
    with Collector(str(tmp_path / "busy.duckdb"), port=0, max_pending_spans=len(spans)) as collector, \
            GrpcReceiver(collector, port=0) as receiver:
        with collector.store._lock:
            first = held_writer(collector, receiver, spans)
            code, message, trailers = call(receiver, encode_spans(spans).SerializeToString())
        assert code == grpc.StatusCode.UNAVAILABLE and "retry" in message  # OTLP's "retry later"
        # Where the Python exporter reads the delay, and in the status details other SDKs read.
        assert RetryInfo.FromString(trailers["google.rpc.retryinfo-bin"]).retry_delay.seconds == 1
        status = Status.FromString(trailers["grpc-status-details-bin"])
        info = RetryInfo()
        assert status.code == grpc.StatusCode.UNAVAILABLE.value[0] and status.details[0].Unpack(info)
        assert info.retry_delay.seconds == 1
        assert first.result(30) == b""  # the held request is answered once committed
        assert collector.stats.refused_busy == 1 and stored(collector) == len(spans)


def test_close_answers_the_requests_under_way_before_it_returns(tmp_path, spans):
    db = str(tmp_path / "close.duckdb")
    with Collector(db, port=0) as collector:
        receiver = GrpcReceiver(collector, port=0).start()
        with collector.store._lock:
            future = held_writer(collector, receiver, spans)
            closing = threading.Thread(target=receiver.close)
            closing.start()
            closing.join(0.2)
            assert closing.is_alive(), "close() returned with a request under way"
        closing.join(30)
        assert not closing.is_alive()
        assert future.result(30) == b""  # answered, not cancelled (it may still be on its way when close returns)
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM spans")[0][0] == len(spans)


def test_a_stalled_sender_holds_no_worker_and_is_let_go(served, spans):
    collector, _ = served
    arrived = threading.Event()

    def stalled():  # a client that opens its request and never sends the message
        arrived.wait(30)
        yield b""

    with GrpcReceiver(collector, port=0, workers=1, receive_timeout_s=1) as receiver:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
            stuck = channel.stream_unary(EXPORT_METHOD).future(stalled(), timeout=60)
            # The one worker is free for a request that arrives whole (the stalled one was sent first).
            assert channel.unary_unary(EXPORT_METHOD)(encode_spans(spans).SerializeToString(), timeout=30) == b""
            with pytest.raises(grpc.RpcError) as info:
                stuck.result(30)
            arrived.set()
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and "did not arrive whole" in info.value.details()
    assert stored(collector) == len(spans)


def test_a_second_receiver_on_a_taken_port_is_refused(served):
    collector, receiver = served
    # gRPC's default SO_REUSEPORT would let it share the port silently, and take half the requests.
    with pytest.raises(tracer.ConfigError, match="choose a free port"):
        GrpcReceiver(collector, port=receiver.port)


def test_idle_connections_are_closed(served):
    collector, _ = served
    with GrpcReceiver(collector, port=0, idle_timeout_s=0.1) as receiver:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.port}") as channel:
            assert channel.unary_unary(EXPORT_METHOD)(b"", timeout=30) == b""
            idle = threading.Event()
            channel.subscribe(lambda state: state == grpc.ChannelConnectivity.IDLE and idle.set())
            assert idle.wait(30), "the server kept an idle connection open"


# -- flightrec serve ------------------------------------------------------------------------------


def test_serve_takes_otlp_grpc_on_grpc_port_and_says_how_to_send(tmp_path, spans):
    db = str(tmp_path / "serve.duckdb")
    flightrec = str(Path(sys.executable).with_name("flightrec"))
    proc = subprocess.Popen([flightrec, "serve", "--db", db, "--port", "0", "--grpc-port", "0", "--no-dashboard"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
        assert lines[0].startswith("flightrec collector on http://127.0.0.1:"), proc.stderr.read()
        hint = lines[2].split()
        assert hint[:-1] == ["or", "over", "gRPC:", "OTEL_EXPORTER_OTLP_PROTOCOL=grpc"]
        endpoint = hint[-1].removeprefix("OTEL_EXPORTER_OTLP_ENDPOINT=")
        exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
        assert exporter.export(spans) == SpanExportResult.SUCCESS
        exporter.shutdown()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM spans")[0][0] == len(spans)


def test_serve_on_a_taken_grpc_port_says_what_to_do(tmp_path, taken_port):
    result = CliRunner().invoke(main, ["serve", "--db", str(tmp_path / "s.duckdb"), "--port", "0",
                                       "--grpc-port", str(taken_port), "--no-dashboard"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"error: cannot listen on 127.0.0.1:{taken_port} (address already in use): pass --grpc-port with a free port."]
    assert not (tmp_path / "s.duckdb").exists()


def test_the_content_policy_applies_over_grpc_as_over_http(tmp_path, memory):
    provider, exporter = memory
    with provider.get_tracer("crm").start_as_current_span("crm.lookup", attributes={
            "gen_ai.conversation.id": "s-1", "crm.note": "mail jane@example.com"}) as span:
        span.add_event("note", {"detail": "call +44 20 7946 0958"})
    sent = list(exporter.get_finished_spans())
    over_http, over_grpc = str(tmp_path / "http.duckdb"), str(tmp_path / "grpc.duckdb")
    with Collector(over_http, port=0, content="redacted") as collector:
        assert post(collector.url, encode_spans(sent).SerializeToString())[0] == 200
    with Collector(over_grpc, port=0, content="redacted") as collector, GrpcReceiver(collector, port=0) as receiver:
        grpc_exporter = OTLPSpanExporter(endpoint=receiver.url, insecure=True)
        assert grpc_exporter.export(sent) == SpanExportResult.SUCCESS
        grpc_exporter.shutdown()
    assert dump(over_grpc) == dump(over_http)
    rows = repr(dump(over_grpc)["spans"])
    assert "[REDACTED:email]" in rows and "[REDACTED:phone]" in rows and "jane@" not in rows and "7946" not in rows
