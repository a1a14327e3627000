"""The store: migrations, the single-writer rule, and clear errors for bad files."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import duckdb
import pytest

import tracer
from tracer._migrations import LATEST, MIGRATIONS


def test_migrations_are_recorded_once(tmp_path):
    path = tmp_path / "s.duckdb"
    with tracer.Store(path) as store:
        assert store.schema_version() == LATEST
    with tracer.Store(path) as store:  # re-opening applies nothing twice
        assert store._query("SELECT count(*) FROM schema_migrations")[0][0] == LATEST


_ZSTD = {("spans", "attributes"), ("llm_calls", "reasoning"), ("llm_calls", "response_body"),
         ("tool_calls", "arguments"), ("tool_calls", "result")}
"""The long text columns migration 12 stores with zstd."""
_COLUMNS = ("SELECT table_name, column_index, column_name, data_type, column_default, is_nullable "
            "FROM duckdb_columns() WHERE database_name = current_database() AND NOT internal ORDER BY ALL")


def test_migration_12_rebuilds_the_tables_of_long_text_with_every_row_in_its_order_and_zstd(tmp_path, caplog):
    from tests.tracer.test_retention import record

    recorded = tmp_path / "recorded.duckdb"
    rec = tracer.Recorder(recorded)
    ids = record(rec, "where is my order?", "I want a refund", "where is my order?")
    rec.shutdown()
    tables = ("spans", "content", "llm_calls", "tool_calls")  # content is not rebuilt; the others are
    with duckdb.connect(str(recorded), read_only=True) as con:
        rows = {t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall() for t in tables}
    assert all(rows.values())
    # The same rows in a store as flightrec wrote it at schema version 11.
    old = tmp_path / "old.duckdb"
    with duckdb.connect(str(old)) as con:
        con.execute("CREATE TABLE schema_migrations "
                    "(version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)")
        for m in MIGRATIONS[:-1]:
            con.execute(m.sql)
            con.execute("INSERT INTO schema_migrations VALUES (?, ?, now())", [m.version, m.name])
        con.execute(f"ATTACH '{recorded}' AS recorded (READ_ONLY)")
        for (table,) in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = 'recorded' "
                                    "AND table_name <> 'schema_migrations'").fetchall():
            con.execute(f"INSERT INTO main.{table} SELECT * FROM recorded.{table} ORDER BY rowid")
        assert not con.execute("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'old' "
                               "AND sql LIKE '%COMPRESSION%'").fetchone()[0]
        columns = con.execute(_COLUMNS).fetchall()
    with tracer.Store(old) as store:
        assert "upgrading the trace store" in caplog.text and "from schema version 11 to 12" in caplog.text
        assert store.schema_version() == 12
        assert store.sql(_COLUMNS) == columns  # each column where it was, as it was
        assert {t: store.sql(f"SELECT * FROM {t} ORDER BY rowid") for t in tables} == rows
        assert store.sql("SELECT table_name, column_name FROM duckdb_columns() WHERE comment IS NOT NULL "
                         "ORDER BY 1") == [("content", "hash"), ("spans", "attributes")]
        assert store.checkpoint()
        assert {(t, c) for t in tables for (c,) in store.sql(
            f"SELECT DISTINCT column_name FROM pragma_storage_info('{t}') WHERE compression = 'ZSTD'")} == _ZSTD
        verified = store.verify_requests()
        assert (verified.exact, verified.failures) == (verified.total, []) and verified.total >= 3
        assert store.get_session(ids[1]).session_id == ids[1]


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.duckdb"
    tracer.Store(path).close()
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', now())")
    con.close()
    with pytest.raises(tracer.SchemaTooNewError, match="schema version 999.*Upgrade flightrec"):
        tracer.Store(path)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.duckdb"
    path.write_text("hello")
    with pytest.raises(tracer.StoreError, match="not a flightrec trace store"):
        tracer.Store(path)


def test_missing_file_read_only(tmp_path):
    with pytest.raises(tracer.StoreError, match="no trace store at .*make demo"):
        tracer.Store(tmp_path / "nope.duckdb", read_only=True)


def test_unknown_session(tmp_path):
    with tracer.Store(tmp_path / "s.duckdb") as store, pytest.raises(tracer.UnknownSessionError, match="traces list"):
        store.get_session("does-not-exist")


def test_a_session_is_found_by_its_id_or_a_unique_prefix_and_an_ambiguous_prefix_says_so(tmp_path):
    path = tmp_path / "s.duckdb"
    recorder = tracer.Recorder(path)
    for sid in ("sess-0001-a", "sess-0001-b", "sess-0002-a"):
        with recorder.session("agent", session_id=sid):
            pass
    recorder.shutdown()
    with tracer.Store(path) as store:
        assert store.get_session("sess-0001-a").session_id == "sess-0001-a"
        assert store.get_session("sess-0002").session_id == "sess-0002-a"
        with pytest.raises(tracer.UnknownSessionError, match="prefix 'sess-0001' is ambiguous; give more characters"):
            store.get_session("sess-0001")
        with pytest.raises(tracer.UnknownSessionError, match="no session 'sess-00'"):  # under 8: no prefix lookup
            store.get_session("sess-00")


HOLD_LOCK = textwrap.dedent("""
    import sys, time, tracer
    store = tracer.Store(sys.argv[1])
    print("locked", flush=True)
    sys.stdin.read()
