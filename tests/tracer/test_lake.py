"""A lake (DuckLake: a PostgreSQL catalog, Parquet files) as the store: the same rows as a file,
shared by several writers, read whole commits at a time. Runs against a real PostgreSQL
(``postgres`` fixture in tests/conftest.py)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_collector import agent_spans, dump, kill_mid_load, post
from tracer import _collector, _lake
from tracer._collector import Collector
from tracer._ingest import Batch, Ingestor, from_readable
from tracer._migrations import LATEST


def write(db: str, batches: list[list], ingestor: Ingestor | None = None) -> None:
    ingestor = ingestor or Ingestor()
    with tracer.Store(db) as store:
        for spans in batches:
            batch = Batch()
            ingestor.build([from_readable(s) for s in spans], batch)
            store.write(batch)


@pytest.mark.parametrize(("url", "says"), [
    ("ducklake:", "names no catalog"),
    ("ducklake:postgres:dbname=x host=h", "names no data_path"),
    ("ducklake:postgres:dbname=x password=hunter2?data_path=/d/", "holds a password"),
    ("ducklake:postgres:dbname=x?data_path=/d/&tls=1", "options tls that flightrec does not know"),
    ("ducklake:mysql:db=x?data_path=/d/", "names a mysql catalog"),
])
def test_a_bad_lake_url_says_what_is_wrong_before_anything_connects(url, says):
    with pytest.raises(tracer.ConfigError, match=says) as caught:
        tracer.Store(url)
    assert "hunter2" not in str(caught.value)


def test_an_unreachable_catalog_names_it_and_what_to_check(postgres, tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ducklake:postgres:dbname=nope host=127.0.0.1 port={port} user=x?data_path={tmp_path}/"
    with pytest.raises(tracer.StoreError, match=f"cannot reach the lake's catalog .*port={port}.*refused.*PGPASSWORD"):
        tracer.Store(url)


def test_the_same_spans_make_the_same_rows_as_in_a_file(lake, tmp_path):
    spans = agent_spans()
    thirds = [spans[i::3] for i in range(3)]  # a session's spans in three commits: its row is three deltas
    file = str(tmp_path / "f.duckdb")
    write(file, thirds)
    write(lake, thirds)
    assert dump(lake) == dump(file)
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM session_deltas") == [(3,)]
        verified = store.verify_requests()
        assert verified.exact == verified.total > 0


def test_two_collectors_store_shared_content_twice_yet_every_read_shows_it_once(lake, tmp_path):
    first, second = agent_spans(), agent_spans()  # two sessions with the same system prompt and tools
    file = str(tmp_path / "f.duckdb")
    write(file, [first, second])
    write(lake, [first], Ingestor())
    write(lake, [second, first], Ingestor())  # the second collector also gets the first's retried request
    assert dump(lake) == dump(file)
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT count(*) > count(DISTINCT hash) FROM content_rows") == [(True,)]
        verified = store.verify_requests()
    assert verified.exact == verified.total == 6  # three calls a session, the first refused (529) and retried


WRITER = r"""
import sys, tracer
from tests.tracer.fakes import FakeAPI, run_agent
rec = tracer.Recorder(sys.argv[1])
for _ in range(int(sys.argv[2])):
    with rec.session(agent="support"):
        run_agent(rec.instrument(FakeAPI().client()))
