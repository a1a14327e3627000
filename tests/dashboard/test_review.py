"""After deploy on the dashboard: the resolution rate on Overview, the Review page (the queue, a verdict,
a case for a dataset, judge-vs-human agreement, score trends), and a session's scores, outcome and
review on the Session page."""

from __future__ import annotations

import duckdb
import yaml
from click.testing import CliRunner

import evals
import tracer
from dashboard import _source
from tests.dashboard.conftest import app, drawn, follow, html_links, link_tables, metrics, no_exceptions
from tracer._cli import main


def _table(at, header: str) -> dict[str, dict[str, str]]:
    """The page's table that has the column ``header``, its rows by their first cell."""
    table = next(t for t in link_tables(at) if header in t.headers)
    return {row[table.headers[0]]: row for row in table.rows}


def _production(store, n: int) -> list[str]:
    with tracer.Store(str(store), read_only=True) as s:
        return [r[0] for r in s.sql("SELECT session_id FROM sessions WHERE origin = 'production' "
                                    "ORDER BY start_ns, session_id LIMIT ?", [n])]


def _write():
    """The store opened for writing as the dashboard's own writes open it: its read-only handle closed
    (DuckDB opens a file one way per process), its cached queries outdated after."""
    return _source.current().writing()


def _scored(store) -> None:
    """Scores every production session with the default policy, as `flightrec eval score --all` does."""
    result = CliRunner().invoke(main, ["eval", "score", "--all", "--since", "3650d", "--db", str(store)])
    assert result.exit_code == 0, result.output


def test_overview_shows_the_resolution_rate_only_where_outcomes_exist(store):
    with duckdb.connect(str(store)) as con:
        con.execute("DELETE FROM session_outcomes")  # the demo's survey answers
    at = app("overview")
    no_exceptions(at)
    assert "Resolution rate" not in metrics(at) and "Completion rate" in metrics(at)
    ids = _production(store, 5)
    with _write() as s:
        s.record_outcome(ids[0], resolved=False)
        s.record_outcome(ids[0], resolved=True, note="fixed after a callback")  # the newest is the outcome
        s.record_outcome(ids[1], resolved=True)
        s.record_outcome(ids[2], resolved=False)
        s.record_outcome(ids[3], score=0.5)  # says nothing of resolution
        eval_session = s.sql("SELECT session_id FROM sessions WHERE origin = 'eval' LIMIT 1")[0][0]
        s.record_outcome(eval_session, resolved=False)  # not production: not counted
    at = app("overview")
    no_exceptions(at)
    metric = metrics(at)["Resolution rate"]
    assert metric.value == f"{2 / 3:.1%}"
    assert metric.note == "of 3 (4 with an outcome)"
    assert "Completion rate" in metrics(at)
    at = app("overview", origin="evals")
    no_exceptions(at)
    metric = metrics(at)["Resolution rate"]
    assert (metric.value, metric.note) == ("0.0%", "of 1 with an outcome")


def _button(at, label: str):
    return next(b for b in at.button if b.label == label)


