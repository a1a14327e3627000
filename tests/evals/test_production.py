"""An eval run beside production, route by route: whether the suite predicts production, and where it is blind."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import evals
import tracer
from evals._production import _spearman
from tests.tracer.fakes import FakeAPI, run_agent
from tracer._cli import main

# Per route: the suite's passes of 6 trials, production's passes of 6 scored sessions, production outcomes resolved.
ROUTES = {"orders": (6, 6, 3), "refunds": (6, 1, 0), "returns": (5, 4, 2), "billing": (3, 2, 1), "rare": (4, None, 0)}


def _store(db: str) -> str:
    rec = tracer.Recorder(db)
    results = []
    for route, (suite, production, resolved) in ROUTES.items():
        for i in range(6):
            with tracer.eval_trial("run-1", f"{route}-case", i), rec.session("shop", **{"flightrec.route": route}) as s:
                run_agent(rec.instrument(FakeAPI().client()))
            results.append(tracer.EvalResultRecord(
                run_id="run-1", case_id=f"{route}-case", trial=i, session_id=s.id, tags=[], passed=i < suite,
                score=1.0 if i < suite else 0.5, scores=[], error=None, status="ok", turns=1, cost_usd=None,
                latency_ms=None))
        for i in range(6 if production is not None else 2):
            with rec.session("shop", session_id=f"{route}-{i}", **{"flightrec.route": route}):
                run_agent(rec.instrument(FakeAPI().client()))
            if i < resolved:
                rec.outcome(f"{route}-{i}", resolved=True)
            elif i == resolved:
                rec.outcome(f"{route}-{i}", resolved=False)
    with rec.session("bank", session_id="other-agent", **{"flightrec.route": "orders"}):  # never counted
        run_agent(rec.instrument(FakeAPI().client()))
    rec.shutdown()
    with tracer.Store(db) as store:
        store.save_eval_run(tracer.EvalRunRecord(
            run_id="run-1", started_ns=0, ended_ns=1, dataset="d", dataset_sha256="x", agent="shop", settings={},
            trials=6, seed=0, case_tags=[], cases=len(ROUTES), passed_trials=24, total_trials=30, mean_score=0.9,
            cost_usd=None, wall_s=1.0), results)
        store.label_eval_run("run-1", "baseline")
        for route, (_, production, _) in ROUTES.items():
            for i in range(6 if production is not None else 0):
                sid = f"{route}-{i}"
                store.record_scores([tracer.SessionScore(
                    session_id=sid, scorer=name, version="v1", value=1.0 if i < production or name == "b" else 0.0,
                    passed=i < production or name == "b", weight=1.0, reason="", scored_ns=1) for name in ("a", "b")])
        store.record_scores([tracer.SessionScore(session_id="other-agent", scorer="a", version="v1",
                                                                value=0.0, passed=False, weight=1.0, reason="",
                                                                scored_ns=1)])
    return db


def test_each_route_of_the_run_beside_its_agents_production_sessions(tmp_path):
    db = _store(str(tmp_path / "t.duckdb"))
    with tracer.Store(db, read_only=True) as store:
        result = evals.suite_vs_production(store, "baseline")
    rows = {r.route: r for r in result.routes}
    assert result.agent == "shop" and list(rows) == sorted(ROUTES)
    orders, refunds, rare = rows["orders"], rows["refunds"], rows["rare"]
    assert (orders.suite.sessions, orders.suite.pass_rate, orders.production.sessions,
            orders.production.pass_rate) == (6, 1.0, 6, 1.0)  # the other agent's session is not counted
    assert refunds.production.pass_rate == pytest.approx(1 / 6)
    assert refunds.production.mean_score == pytest.approx((1 + 5 * 0.5) / 6)  # the mean of each session's mean
    assert (orders.outcomes, orders.resolved, refunds.outcomes, refunds.resolved) == (4, 0.75, 1, 0.0)
    assert (rare.production.sessions, rare.production.pass_rate, rare.gap) == (0, None, None)
    assert result.compared == 4
    assert result.agreement == pytest.approx(_spearman([1.0, 1.0, 5 / 6, 0.5], [1.0, 1 / 6, 4 / 6, 2 / 6]))
    assert [r.route for r in result.blind] == ["refunds"]
    assert "The suite is blind on refunds (100% in the suite, 17% in production)." in result.summary()


def test_the_rank_correlation_of_two_orders():
    assert _spearman([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) == pytest.approx(1.0)
    assert _spearman([0.1, 0.5, 0.9], [0.8, 0.4, 0.2]) == pytest.approx(-1.0)
    assert _spearman([1.0, 1.0, 1.0], [0.1, 0.5, 0.9]) is None  # a constant side says nothing


def test_flightrec_eval_vs_production_prints_the_routes_and_the_verdict(tmp_path):
    db = _store(str(tmp_path / "t.duckdb"))
    result = CliRunner().invoke(main, ["eval", "vs-production", "baseline", "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("Eval run run-1 beside production sessions of shop that ended in the last 7d")
    assert any(line.split() == ["refunds", "100%", "of", "6", "17%", "of", "6", "0%", "of", "1"] for line in lines)
    assert "The suite is blind on refunds" in lines[-1]
    as_json = json.loads(CliRunner().invoke(main, ["eval", "vs-production", "run-1", "--json", "--db", db]).output)
    assert as_json["compared"] == 4
    unknown = CliRunner().invoke(main, ["eval", "vs-production", "nope", "--db", db])
    assert unknown.exit_code == 2 and "no eval run or label 'nope'" in unknown.output