rec.shutdown()
assert rec.stats.dropped == 0, rec.stats
"""


def test_two_processes_write_one_lake_at_once(lake, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    root = Path(__file__).parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    procs = [subprocess.Popen([sys.executable, str(script), lake, "6"], cwd=root, env=env) for _ in range(2)]
    assert [p.wait(180) for p in procs] == [0, 0]
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT count(*), sum(llm_calls), sum(tool_calls) FROM sessions") == [(12, 24, 12)]
        assert store.sql("SELECT count(*) FROM llm_calls") == [(24,)]
        assert store.verify_requests().exact == 24


def test_a_reader_sees_whole_commits_only(lake):
    batches = [agent_spans() for _ in range(6)]
    with tracer.Store(lake):  # the schema, made before the reader opens the lake read-only
        pass
    writer = threading.Thread(target=write, args=(lake, batches))
    seen = []
    with tracer.Store(lake, read_only=True) as reader:
        writer.start()
        while writer.is_alive() or not seen or seen[-1][0] < 6:
            # One statement, one snapshot: the sessions' counts always match the rows beside them.
            seen.append(reader.sql("SELECT (SELECT count(*) FROM sessions), (SELECT coalesce(sum(llm_calls), 0) "
                                   "FROM sessions), (SELECT count(*) FROM llm_calls)")[0])
        writer.join()
    assert all(sessions * 3 == summed == calls for sessions, summed, calls in seen)  # 3 calls a session
    assert seen[-1] == (6, 18, 18)


def test_serve_on_a_lake_acknowledges_after_its_commit(lake, monkeypatch):
    monkeypatch.setattr(_collector, "COMMIT_INTERVAL_S", 0.2)
    spans = agent_spans()
    with Collector(lake, port=0) as collector:
        assert collector.store.lake
        status, _ = post(collector.url, encode_spans(spans).SerializeToString())
        assert status == 200
        with tracer.Store(lake, read_only=True) as reader:  # another process's view, while serve runs
            assert reader.sql("SELECT count(*) FROM spans") == [(len(spans),)]


def test_a_commit_waits_for_no_more_than_the_requests_under_way(lake, monkeypatch):
    # Were the gather waited out, the request would get no answer within post()'s 30 s.
    monkeypatch.setattr(_collector, "COMMIT_INTERVAL_S", 3600)
    with Collector(lake, port=0) as collector:
        status, _ = post(collector.url, encode_spans(agent_spans()).SerializeToString())
        assert status == 200


def test_a_collector_killed_mid_load_loses_nothing_it_acknowledged(lake):
    kill_mid_load(lake)


def test_a_commit_that_loses_to_other_collectors_is_made_again_before_the_answer(lake, monkeypatch):
    monkeypatch.setattr(_collector, "COMMIT_INTERVAL_S", 0.2)
    spans = agent_spans()
    with Collector(lake, port=0) as collector:
        write_once, lost = collector.store.write, []

        def racing(batch):
            if len(lost) < 2:  # two commits lose; the third is made
                lost.append(batch)
                raise tracer.StoreError("writing failed: TransactionContext Error: Transaction conflict: another "
                                        "transaction inserted into the table")
            write_once(batch)

        monkeypatch.setattr(collector.store, "write", racing)
        status, _ = post(collector.url, encode_spans(spans).SerializeToString())
    assert status == 200 and len(lost) == 2
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM spans") == [(len(spans),)]


@pytest.mark.parametrize("content_only", [False, True])
def test_retention_removes_what_it_removes_from_a_file(lake, tmp_path, monkeypatch, content_only):
    gone, kept = agent_spans(), agent_spans()
    cutoff = max(s.end_time for s in gone) + 1
    file = str(tmp_path / "f.duckdb")
    for db in (file, lake):
        write(db, [gone, kept])
        with tracer.Store(db) as store, monkeypatch.context() as m:
            m.setattr(tracer._store.time, "time_ns", lambda: 1_000)  # the content_pruned_ns both record
            result = store.prune_step(cutoff, content_only=content_only)
        assert result.sessions == 1 and result.llm_calls == 3
    assert dump(lake) == dump(file)
    with tracer.Store(lake, read_only=True) as store:
        verified = store.verify_requests()
    assert verified.exact == 3 and len(verified.pruned) == (3 if content_only else 0)


def test_the_prune_and_delete_commands_on_a_lake(lake):
    from click.testing import CliRunner

    from tracer._cli import main

    write(lake, [agent_spans(), agent_spans()])
    with tracer.Store(lake, read_only=True) as store:
        first, second = (r[0] for r in store.sql("SELECT session_id FROM sessions ORDER BY start_ns"))
    deleted = CliRunner().invoke(main, ["delete", "--session", first, "--db", lake])
    assert deleted.exit_code == 0 and f"Deleted session {first}" in deleted.output, deleted.output
    pruned = CliRunner().invoke(main, ["prune", "--older-than", "1s", "--db", lake])
    assert pruned.exit_code == 0 and "Removed 1 session" in pruned.output, pruned.output
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM sessions") == [(0,)]
        assert [e.action for e in store.audit_entries()] == ["prune", "delete"]
    refused = CliRunner().invoke(main, ["prune", "--older-than", "1d", "--compact", "--db", lake])
    assert refused.exit_code == 2 and "`flightrec maintain`" in refused.output, refused.output


def test_sessions_closed_for_inactivity_end_as_in_a_file(lake, tmp_path):
    rec_spans = agent_spans()
    running = [s for s in rec_spans if s.parent is not None]  # no root span: the session never ends
    file = str(tmp_path / "f.duckdb")
    for db in (file, lake):
        write(db, [running])
        with tracer.Store(db) as store:
            assert len(store.close_inactive(2**62, "no span for 30 min")) == 1
    assert dump(lake) == dump(file)


def test_a_recorder_writes_a_lake_directly(lake):
    rec = tracer.Recorder(lake)
    with rec.session(agent="support") as session:
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    with tracer.Store(lake, read_only=True) as store:
        assert store.get_session(session.id).llm_calls == 2



def test_outcomes_scores_and_reviews_on_a_lake_behave_as_in_a_file(lake, tmp_path):
    """A lake has no keys: what the file replaces by key is deleted and inserted, what it ignores is anti-joined."""
    file = str(tmp_path / "f.duckdb")
    for db in (file, lake):
        rec = tracer.Recorder(db)
        with rec.session(agent="support", session_id="conv-1"):
            run_agent(rec.instrument(FakeAPI().client()))
        rec.outcome("conv-1", resolved=False, source="survey")
        rec.shutdown()
        with tracer.Store(db) as store:
            score = tracer.SessionScore(session_id="conv-1", scorer="guards", version="v1", value=1.0, passed=True,
                                        weight=1.0, reason="none fired", scored_ns=1)
            store.record_scores([score])
            store.record_scores([score.model_copy(update={"value": 0.0, "passed": False})])
            assert [s.value for s in store.session_scores("conv-1")] == [0.0]
            assert store.queue_reviews(["conv-1"], "score") == 1 and store.queue_reviews(["conv-1"], "hand") == 0
            store.review_session("conv-1", "bad", category="loop", actor="ana")
            review = store.review_session("conv-1", "good", actor="bo")
            assert store.reviews() == [review] and review.queued_by == "score"
            (outcome,) = store.outcomes("conv-1")
            assert (outcome.resolved, outcome.source) == (False, "survey")
    with tracer.Store(lake) as store:
        store.delete_session("conv-1")
        for table in ("session_scores", "session_outcomes", "reviews"):
            assert store.sql(f"SELECT count(*) FROM {table}") == [(0,)]


def test_a_tree_of_sessions_rolls_up_on_a_lake_as_in_a_file(lake, tmp_path):
    trees = []
    for db in (str(tmp_path / "f.duckdb"), lake):
        rec = tracer.Recorder(db)
        with rec.session(agent="support", session_id="parent"):
            run_agent(rec.instrument(FakeAPI().client()))
            with rec.session(agent="research", session_id="child"):  # opened inside: the parent's sub-agent
                run_agent(rec.instrument(FakeAPI().client()))
        rec.shutdown()
        with tracer.Store(db, read_only=True) as store:
            trees.append([n.model_dump(exclude={"start_ns"}) for n in store.session_tree("child").nodes])
    assert trees[0] == trees[1]
    assert [(n["session_id"], n["parent_session_id"], n["depth"], n["subtree_tokens"]) for n in trees[1]] == [
        ("parent", None, 0, 2 * trees[1][1]["tokens"]), ("child", "parent", 1, trees[1][1]["tokens"])]


def test_maintain_rolls_up_deltas_and_removes_duplicates_while_a_collector_writes(lake, tmp_path, monkeypatch):
    first, second, later = agent_spans(), agent_spans(), agent_spans()
    file = str(tmp_path / "f.duckdb")
    write(file, [first[::2], second, first[1::2], later])
    write(lake, [first[::2]], Ingestor())
    write(lake, [second, first[1::2]], Ingestor())  # a second collector: content stored twice
    with tracer.Store(lake) as store:
        # A collector commits between the maintenance round's read and its commit: its rows stay.
        writer = threading.Thread(target=write, args=(lake, [later]))
        real_maintain = _lake.maintain

        def racing(con, **kw):
            writer.start()
            writer.join()
            return real_maintain(con, **kw)

        monkeypatch.setattr(_lake, "maintain", racing)
        done = store.maintain_lake(keep_snapshots_s=0)
        assert done.sessions_rolled_up == 1 and done.session_deltas_removed == 2
        assert done.content_duplicates_removed > 0
        assert store.sql("SELECT count(*) = count(DISTINCT hash) FROM content_rows") == [(True,)]
    assert dump(lake) == dump(file)


def test_maintain_leaves_about_one_file_a_table(lake):
    with tracer.Store(lake) as store:  # no commit kept in the catalog (data inlining): a file each
        store.sql("CALL ducklake_set_option('lake', 'data_inlining_row_limit', 0)")
    write(lake, [[s] for s in agent_spans()])  # a commit a span: many small files
    with tracer.Store(lake) as store:
        done = store.maintain_lake(keep_snapshots_s=0)
        tables = store.sql("SELECT count(*) FROM duckdb_tables() WHERE database_name = 'lake' AND "
                           "estimated_size > 0")[0][0]
    assert done.files_before >= 3 * tables and done.files_after == tables


def test_a_file_store_moves_up_into_a_lake_and_a_second_import_copies_only_what_is_new(lake, tmp_path, monkeypatch):
    file = str(tmp_path / "f.duckdb")
    write(file, [agent_spans(), agent_spans()])
    with tracer.Store(file) as store:
        store.audit("ops", "export", "store")
        sid = store.list_sessions()[0].session_id
        store.record_outcome(sid, resolved=True)
        store.queue_reviews([sid], "hand")
        store.record_scores([tracer.SessionScore(session_id=sid, scorer="guards", version="v1", value=1.0,
                                                      passed=True, weight=1.0, reason="none fired", scored_ns=1)])
    monkeypatch.setattr(_lake, "IMPORT_SESSIONS", 1)  # a transaction a session: resumable in between
    with tracer.Store(lake) as store:
        first = store.import_file(file)
        again = store.import_file(file)
    assert first.sessions == 2 and first.rows["audit_log"] == 2
    assert [first.rows[t] for t in ("session_outcomes", "reviews", "session_scores")] == [1, 1, 1]
    assert again.sessions == 0 and not any(again.rows.values())
    assert dump(lake) == dump(file)


def test_lake_commands_on_a_file_say_they_are_for_a_lake(tmp_path):
    with tracer.Store(str(tmp_path / "f.duckdb")) as store, pytest.raises(tracer.ConfigError, match="for a lake"):
        store.maintain_lake()


def test_the_maintain_and_import_commands(lake, tmp_path):
    from click.testing import CliRunner

    from tracer._cli import main

    file = str(tmp_path / "f.duckdb")
    write(file, [agent_spans()])
    imported = CliRunner().invoke(main, ["lake", "import", file, "--db", lake])
    assert imported.exit_code == 0 and "Imported 1 session from" in imported.output, imported.output
    maintained = CliRunner().invoke(main, ["maintain", "--db", lake, "--keep-snapshots", "1h"])
    assert maintained.exit_code == 0 and "Rolled up 0 sessions" in maintained.output, maintained.output
    refused = CliRunner().invoke(main, ["maintain", "--db", file])
    assert refused.exit_code == 2 and "is for a lake (--db ducklake:…)" in refused.output, refused.output


@pytest.fixture
def s3(monkeypatch):
    """A local S3 (moto's server) with a bucket ``traces``, and the AWS variables that reach it."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for k, v in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://{host}:{port}"}.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3", endpoint_url=f"http://{host}:{port}").create_bucket(Bucket="traces")
    yield boto3.client("s3", endpoint_url=f"http://{host}:{port}")
    server.stop()


def test_a_lake_keeps_its_files_in_a_bucket(postgres, s3, tmp_path):
    url = f"ducklake:postgres:{postgres.database()}?data_path=s3://traces/flightrec/"
    spans = agent_spans()
    file = str(tmp_path / "f.duckdb")
    write(file, [spans])
    write(url, [spans])
    with tracer.Store(url) as store:
        store.maintain_lake(keep_snapshots_s=0)  # the catalog's inlined rows, out to Parquet in the bucket
    assert dump(url) == dump(file)
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket="traces", Prefix="flightrec/")["Contents"]]
    assert any(k.startswith("flightrec/main/spans/") and k.endswith(".parquet") for k in keys), keys


