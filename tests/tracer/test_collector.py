"""The OTLP/HTTP collector, driven over loopback by the real OTLP exporter, by hostile payloads,
and by a SIGKILL in the middle of a load."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tracer._collector import Collector, wait_until_serving
from tracer._errors import StoreError, UnstorableError
from tracer._ingest import Batch, Ingestor, from_readable
from tracer._spill import read_segment, spill_dir

PROTOBUF = "application/x-protobuf"


def post(url: str, body: bytes, content_type: str = PROTOBUF, **headers: str) -> tuple[int, bytes]:
    request = urllib.request.Request(f"{url}/v1/traces", data=body, method="POST",
                                     headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def agent_spans() -> list:
    """A recorded agent session (LLM calls, a retry, a tool call) as the SDK's finished spans."""
    memory = InMemorySpanExporter()
    rec = tracer.Recorder(":memory:")
    rec.provider.add_span_processor(SimpleSpanProcessor(memory))
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI(errors=[529]).client()))
    rec.shutdown()
    return list(memory.get_finished_spans())


TABLES = ("spans", "llm_calls", "tool_calls", "turns", "sessions", "content", "message_chain")


def dump(db: str) -> dict[str, list]:
    with tracer.Store(db, read_only=True) as store:
        return {t: sorted(map(repr, store.sql(f"SELECT * FROM {t}"))) for t in TABLES}


def test_spans_sent_over_otlp_are_stored_exactly_as_the_embedded_exporter_stores_them(tmp_path):
    spans = agent_spans()
    embedded = str(tmp_path / "embedded.duckdb")
    with tracer.Store(embedded) as store:
        batch = Batch()
        Ingestor().build([from_readable(s) for s in spans], batch)
        store.write(batch)
    served = str(tmp_path / "served.duckdb")
    with Collector(served, port=0) as collector:
        status, _ = post(collector.url, encode_spans(spans).SerializeToString())
        assert status == 200
    assert dump(served) == dump(embedded)
    with tracer.Store(served, read_only=True) as store:
        assert store.verify_requests().exact == store.verify_requests().total > 0


def test_a_recorder_with_an_endpoint_sends_to_the_collector(tmp_path):
    db = str(tmp_path / "served.duckdb")
    with Collector(db, port=0) as collector:
        rec = tracer.Recorder(endpoint=collector.url)
        with rec.session(agent="support") as session:
            run_agent(rec.instrument(FakeAPI().client()))
        rec.shutdown()
        assert rec.stats.written > 0 and rec.stats.dropped == 0
    with tracer.Store(db, read_only=True) as store:
        assert store.get_session(session.id).llm_calls == 2


SENDER = r"""
import sys, tracer
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
provider = TracerProvider()
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=sys.argv[1] + "/v1/traces"),
                                               max_export_batch_size=200))
t = provider.get_tracer("load")
for i in range(int(sys.argv[3])):
    with t.start_as_current_span(f"{sys.argv[2]}-{i}", attributes={"gen_ai.conversation.id": sys.argv[2]}):
        pass
provider.shutdown()
"""


def test_several_processes_send_at_once_and_every_span_arrives_exactly_once(tmp_path):
    db = str(tmp_path / "many.duckdb")
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    with Collector(db, port=0) as collector:
        procs = [subprocess.Popen([sys.executable, str(script), collector.url, f"p{k}", "1500"])
                 for k in range(4)]
        assert [p.wait(120) for p in procs] == [0, 0, 0, 0]
    with tracer.Store(db, read_only=True) as store:
        rows = store.sql("SELECT count(*), count(DISTINCT span_id), count(DISTINCT name) FROM spans")
    assert rows == [(6000, 6000, 6000)]


@pytest.fixture
def collector(tmp_path):
    with Collector(str(tmp_path / "c.duckdb"), port=0, max_body=1_000_000) as c:
        yield c


