"""Online scoring: the policy's sampling, the scorers run on sessions as they end (on agents shaped unlike
the reference agent), the judge's hourly budget, the review queue it feeds, and `flightrec eval score`."""

from __future__ import annotations

import contextlib
import json
from collections import Counter

import pytest
from click.testing import CliRunner

import evals
import tracer
from evals._online import OnlineScorer, Scoring, ScoringPolicy, load_scoring_policy, sampled, serve_hook
from tests.tracer.fakes import FakeAPI, run_agent
from tracer._cli import main
from tracer.testing import FakeModel, reply, tool_use


def _record(db: str, n: int, *, route: str = "orders", agent: str = "shop", failing: bool = False,
            origin_eval: bool = False) -> list[str]:
    """n sessions of a small tool-use agent (tests/tracer/fakes: look an order up, answer); in ``failing``
    ones a guard fires."""
    rec = tracer.Recorder(db)
    ids = []
    for i in range(n):
        with contextlib.ExitStack() as marks:
            if origin_eval:
                marks.enter_context(tracer.eval_trial("run-x", "case-1", i))
            with rec.session(agent, session_id=f"{agent}-{route}-{i}", **{"flightrec.route": route}) as s:
                run_agent(rec.instrument(FakeAPI().client()))
                if failing:
                    s.event("guard_fired", guard="max_tool_calls")
        ids.append(f"{agent}-{route}-{i}")
    rec.shutdown()
    return ids


def test_a_sampling_rate_holds_over_many_sessions_and_the_most_specific_rule_wins():
    ids = [f"session-{i}" for i in range(20_000)]
    for rate in (0.01, 0.1, 0.5):
        share = sum(sampled(s, rate) for s in ids) / len(ids)
        assert abs(share - rate) < 0.01 + rate * 0.1, (rate, share)
    assert [sampled(s, 0.3) for s in ids[:50]] == [sampled(s, 0.3) for s in ids[:50]]  # the same every time
    assert all(sampled(s, 1.0) for s in ids[:100]) and not any(sampled(s, 0.0) for s in ids[:100])
    policy = ScoringPolicy(sample=0.1, routes=[{"agent": "shop", "sample": 0.5}, {"route": "refund", "sample": 0.2},
                                               {"agent": "shop", "route": "refund", "sample": 1.0}])
    assert policy.rate("shop", "refund") == 1.0
    assert policy.rate("shop", "orders") == 0.5
    assert policy.rate("bank", "refund") == 0.2
    assert policy.rate("bank", None) == 0.1


def test_sessions_are_scored_as_they_end_at_the_policys_rate_and_every_alerted_one_is_taken(tmp_path):
    db = str(tmp_path / "t.duckdb")
    ids = _record(db, 60)
    evaluated = _record(db, 5, route="evals", origin_eval=True)
    with tracer.Store(db) as store:  # an alert on two sessions that the sample leaves out
        out = [s for s in ids if not sampled(s, 0.25)][:2]
        store.record_alerts([(tracer.AlertRecord(
            alert_id="al1", fingerprint="fp1", detector="loop.calls", family="loops", severity="warning",
            title="loop", agent="shop", route="orders", session_id=out[-1], turns=[1], session_ids=out, evidence={},
            status="open", first_seen_ns=1, last_seen_ns=2, count=1), out[-1])])
        scoring = Scoring(ScoringPolicy(sample=0.25, review={"sample": 0.0}))
        assert scoring.run(store, ids + evaluated) == scoring.scored
        scored = {r[0] for r in store.sql("SELECT DISTINCT session_id FROM session_scores")}
        assert scored == {s for s in ids if sampled(s, 0.25)} | set(out)  # never an eval trial's session
        assert scoring.run(store, []) == 0  # an alert seen before is not scored again
        rows = store.session_scores(out[0])
        assert {r.scorer for r in rows} == {"recovers_after_error", "guards", "usual_steps"}
        assert all(r.passed and r.value == 1.0 and len(r.version) == 12 for r in rows)
        assert [(r.session_id, r.queued_by) for r in store.reviews(pending=True)] == [(s, "alert") for s in sorted(out)]