def test_a_bucket_that_cannot_be_written_fails_as_the_lake_opens(postgres, s3):
    url = f"ducklake:postgres:{postgres.database()}?data_path=s3://no-such-bucket/flightrec/"
    with pytest.raises(tracer.StoreError, match="cannot write its files to s3://no-such-bucket/flightrec/.*Check"):
        tracer.Store(url)


def test_a_directory_that_cannot_be_written_fails_as_the_lake_opens(postgres, tmp_path):
    blocked = tmp_path / "file-not-dir"
    blocked.write_text("")
    url = f"ducklake:postgres:{postgres.database()}?data_path={blocked}/lake/"
    with pytest.raises(tracer.StoreError, match="cannot write its files to .*file-not-dir/lake/"):
        tracer.Store(url)


def test_an_s3_data_path_without_credentials_says_which_variables(postgres, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    url = f"ducklake:postgres:{postgres.database()}?data_path=s3://traces/x/"
    with pytest.raises(tracer.ConfigError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        tracer.Store(url)


OPENER = r"""
import sys, tracer
with tracer.Store(sys.argv[1]) as store:
    print(store.schema_version())
"""


def test_processes_that_open_a_new_lake_at_once_make_its_schema_once(lake, tmp_path):
    script = tmp_path / "opener.py"
    script.write_text(OPENER)
    procs = [subprocess.Popen([sys.executable, str(script), lake], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(4)]
    outs = [p.communicate(120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err for _, err in outs]
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT count(*), count(DISTINCT version) FROM schema_migrations") == [(LATEST, LATEST)]


def test_a_local_catalog_file_serves_one_machine(lake_extensions, tmp_path):
    url = f"ducklake:{tmp_path / 'catalog.ducklake'}?data_path={tmp_path / 'data'}/"
    file = str(tmp_path / "f.duckdb")
    spans = agent_spans()
    write(file, [spans])
    write(url, [spans])
    assert dump(url) == dump(file)


def test_what_a_killed_recorder_spilled_is_stored_at_the_next_open_of_the_lake(lake):
    from tests.tracer.test_spill import spilled
    from tracer._spill import spill_dir

    spans = agent_spans()
    with tracer.Store(lake):  # the schema, as the recorder's first commit would have made it
        pass
    spilled(lake, spans).close()  # a recorder whose writer committed none of them, then died
    assert spill_dir(lake).is_dir() and not str(spill_dir(lake)).startswith("ducklake:")
    with tracer.Store(lake) as store:
        assert store.sql("SELECT count(*) FROM spans") == [(len(spans),)]
    assert not spill_dir(lake).exists()


def test_a_data_path_other_than_the_lakes_says_which_to_give(lake, tmp_path):
    with tracer.Store(lake):
        pass
    elsewhere = lake.split("?data_path=")[0] + f"?data_path={tmp_path / 'elsewhere'}/"
    with pytest.raises(tracer.StoreError, match="keeps its files elsewhere than data_path=.*elsewhere/.*Give the "
                                                "data_path the lake was made with"):
        tracer.Store(elsewhere)


def test_spans_of_another_instrumentation_join_their_conversation_as_in_a_file(lake, tmp_path):
    # GenAI-convention spans, children exported before the root that names the conversation: the
    # session stored under the trace id is merged into the named one (Store._merge_session).
    from opentelemetry.trace import format_trace_id

    from tests.tracer.test_foreign_shapes import MS, T0, Producer, genai_chat, genai_tool, send

    p = Producer()
    root = p.open("app", "invoke_agent trips", 0, {"gen_ai.operation.name": "invoke_agent",
                                                   "gen_ai.agent.name": "trips", "gen_ai.conversation.id": "conv-2"})
    p.span("sdk", "chat", 1, 10, genai_chat("c1", "tool_call", tools=["find_flights"]), root)
    p.span("app", "execute_tool find_flights", 11, 20, genai_tool("find_flights"), root)
    first = p.take()
    p.span("sdk", "chat", 21, 30, genai_chat("c2", "stop", history=1), root)
    root.end(end_time=T0 + 31 * MS)
    then = p.take()
    file = str(tmp_path / "f.duckdb")
    for db in (file, lake):
        with Collector(db, port=0) as collector:
            send(collector, first)
            trace_id = format_trace_id(root.get_span_context().trace_id)
            assert collector.store.sql("SELECT session_id FROM sessions") == [(trace_id,)]  # not named yet
            send(collector, then)
    assert dump(lake) == dump(file)
    with tracer.Store(lake, read_only=True) as store:
        assert store.sql("SELECT session_id, status, llm_calls, tool_calls FROM sessions") == [("conv-2", "ok", 2, 1)]
        assert store.sql("SELECT DISTINCT session_id FROM session_deltas") == [("conv-2",)]
