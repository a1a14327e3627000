"""A retried request (the same trace and span ids sent again, say after a client timed out waiting
for its answer) is stored once: its spans, calls and turns, and its session's counts, tokens and cost."""

from __future__ import annotations

from dataclasses import replace

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

import tracer
from tests.tracer.test_collector import agent_spans, dump, post
from tracer._collector import Collector
from tracer._ingest import Ingestor, from_readable
from tracer._store import _MOST_RANGES, _time_ranges

COUNTS = """SELECT (SELECT count(*) FROM spans), (SELECT count(*) FROM llm_calls), (SELECT count(*) FROM tool_calls),
                   (SELECT count(*) FROM turns)"""
SESSION = """SELECT turns, llm_calls, llm_errors, tool_calls, tool_errors, input_tokens, output_tokens,
                    cache_read_tokens, cache_write_tokens, unpriced_calls, cost_usd FROM sessions"""


def stored(db: str) -> tuple[list, list]:
    with tracer.Store(db, read_only=True) as store:
        return store.sql(COUNTS), store.sql(SESSION)


def ingest(db: str, *requests: list) -> None:
    """Builds and writes each request as the embedded exporter does, with one ingestor per store."""
    with tracer.Store(db) as store:
        ingestor = Ingestor()
        for spans in requests:
            store.write(ingestor.build([from_readable(s) for s in spans]))


def test_a_request_posted_twice_to_the_collector_is_stored_once(tmp_path):
    spans = agent_spans()
    once, twice = str(tmp_path / "once.duckdb"), str(tmp_path / "twice.duckdb")
    ingest(once, spans)
    body = encode_spans(spans).SerializeToString()
    with Collector(twice, port=0) as collector:
        assert post(collector.url, body)[0] == 200
        assert post(collector.url, body)[0] == 200  # the retry is acknowledged, not stored again
    assert dump(twice) == dump(once)
    counts, sessions = stored(twice)
    assert counts[0][0] == len(spans) and counts[0][1] > 0 and counts[0][2] > 0
    assert len(sessions) == 1 and sessions[0][-1] > 0


def test_a_retry_reaching_a_restarted_collector_is_stored_once(tmp_path):
    # The collector that took the first request no longer remembers it: the store's own check counts.
    spans = agent_spans()
    once, twice = str(tmp_path / "once.duckdb"), str(tmp_path / "twice.duckdb")
    ingest(once, spans)
    body = encode_spans(spans).SerializeToString()
    for _ in range(2):
        with Collector(twice, port=0) as collector:
            assert post(collector.url, body)[0] == 200
    assert dump(twice) == dump(once)


def test_a_span_given_twice_in_one_request_is_stored_once(tmp_path):
    spans = agent_spans()
    once, doubled = str(tmp_path / "once.duckdb"), str(tmp_path / "doubled.duckdb")
    ingest(once, spans)
    with Collector(doubled, port=0) as collector:
        assert post(collector.url, encode_spans([*spans, *spans]).SerializeToString())[0] == 200
    assert dump(doubled) == dump(once)


def test_the_embedded_path_stores_a_repeated_export_once(tmp_path):
    spans = agent_spans()
    once, twice = str(tmp_path / "once.duckdb"), str(tmp_path / "twice.duckdb")
    ingest(once, spans)
    ingest(twice, spans, spans[:3], spans)
    assert dump(twice) == dump(once)


def test_the_store_drops_what_it_has_even_from_a_new_ingestor_and_keeps_the_new_spans(tmp_path):
    # Half the session first; then all of it from an ingestor that never saw the first half.
    spans = sorted(agent_spans(), key=lambda s: s.start_time)
    once, split = str(tmp_path / "once.duckdb"), str(tmp_path / "split.duckdb")
    ingest(once, spans)
    ingest(split, spans[: len(spans) // 2])
    ingest(split, spans, spans)
    assert stored(split) == stored(once)


def test_a_failed_write_is_forgotten_so_that_its_retry_is_stored(tmp_path):
    spans = agent_spans()
    once, db = str(tmp_path / "once.duckdb"), str(tmp_path / "db.duckdb")
    ingest(once, spans)
    ingestor = Ingestor()
    batch = ingestor.build([from_readable(s) for s in spans])
    ingestor.rollback(batch)  # as the collector and the exporter do when the write fails
    with tracer.Store(db) as store:
        store.write(ingestor.build([from_readable(s) for s in spans]))
    assert dump(db) == dump(once)


def test_a_retry_of_spans_that_ended_hours_apart_is_found_in_every_range_the_check_reads(tmp_path):
    # Spans that come late (a spill file sent at the next start) ended hours before the rest of their
    # request; and far more time clusters than the check reads ranges, so that some ranges hold several
    # clusters. A new ingestor each time: only the store's check can find the spans it has.
    hour = 3600 * 10**9
    records = [from_readable(s) for s in agent_spans()]
    early = [replace(r, start_ns=r.start_ns - (k + 1) * hour, end_ns=r.end_ns - (k + 1) * hour)
             for k, r in enumerate(records[: _MOST_RANGES + 8])]
    spread = [*early, *records[len(early):]]
    once, twice = str(tmp_path / "once.duckdb"), str(tmp_path / "twice.duckdb")
    for db, times in ((once, 1), (twice, 2)):
        for _ in range(times):
            with tracer.Store(db) as store:
                store.write(Ingestor().build(spread))
    assert dump(twice) == dump(once)
    assert stored(twice)[0][0][0] == len(spread)


def test_the_check_reads_the_times_of_the_batch_and_not_the_gaps_between_them():
    minute = 60 * 10**9
    late, now = 10 * 60 * minute, 11 * 60 * minute  # a span that ended an hour before the rest of its batch
    ends = [late, *(now + k * 1_000_000 for k in range(500))]
    assert _time_ranges(ends) == [(late, late), (now, now + 499 * 1_000_000)]
    # Past the most ranges a check reads, the widest gaps are the ones split; every time stays in a range.
    many = [k * k * minute for k in range(100)]
    ranges = _time_ranges(many)
    assert len(ranges) == _MOST_RANGES
    assert all(any(lo <= t <= hi for lo, hi in ranges) for t in many)
    assert ranges[-1] == (99 * 99 * minute, 99 * 99 * minute)  # the widest gap, before the last time, is split