def test_the_usual_steps_of_a_route_judge_a_session_against_its_own_route(tmp_path):
    db = str(tmp_path / "t.duckdb")
    usual = _record(db, 25)  # one tool call each
    rec = tracer.Recorder(db)
    for sid, route in (("long-one", "orders"), ("new-route", "returns")):
        with rec.session("shop", session_id=sid, **{"flightrec.route": route}):
            model = FakeModel([reply(tool_use("get_order", {"order_id": f"A-{i}"})) for i in range(7)]
                              + [reply("done")])
            run_agent(rec.instrument(model.client()))
    rec.shutdown()
    policy = ScoringPolicy(sample=1.0, scorers=[{"type": "usual_steps", "slack": 2, "min_history": 20}],
                           review={"failed": True})
    with tracer.Store(db) as store:
        Scoring(policy).run(store, [*usual[-1:], "long-one", "new-route"])
        (long,) = store.session_scores("long-one")
        assert (long.passed, round(long.value, 3)) == (False, round(1 / 7, 3))
        assert "7 tool calls against the route orders of shop's median of 1 over its last 25 sessions: over 2×" \
            in long.reason
        (young,) = store.session_scores("new-route")
        assert young.passed and "has 0 sessions, fewer than the 20 a usual needs" in young.reason
        assert store.session_scores(usual[-1])[0].passed
        assert [(r.session_id, r.queued_by) for r in store.reviews(pending=True)] == [("long-one", "score")]


def _judge_model() -> FakeModel:
    verdict = tool_use("record_verdict", {"criteria": [{"index": 1, "met": False, "reason": "no apology"}]})
    return FakeModel(policy=lambda body: reply(verdict, input_tokens=2_000, output_tokens=100))


def test_the_judge_keeps_within_its_hourly_budget_and_says_when_it_skipped(tmp_path):
    db = str(tmp_path / "t.duckdb")
    ids = _record(db, 4)
    now = [1_000_000.0]
    judge = _judge_model()
    policy = ScoringPolicy(sample=1.0, judge_budget_usd_per_hour=0.0025,
                           scorers=[{"type": "judge", "rubric": ["Apologises"]}, {"type": "guards", "none": True}])
    scoring = Scoring(policy, clock=lambda: now[0], judge_client=judge.client)
    with tracer.Store(db) as store:
        scoring.run(store, ids[:3])
        judged = [store.session_scores(s)[1] for s in ids[:3]]  # by scorer: guards, judge
        assert [j.scorer for j in judged] == ["judge"] * 3
        # claude-haiku-4-5 at $1 / $5 a million: 2,000 in and 100 out is $0.0025, the whole budget.
        assert judged[0].cost_usd == pytest.approx(0.0025) and judged[0].value == 0.0
        assert [j.value for j in judged[1:]] == [None, None] and judge.calls == 1
        assert judged[1].reason.startswith("skipped: the judge's budget of $0.0025 an hour is spent ($0.0025 in the "
                                           "last hour); raise judge_budget_usd_per_hour")
        assert store.session_scores(ids[1])[0].passed  # the other scorers still score
        assert scoring.skipped_for_budget == 2
        now[0] += 3_601  # an hour later the judge judges again
        scoring.run(store, ids[3:])
        assert store.session_scores(ids[3])[1].value == 0.0 and judge.calls == 2


def test_the_worker_never_blocks_the_writer_a_full_queue_drops_and_counts(tmp_path, monkeypatch):
    """While a run is under way, the policy's queue (2) takes what it can and the rest is dropped, counted."""
    import threading

    started, release = threading.Event(), threading.Event()

    def slow_run(self, store, session_ids):
        started.set()
        release.wait(30)

    monkeypatch.setattr(Scoring, "run", slow_run)
    worker = OnlineScorer(str(tmp_path / "t.duckdb"), policy=ScoringPolicy(queue=2, sample=1.0), interval_s=0)
    try:
        worker(["a"])
        assert started.wait(30)  # the worker is busy with "a"
        worker(["b", "c", "d", "e", "f"])  # returns at once
        assert worker.dropped == 3
    finally:
        release.set()
        worker.close()
    assert worker.errors == 0


def test_an_embedded_recorder_scores_its_sessions_on_the_workers_thread(tmp_path):
    db = str(tmp_path / "t.duckdb")
    worker = OnlineScorer(db, policy=ScoringPolicy(sample=1.0), interval_s=0.0)
    rec = tracer.Recorder(db, on_sessions_ended=worker)
    for i in range(3):
        with rec.session("shop", session_id=f"live-{i}"):
            run_agent(rec.instrument(FakeAPI().client()))
    rec.flush()
    assert worker.flush()
    worker.close()
    rec.shutdown()
    with tracer.Store(db) as store:
        assert store.sql("SELECT count(DISTINCT session_id) FROM session_scores") == [(3,)]
    assert worker.scoring.scored == 3 and worker.errors == 0


