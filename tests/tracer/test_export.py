"""Tracing never breaks the agent: a locked or unwritable store, or a failing exporter."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_store import locked_store  # noqa: F401  (fixture)


def _agent_finishes(rec: tracer.Recorder) -> list:
    with rec.session(agent="support"):
        messages = run_agent(rec.instrument(FakeAPI().client()))
    return messages


def test_locked_store_the_agent_finishes_and_its_spans_are_kept_for_the_next_open(locked_store, caplog):  # noqa: F811
    path, pid = locked_store
    rec = tracer.Recorder(path)
    with caplog.at_level(logging.WARNING, logger="flightrec"):
        messages = _agent_finishes(rec)
        rec.shutdown()
    assert messages[-1]["content"][0]["text"].startswith("Order A-1 shipped")
    # session, 2 turns, 2 calls, 1 tool
    assert rec.stats.written == 0 and rec.stats.dropped == 0 and rec.stats.kept == 6
    assert f"process {pid}" in caplog.text
    assert "6 span(s) were not stored" in caplog.text and f"kept in {path}.spill" in caplog.text


def test_unwritable_path_the_agent_finishes(tmp_path, caplog):
    rec = tracer.Recorder(tmp_path / "no" / "such" / "dir" / "t.duckdb")
    with caplog.at_level(logging.WARNING, logger="flightrec"):
        _agent_finishes(rec)
        rec.shutdown()
    # The spill's directory cannot be made either: nothing is kept, and that is said.
    assert rec.stats.dropped == 6 and "cannot open the trace store" in next(iter(rec.stats.drop_reasons))
    assert "cannot write the spill" in caplog.text and "check that the directory is writable" in caplog.text


def test_store_that_comes_back_is_written_to(tmp_path, monkeypatch):
    opened = {"n": 0}

    def flaky_store(path):
        opened["n"] += 1
        if opened["n"] == 1:
            raise tracer.StoreLockedError("held by process 1")
        return tracer.Store(path)

    monkeypatch.setattr("tracer._recorder.Store", flaky_store)
    rec = tracer.Recorder(tmp_path / "t.duckdb")
    _agent_finishes(rec)
    rec.shutdown()
    assert rec.stats.written == 6 and rec.stats.dropped == 0 and opened["n"] == 2


def test_exporter_that_raises_never_reaches_the_agent(monkeypatch):
    def boom(self, records):
        raise RuntimeError("bug in ingest")

    monkeypatch.setattr(tracer.Ingestor, "build", boom)
    rec = tracer.Recorder()
    _agent_finishes(rec)
    rec.shutdown()
    assert rec.stats.written == 0 and rec.stats.kept == 6  # in the spill: the next open tries them again


def test_capture_that_raises_never_reaches_the_agent(monkeypatch):
    def boom(*args, **kwargs):
        raise ValueError("bug in capture")

    monkeypatch.setattr("tracer._capture.decide", boom)
    monkeypatch.setattr("tracer._capture.canonical_json", boom)
    rec = tracer.Recorder()
    messages = _agent_finishes(rec)
    rec.shutdown()
    assert len(messages) == 4 and rec.stats.capture_errors == 2


def test_full_queue_drops_without_blocking(tmp_path, monkeypatch):
    release = threading.Event()

    def slow_store(path):
        release.wait(30)  # the writer is stuck, as on a very slow disk
        return tracer.Store(path)

    monkeypatch.setattr("tracer._recorder.Store", slow_store)
    rec = tracer.Recorder(tmp_path / "t.duckdb", max_queue=2)
    for _ in range(3):
        with rec.session(agent="support"):
            pass  # one span each; the third finds the queue full and must not wait
    assert rec.stats.dropped == 1 and rec.stats.drop_reasons["queue full"] == 1
    release.set()
    rec.shutdown()
    assert rec.stats.written == 2


def test_spans_are_flushed_at_interpreter_exit(tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[2])
        import tracer
        from tests.tracer.fakes import FakeAPI, run_agent
        rec = tracer.configure(sys.argv[1])
        with rec.session(agent="exit-test"):
            run_agent(rec.instrument(FakeAPI().client()))
        # no shutdown(): the exit hook must flush
    """)
    import pathlib
    root = str(pathlib.Path(__file__).resolve().parents[2])
    db = tmp_path / "exit.duckdb"
    subprocess.run([sys.executable, "-c", script, str(db), root], check=True, timeout=120)
    with tracer.Store(db, read_only=True) as store:
        rows = store.list_sessions()
    assert len(rows) == 1 and rows[0].status == "ok" and rows[0].llm_calls == 2


def test_the_recorder_writes_on_one_duckdb_thread_and_gives_the_files_other_handles_theirs_back(tmp_path):
    """DuckDB's thread limit is the database's: a dashboard that replays a session in its process
    must get its own limit back once the replay's recorder is shut down."""
    path = tmp_path / "t.duckdb"
    with tracer.Store(path) as other:
        other.limit_threads(3)  # not 1, whatever this machine's cores
        rec = tracer.Recorder(path)
        _agent_finishes(rec)
        assert rec.flush() and rec.stats.written == 6
        assert other.sql("SELECT current_setting('threads')")[0][0] == 1
        rec.shutdown()
        assert other.sql("SELECT current_setting('threads')")[0][0] == 3
