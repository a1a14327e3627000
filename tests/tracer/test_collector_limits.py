"""The collector's transport under clients that misbehave: idle, slow and oversized requests,
too many connections, and more bytes in flight than the budget allows (issue 15, items 3–5)."""

from __future__ import annotations

import contextlib
import gzip
import signal
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.tracer.test_collector import PROTOBUF, agent_spans, free_port, post, serve
from tracer._collector import Collector
from tracer._otlp import MAX_SPANS

EOF_WITHIN_S = 20.0
"""A generous bound on how long a closed connection may take to read EOF: the timeouts under test
are a fraction of a second, and the bound only keeps a broken server from hanging the test."""


@pytest.fixture(scope="module")
def good() -> bytes:
    return encode_spans(agent_spans()).SerializeToString()


def address(collector: Collector) -> tuple[str, int]:
    return collector._socket.getsockname()[:2]


def reads_eof(sock: socket.socket) -> bool:
    """Reads until the server closes the connection; False if it is still open after the bound."""
    try:
        read_until_eof(sock)
    except TimeoutError:
        return False
    return True


def read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(EOF_WITHIN_S)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def trickle(sock: socket.socket, data: bytes, stop: threading.Event) -> None:
    """Sends ``data`` a byte at a time, as a slow client would, until it is sent or stopped."""
    for byte in data:
        if stop.wait(0.05):
            return
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            return


@pytest.fixture
def strict(tmp_path):
    with Collector(str(tmp_path / "s.duckdb"), port=0, header_timeout_s=0.3, idle_timeout_s=0.3,
                   body_timeout_s=0.3, body_rate=1_000_000) as c:
        yield c


def test_a_connection_that_sends_nothing_is_closed(strict, good):
    with socket.create_connection(address(strict)) as idle:
        assert reads_eof(idle)
    assert post(strict.url, good)[0] == 200


def test_a_kept_alive_connection_left_idle_after_a_response_is_closed(strict):
    with socket.create_connection(address(strict)) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        assert reads_eof(sock)


def cut_off_while_trickling(sock: socket.socket, data: bytes) -> bool:
    """Trickles ``data`` into ``sock`` while waiting for the server to close it (``reads_eof``)."""
    stop = threading.Event()
    sender = threading.Thread(target=trickle, args=(sock, data, stop))
    sender.start()
    try:
        return reads_eof(sock)
    finally:
        stop.set()
        sender.join()


def test_headers_that_trickle_in_are_cut_off(strict):
    with socket.create_connection(address(strict)) as slow:
        headers = b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 2000 + b"\r\n\r\n"
        assert cut_off_while_trickling(slow, headers)


def test_a_body_that_trickles_in_is_cut_off_and_the_server_still_serves(strict, good):
    with socket.create_connection(address(strict)) as slow:
        slow.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 5000\r\n\r\n")
        assert cut_off_while_trickling(slow, b"\0" * 5000)
    assert post(strict.url, good)[0] == 200
    assert strict.budget.held == 0  # the cut-off request gave its reservation back


def test_a_client_that_behaves_is_served_while_hundreds_of_connections_idle(tmp_path, good):
    with Collector(str(tmp_path / "i.duckdb"), port=0) as collector:
        idle = [socket.create_connection(address(collector)) for _ in range(300)]
        try:
            for s in idle[::2]:  # half of them halfway through their headers
                s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n")
            assert post(collector.url, good)[0] == 200
        finally:
            for s in idle:
                s.close()


def test_connections_past_the_cap_are_answered_503(tmp_path, good):
    with Collector(str(tmp_path / "cap.duckdb"), port=0, max_connections=4) as collector:
        idle = [socket.create_connection(address(collector)) for _ in range(4)]
        try:
            status, text = post(collector.url, good)
            assert status == 503 and text
        finally:
            for s in idle:
                s.close()


def test_an_oversized_content_length_is_refused_before_the_body_is_sent(strict):
    with socket.create_connection(address(strict)) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 999999999\r\n\r\n")  # and no body at all
        reply = read_until_eof(sock)
        assert reply.startswith(b"HTTP/1.1 413") and b"send smaller batches" in reply, reply


@pytest.mark.parametrize("bound", ["max_pending_bytes", "max_resident_bytes"])
def test_past_the_byte_budget_a_request_gets_503_until_the_writer_catches_up(tmp_path, monkeypatch, good, bound):
    # A bound below one request's cost (or below what the process holds already): the first request
    # is taken (it holds all that is held), and the next waits for it, answered 503 with
    # Retry-After rather than queued.
    limit = len(good) if bound == "max_pending_bytes" else 1
    with Collector(str(tmp_path / "b.duckdb"), port=0, **{bound: limit}) as collector:
        with at_the_writer(collector, monkeypatch, good):  # the first request holds its budget
            status, text = post_with_headers(collector.url, good)
            assert status == 503 and text["retry-after"] == "1"
            assert collector.stats.refused_busy == 1
        assert collector.budget.held == 0
        assert post(collector.url, good)[0] == 200  # the retry is taken once the writer caught up


