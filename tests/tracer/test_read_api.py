"""The read API that ``flightrec serve`` runs beside its collector, and the holder file that
leads other processes to it: same results as the file, errors as themselves, loopback and a
token only, and a holder file that a dead serve left behind is ignored."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
import urllib.error
import urllib.request

import pytest

import tracer
from tests.tracer.fakes import FakeAPI, run_agent
from tests.tracer.test_store import locked_store  # noqa: F401  (fixture)
from tracer._connect import PATH, READS, WRITES
from tracer._holder import Holder, find_holder, holder_path, write_holder
from tracer._read_api import ReadApi

COLLECTOR = "http://127.0.0.1:4318"


def _alert(n: int) -> tracer.AlertRecord:
    return tracer.AlertRecord(
        alert_id=f"al{n:06d}", fingerprint=f"fp{n}", detector="loops.repeat", family="loops", severity="warning",
        title=f"loop {n}", agent="support", route="support/x", session_id=None, turns=[1, 2], session_ids=[],
        evidence={"calls": n, "share": 0.5}, status="open", first_seen_ns=n, last_seen_ns=n + 1, count=1)


def _eval_run(run_id: str) -> tuple[tracer.EvalRunRecord, list[tracer.EvalResultRecord]]:
    results = [tracer.EvalResultRecord(run_id=run_id, case_id="c", trial=k, session_id=None, tags=["t"], passed=k == 0,
                                       score=1.0 - k, scores=[{"scorer": "s", "value": 1.0 - k}], error=None,
                                       status="ok", turns=2, cost_usd=0.01, latency_ms=12.5) for k in range(2)]
    run = tracer.EvalRunRecord(run_id=run_id, started_ns=1, ended_ns=2, dataset="d", dataset_sha256="h",
                               agent="support", settings={"model": "m"}, trials=2, seed=7, case_tags=["t"], cases=1,
                               passed_trials=1, total_trials=2, mean_score=0.5, cost_usd=0.02, wall_s=1.5)
    return run, results


@pytest.fixture
def api(tmp_path):
    """A store with two sessions, two alerts and an eval run, served by a ReadApi in this process."""
    db = str(tmp_path / "served.duckdb")
    rec = tracer.Recorder(db)
    for errors in ([529], []):
        with rec.session(agent="support"):
            run_agent(rec.instrument(FakeAPI(errors=errors).client()))
    rec.shutdown()
    with tracer.Store(db) as store:
        store.record_alerts([(_alert(1), "k1"), (_alert(2), "k2")])
        store.save_eval_run(*_eval_run("run-0123456789"))
    read_api = ReadApi(db, collector_url=COLLECTOR).start()
    yield read_api
    read_api.close()


def _post(url: str, body: dict, token: str | None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(f"{url}{PATH}", data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_every_served_method_returns_what_the_store_returns(api):
    holder = find_holder(api.db_path, None)
    assert holder is not None and holder.pid == os.getpid() and holder.read_url == api.url
    store = api.store
    sid = store.list_sessions()[-1].session_id
    span = store.call_outlines(sid)[-1].span_id
    calls = {
        "list_sessions": {"limit": 1, "offset": 1, "agent": "support"}, "count_sessions": {},
        "get_session": {"session_id": sid[:13]}, "session_account": {"session_id": sid},
        "session_runs": {"session_id": sid}, "call_outlines": {"session_id": sid},
        "rebuild_request": {"span_id": span}, "call_parts": {"span_id": span}, "verify_requests": {"session_id": None},
        "alerts": {"status": "open", "limit": 5}, "get_alert": {"alert_id": "al000002"},
        "eval_runs": {}, "find_eval_run": {"ref": "run-0123"}, "eval_results": {"run_id": "run-0123456789"},
        "audit_entries": {"limit": 5, "action": "label"}, "session_scores": {"session_id": sid},
        "outcomes": {"session_id": sid}, "reviews": {"pending": None, "limit": 5}, "session_tree": {"session_id": sid},
    }
    assert set(calls) == READS
    with tracer.ServedStore(api.db_path, holder) as served:
        for method, kwargs in calls.items():
            assert getattr(served, method)(**kwargs) == getattr(store, method)(**kwargs), method
        assert served.get_session(sid) == store.get_session(sid)  # positional arguments too
        with pytest.raises(tracer.UnknownSessionError) as err:
            served.session_account("no-such-session")
        assert str(err.value) == f"no session 'no-such-session' in {api.db_path}. List the sessions with " \
                                 f"`flightrec traces list --db {api.db_path}`."
        assert served.set_alert_status("al000001", "acknowledged", actor="ana", via="cli").status == "acknowledged"
        served.label_eval_run("run-0123456789", "baseline", actor="ana", via="cli")
        outcome = served.record_outcome(sid[:13], resolved=False, note="reopened", actor="cy", via="cli")
        assert served.queue_reviews([sid], "hand") == 1
        review = served.review_session(sid, "bad", category="wrong tool", actor="cy", via="cli")
        entry = served.audit("bo", "export", sid, {"to": "dataset"}, via="cli")
        assert WRITES == {"set_alert_status", "label_eval_run", "audit", "record_outcome", "queue_reviews",
                          "review_session"}
        with pytest.raises(AttributeError, match="not served"):
            served.sql("SELECT 1")
        with pytest.raises(tracer.StoreError, match="audit\\(\\) argument action: Input should be 'acknowledge'"):
            served.audit("bo", "erase", sid)  # refused by serve, before any write
    assert store.get_alert("al000001").status == "acknowledged"
    assert store.find_eval_run("baseline").run_id == "run-0123456789"
    assert store.outcomes(sid) == [outcome] and outcome.session_id == sid and outcome.source == "cli"
    assert store.reviews() == [review] and review.queued_by == "hand" and review.reviewer == "cy"
    # Serve wrote the audit entries, as the callers named themselves.
    assert store.audit_entries()[0] == entry
    assert [(e.actor, e.action, e.target, e.via, e.detail) for e in store.audit_entries()] == [
        ("bo", "export", sid, "cli", {"to": "dataset"}),
        ("cy", "review", sid, "cli", {"verdict": "bad", "category": "wrong tool"}),
        ("cy", "outcome", sid, "cli", {"resolved": False, "score": None}),
        ("ana", "label", "run-0123456789", "cli", {"label": "baseline", "moved_from": None}),
        ("ana", "acknowledge", "al000001", "cli", {"status": "acknowledged", "was": "open"})]


def test_the_holder_file_is_private_and_goes_when_the_api_closes(tmp_path):
    db = str(tmp_path / "s.duckdb")
    read_api = ReadApi(db, collector_url=COLLECTOR).start()
    path = holder_path(db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Holder.model_validate_json(path.read_bytes()).token == read_api.token
    read_api.close()
    assert not path.exists()


def test_a_request_without_the_token_or_for_another_method_is_refused(api):
    ask = {"method": "count_sessions", "kwargs": {}, "path": api.db_path}
    assert _post(api.url, ask, api.token) == (200, 2)
    for token in (None, "not-the-token"):
        status, body = _post(api.url, ask, token)
        assert status == 401 and "wrong token" in body["message"]
    status, body = _post(api.url, {**ask, "method": "sql", "kwargs": {"query": "DELETE FROM sessions"}}, api.token)
    assert status == 400 and "'sql' is not a served Store method" in body["message"]
    status, body = _post(api.url, {**ask, "method": "list_sessions", "kwargs": {"limit": "many"}}, api.token)
    assert status == 400 and "argument limit" in body["message"]
    status, body = _post(api.url, {**ask, "method": "get_session", "kwargs": {}}, api.token)
    assert status == 400 and "session_id" in body["message"]
    assert api.store.count_sessions() == 2
    wrong = Holder(pid=os.getpid(), url=COLLECTOR, read_url=api.url, token="stale")
    with pytest.raises(tracer.StoreError, match=r"refused to read .* \(HTTP 401: missing or wrong token"):
        tracer.ServedStore(api.db_path, wrong).count_sessions()


def test_the_read_api_listens_on_loopback_only(api):
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("10.255.255.255", 9))  # UDP: picks the outbound interface and sends nothing
        except OSError:
            pytest.skip("this machine has no interface besides loopback")
        address = probe.getsockname()[0]
    if address.startswith("127."):
        pytest.skip("this machine has no interface besides loopback")
    port = int(api.url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((address, port), timeout=5).close()


def test_a_holder_file_left_by_a_dead_or_other_process_is_ignored(locked_store, tmp_path):  # noqa: F811
    path, pid = locked_store
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    for stale in (int(gone.stdout), os.getpid()):  # dead; alive but not the lock's holder
        write_holder(str(path), Holder(pid=stale, url=COLLECTOR, read_url="http://127.0.0.1:9", token="t"))
        with pytest.raises(tracer.StoreLockedError) as err:
            tracer.connect(path)
        assert err.value.holder is None
        assert f"process {pid}" in str(err.value) and "held by `flightrec serve`" not in str(err.value)
    unlocked = str(tmp_path / "free.duckdb")
    tracer.Store(unlocked).close()
    write_holder(unlocked, Holder(pid=os.getpid(), url=COLLECTOR, read_url="http://127.0.0.1:9", token="t"))
    with tracer.connect(unlocked) as store:  # a file nobody holds is read directly, whatever lies beside it
        assert isinstance(store, tracer.Store)


READ_ONLY_HOLDER = textwrap.dedent("""
    import sys, tracer
    store = tracer.Store(sys.argv[1], read_only=True)
    print("open", flush=True)
    sys.stdin.read()
""")


def test_a_process_that_reads_the_file_keeps_writers_out_and_lets_readers_in(tmp_path):
    """As `flightrec dashboard` holds a store: read-only, for as long as it runs."""
    path = tmp_path / "read.duckdb"
    tracer.Store(path).close()
    proc = subprocess.Popen([sys.executable, "-c", READ_ONLY_HOLDER, str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "open"
        with tracer.connect(path) as store:
            assert store.count_sessions() == 0
        with pytest.raises(tracer.StoreLockedError) as err:
            tracer.connect(path, read_only=False)
        assert f"is open read-only in process {proc.pid}" in str(err.value)
        assert "`flightrec dashboard` opens it so" in str(err.value) and "--db" in str(err.value)
    finally:
        proc.stdin.close()
        proc.wait(30)