def test_a_queued_session_is_reviewed_and_added_to_a_dataset(store, tmp_path, monkeypatch):
    monkeypatch.setenv("FLIGHTREC_ACTOR", "dash-reviewer")  # the reviewer the form starts with
    _scored(store)
    with tracer.Store(str(store)) as s:
        pending = s.reviews(pending=True, limit=1000)
    assert {r.queued_by for r in pending} <= set(tracer.QUEUED_BY)
    at = app("review")
    no_exceptions(at)
    queue = link_tables(at)[0]
    first = pending[:50]  # oldest first, a page at a time
    assert queue.links == [f"/review?id={r.session_id}" for r in first]
    assert queue.column("why") == [r.queued_by for r in first]
    sid, why = pending[0].session_id, pending[0].queued_by
    with tracer.Store(str(store), read_only=True) as s:
        failed = [x.scorer for x in s.session_scores(sid) if x.passed is False]
    assert queue.rows[0]["failed scorers"] == ", ".join(failed)
    at = follow(queue.links[0])
    no_exceptions(at)
    assert at.query_params["id"] == sid
    assert "CUSTOMER:" in at.code[0].value  # what happened, as the judge reads it
    assert any(m.value.startswith("**Online scores**") and "(weighted mean)" in m.value for m in at.markdown)
    assert any(m.value.startswith(f"**Review**: :orange-badge[waiting] queued ({why})") for m in at.markdown)

    # A bad verdict needs its category: the form says so and writes nothing.
    at.radio(key=f"review_verdict_{sid}").set_value("bad")
    _button(at, "Submit review").click().run()
    assert "Pick the failure category of a bad session" in at.warning[0].value
    category = evals.load_scoring_policy().review.categories[0]
    at.radio(key=f"review_verdict_{sid}").set_value("bad")
    at.selectbox(key=f"review_category_{sid}").set_value(category)
    at.text_area(key=f"review_note_{sid}").set_value("refunded twice")
    _button(at, "Submit review").click().run()
    no_exceptions(at)
    assert at.success[0].value == f"Reviewed as **bad** ({category}) by dash-reviewer."
    with tracer.Store(str(store), read_only=True) as s:
        done = s.reviews(pending=False)
        entries = [(e.actor, e.action, e.target, e.via) for e in s.audit_entries() if e.action == "review"]
    assert [(r.session_id, r.verdict, r.category, r.note, r.reviewer, r.queued_by) for r in done] == [
        (sid, "bad", category, "refunded twice", "dash-reviewer", why)]
    assert entries == [("dash-reviewer", "review", sid, "dashboard")]
    assert any(m.value.startswith(f"**Review**: :red-badge[bad] {category}") for m in at.markdown)

    # Into a dataset: a folder that does not exist is a message that says what to do.
    at.text_input(key="review_dataset").set_value(str(tmp_path / "missing" / "reviewed.yaml"))
    at.button(key="review_add_case").click().run()
    assert not at.exception
    assert "There is no folder" in at.error[0].value and "Create it" in at.error[0].value
    dataset = tmp_path / "reviewed.yaml"
    at.text_input(key="review_dataset").set_value(str(dataset))
    at.button(key="review_add_case").click().run()
    no_exceptions(at)
    cases = yaml.safe_load(dataset.read_text())["cases"]
    assert len(cases) == 1 and sid in cases[0]["description"]
    assert at.success[0].value.startswith(f"Added case `{cases[0]['id']}` to {dataset}")
    loaded = evals.load_dataset(dataset)
    assert [c.id for c in loaded.cases] == [cases[0]["id"]]
    with tracer.Store(str(store), read_only=True) as s:
        export = next(e for e in s.audit_entries() if e.action == "export")
    assert (export.actor, export.target, export.via, export.detail) == (
        "dash-reviewer", sid, "dashboard", {"to": "dataset", "dataset": str(dataset), "case": cases[0]["id"]})
    # The same case again: the id is taken, and the message says where to name another.
    at.button(key="review_add_case").click().run()
    assert not at.exception
    assert "already has a case" in at.error[0].value and "Case id" in at.error[0].value
    assert len(yaml.safe_load(dataset.read_text())["cases"]) == 1


def test_agreement_and_trends_match_the_store(store):
    _scored(store)
    with tracer.Store(str(store)) as s:
        pending = s.reviews(pending=True, limit=1000)
        good, bad = pending[0].session_id, pending[1].session_id
        s.review_session(good, "good")
        s.review_session(bad, "bad", category="loop")
        scores = {sid: s.session_scores(sid) for sid in (good, bad)}
        scorers = s.sql("SELECT scorer, avg(passed::INT) FROM session_scores JOIN sessions USING (session_id) "
                        "WHERE origin = 'production' AND passed IS NOT NULL GROUP BY 1 ORDER BY 1")
    at = app("review")
    no_exceptions(at)
    agreement = _table(at, "agreement")
    # Queued because a scorer failed them: a bad verdict agrees with every scorer that failed it.
    every = [all(x.passed for x in scores[sid] if x.passed is not None) for sid in (good, bad)]
    assert agreement["every scorer"]["reviewed sessions"] == "2"
    assert agreement["every scorer"]["agreed"] == str((every[0] is True) + (every[1] is False))
    for name in {x.scorer for v in scores.values() for x in v}:
        said = [(x.passed, sid == good) for sid in (good, bad) for x in scores[sid] if x.scorer == name]
        assert agreement[name]["agreed"] == str(sum(p == g for p, g in said))
    assert "No LLM judge scored a reviewed session" in drawn(at)
    table = _table(at, "sessions scored")
    assert {k: row["pass rate"] for k, row in table.items()} == {k: f"{v:.0%}" for k, v in scorers}
    assert sum(h.proto.body.count("data:image/svg+xml") for h in at.get("html")) == 2