@contextlib.contextmanager
def at_the_writer(collector: Collector, monkeypatch: pytest.MonkeyPatch, body: bytes) -> Iterator[None]:
    """Sends ``body`` and holds its first transaction at the writer while the block runs (the
    request holds its budget meanwhile); the request must then be answered 200."""
    writing, release = threading.Event(), threading.Event()
    real = collector.store.write
    monkeypatch.setattr(collector.store, "write", lambda batch: (writing.set(), release.wait(30), real(batch)))
    answers: list[int] = []
    sender = threading.Thread(target=lambda: answers.append(post(collector.url, body)[0]))
    sender.start()
    try:
        assert writing.wait(30)
        yield
    finally:
        release.set()
        sender.join(30)
        monkeypatch.setattr(collector.store, "write", real)
    assert answers == [200]


def dense(size: int) -> bytes:
    """A request of about ``size`` bytes of spans of 100 one-byte attributes: a byte of it decodes to
    about 19 times the objects a byte of realistic spans does."""
    request = ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    while request.ByteSize() < size:
        n = len(scope.spans) + 1
        span = scope.spans.add(name="dense", trace_id=n.to_bytes(16, "big"), span_id=n.to_bytes(8, "big"),
                               start_time_unix_nano=1, end_time_unix_nano=2)
        for j in range(100):
            span.attributes.add(key=f"k{j}").value.string_value = "v"
    return request.SerializeToString()


def test_a_request_is_charged_by_the_objects_it_decodes_to_as_well_as_by_its_bytes(tmp_path, monkeypatch, good):
    # Memory in process grows with the objects a slice decodes to: spans of one-byte attributes
    # cost three times what realistic spans of the same size do, and are charged so.
    charges = {}
    with Collector(str(tmp_path / "c.duckdb"), port=0) as collector:
        for shape, body in (("realistic", good), ("dense", dense(len(good)))):
            with at_the_writer(collector, monkeypatch, body):
                charges[shape] = collector.budget.held
    assert charges["dense"] > 2 * charges["realistic"] > 0


def test_a_dense_request_is_written_in_smaller_slices_than_a_realistic_one_each_committed_before_the_next(
        tmp_path, monkeypatch, good):
    # Slices of a few KiB: by bytes alone, two or more of these dense spans (1.2 KB each) would share one.
    monkeypatch.setattr("tracer._collector.SLICE_BYTES", 4096)
    monkeypatch.setattr("tracer._collector._GATHER_MAX_S", 600.0)  # a group ends when its request waits, only
    monkeypatch.setattr("tracer._collector._GROUP_AGE_S", 600.0)
    body = dense(len(good))
    with Collector(str(tmp_path / "s.duckdb"), port=0) as collector:
        slices: dict[str, list[int]] = {"realistic": [], "dense": []}
        writes: dict[str, list[int]] = {"realistic": [], "dense": []}
        submit, write = collector.submit, collector.store.write
        for shape, sent in (("realistic", good), ("dense", body)):
            monkeypatch.setattr(collector, "submit", lambda records, shape=shape, **kwargs: (
                slices[shape].append(len(records)), submit(records, **kwargs))[1])
            monkeypatch.setattr(collector.store, "write", lambda batch, shape=shape: (
                writes[shape].append(len(batch.spans)), write(batch)))
            assert post(collector.url, sent)[0] == 200
    assert max(slices["realistic"]) > 1 and set(slices["dense"]) == {1}
    assert sum(slices["dense"]) == span_count(body) and len(body) / span_count(body) < 4096 / 3
    # A realistic request's slices are ingested as they come and committed together; a dense one's
    # next slice is decoded only once the one before has committed, as its charge assumes.
    assert len(slices["realistic"]) > 1 and writes["realistic"] == [sum(slices["realistic"])]
    assert writes["dense"] == slices["dense"]


def test_a_dense_request_whose_charge_does_not_fit_gets_503_and_is_served_alone(tmp_path, monkeypatch, good):
    # Room for one more realistic request of this size (charged 17 bytes a byte), not for a dense one.
    body = dense(len(good))
    with Collector(str(tmp_path / "d.duckdb"), port=0) as collector:
        with at_the_writer(collector, monkeypatch, good):
            collector.budget.limit = collector.budget.held + 20 * len(body)
            status, headers = post_with_headers(collector.url, body)
            assert status == 503 and headers["retry-after"] == "1"
            assert collector.stats.refused_busy == 1 and collector.stats.spans_committed == 0
        assert collector.budget.held == 0
        assert post(collector.url, body)[0] == 200  # alone, it is taken whatever its charge
        assert collector.stats.spans_committed == span_count(good) + span_count(body)