@pytest.mark.parametrize("text, message", [
    ("sample: 2\n", "sample: Input should be less than or equal to 1"),
    ("samples: 0.1\n", "samples: unknown setting. Its settings are: sample, alerted"),
    ("scorers:\n  - {type: guard}\n", "unknown scorer type 'guard' (did you mean 'guards'?)"),
    ("scorers:\n  - {type: usual_steps, slack: 0.5}\n", "scorer usual_steps: slack: Input should be greater"),
    ("[1, 2]\n", "must be a mapping (sample, routes, scorers, …), not a list"),
    ("sample: [\n", "is not YAML"),
])
def test_a_bad_policy_says_what_to_fix(tmp_path, text, message):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(tracer.ConfigError) as err:
        load_scoring_policy(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_serve_scores_only_with_a_policy(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FLIGHTREC_SCORING", raising=False)
    monkeypatch.delenv("FLIGHTREC_SCORE_SAMPLE", raising=False)
    assert serve_hook(str(tmp_path / "t.duckdb")) is None
    monkeypatch.setenv("FLIGHTREC_SCORE_SAMPLE", "0.3")
    hook = serve_hook(str(tmp_path / "t.duckdb"))
    try:
        assert hook.scoring.policy.sample == 0.3 and evals.OnlineScorer is OnlineScorer
    finally:
        hook.close()


def test_flightrec_eval_score_backfills_and_says_what_it_did(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "t.duckdb")
    _record(db, 6)
    _record(db, 2, route="refund", failing=True)
    result = CliRunner().invoke(main, ["eval", "score", "--all", "--db", db])
    assert result.exit_code == 0, result.output
    assert result.output == ("Scored 8 of 8 production sessions that ended in the last 1d (all of them, with "
                             "recovers_after_error, guards, usual_steps); 2 sessions wait for review.\n")
    as_json = CliRunner().invoke(main, ["eval", "score", "--since", "2h", "--json", "--db", db])
    assert json.loads(as_json.output)["sessions"] == 8
    with tracer.Store(db) as store:
        failed = Counter(r[0] for r in store.sql("SELECT scorer FROM session_scores WHERE NOT passed"))
        assert failed == {"guards": 2}
    bad = CliRunner().invoke(main, ["eval", "score", "--since", "soon", "--db", db])
    assert bad.exit_code == 2 and "use a number and a unit" in bad.output


def test_the_review_queue_from_the_command_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = str(tmp_path / "t.duckdb")
    a, b = _record(db, 2)
    run = lambda *args: CliRunner().invoke(main, ["eval", "review", *args, "--db", db])  # noqa: E731
    empty = run("list")
    assert empty.exit_code == 0 and "No session waits for review. Queue one with `" in empty.output
    assert run("queue", a, b).output == "queued 2 of 2 session(s) (0 were in the queue already)\n"
    assert run("queue", a).output == "queued 0 of 1 session(s) (1 were in the queue already)\n"
    assert run("list").output == f"{a}  queued by hand\n{b}  queued by hand\n"
    labelled = run("label", a, "bad", "--category", "wrong tool", "--note", "asked for the wrong order",
                   "--actor", "ana")
    assert labelled.output == f"{a} reviewed bad (wrong tool) by ana\n"
    assert run("list").output == f"{b}  queued by hand\n"
    done = run("list", "--done").output
    assert done == f"{a}  queued by hand    bad (wrong tool) by ana: asked for the wrong order\n"
    wrong = run("label", b, "bad", "--category", "rudeness")
    assert wrong.exit_code == 2 and "'rudeness' is not one of the policy's categories: wrong tool," in wrong.output
    verdict = run("label", b, "meh")
    assert verdict.exit_code == 2 and "'meh' is not one of 'good', 'bad'" in verdict.output
    unknown = run("queue", "no-such")
    assert unknown.exit_code == 2 and "no session 'no-such'" in unknown.output


def test_serve_scores_sessions_sent_over_otlp_as_they_end(tmp_path, monkeypatch):
    """What `flightrec serve --score-sample 1` runs: the hook on the collector's ended sessions."""
    from evals import _online
    from tracer._collector import Collector

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLIGHTREC_SCORE_SAMPLE", "1")
    monkeypatch.setattr(_online, "SERVE_INTERVAL_S", 0.0)
    db = str(tmp_path / "t.duckdb")
    hook = serve_hook(db)
    with Collector(db, port=0, on_sessions_ended=hook) as collector:
        rec = tracer.Recorder(endpoint=collector.url)
        with rec.session("shop", session_id="sent-1", **{"flightrec.route": "orders"}):
            run_agent(rec.instrument(FakeAPI().client()))
        rec.shutdown()
        assert hook.flush()
    hook.close()
    with tracer.Store(db, read_only=True) as store:
        assert {s.scorer for s in store.session_scores("sent-1")} == {"recovers_after_error", "guards", "usual_steps"}
