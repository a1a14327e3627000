"""Serve mode: the dashboard shares the collector's store, shows sessions as they land, and writes
beside the collector (replays, alert changes) without a second writer process."""

from __future__ import annotations

import pytest

import replay
import tracer
from dashboard import Source
from dashboard._source import DB_ENV, MODE_ENV
from tests.dashboard.conftest import app, link_tables, no_exceptions, submit
from tests.tracer.fakes import FakeAPI, run_agent
from tracer._collector import Collector


@pytest.fixture
def served(tmp_path, monkeypatch):
    db = str(tmp_path / "served.duckdb")
    monkeypatch.setenv(DB_ENV, db)
    monkeypatch.setenv(MODE_ENV, "shared")
    with Collector(db, port=0) as collector:
        yield db, collector


def _send(url: str) -> str:
    rec = tracer.Recorder(endpoint=url)
    with rec.session(agent="remote") as session:
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    return session.id


def test_sessions_sent_to_the_collector_show_up_on_the_next_refresh(served):
    db, collector = served
    at = app("sessions")
    no_exceptions(at)
    assert any("No session matches" in i.value for i in at.info)
    assert at.toggle(key="live").value  # serve mode re-reads the store by itself
    sid = _send(collector.url)
    at = submit(at, q=sid[:13])  # a new query: nothing cached answers it
    no_exceptions(at)
    assert link_tables(at)[0].column("agent") == ["remote"]


def test_the_dashboard_records_a_replay_beside_the_running_collector(served):
    from reference_agent import Agent, World, default_world_path, get_scenario

    db, collector = served
    rec = tracer.Recorder(endpoint=collector.url)
    with World(default_world_path(db)) as world:
        sid = Agent(world, rec).run(get_scenario("order_status")).session_id
    rec.shutdown()
    source = Source(db, "shared")
    with source.writing() as store:
        result = replay.run(sid, 1, trials=1, db=store)
    assert source.store().get_session(result.replay_session_id).llm_calls == 1
    assert _send(collector.url)  # and the collector is still the writer, undisturbed
