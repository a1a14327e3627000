"""What the embedded recorder promises on a ``kill -9``: every span that ended is stored the next time
the store is opened for writing, from the spill beside the store. Also a spill cut short, a spill a
live process still writes, spans stored twice, a span that cannot be stored, a tampered file."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import agent_spans, dump
from tests.tracer.test_store import HOLD_LOCK
from tracer._ingest import Ingestor, from_readable
from tracer._spill import Spill, read_segment, spill_dir

ROOT = str(Path(__file__).resolve().parents[2])
TURNS = 6
"""Tool calls per session in the kill test: 7 LLM calls, 6 tool calls, 7 turns."""

AGENT = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {ROOT!r})
    import tracer
    from tests.tracer.fakes import FakeAPI, message, run_agent
    from tracer.testing import tool_use

    # A system prompt of 60 KB: every chat span carries the whole request, so the writer is busy.
    SYSTEM = "Refunds are allowed within 30 days of delivery for unused items. " * 900

    def policy(body):
        n = len(body["messages"])
        if n < 2 * {TURNS}:
            return message([{{"type": "text", "text": "Checking."}},
                            tool_use("get_order", {{"order_id": f"A-{{n}}"}}, id=f"toolu_{{n}}")], "tool_use")
        return message([{{"type": "text", "text": "Order A-1 shipped."}}], "end_turn")

    rec = tracer.Recorder(sys.argv[1])
    client = rec.instrument(FakeAPI(policy).client())
    while True:
        with rec.session(agent="support") as session:
            run_agent(client, system=SYSTEM, max_turns={TURNS} + 1)
        print(session.id, flush=True)  # its span has ended
""")


def whole(db: str, session_ids: list[str], *, read_only: bool) -> set[str]:
    """The sessions of ``session_ids`` stored whole: ended ok, with every call, tool call and turn."""
    with tracer.Store(db, read_only=read_only) as store:
        rows = store.sql("SELECT session_id FROM sessions WHERE ended AND status = 'ok' AND llm_calls = ? "
                         "AND tool_calls = ? AND turns = ?", [TURNS + 1, TURNS, TURNS + 1])
    return {r[0] for r in rows} & set(session_ids)


def test_a_kill_9_under_load_loses_no_session_that_ended(tmp_path):
    db = str(tmp_path / "agent.duckdb")
    proc = subprocess.Popen([sys.executable, "-c", AGENT, db], stdout=subprocess.PIPE, text=True)
    watchdog = threading.Timer(120, proc.kill)  # a child that hangs fails the test, not the suite
    watchdog.start()
    reported: list[str] = []
    try:
        assert proc.stdout is not None
        while len(reported) < 8:
            line = proc.stdout.readline()
            assert line, f"the agent stopped after {len(reported)} sessions"
            reported.append(line.strip())
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    finally:
        watchdog.cancel()
        proc.kill()
    # Meaningful only while the writer lags: at least the last session was not committed by the agent.
    try:
        committed = whole(db, reported, read_only=True)
    except tracer.StoreError:  # its writer had not even made the store, or its schema
        committed = set()
    assert len(committed) < len(reported)
    assert whole(db, reported, read_only=False) == set(reported)  # opened for writing: the spill is stored
    assert not spill_dir(db).exists()
    with tracer.Store(db, read_only=True) as store:
        checked = store.verify_requests()
        assert checked.exact == checked.total >= len(reported) * (TURNS + 1)


def test_a_clean_shutdown_leaves_no_spill(tmp_path):
    db = tmp_path / "t.duckdb"
    rec = tracer.Recorder(db)
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()))
    assert spill_dir(db).is_dir()  # while it records
    rec.shutdown()
    assert rec.stats.written == 6 and rec.stats.kept == 0 and not spill_dir(db).exists()


def test_segments_whose_spans_are_committed_are_removed_as_the_writer_goes(tmp_path, monkeypatch):
    monkeypatch.setattr("tracer._spill.SEGMENT_BYTES", 2_000)  # about a span a segment
    db = tmp_path / "t.duckdb"
    spans = agent_spans()
    spill = spilled(db, spans)
    segments = list(spill._segments)
    assert len(segments) > 3 and len(list(spill_dir(db).iterdir())) == len(segments)
    committed = segments[0].pending + segments[1].pending  # the writer committed the first two
    spill.release({segments[0]: segments[0].pending, segments[1]: segments[1].pending})
    assert sorted(spill_dir(db).iterdir()) == sorted(s.path for s in segments[2:])
    spill.close()
    with tracer.Store(db) as store:
        stored = {r[0] for r in store.sql("SELECT span_id FROM spans")}
    assert stored == {f"{s.context.span_id:016x}" for s in spans[committed:]}
    assert not spill_dir(db).exists()