def test_hostile_and_malformed_requests_get_a_clear_4xx_and_the_server_stays_up(collector):
    good = encode_spans(agent_spans()).SerializeToString()
    cases = [
        (good[: len(good) // 2], PROTOBUF, {}, 400),                               # truncated protobuf
        (b"\xff" * 200, PROTOBUF, {}, 400),                                          # garbage
        (b"{not json", "application/json", {}, 400),                                 # broken JSON
        (json.dumps({"resourceSpans": "nope"}).encode(), "application/json", {}, 400),
        (good, "text/plain", {}, 415),                                               # wrong content type
        (good, PROTOBUF, {"Content-Encoding": "br"}, 415),                           # unknown encoding
        (b"x" * 2_000_000, PROTOBUF, {}, 413),                                       # over the size limit
        (gzip.compress(b"\0" * 50_000_000), PROTOBUF, {"Content-Encoding": "gzip"}, 413),  # a gzip bomb
        (b"\x1f\x8b not gzip", PROTOBUF, {"Content-Encoding": "gzip"}, 400),
        # Numbers protobuf's JSON parser lets through as Python errors, which used to drop the connection.
        (b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c",'
         b'"spanId":"aaaaaaaaaaaaaaa1","name":"x","kind":1e400}]}]}]}', "application/json", {}, 400),
        (b'{"resourceSpans":[{"scopeSpans":[{"scope":{"name":"s","droppedAttributesCount":-1e400}}]}]}',
         "application/json", {}, 400),
    ]
    for body, content_type, headers, expected in cases:
        status, text = post(collector.url, body, content_type, **headers)
        assert status == expected, (expected, text)
        assert text.strip(), "every error says what was wrong"
    assert post(collector.url, good)[0] == 200  # still serving
    assert collector.stats.bad_requests == len(cases)


def test_invalid_spans_are_rejected_as_a_partial_success(collector):
    spans = agent_spans()
    request = encode_spans(spans)
    request.resource_spans[0].scope_spans[0].spans[0].trace_id = b"\0" * 16
    status, body = post(collector.url, request.SerializeToString())
    assert status == 200
    response = ExportTraceServiceResponse.FromString(body)
    assert response.partial_success.rejected_spans == 1 and "trace_id" in response.partial_success.error_message
    assert collector.stats.spans_committed == len(spans) - 1


def test_a_token_is_required_off_loopback_and_checked_when_set(tmp_path):
    with pytest.raises(tracer.ConfigError, match="bearer token"):
        Collector(str(tmp_path / "t.duckdb"), host="0.0.0.0", port=0)
    good = encode_spans(agent_spans()).SerializeToString()
    with Collector(str(tmp_path / "t.duckdb"), port=0, token="s3cret") as c:
        assert post(c.url, good)[0] == 401
        assert post(c.url, good, Authorization="Bearer wrong")[0] == 401
        assert post(c.url, good, Authorization="Bearer s3cret")[0] == 200


def test_a_full_queue_answers_503_with_retry_after(tmp_path, monkeypatch):
    with Collector(str(tmp_path / "busy.duckdb"), port=0, max_pending_spans=10) as c:
        release = threading.Event()
        real = c.store.write
        writing = threading.Event()
        monkeypatch.setattr(c.store, "write", lambda batch: (writing.set(), release.wait(30), real(batch)))
        body = encode_spans(agent_spans()).SerializeToString()
        first = threading.Thread(target=post, args=(c.url, body))
        first.start()
        assert writing.wait(30)  # the first request's spans are held at the writer, counted as pending
        request = urllib.request.Request(f"{c.url}/v1/traces", data=body, headers={"Content-Type": PROTOBUF})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 503 and info.value.headers["Retry-After"] == "1"
        release.set()
        first.join(30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(db: str, port: int) -> subprocess.Popen:
    flightrec = Path(sys.executable).with_name("flightrec")
    proc = subprocess.Popen([str(flightrec), "serve", "--db", db, "--port", str(port), "--no-grpc",
                             "--no-dashboard"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_until_serving(f"http://127.0.0.1:{port}", 30)
    return proc


KILL_AFTER_ACKED = 500
"""Acknowledged spans before the SIGKILL; the sender goes on sending, so the kill lands mid-load."""


def test_a_sigkill_mid_load_loses_nothing_acknowledged_and_a_restart_resumes(tmp_path):
    kill_mid_load(str(tmp_path / "kill.duckdb"))


def kill_mid_load(db: str) -> None:
    """Kills a serve of ``db`` (-9) while a sender posts to it, restarts it, and checks that every span
    it had acknowledged was stored and that the restarted serve writes."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve(db, port)
    acked: list[str] = []
    enough = threading.Event()
    stop = threading.Event()
    provider = TracerProvider()
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    t = provider.get_tracer("kill")

    def send() -> None:
        n = 0
        while not stop.is_set():
            for _ in range(50):
                with t.start_as_current_span(f"s{n}"):
                    n += 1
            spans = memory.get_finished_spans()
            memory.clear()
            try:
                status, _ = post(url, encode_spans(spans).SerializeToString())
            except OSError:
                return
            if status == 200:
                acked.extend(f"{s.context.span_id:016x}" for s in spans)
                if len(acked) >= KILL_AFTER_ACKED:
                    enough.set()

    sender = threading.Thread(target=send)
    sender.start()
    # Killed at a count of acknowledged spans, not after a time: as many on a slow machine as on a fast one.
    assert enough.wait(120), f"the collector acknowledged {len(acked)} spans, not {KILL_AFTER_ACKED}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    stop.set()
    sender.join(30)
    restarted = serve(db, port)
    try:
        status, _ = post(url, encode_spans(agent_spans()).SerializeToString())
        assert status == 200  # the restarted collector writes on the same file
    finally:
        restarted.send_signal(signal.SIGTERM)
        restarted.wait(30)
    with tracer.Store(db, read_only=True) as store:
        stored = {r[0] for r in store.sql("SELECT span_id FROM spans")}
    assert set(acked) <= stored, f"{len(set(acked) - stored)} acknowledged spans lost"


# -- a large request, a slice at a time -------------------------------------------------------------


def embedded_dump(spans: list, db: str) -> dict[str, list]:
    """What the embedded exporter stores for ``spans`` exported one at a time."""
    with tracer.Store(db) as store:
        ingestor = Ingestor()
        for span in spans:
            store.write(ingestor.build([from_readable(span)], Batch()))
    return dump(db)


def test_a_request_is_decoded_a_slice_at_a_time_committed_at_once_and_answered_after_the_commit(tmp_path,
                                                                                                monkeypatch):
    monkeypatch.setattr("tracer._collector.SLICE_BYTES", 1)  # a slice a span
    monkeypatch.setattr("tracer._collector._GATHER_MAX_S", 600.0)  # the group ends when the request waits, only
    monkeypatch.setattr("tracer._collector._GROUP_AGE_S", 600.0)
    spans = agent_spans()
    db = str(tmp_path / "sliced.duckdb")
    with Collector(db, port=0) as collector:
        slices: list[int] = []
        writes: list[int] = []
        writing, release = threading.Event(), threading.Event()
        real_submit, real_write = collector.submit, collector.store.write

        def submit(records: list, **kwargs) -> object:
            # The slice before was taken (ingested) already, and its records dropped: one slice is held.
            slices.append(len(records))
            return real_submit(records, **kwargs)

        def write(batch: Batch) -> None:
            writes.append(len(batch.spans))
            writing.set()
            release.wait(30)
            real_write(batch)

        monkeypatch.setattr(collector, "submit", submit)
        monkeypatch.setattr(collector.store, "write", write)
        answers: list[int] = []
        sender = threading.Thread(target=lambda: answers.append(post(collector.url, encode_spans(spans)
                                                                     .SerializeToString())[0]))
        sender.start()
        assert writing.wait(30)
        assert answers == []  # every slice is in the transaction under way: not answered yet
        release.set()
        sender.join(30)
    assert answers == [200] and slices == [1] * len(spans) and writes == [len(spans)]
    assert dump(db) == embedded_dump(spans, str(tmp_path / "embedded.duckdb"))


def test_during_a_checkpoint_requests_are_answered_from_the_spill_and_committed_after_it(tmp_path, monkeypatch):
    # DuckDB lets no commit through while it checkpoints (a second or more at serve's log size): the writer
    # answers once the spans are synced to the spill, and commits them when the checkpoint is over.
    monkeypatch.setattr("tracer._collector._CHECKPOINT_WAL_BYTES", 1)  # the first commit starts a checkpoint
    monkeypatch.setattr("tracer._collector.IDLE_CHECKPOINT_S", 3600.0)
    spans = agent_spans()
    half = len(spans) // 2
    db = str(tmp_path / "held.duckdb")
    with Collector(db, port=0) as collector:
        checkpointing, release = threading.Event(), threading.Event()
        real_checkpoint = collector.store.checkpoint

        def checkpoint() -> bool:
            checkpointing.set()
            release.wait(30)
            return real_checkpoint()

        monkeypatch.setattr(collector.store, "checkpoint", checkpoint)
        assert post(collector.url, encode_spans(spans[:half]).SerializeToString())[0] == 200
        assert checkpointing.wait(30)
        assert post(collector.url, encode_spans(spans[half:]).SerializeToString())[0] == 200
        assert collector.stats.spans_held == len(spans) - half
        assert collector.store.sql("SELECT count(*) FROM spans") == [(half,)]  # not committed yet
        # What a kill -9 now would leave: the file, its log and the spill; the next open stores the rest.
        crashed = tmp_path / "crashed"
        crashed.mkdir()
        for path in (Path(db), Path(f"{db}.wal"), spill_dir(db)):
            (shutil.copytree if path.is_dir() else shutil.copy)(path, crashed / path.name)
        tracer.Store(str(crashed / "held.duckdb")).close()  # a restart: opened for writing, it recovers
        assert dump(str(crashed / "held.duckdb")) == embedded_dump(spans, str(tmp_path / "embedded.duckdb"))
        release.set()
        until(lambda: collector.store.sql("SELECT count(*) FROM spans") == [(len(spans),)], "the held commit")
        until(lambda: not any(next(read_segment(p.read_bytes()), None) for p in spill_dir(db).glob("*.spill")),
              "the spill emptied")
    assert not spill_dir(db).exists()  # emptied, then removed at close
    assert dump(db) == embedded_dump(spans, str(tmp_path / "embedded2.duckdb"))


def until(condition, what: str) -> None:
    """Waits for ``condition()`` (another thread's progress), failing the test if it never comes."""
    for _ in range(30_000):
        if condition():
            return
        threading.Event().wait(0.001)
    raise AssertionError(f"never came: {what}")


def start_slow_request(url: str, body: bytes) -> socket.socket:
    """A POST whose headers and first body byte are sent, the rest held back: a request under way."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)
    sock.sendall(f"POST /v1/traces HTTP/1.1\r\nHost: {host}\r\nContent-Type: {PROTOBUF}\r\n"
                 f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:1])
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """An HTTP/1.1 response's status and body, read whole: its head and body may come in several reads."""
    def more() -> bytes:
        chunk = sock.recv(1 << 16)
        assert chunk, "the connection closed before the whole response came"
        return chunk

    data = b""
    while b"\r\n\r\n" not in data:
        data += more()
    head, body = data.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += more()
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize("slow_sender_finishes", [True, False])
def test_the_writer_waits_for_a_request_under_way_and_commits_it_with_the_others(tmp_path, monkeypatch,
                                                                                 slow_sender_finishes):
    # A commit's cost is mostly fixed: the writer holds a slice back while another request's body is
    # still arriving, and commits the two at once. Here it would wait as long as the test lasts, so a
    # request that ends without sending its slice must end the wait too. The writer never polls here:
    # the request that leaves every request waiting (or the slow one, as it ends) wakes it.
    monkeypatch.setattr("tracer._collector._GATHER_MAX_S", 600.0)
    monkeypatch.setattr("tracer._collector._GATHER_POLL_S", 600.0)
    monkeypatch.setattr("tracer._collector._GROUP_AGE_S", 600.0)
    spans = agent_spans()
    a, b = renamed(encode_spans(spans), 1), renamed(encode_spans(spans), 2)
    db = str(tmp_path / "gathered.duckdb")
    with Collector(db, port=0) as collector:
        slow = start_slow_request(collector.url, b)
        until(lambda: collector._requests == 1, "the slow request counted as under way")
        answers: list[int] = []
        sender = threading.Thread(target=lambda: answers.append(post(collector.url, a)[0]))
        sender.start()
        until(lambda: collector._blocked == 1 and collector._jobs.empty(), "the writer gathering a commit")
        if slow_sender_finishes:
            slow.sendall(b[1:])
            assert slow.recv(4096).startswith(b"HTTP/1.1 200")
        slow.close()
        sender.join(60)
        assert answers == [200]
        assert collector.stats.transactions == 1
        stored = {r[0] for r in collector.store.sql("SELECT session_id FROM sessions")}
    assert stored == ({"run-1", "run-2"} if slow_sender_finishes else {"run-1"})


def span_key(span) -> tuple[str, str]:
    """An SDK span's (trace id, span id), as the store keeps them."""
    return format(span.context.trace_id, "032x"), format(span.context.span_id, "016x")


def fail_writes_of(span: tuple[str, str], collector: Collector, monkeypatch, error: Exception, times: int) -> None:
    """Makes the collector's first ``times`` transactions that hold ``span`` (trace id, span id) raise ``error``."""
    failed: list[int] = []
    real = collector.store.write

    def write(batch: Batch) -> None:
        if len(failed) < times and any((row[0], row[1]) == span for row in batch.spans):
            failed.append(len(batch.spans))
            raise error
        real(batch)

    monkeypatch.setattr(collector.store, "write", write)


def test_a_request_whose_second_slice_fails_gets_a_503_and_its_retry_stores_every_span_once(tmp_path, monkeypatch,
                                                                                             caplog):
    monkeypatch.setattr("tracer._collector.SLICE_BYTES", 1)
    spans = agent_spans()
    body = encode_spans(spans).SerializeToString()
    db = str(tmp_path / "retried.duckdb")
    with Collector(db, port=0) as collector:
        # Its slices' transaction fails, then the second slice's alone (the first's alone is stored).
        fail_writes_of(span_key(spans[1]), collector, monkeypatch, StoreError("the disk is full (a test)"), times=2)
        status, text = post(collector.url, body)
        assert status == 503
        assert b"1 of its spans were stored, the rest not stored: the disk is full (a test); retry" in text
        # The failure is in serve's log too, not only in the client's answer.
        assert any(r.levelname == "WARNING" and "answered 503 for a retry: the disk is full (a test)" in r.getMessage()
                   for r in caplog.records)
        assert post(collector.url, body)[0] == 200  # the exporter's retry
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*), count(DISTINCT span_id) FROM spans") == [(len(spans), len(spans))]
    assert dump(db) == embedded_dump(spans, str(tmp_path / "embedded.duckdb"))


def test_a_slice_that_can_never_be_stored_is_rejected_alone_and_the_request_s_other_slices_are_stored(
        tmp_path, monkeypatch):
    monkeypatch.setattr("tracer._collector.SLICE_BYTES", 1)
    spans = agent_spans()
    db = str(tmp_path / "poison.duckdb")
    with Collector(db, port=0) as collector:
        fail_writes_of(span_key(spans[1]), collector, monkeypatch, UnstorableError("a value out of range (a test)"),
                       times=1_000)
        status, body = post(collector.url, encode_spans(spans).SerializeToString())
        response = ExportTraceServiceResponse.FromString(body)
        assert status == 200 and response.partial_success.rejected_spans == 1
        assert "a value out of range (a test)" in response.partial_success.error_message
        assert collector.stats.spans_rejected == 1
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM spans") == [(len(spans) - 1,)]


# -- one bad request among many ----------------------------------------------------------------------


def test_a_request_whose_slice_fails_its_shared_transaction_leaves_the_other_stored_whole(tmp_path, monkeypatch):
    # The slices of two requests are ingested into one transaction, which one request's span fails: the
    # writer has dropped the slices it ingested, so each request sends its own again, alone.
    monkeypatch.setattr("tracer._collector.SLICE_BYTES", 1)  # a slice a span
    monkeypatch.setattr("tracer._collector._GATHER_MAX_S", 600.0)
    monkeypatch.setattr("tracer._collector._GROUP_AGE_S", 600.0)
    spans = agent_spans()
    a, b = renamed(encode_spans(spans), 1), renamed(encode_spans(spans), 2)
    poisoned = ExportTraceServiceRequest.FromString(b).resource_spans[0].scope_spans[0].spans[1]
    with Collector(str(tmp_path / "shared.duckdb"), port=0) as collector:
        fail_writes_of((poisoned.trace_id.hex(), poisoned.span_id.hex()), collector, monkeypatch,
                       UnstorableError("a value out of range (a test)"), times=1_000)
        slow = start_slow_request(collector.url, b)
        until(lambda: collector._requests == 1, "the slow request counted as under way")
        answers: list[tuple[int, bytes]] = []
        sender = threading.Thread(target=lambda: answers.append(post(collector.url, a)))
        sender.start()
        until(lambda: collector._blocked == 1 and collector._jobs.empty(), "the writer gathering a commit")
        slow.sendall(b[1:])
        status, body = read_response(slow)
        slow.close()
        sender.join(60)
        assert answers == [(200, ExportTraceServiceResponse().SerializeToString())]
        assert status == 200
        response = ExportTraceServiceResponse.FromString(body)
        assert response.partial_success.rejected_spans == 1
        stored = collector.store.sql("SELECT session_id, count(*) FROM spans GROUP BY ALL ORDER BY 1")
    assert stored == [("run-1", len(spans)), ("run-2", len(spans) - 1)]


def test_a_request_that_cannot_be_stored_does_not_fail_the_others_in_its_transaction(tmp_path):
    from tests.tracer.test_foreign_shapes import Producer, genai_chat, sessions
    from tracer._ingest import from_readable

    def request(session: str, tokens: int) -> list:
        p = Producer()
        for k in range(2):  # two calls whose token counts overflow the session's sum when tokens is huge
            p.span("sdk", "chat", k * 10, k * 10 + 5, {**genai_chat(f"c{k}", "stop", history=k),
                                                       "gen_ai.conversation.id": session,
                                                       "gen_ai.usage.input_tokens": tokens})
        return [from_readable(s) for s in p.take()]

    db = str(tmp_path / "t.duckdb")
    with Collector(db, port=0) as collector:
        with collector.store._lock:  # the writer blocks on its first write, so the rest queue up together
            first = collector.submit(request("ok-0", 100))
            jobs = [collector.submit(request("poison", 2**62)), collector.submit(request("ok-1", 100)),
                    collector.submit(request("ok-2", 100))]
        for job in [first, *jobs]:
            assert job is not None and job.done.wait(30)
        assert [job.error is None for job in [first, *jobs]] == [True, False, True, True]
        assert jobs[0].final  # the spans' own fault: a retry would fail the same way
        # Over HTTP, such counts never reach the writer: they are dropped, named in the answer, and
        # the calls stored; the session stays writable.
        p = Producer()
        p.span("sdk", "chat", 0, 5, {**genai_chat("c", "stop"), "gen_ai.conversation.id": "again",
                                     "gen_ai.usage.input_tokens": 2**62})
        p.span("sdk", "chat", 10, 15, {**genai_chat("c", "stop", history=1), "gen_ai.conversation.id": "again",
                                       "gen_ai.usage.input_tokens": 2**62})
        status, body = post(collector.url, encode_spans(p.take()).SerializeToString())
        response = ExportTraceServiceResponse.FromString(body)
        assert status == 200 and response.partial_success.rejected_spans == 0
        assert "gen_ai.usage.input_tokens: not a count" in response.partial_success.error_message
        stored = {s[0] for s in sessions(collector)}
    assert stored == {"ok-0", "ok-1", "ok-2", "again"}


def renamed(request: ExportTraceServiceRequest, k: int) -> bytes:
    """``request`` as another run of its agent: new trace ids and conversation id, the rest the same."""
    copy = ExportTraceServiceRequest()
    copy.CopyFrom(request)
    traces: dict[bytes, bytes] = {}
    for resource_spans in copy.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                span.trace_id = traces.setdefault(span.trace_id, os.urandom(16))
                for attribute in span.attributes:
                    if attribute.key == "gen_ai.conversation.id":
                        attribute.value.string_value = f"run-{k}"
    return copy.SerializeToString()


def test_a_client_retrying_unstorable_spans_gets_a_final_400_while_three_others_are_all_stored(tmp_path):
    request = encode_spans(agent_spans())
    spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
    poison = ExportTraceServiceRequest()
    poison.CopyFrom(request)
    for resource_spans in poison.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:  # past what a BIGINT holds: never storable
                span.start_time_unix_nano = span.end_time_unix_nano = 2**64 - 1
    senders, requests = 3, 6
    db = str(tmp_path / "poison.duckdb")
    valid: list[int] = []
    bad: list[tuple[int, bytes]] = []
    done = threading.Event()
    with Collector(db, port=0) as collector:
        def send_valid(k: int) -> None:
            for n in range(requests):
                valid.append(post(collector.url, renamed(request, k * requests + n))[0])

        def send_poison() -> None:
            # An exporter that retries forever; bounded here so that the test ends whatever happens.
            while not done.is_set() and len(bad) < 500:
                bad.append(post(collector.url, poison.SerializeToString()))

        poisoner = threading.Thread(target=send_poison)
        poisoner.start()
        threads = [threading.Thread(target=send_valid, args=(k,)) for k in range(senders)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        done.set()
        poisoner.join(120)
    assert valid == [200] * senders * requests
    assert bad and {status for status, _ in bad} == {400}
    assert all(b"outside 0 to 2^63 - 1 ns" in text for _, text in bad)
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT count(*), count(DISTINCT session_id) FROM spans") == [
            (senders * requests * spans, senders * requests)]
        assert store.verify_requests().failures == []


def served_session(db: str, *, sent: str, policy: str | None) -> tuple[tracer.Collector, str]:
    """A session recorded with content mode ``sent`` and sent to a collector with the policy ``policy``."""
    with Collector(db, port=0, content=policy) as collector:
        rec = tracer.Recorder(content=sent, endpoint=collector.url, otlp_bodies=True)
        with rec.session(agent="support", customer="jane@example.com") as session:
            run_agent(rec.instrument(FakeAPI().client()), "Refund order 42, mail jane@example.com")
        rec.shutdown()
    return collector, session.id


@pytest.mark.parametrize(("sent", "policy", "stored"), [("full", "redacted", "redacted"), ("full", "none", "none"),
                                                        ("none", "redacted", "none"), ("redacted", None, "redacted")])
def test_the_stored_content_mode_is_the_stricter_of_the_senders_and_the_collectors(tmp_path, sent, policy, stored):
    db = str(tmp_path / "served.duckdb")
    _, session_id = served_session(db, sent=sent, policy=policy)
    with tracer.Store(db, read_only=True) as store:
        assert store.sql("SELECT content_mode FROM sessions") == [(stored,)]
        assert {m for (m,) in store.sql("SELECT content_mode FROM llm_calls")} == {stored}
        assert "jane@example.com" not in repr(store.sql("SELECT * FROM spans"))


def test_a_redacted_call_keeps_the_senders_hash_and_replay_says_it_cannot_be_rebuilt_exactly(tmp_path):
    import replay

    full, redacted = str(tmp_path / "full.duckdb"), str(tmp_path / "redacted.duckdb")
    served_session(full, sent="full", policy="full")
    _, session_id = served_session(redacted, sent="full", policy="redacted")
    hashes = "SELECT request_sha256 FROM llm_calls ORDER BY start_ns"
    with tracer.Store(full, read_only=True) as a, tracer.Store(redacted, read_only=True) as b:
        assert [h for (h,) in b.sql(hashes)] == [h for (h,) in a.sql(hashes)]  # the exact request's, as sent
        report = b.verify_requests()
    assert report.exact == 0 and report.total == 2
    assert all("redacted at capture" in f["reason"] for f in report.failures)
    rebuilt = replay.reconstruct(session_id, 1, db=redacted)
    assert not rebuilt.exact and rebuilt.sha256 != rebuilt.recorded_sha256
    assert rebuilt.notes and rebuilt.notes[0].startswith("REDACTED AT CAPTURE")
    assert "[REDACTED:email]" in json.dumps(rebuilt.request)


def test_the_collectors_content_mode_comes_from_the_environment_then_the_config_file_then_full(tmp_path,
                                                                                               monkeypatch):
    with Collector(str(tmp_path / "a.duckdb"), port=0) as collector:
        assert collector.policy.mode == "full"
    (tmp_path / "flightrec.toml").write_text('content = "none"\n')
    with Collector(str(tmp_path / "b.duckdb"), port=0) as collector:
        assert collector.policy.mode == "none"
    monkeypatch.setenv("FLIGHTREC_CONTENT", "redacted")
    with Collector(str(tmp_path / "c.duckdb"), port=0) as collector:
        assert collector.policy.mode == "redacted"
    with Collector(str(tmp_path / "d.duckdb"), port=0, content="full") as collector:
        assert collector.policy.mode == "full"


def test_the_writer_checkpoints_a_long_log_once_nothing_comes_and_leaves_a_short_one(tmp_path, monkeypatch):
    monkeypatch.setattr("tracer._collector.IDLE_CHECKPOINT_S", 0.0)  # idle at once: the test waits on the call
    db = str(tmp_path / "idle.duckdb")
    body = encode_spans(agent_spans()).SerializeToString()
    with Collector(db, port=0) as collector:
        calls: list[bool] = []
        idle = threading.Event()
        real = collector.idle_checkpoint

        def idle_checkpoint() -> bool:
            calls.append(real())
            idle.set()
            return calls[-1]

        monkeypatch.setattr(collector, "idle_checkpoint", idle_checkpoint)
        assert post(collector.url, body)[0] == 200
        assert idle.wait(30) and calls == [False]  # a short log is left for later
        wal = Path(f"{db}.wal")
        assert wal.stat().st_size > 0
        monkeypatch.setattr("tracer._collector.IDLE_CHECKPOINT_BYTES", 1)
        idle.clear()
        assert post(collector.url, encode_spans(agent_spans()).SerializeToString())[0] == 200
        assert idle.wait(30) and calls == [False, True]
        assert not wal.exists() or wal.stat().st_size == 0  # the log is in the file