def test_the_session_page_shows_scores_and_outcome_and_queues_by_hand(store):
    _scored(store)
    production = _production(store, 100)
    with tracer.Store(str(store)) as s:
        queued = {r.session_id for r in s.reviews(pending=True, limit=1000)}
        sid = next(i for i in production if i not in queued and s.session_scores(i) and not s.outcomes(i))
        s.record_outcome(sid, resolved=True, note="customer thanked us", actor="support-lead")
        scores = s.session_scores(sid)
    at = app("session", id=sid)
    no_exceptions(at)
    assert "After it ended: " in drawn(at) and "not reviewed" in drawn(at)
    assert not any(m.value.startswith("**Outcome**") for m in at.markdown)  # shown once asked for
    at = follow(html_links(at)["show the scores, outcome and review"])
    no_exceptions(at)
    shown = "\n".join(m.value for m in at.markdown)
    assert all(f"**{x.scorer}** {x.value:.2f}: {x.reason.split()[0]}" in shown for x in scores)
    assert "**Outcome**: :green-badge[resolved] · “customer thanked us” · support-lead via api" in shown
    at.button(key="session_queue_review").click().run()
    no_exceptions(at)
    assert at.success[0].value.startswith("Queued for review")
    with tracer.Store(str(store), read_only=True) as s:
        assert [(r.session_id, r.queued_by) for r in s.reviews(pending=True, limit=1000) if r.session_id == sid] == [
            (sid, "hand")]
    assert not [b for b in at.button if b.label == "Queue for review"]
    assert html_links(at)["Open it on the Review page"] == f"/review?id={sid}"


def test_the_judges_agreement_with_reviewers_is_its_own_number(store):
    ids = _production(store, 3)
    with tracer.Store(str(store)) as s:
        for sid, passed, verdict in zip(ids, (True, False, True), ("good", "good", "bad")):
            s.record_scores([tracer.SessionScore(session_id=sid, scorer="judge", version="v1", value=float(passed),
                                                      passed=passed, weight=1.0, reason="rubric", scored_ns=1)])
            s.review_session(sid, verdict, category=None if verdict == "good" else "tone")
    at = app("review")
    no_exceptions(at)
    assert metrics(at)["Judge agrees with reviewers"].value == f"{1 / 3:.1%}"  # only the first: passed and good
    assert _table(at, "agreement")["judge"]["reviewed sessions"] == "3"


def test_a_reviewed_case_runs_as_an_eval(store, tmp_path):
    with tracer.Store(str(store), read_only=True) as s:
        sid = s.sql("SELECT session_id FROM sessions WHERE origin = 'production' AND status = 'ok' "
                    "ORDER BY start_ns LIMIT 1")[0][0]
    at = app("review", id=sid)
    dataset = tmp_path / "reviewed.yaml"
    at.text_input(key="review_dataset").set_value(str(dataset))
    at.button(key="review_add_case").click().run()
    no_exceptions(at)
    run = evals.run_eval(dataset, trials=1, db=str(tmp_path / "runs.duckdb"))
    # It runs: the case's input drives the agent (whether it passes is the agent's business, not the page's).
    assert run.run.total_trials == 1 and run.results[0].error is None, run.results[0]


def test_an_unknown_session_to_review_is_a_clear_error(store):
    at = app("review", id="ffffffffffff")
    assert not at.exception
    assert "ffffffffffff" in at.error[0].value, at.error[0].value
