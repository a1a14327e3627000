"""The Approvals page: a support lead approves or rejects an action an agent holds, the session's own agent
(found through its registration's ``decide``) carries the session on, and the audit log names who decided."""

from __future__ import annotations

from pathlib import Path

import pytest

import tracer
from dashboard._source import COLLECTOR_ENV, DB_ENV, MODE_ENV
from reference_agent import Agent, World, default_world_path, get_scenario
from tests.dashboard.conftest import app, follow, link_tables, no_exceptions
from tracer._collector import Collector
from tracer.testing import FakeClock


@pytest.fixture
def waiting(tmp_path, monkeypatch) -> tuple[Path, str]:
    """A small store of one reference-agent session that waits for a refund's approval: (db, session id)."""
    db = tmp_path / "approvals.duckdb"
    recorder = tracer.Recorder(str(db))
    try:
        with World(default_world_path(str(db))) as world:
            out = Agent(world, recorder).run(get_scenario("refund_over_threshold"))
    finally:
        recorder.shutdown()
    assert out.status == "waiting_human" and out.approval_id == "AP-0001"
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    return db, out.session_id


def _decide(at, session_id: str, button: str, *, actor: str, note: str = ""):
    at.text_input(key="approvals_actor").set_value(actor)
    at.text_area(key=f"approvals_note_{session_id}").set_value(note)
    next(b for b in at.button if b.label == button).click()
    return at.run()


def _approval(db: Path, session_id: str) -> dict:
    with World(default_world_path(str(db))) as world:
        return world.approval(session_id, "AP-0001")


def test_the_list_shows_what_waits_and_a_click_opens_it(waiting):
    db, sid = waiting
    recorder = tracer.Recorder(str(db))  # an eval trial's held refund is no customer's: not listed
    try:
        with World(default_world_path(str(db))) as world, tracer.eval_trial("run-1", "refund", 0):
            trial = Agent(world, recorder).run(get_scenario("refund_over_threshold"))
    finally:
        recorder.shutdown()
    assert trial.status == "waiting_human"
    at = app("approvals", id=trial.session_id)
    no_exceptions(at)
    assert any("not a production session (it is from eval)" in i.value for i in at.info)
    at = app("approvals")
    no_exceptions(at)
    [listed] = link_tables(at)
    assert listed.links == [f"/approvals?id={sid}"] and listed.column("approval") == ["AP-0001"]
    assert listed.rows[0]["what"].startswith("refund $549.00 on A-1003") and listed.column("tool") == ["issue_refund"]
    at = follow(listed.links[0])
    no_exceptions(at)
    assert at.query_params["id"] == sid and any(b.label == "Approve" for b in at.button)


def test_approve_from_the_page_pays_the_refund_and_audits_who(waiting):
    db, sid = waiting
    at = app("approvals", id=sid)
    no_exceptions(at)
    at = _decide(at, sid, "Approve", actor="dana (team lead)", note="photos checked")
    no_exceptions(at)
    assert any("Approved" in s.value and "now **ok**" in s.value for s in at.success), [s.value for s in at.success]
    assert _approval(db, sid)["status"] == "approved"
    with tracer.Store(str(db), read_only=True) as store:
        (entry,) = store.audit_entries(action="approve")
        assert store.get_session(sid).status == "ok"  # the agent carried on, recorded in the same store
    assert (entry.actor, entry.target, entry.via) == ("dana (team lead)", sid, "dashboard")
    assert entry.detail == {"approval_id": "AP-0001", "note": "photos checked"}


def test_reject_from_the_page_tells_the_customer_and_audits_who(waiting):
    db, sid = waiting
    at = _decide(app("approvals", id=sid), sid, "Reject", actor="sam", note="no photos")
    no_exceptions(at)
    assert any("Rejected" in s.value and "no photos" in s.value for s in at.success), [s.value for s in at.success]
    assert _approval(db, sid)["status"] == "rejected"
    with tracer.Store(str(db), read_only=True) as store:
        assert [(e.actor, e.action, e.via) for e in store.audit_entries(limit=10)] == [("sam", "reject", "dashboard")]
    # Decided: it has left the list, and its own page says so and shows who decided.
    again = app("approvals", id=sid)
    no_exceptions(again)
    assert not [b for b in again.button if b.label in ("Approve", "Reject")]
    assert any("cannot be decided again" in i.value for i in again.info)
    assert any("reject by sam via dashboard" in m.value for m in again.markdown)


