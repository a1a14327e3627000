"""The Evals and Alerts pages against the demo store (a baseline run, a regressed variant, and the
detectors' alerts)."""

from __future__ import annotations

import duckdb

import evals
import tracer
from tests.dashboard.conftest import app, choose, drawn, follow, html_links, link_tables, metrics, no_exceptions, submit


def test_evals_lists_runs_and_compares_baseline_with_latest(store):
    with tracer.Store(str(store), read_only=True) as s:
        runs = s.eval_runs()
        expected = evals.compare_stored(s, "baseline", runs[0].run_id)
    at = app("evals")
    no_exceptions(at)
    listed = link_tables(at)[0]
    assert len(listed.rows) == len(runs)
    assert listed.column("labels").count("baseline") == 1
    # Baseline against the newest run by default: the demo's variant is a caught regression.
    assert f"REGRESSION : {expected.verdict_reason}" in drawn(at)
    shown = metrics(at)
    assert shown["Pass rate"].value == f"{expected.candidate.pass_rate:.1%}"
    assert shown["pass → fail"].value == str(len(expected.flips_to_fail))
    assert shown["pass → fail"].note == ", ".join(expected.flips_to_fail)
    assert expected.regressions and shown["regressed"].note == ", ".join(expected.regressions)
    assert at.query_params["a"] == runs[1].run_id


def test_the_pickers_compare_any_two_runs(store):
    with tracer.Store(str(store), read_only=True) as s:
        runs = s.eval_runs()
        expected = evals.compare_stored(s, runs[0].run_id, runs[1].run_id)
    at = submit(app("evals"), a=runs[0].run_id, b=runs[1].run_id)  # the other way round
    no_exceptions(at)
    assert (at.query_params["a"], at.query_params["b"]) == (runs[0].run_id, runs[1].run_id)
    assert metrics(at)["Pass rate"].value == f"{expected.candidate.pass_rate:.1%}"
    assert f"{expected.verdict.upper()} : {expected.verdict_reason}" in drawn(at)


def test_the_comparison_sorts_by_a_header_and_lists_every_case_on_demand(store):
    with tracer.Store(str(store), read_only=True) as s:
        c = evals.compare_stored(s, "baseline", s.eval_runs()[0].run_id)
    at = app("evals")
    compared = link_tables(at)[1]
    # The cases whose pass rate changed, the biggest drop first.
    changed = [k for k in c.cases if k.delta]
    assert sorted(compared.column("case")) == sorted(k.case_id for k in changed)
    deltas = [float(d.removesuffix(" pts")) for d in compared.column("Δ")]
    assert deltas == sorted(deltas) and deltas[0] < 0
    at = follow(compared.header_links[compared.headers.index("case")])
    assert link_tables(at)[1].column("case") == sorted(k.case_id for k in changed)
    at = follow(link_tables(at)[1].header_links[0])  # the same header again: the other way
    assert link_tables(at)[1].column("case") == sorted((k.case_id for k in changed), reverse=True)
    at = choose(at, "Cases", "all")
    assert sorted(link_tables(at)[1].column("case"), reverse=True) == link_tables(at)[1].column("case")
    assert len(link_tables(at)[1].rows) == len(c.cases) > len(changed)


def test_an_eval_failure_opens_the_decision_its_failing_scorer_judged(store):
    # The demo's regressed run fails its refund cases on the bundled suite's own scorer, which names the
    # turn of the refund; the link must open that decision, not the session's last.
    with tracer.Store(str(store), read_only=True) as s:
        failed = [r for run in s.eval_runs() for r in s.eval_results(run.run_id) if not r.passed]
    judged = [(r, score) for r in failed for score in [next((x for x in r.scores if not x["passed"]), {})]
              if score.get("turn")]  # a trial that could not run has no score
    assert any("without asking the customer to confirm" in score["reason"] for _, score in judged)
    for r, score in judged:
        assert evals.failing_turn(r) == score["turn"] and f"turn {score['turn']}" in score["reason"]
    assert any(score["turn"] < r.turns for r, score in judged)  # else the last turn would pass for it


def test_evals_one_run_shows_each_case_with_its_session(store):
    with tracer.Store(str(store), read_only=True) as s:
        run = s.find_eval_run("baseline")
        results = s.eval_results(run.run_id)
    at = app("evals", run=run.run_id[:8])
    no_exceptions(at)
    assert metrics(at)["Pass rate"].value == f"{run.passed_trials / run.total_trials:.1%}"
    listed = link_tables(at)[0]
    assert f"{run.cases} cases match" in drawn(at)
    rows = {r["case"]: (r, link) for r, link in zip(listed.rows, listed.links, strict=True)}
    flaky = next(c for c, (r, _) in rows.items() if r["status"] != "pass")
    trials = [r for r in results if r.case_id == flaky]
    row, link = rows[flaky]
    assert row["passed"] == f"{sum(r.passed for r in trials)}/{len(trials)}"
    failing = next(r for r in trials if not r.passed)
    assert link == f"/session?id={failing.session_id}&turn={evals.failing_turn(failing)}"
    # Only the cases that did not pass every trial, then every trial of the run, a page at a time.
    at = choose(at, "Which", "not passing every trial")
    not_passing = {r.case_id for r in results if not r.passed}
    assert sorted(link_tables(at)[0].column("case")) == sorted(not_passing)
    at = choose(choose(at, "Which", "all"), "Show", "every trial")
    assert f"{len(results)} trials match; showing 1–50" in drawn(at)
    at = follow(html_links(at)["last »"])
    assert len(link_tables(at)[0].rows) == (len(results) - 1) % 50 + 1  # the rest, or fifty


