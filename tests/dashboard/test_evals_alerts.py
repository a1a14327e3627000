"""The Evals and Alerts pages against the demo store (a baseline run, a regressed variant, and the
detectors' alerts)."""

from __future__ import annotations

import duckdb

import evals
import tracer
from tests.dashboard.conftest import app, click, drawn, follow, link_tables, no_exceptions, submit


def _metrics(at) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def test_evals_lists_runs_and_compares_baseline_with_latest(store):
    with tracer.Store(str(store), read_only=True) as s:
        runs = s.eval_runs()
        expected = evals.compare_stored(s, "baseline", runs[0].run_id)
    at = app("evals")
    no_exceptions(at)
    table = at.dataframe[0].value
    assert len(table) == len(runs)
    assert table["labels"].tolist().count("baseline") == 1
    # Baseline against the newest run by default: the demo's variant is a caught regression.
    assert at.warning[0].value.startswith("**REGRESSION**")
    assert _metrics(at)["Pass rate"] == f"{expected.candidate.pass_rate:.1%}"
    flips = next(m.value for m in at.markdown if m.value.startswith("**pass → fail**"))
    assert f"({len(expected.flips_to_fail)})" in flips
    assert all(f"`{case}`" in flips for case in expected.flips_to_fail)
    regressed = next(m.value for m in at.markdown if m.value.startswith("**regressed**"))
    assert expected.regressions and all(f"`{case}`" in regressed for case in expected.regressions)
    assert at.query_params["a"] == runs[1].run_id


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
    assert _metrics(at)["Pass rate"] == f"{run.passed_trials / run.total_trials:.1%}"
    cases = at.dataframe[0].value.set_index("case")
    assert len(cases) == run.cases
    flaky = next(c for c in cases.index if cases.loc[c, "status"] != "pass")
    trials = [r for r in results if r.case_id == flaky]
    assert cases.loc[flaky, "pass_rate"] == sum(r.passed for r in trials) / len(trials)
    failing = next(r for r in trials if not r.passed)
    assert (cases.loc[flaky, "session_id"], cases.loc[flaky, "turn"]) == (failing.session_id,
                                                                          evals.failing_turn(failing))
    # Every trial is listed under an expander, sent to the browser only once it is opened.
    assert [d.key for d in at.dataframe] == ["evals_cases", "evals_vs_production"]
    at.session_state["evals_all_trials"] = True
    at.run()
    assert len(next(d for d in at.dataframe if d.key == "evals_trials").value) == len(results)


def test_a_run_beside_production_route_by_route_opens_a_routes_sessions(store):
    with tracer.Store(str(store), read_only=True) as s:
        expected = evals.suite_vs_production(s, "baseline")
    at = app("evals", run="baseline")
    no_exceptions(at)
    assert any(c.value == expected.summary() for c in at.caption)
    table = next(d for d in at.dataframe if d.key == "evals_vs_production").value
    assert [k if isinstance(k, str) else None for k in table["route_key"]] == [r.route for r in expected.routes]
    assert table["production_n"].sum() == sum(r.production.sessions for r in expected.routes) > 0
    assert table["outcomes"].sum() == sum(r.outcomes for r in expected.routes) > 0
    row = next(i for i, r in enumerate(expected.routes) if r.route and r.production.sessions)
    click(at, "evals_vs_production", row, "route")
    assert at.query_params["route"] == expected.routes[row].route
    at.switch_page("views/sessions.py").run()
    no_exceptions(at)
    with tracer.Store(str(store), read_only=True) as s:
        (n,), = s.sql("SELECT count(*) FROM sessions WHERE origin = 'production' AND route = ?",
                      [expected.routes[row].route])
    assert len(link_tables(at)[0].rows) == n


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