def test_an_approval_decided_elsewhere_meanwhile_cannot_be_decided_again(waiting):
    db, sid = waiting
    at = app("approvals", id=sid)  # shown as pending …
    recorder = tracer.Recorder(str(db))
    try:  # … then rejected from the command line's code before the lead clicks
        with World(default_world_path(str(db))) as world:
            Agent(world, recorder).decide(sid, "reject", "too late")
    finally:
        recorder.shutdown()
    at = _decide(at, sid, "Approve", actor="dana")
    (error,) = at.error
    assert "AP-0001" in error.value and "already rejected" in error.value and "cannot be decided again" in error.value
    assert _approval(db, sid)["status"] == "rejected"
    with tracer.Store(str(db), read_only=True) as store:
        assert store.audit_entries(action="approve") == []


def test_a_blank_name_is_refused_before_the_agent_acts(waiting):
    db, sid = waiting
    at = _decide(app("approvals", id=sid), sid, "Approve", actor="  ")
    assert any("Fill in your name" in w.value for w in at.warning)
    assert _approval(db, sid)["status"] == "pending"


def test_under_serve_the_decision_goes_through_the_collector(tmp_path, monkeypatch):
    # Serve's collector is the file's one writer: the agent's spans are sent to it, the audit entry is
    # written on the store it shares with the dashboard.
    db = str(tmp_path / "served.duckdb")
    monkeypatch.setenv(DB_ENV, db)
    monkeypatch.setenv(MODE_ENV, "shared")
    with Collector(db, port=0) as collector:
        monkeypatch.setenv(COLLECTOR_ENV, collector.url)
        recorder = tracer.Recorder(endpoint=collector.url)
        with World(default_world_path(db)) as world:
            sid = Agent(world, recorder).run(get_scenario("refund_over_threshold")).session_id
        recorder.shutdown()
        at = _decide(app("approvals", id=sid), sid, "Approve", actor="dana")
        no_exceptions(at)
        assert collector.store.get_session(sid).status == "ok"
        (entry,) = collector.store.audit_entries(action="approve")
    assert (entry.actor, entry.target, entry.via) == ("dana", sid, "dashboard")
    assert _approval(Path(db), sid)["status"] == "approved"


def test_a_session_of_an_agent_that_cannot_decide_says_so(tmp_path, monkeypatch):
    db = tmp_path / "other.duckdb"
    recorder = tracer.Recorder(str(db))
    with recorder.session(agent="trip-planner") as session:
        session.event("approval_requested", approval_id="AP-7", summary="book a $900 flight", tool="book",
                      requested_at=1.0, deadline=2.0)
        session.set_status("waiting_human", "book a $900 flight needs approval")
    recorder.shutdown()
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = app("approvals")
    assert link_tables(at)[0].column("what") == ["book a $900 flight needs approval"]
    at = _decide(app("approvals", id=session.id), session.id, "Approve", actor="dana")
    (error,) = at.error
    assert "'trip-planner'" in error.value and "is not registered" in error.value
    with tracer.Store(str(db), read_only=True) as store:
        assert store.audit_entries() == [] and store.get_session(session.id).status == "waiting_human"


def test_an_approval_past_its_deadline_expires_instead_and_is_not_audited(tmp_path, monkeypatch):
    # Asked for at epoch second 1,000 with a day to decide: any click today comes past the deadline.
    db = tmp_path / "late.duckdb"
    recorder = tracer.Recorder(str(db))
    with World(default_world_path(str(db))) as world:
        agent = Agent(world, recorder, wall_clock=FakeClock(1_000.0))
        sid = agent.run(get_scenario("refund_over_threshold")).session_id
    recorder.shutdown()
    monkeypatch.setenv(DB_ENV, str(db))
    monkeypatch.setenv(MODE_ENV, "read_only")
    at = _decide(app("approvals", id=sid), sid, "Approve", actor="dana")
    no_exceptions(at)
    (warning,) = at.warning
    assert "had passed its deadline, so it expired instead of being approved" in warning.value
    assert "Nothing was recorded as your decision" in warning.value
    assert _approval(db, sid)["status"] == "expired"
    with tracer.Store(str(db), read_only=True) as store:
        assert store.audit_entries() == []


def test_a_store_without_the_agents_world_file_says_where_to_decide(waiting):
    db, sid = waiting
    world = Path(default_world_path(str(db)))
    world.rename(world.with_suffix(".moved"))
    at = _decide(app("approvals", id=sid), sid, "Reject", actor="dana")
    (error,) = at.error
    assert "no world file" in error.value and "--world PATH" in error.value
    assert not world.exists()  # no empty world was made in its place