def span_count(body: bytes) -> int:
    request = ExportTraceServiceRequest.FromString(body)
    return sum(len(scope.spans) for resource in request.resource_spans for scope in resource.scope_spans)


def post_with_headers(url: str, body: bytes) -> tuple[int, dict[str, str]]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{url}/v1/traces", data=body, method="POST", headers={"Content-Type": PROTOBUF})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}


def test_a_small_gzip_body_that_decodes_to_millions_of_items_gets_a_quick_413(tmp_path, good):
    empty_spans = (b'{"resourceSpans":[{"scopeSpans":[{"spans":[' + b"{}," * 2_000_000 + b"{}]}]}]}")
    many_spans = ExportTraceServiceRequest()
    scope = many_spans.resource_spans.add().scope_spans.add()
    for _ in range(MAX_SPANS + 1):
        scope.spans.add()
    with Collector(str(tmp_path / "g.duckdb"), port=0) as collector:
        status, text = post(collector.url, gzip.compress(empty_spans), "application/json",
                            **{"Content-Encoding": "gzip"})
        assert status == 413 and b"send smaller batches" in text, text
        status, text = post(collector.url, gzip.compress(many_spans.SerializeToString()), PROTOBUF,
                            **{"Content-Encoding": "gzip"})
        assert status == 413 and f"limit of {MAX_SPANS}".encode() in text, text
        assert post(collector.url, good)[0] == 200


def test_a_body_framed_by_both_its_length_and_a_transfer_encoding_is_refused(strict, good):
    # h11 frames such a body by its chunks, which may run past the Content-Length it was admitted by.
    with socket.create_connection(address(strict)) as sock:
        sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                     b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(good) + good
                     + b"\r\n0\r\n\r\n")
        reply = read_until_eof(sock)
    assert reply.startswith(b"HTTP/1.1 400") and b"Content-Length alone" in reply, reply
    assert strict.stats.spans_committed == 0 and strict.budget.held == 0
    assert post(strict.url, good)[0] == 200


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads the server's memory map (Linux)")
def test_serve_without_its_dashboard_never_loads_pandas(tmp_path, good):
    # pyarrow imports pandas (43 MB for good) on its first conversion unless told pandas is missing.
    port = free_port()
    proc = serve(str(tmp_path / "p.duckdb"), port)
    try:
        assert post(f"http://127.0.0.1:{port}", good)[0] == 200  # the store has written: pyarrow has converted
        loaded = Path(f"/proc/{proc.pid}/maps").read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert "/pandas/" not in loaded


def test_a_collector_bounded_by_resident_memory_bounds_duckdbs_too(tmp_path):
    # DuckDB keeps the rows of its write-ahead log in memory until a checkpoint, up to 256 MB of
    # them: within a resident bound, it spills past its own limit instead.
    def duckdb_limit(**bounds: int) -> float:
        with Collector(str(tmp_path / f"{len(bounds)}.duckdb"), port=0, **bounds) as collector:
            value, unit = collector.store.sql("SELECT current_setting('memory_limit')")[0][0].split()
        return float(value) * {"MiB": 2**20, "GiB": 2**30}[unit]

    assert duckdb_limit(max_resident_bytes=400 * 2**20) < 100 * 2**20 < duckdb_limit()


def test_a_bounded_writer_checkpoints_a_long_log_itself_not_leaving_it_to_duckdb(tmp_path, monkeypatch, good):
    # DuckDB's own checkpoint waits neither for a read under way nor for lent memory, and one during
    # which lent memory was taken back left the file up to 70% larger: the writer checkpoints first,
    # through Store.checkpoint, which waits for both (RESULTS §75).
    import tracer._collector as collector_module

    monkeypatch.setattr(collector_module, "resident_bytes", lambda: 0)  # far from the bound
    monkeypatch.setattr(collector_module, "_CHECKPOINT_WAL_BYTES", 1)
    monkeypatch.setattr(collector_module, "IDLE_CHECKPOINT_BYTES", 1)
    monkeypatch.setattr(collector_module, "IDLE_CHECKPOINT_S", 3600.0)  # no checkpoint for being idle meanwhile
    with Collector(str(tmp_path / "w.duckdb"), port=0, max_resident_bytes=400 * 2**20) as collector:
        checkpointed = threading.Event()
        real = collector.store.checkpoint
        monkeypatch.setattr(collector.store, "checkpoint", lambda: (checkpointed.set(), real())[1])
        assert post(collector.url, good)[0] == 200
        assert checkpointed.wait(30) and collector._checkpointer is None  # on the writer's thread