def spilled(db: Path, spans: list) -> Spill:
    """A spill of ``db`` holding ``spans``, as a recorder whose writer stored none of them leaves it."""
    spill = Spill(spill_dir(db))
    for span in spans:
        with spill.lock:
            spill.append(from_readable(span))
    return spill


def test_a_spilled_span_reads_back_as_the_record_the_writer_builds(tmp_path, memory):
    provider, exporter = memory
    with provider.get_tracer("t").start_as_current_span("odd", attributes={
            "big": 2**70, "raw": b"\x00\xff", "seq": (1, 2), "inf": float("inf"), "words": ("a", "b")}) as span:
        span.add_event("e", {"k": "v"})
    spans = [*exporter.get_finished_spans(), *agent_spans()]
    spill = spilled(tmp_path / "t.duckdb", spans)
    (segment,) = spill._segments
    assert list(read_segment(segment.path.read_bytes())) == [from_readable(s) for s in spans]
    spill.close()


def test_spans_kept_while_the_store_was_locked_are_stored_by_the_next_open(tmp_path):
    db = tmp_path / "held.duckdb"
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    rec = tracer.Recorder(db)
    with rec.session(agent="support") as session:
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    holder.stdin.close()
    holder.wait(30)
    assert rec.stats.kept == 6
    with tracer.Store(db) as store:
        assert store.get_session(session.id).llm_calls == 2 and store.verify_requests().exact == 2
    assert not spill_dir(db).exists()


def test_a_spill_that_a_live_process_writes_is_left_alone(tmp_path):
    db = tmp_path / "t.duckdb"
    spans = agent_spans()
    spill = spilled(db, spans)
    with tracer.Store(db) as store:  # the segment is locked: its writer is alive
        assert store.sql("SELECT count(*) FROM spans") == [(0,)]
    assert spill.close() == len(spans)  # the process ends with its spans not stored: they stay
    with tracer.Store(db) as store:
        assert store.sql("SELECT count(*) FROM spans") == [(len(spans),)]


def test_a_record_cut_short_by_the_kill_is_skipped(tmp_path):
    db = tmp_path / "t.duckdb"
    spans = agent_spans()
    spilled(db, spans).close()
    (segment,) = spill_dir(db).iterdir()
    os.truncate(segment, segment.stat().st_size - 10)  # the last span (the session's) half written
    with tracer.Store(db) as store:
        stored = {r[0] for r in store.sql("SELECT span_id FROM spans")}
    assert stored == {f"{s.context.span_id:016x}" for s in spans[:-1]}
    assert not spill_dir(db).exists()


def test_spans_the_dead_process_had_committed_are_stored_once(tmp_path):
    spans = agent_spans()
    once, twice = tmp_path / "once.duckdb", tmp_path / "twice.duckdb"
    with tracer.Store(once) as store:
        store.write(Ingestor().build([from_readable(s) for s in spans]))
    with tracer.Store(twice) as store:  # the writer committed half, then the process was killed
        store.write(Ingestor().build([from_readable(s) for s in spans[:3]]))
    spilled(twice, spans).close()
    tracer.Store(twice).close()
    assert dump(str(twice)) == dump(str(once))


def test_a_span_that_cannot_be_stored_is_skipped_and_the_others_are_stored(tmp_path, caplog):
    db = tmp_path / "t.duckdb"
    spans = agent_spans()
    spill = spilled(db, spans[:3])
    bad = from_readable(next(s for s in spans if s.name == "flightrec.turn"))
    bad.span_id, bad.start_ns = "00000000000000ff", 2**63  # past what the store's times can hold
    with spill.lock:
        spill.append(bad)
    for span in spans[3:]:
        with spill.lock:
            spill.append(from_readable(span))
    spill.close()
    with tracer.Store(db) as store:
        assert store.sql("SELECT count(*) FROM spans") == [(len(spans),)]
    assert "1 span(s) of the spill" in caplog.text and "can never be stored" in caplog.text
    assert not spill_dir(db).exists()


class _Exploit:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_tampered_spill_runs_no_code(tmp_path):
    db = tmp_path / "t.duckdb"
    spans = agent_spans()
    spilled(db, spans[:2]).close()
    (segment,) = spill_dir(db).iterdir()
    payload = pickle.dumps(_Exploit())
    with open(segment, "ab") as f:
        f.write(len(payload).to_bytes(4, "little") + payload)
    with tracer.Store(db) as store:
        assert store.sql("SELECT count(*) FROM spans") == [(2,)]
    assert not (tmp_path / "pwned").exists()