def test_evals_unknown_run_is_a_clear_error(store):
    at = app("evals", run="no-such-run")
    assert not at.exception
    assert "no eval run or label 'no-such-run'" in at.error[0].value
    at = app("evals", a="baseline", b="no-such-run")
    assert not at.exception
    assert "no eval run or label 'no-such-run'" in at.error[0].value


def test_alerts_lists_open_and_acknowledged_alerts(store):
    with duckdb.connect(str(store)) as con:  # one resolved alert, which the default filter hides
        con.execute("UPDATE alerts SET status = 'resolved' WHERE alert_id = (SELECT min(alert_id) FROM alerts)")
    with tracer.Store(str(store), read_only=True) as s:
        all_alerts = s.alerts(limit=1000)
        active = [a for a in all_alerts if a.status != "resolved"]
        critical = [a for a in active if a.severity == "critical"]
    at = app("alerts")
    no_exceptions(at)
    shown = min(50, len(active))  # a page
    assert f"{len(active):,} alerts match" + (f"; showing 1–{shown}." if len(active) > shown else ".") in drawn(at)
    assert len(link_tables(at)[0].rows) == shown
    # The form ticked with no status lists every status, resolved ones too.
    everything = submit(app("alerts"), status=[])
    assert f"{len(all_alerts):,} alerts match" in drawn(everything) and len(all_alerts) > len(active)
    at = submit(at, severity=["critical"])
    no_exceptions(at)
    [table] = link_tables(at)
    assert table.column("alert") == [a.alert_id for a in critical][:50]
    assert at.query_params["status"] == ["open", "acknowledged"]  # the default, kept by the form
    at = follow(table.links[0])
    no_exceptions(at)
    assert at.query_params["alert"] == critical[0].alert_id and at.subheader[0].value.endswith(critical[0].title)


def test_an_alert_shows_its_evidence_and_links_to_its_turn(store):
    with tracer.Store(str(store), read_only=True) as s:
        alert = next(a for a in s.alerts(limit=1000) if a.detector == "loop.guard" and a.turns)
    at = app("alerts", alert=alert.alert_id)
    no_exceptions(at)
    assert at.subheader[0].value.endswith(alert.title)
    evidence = at.table[0].value
    assert alert.evidence["guard"]["reason"] in evidence["value"].tolist()
    links = {(p.proto.page, p.proto.label, p.proto.query_string) for p in at.get("page_link")}
    assert any(f"turn={alert.turns[0]}" in q and alert.session_id in q for _, _, q in links), links
    assert [e.label for e in at.expander] == ["Raw alert (JSON)"]
    # The raw JSON is sent to the browser only once its expander is opened (a collapsed one's
    # elements are drawn all the same).
    assert not at.json
    at.session_state["raw_json_Raw alert (JSON)"] = True
    at.run()
    assert at.json[0].value and alert.alert_id in at.json[0].value


def test_acknowledging_then_resolving_an_alert_writes_the_store(store, monkeypatch):
    monkeypatch.setenv("FLIGHTREC_ACTOR", "dash-ops")  # the dashboard has no login: the serving process's actor
    with tracer.Store(str(store), read_only=True) as s:
        alert = s.alerts(status="open")[0]
    at = app("alerts", alert=alert.alert_id)
    at.button(key="alerts_ack").click().run()
    no_exceptions(at)
    assert f"Alert {alert.alert_id} is now **acknowledged**." in at.success[0].value
    assert at.button(key="alerts_ack").disabled
    with tracer.Store(str(store), read_only=True) as s:
        assert s.get_alert(alert.alert_id).status == "acknowledged"
    at.button(key="alerts_resolve").click().run()
    no_exceptions(at)
    with tracer.Store(str(store), read_only=True) as s:
        assert s.get_alert(alert.alert_id).status == "resolved"
        assert [(e.actor, e.action, e.target) for e in s.audit_entries() if e.via == "dashboard"] == [
            ("dash-ops", "resolve", alert.alert_id), ("dash-ops", "acknowledge", alert.alert_id)]


def test_an_unknown_alert_is_a_clear_error(store):
    at = app("alerts", alert="ffffffffff")
    assert not at.exception
    assert "no alert 'ffffffffff'" in at.error[0].value