def test_near_its_resident_bound_the_writer_checkpoints_after_each_commit(tmp_path, monkeypatch, good):
    # DuckDB holds the rows a checkpoint has not written in memory: near the bound, each commit's log is
    # written out at once rather than left to grow to the usual checkpoint size.
    import tracer._collector as collector_module

    limit = 400 * 2**20
    resident = {"bytes": limit - collector_module.PRESSURE_BYTES - 2**20}
    monkeypatch.setattr(collector_module, "resident_bytes", lambda: resident["bytes"])
    monkeypatch.setattr(collector_module, "IDLE_CHECKPOINT_BYTES", 1)
    monkeypatch.setattr(collector_module, "IDLE_CHECKPOINT_S", 3600.0)  # no checkpoint for being idle meanwhile
    with Collector(str(tmp_path / "p.duckdb"), port=0, max_resident_bytes=limit) as collector:
        checkpointed, at = threading.Event(), []
        real = collector.store.checkpoint
        monkeypatch.setattr(collector.store, "checkpoint", lambda: (at.append(resident["bytes"]), checkpointed.set(),
                                                                    real())[2])
        far = resident["bytes"]
        assert post(collector.url, good)[0] == 200
        # The writer checks after it answers: the second request's answer comes after the first's check.
        assert post(collector.url, good)[0] == 200  # a retry: committed again, stored once
        resident["bytes"] = near = limit - 2**20
        assert post(collector.url, good)[0] == 200
        assert checkpointed.wait(30)
        assert far not in at and near in at  # far enough from the bound, no checkpoint


def test_a_store_duckdb_invalidated_stops_the_collector_instead_of_answering_503_for_ever(tmp_path, monkeypatch,
                                                                                          good, caplog):
    # A checkpoint that ran DuckDB out of its memory invalidated the database: every later commit failed,
    # and serve answered 503 to every request, for minutes, logging nothing (RESULTS §80).
    import duckdb

    from tracer._errors import StoreInvalidatedError
    from tracer._store import _failed

    fatal = _failed("writing to the trace store x", duckdb.FatalException("database has been invalidated"))
    assert isinstance(fatal, StoreInvalidatedError) and "invalidated the store" in str(fatal)
    assert not isinstance(_failed("writing to the trace store x", duckdb.IOException("disk full")),
                          StoreInvalidatedError)
    with Collector(str(tmp_path / "i.duckdb"), port=0) as collector:
        assert post(collector.url, good)[0] == 200

        def invalidated(batch: object) -> None:
            raise fatal

        monkeypatch.setattr(collector.store, "write", invalidated)
        status, _ = post(collector.url, good)
        assert status == 503  # a retry, once serve has started again, is stored
        assert collector._stopped.wait(30) and collector.fatal is fatal
    assert any(r.levelname == "ERROR" and "start it again" in r.getMessage() for r in caplog.records)


def test_the_resident_bound_is_on_top_of_what_the_stores_keys_take(tmp_path, monkeypatch, good):
    # DuckDB holds the indexes of the store's keys whole, and no checkpoint frees them for long: counted
    # in the bound, on a store of 1M spans they left so little for requests that serve ran at half speed,
    # with 112 answers of 503 where 4 were given once they were not (RESULTS §81).
    import tracer._collector as collector_module
    from tracer._collector import _Budget

    monkeypatch.setattr(collector_module, "resident_bytes", lambda: 500 * 2**20)
    keys = {"bytes": 0}
    budget = _Budget(1 << 30, 440 * 2**20, lambda: keys["bytes"])
    assert budget.take(1)  # the only request in flight is always taken
    assert not budget.take(2**20)
    keys["bytes"] = 100 * 2**20
    assert budget.take(2**20)
    with Collector(str(tmp_path / "k.duckdb"), port=0, max_resident_bytes=440 * 2**20) as collector:
        before = collector.store.key_bytes()
        assert collector.budget.resident() == 500 * 2**20 - before and before > 0
        assert post(collector.url, good)[0] == 200
        after = collector.store.key_bytes()  # the commit's keys, counted as it commits
        assert collector.budget.resident() == 500 * 2**20 - after and after > before


def test_a_bounded_collector_warns_once_when_the_stores_keys_grow_large(tmp_path, monkeypatch, caplog):
    # DuckDB holds the indexes of the store's primary keys whole, on top of the bound, and they grow
    # with the store (RESULTS §81).
    db = str(tmp_path / "k.duckdb")
    with Collector(db, port=0, max_resident_bytes=1 << 40):
        pass
    assert "the store's keys take" not in caplog.text
    monkeypatch.setattr("tracer._collector.KEYS_WARN_SHARE", 1e-12)  # as if the keys took a quarter
    with Collector(db, port=0, max_resident_bytes=1 << 40) as collector:
        collector._note_keys()
    warned = [r.getMessage() for r in caplog.records if "the store's keys take" in r.getMessage()]
    assert len(warned) == 1 and "--retain" in warned[0] and "lake" in warned[0]