""")


@pytest.fixture
def locked_store(tmp_path):
    """A store held open for writing by another process, as an agent would hold it."""
    path = tmp_path / "held.duckdb"
    proc = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    yield path, proc.pid
    proc.stdin.close()
    proc.wait(timeout=30)


def test_second_writer_gets_a_message_naming_the_holder(locked_store):
    path, pid = locked_store
    with pytest.raises(tracer.StoreLockedError) as err:
        tracer.Store(path)
    message = str(err.value)
    assert f"process {pid}" in message and "flightrec serve" in message and "--db" in message


def test_a_file_from_a_newer_duckdb_says_how_to_read_or_import_it():
    from tracer._store import _map_open_error

    error = _map_open_error("old.duckdb", duckdb.IOException(
        "IO Error: Trying to read a database file with version number 999, but we can only read versions between 64 "
        "and 68.\nThe database file was created with an newer version of DuckDB."))
    assert "written by a newer DuckDB" in str(error) and "A file from a newer duckdb" in str(error)


def test_lent_memory_lifts_the_databases_bound_for_every_handle_until_the_last_lender_leaves(tmp_path):
    path = str(tmp_path / "m.duckdb")
    with tracer.Store(path) as writer, tracer.Store(path) as reader:
        def mb() -> float:
            value, unit = writer.sql("SELECT current_setting('memory_limit')")[0][0].split()
            return float(value) * {"MiB": 1.0, "GiB": 1024.0}[unit] * 2**20 / 10**6

        unbounded = mb()
        with reader.lend_memory(64):  # no bound set: nothing to lend
            assert mb() == unbounded
        writer.limit_memory(8)
        assert round(mb()) == 9  # and a megabyte for the keys of schema_migrations (``key_bytes``)
        with reader.lend_memory(64):  # the setting is the database's: the writer's handle sees it too
            assert round(mb()) == 65  # and the keys' megabyte, as ever
            with writer.lend_memory(32):  # less than is lent already: no change
                assert round(mb()) == 65
            assert round(mb()) == 65  # a lender is still inside
            # A checkpoint during which the memory was taken back left the file up to 70% larger (RESULTS §75).
            assert not writer.checkpoint()
        assert round(mb()) == 9 and writer.checkpoint()
    with tracer.Store(path) as again:  # opened anew: DuckDB's default, which a lender leaves alone
        before = again.sql("SELECT current_setting('memory_limit')")[0][0]
        with again.lend_memory(64):
            assert again.sql("SELECT current_setting('memory_limit')")[0][0] == before


def test_the_memory_bound_grows_with_the_keys_duckdb_holds_whole_so_a_large_store_still_takes_writes(tmp_path):
    # DuckDB loads a primary key's index whole on the first insert into its table, and cannot spill it:
    # held to 48 MB, serve took no commit once its store held about 380,000 realistic spans (RESULTS §81).
    from tests.tracer.test_collector import agent_spans
    from tracer._ingest import Ingestor, from_readable
    from tracer._store import _KEY_BYTES

    path = str(tmp_path / "k.duckdb")
    with tracer.Store(path) as store:  # 150,000 content keys: about 11 MB of index, past the 4 MB below
        store.sql("INSERT INTO content SELECT md5(i::VARCHAR), 'text', '\"x\"' FROM range(150000) t(i)")
    with tracer.Store(path) as store:
        store.limit_memory(4)
        keys = store.key_bytes()
        assert keys == (150_000 + store.sql("SELECT count(*) FROM schema_migrations")[0][0]) * _KEY_BYTES
        mib = (4 + -(-keys // 10**6)) * 10**6 / 2**20
        assert store.sql("SELECT current_setting('memory_limit')") == [(f"{mib:.1f} MiB",)]
        spans = agent_spans()
        store.write(Ingestor().build([from_readable(s) for s in spans]))  # out of memory at 4 MB alone
        assert store.sql("SELECT count(*) FROM spans") == [(len(spans),)]
        assert store.key_bytes() > keys  # the batch's content, chain nodes and session, counted at once
        store.sql("DELETE FROM content WHERE kind = 'text'")
        assert store.checkpoint() and store.key_bytes() < keys  # counted anew: retention frees keys


def test_a_read_out_of_memory_is_told_apart(tmp_path):
    # Beside a writer whose rows share DuckDB's memory, such a read may pass when tried again.
    with tracer.Store(str(tmp_path / "o.duckdb")) as store:
        store.limit_memory(1)
        with pytest.raises(tracer.StoreMemoryError, match="reading the trace store .* Out of Memory"):
            store.sql("SELECT list(range) FROM range(1000000) GROUP BY range % 100000")
