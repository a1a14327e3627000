"""The detectors on real recorded sessions: what each flags, what it leaves alone, and that a
re-run over the same history changes nothing."""

from __future__ import annotations

import dataclasses
import json
import os
import random

import pytest
from click.testing import CliRunner

import evals.detectors as D
import tracer
from reference_agent import Agent, AgentConfig, World, default_world_path, get_scenario
from tests.tracer.fakes import FakeAPI, message
from tests.tracer.loop_corpus import CASES, RULES
from tracer._cli import main


def db() -> str:
    return os.environ["FLIGHTREC_DB"]


def play(*runs: tuple[str, dict], config: AgentConfig | None = None) -> list[str]:
    """Runs scenarios with the reference agent (``(scenario, run kwargs)``); returns the session ids."""
    recorder = tracer.Recorder(db())
    try:
        with World(default_world_path(db())) as world:
            agent = Agent(world, recorder, config=config)
            return [agent.run(get_scenario(name), **kwargs).session_id for name, kwargs in runs]
    finally:
        recorder.shutdown()


def tools(route: str, calls: list[tuple[str, dict, str]]) -> str:
    """A session of tool calls only (``(tool, arguments, result)``), as any agent might record them."""
    recorder = tracer.Recorder(db())
    with recorder.session("custom", **{"flightrec.route": route}) as s:
        for name, args, result in calls:
            with s.turn(), s.tool_call(name, args) as call:
                call.set_result(result)
    recorder.shutdown()
    return s.id


def run(config: D.DetectConfig | None = None, **kwargs) -> D.DetectResult:
    with tracer.Store(db()) as store:
        return D.detect(store, config=config, **kwargs)


def by_detector(result: D.DetectResult) -> dict[str, list[tracer.AlertRecord]]:
    out: dict[str, list[tracer.AlertRecord]] = {}
    for a in result.alerts:
        out.setdefault(a.detector, []).append(a)
    return out


def test_clean_sessions_raise_nothing():
    play(("order_status", {}), ("refund_under_threshold", {}), ("policy_question", {}), ("long_conversation", {}))
    assert run().alerts == []


def test_a_loop_without_the_guard_is_found_in_sql_with_its_evidence():
    (sid,) = play(("order_status", {"misbehave": ("loop",)}), config=AgentConfig(loop_guard=False))
    (alert,) = by_detector(run())["loop.calls"]
    assert alert.session_id == sid and alert.severity == "critical" and alert.family == "loops"
    assert alert.evidence["tools"] == ["get_order"] and alert.evidence["repeats"] >= 8
    assert alert.evidence["kind"] == "repeat" and "with the same arguments and the same result" in alert.title


def test_the_in_process_guard_stops_the_loop_and_the_detector_reports_it():
    (sid,) = play(("stuck_tracking", {}))
    (alert,) = by_detector(run())["loop.guard"]
    assert alert.session_id == sid and "get_order called 4 times with the same arguments" in alert.title


def record(agent: str, route: str, calls: list[tracer.LoopCall]) -> str:
    """A session of the given tool calls, recorded through the public API as any agent would."""
    recorder = tracer.Recorder(db())
    with recorder.session(agent, **{"flightrec.route": route}) as s:
        for c in calls:
            with s.turn(), s.tool_call(c.tool, c.arguments) as call:
                if c.error is not None:
                    kind, _, message = c.error.partition(": ")
                    call.set_error(message, error_type=kind)
                elif c.result is not None:
                    call.set_result(c.result)
    recorder.shutdown()
    return s.id


def test_the_sql_detector_agrees_with_the_loop_rules_on_the_shared_corpus():
    sessions = {record("corpus", f"r{i}", case.calls): case for i, case in enumerate(CASES)}
    flagged = {a.session_id: a.evidence["kind"] for a in by_detector(run()).get("loop.calls", [])}
    wrong = [(case.name, case.loop, flagged.get(sid)) for sid, case in sessions.items()
             if flagged.get(sid) != case.loop]
    assert wrong == []
    # Under other thresholds too: the SQL that narrows the sessions must never hide one the rules flag.
    for rules in RULES:
        config = D.DetectConfig(loops=D.LoopLimits(**dataclasses.asdict(rules)))
        with tracer.Store(db()) as store:  # the detector itself: detect() reports only alerts new to the store
            findings = D.DETECTORS["loop.calls"](store, D.Scope(), config)
        kinds: dict[str, set[str]] = {}
        for f in findings:
            kinds.setdefault(f.session_id, set()).add(f.evidence["kind"])
        wrong = [(case.name, want, kinds.get(sid, set())) for sid, case in sessions.items()
                 if kinds.get(sid, set()) != (want := {loop.kind for loop in tracer.find_loops(case.calls, rules)})]
        assert wrong == [], rules


def test_a_loop_in_a_store_written_before_the_keys_existed_is_still_found():
    sid = record("legacy", "r", [tracer.LoopCall("search", {"q": "x"}, "[]")] * 5)
    with tracer.Store(db()) as store:
        store.sql("UPDATE tool_calls SET args_key = NULL, shape_key = NULL, outcome_key = NULL")
        (alert,) = D.detect(store).alerts
    assert alert.session_id == sid and alert.detector == "loop.calls"


def costly(agent: str, route: str, usd: list[float], *, model: str = "claude-sonnet-4-5") -> list[str]:
    """Sessions of one agent and route with one model call each, costing ``usd`` each (in output
    tokens, so that the context window stays empty)."""
    price = tracer.PriceTable.load().lookup(model)
    recorder = tracer.Recorder(db())
    sids = []
    for cost in usd:
        reply = message([{"type": "text", "text": "done"}], "end_turn", model=model, input_tokens=100,
                        output_tokens=round((cost - 100 * price.input / 1e6) / price.output * 1e6))
        client = recorder.instrument(FakeAPI(lambda _, r=reply: r).client())
        with recorder.session(agent, **{"flightrec.route": route}) as s:
            client.messages.create(model=model, max_tokens=100, messages=[{"role": "user", "content": "hi"}])
        sids.append(s.id)
    recorder.shutdown()
    return sids


def test_a_runaway_session_is_a_cost_anomaly_against_its_route():
    sids = play(*[("policy_question", {"seed": s}) for s in range(21)],
                ("policy_question", {"misbehave": ("runaway",)}))
    found = by_detector(run())
    (anomaly,) = found["cost.anomaly"]
    assert anomaly.session_id == sids[-1] and anomaly.route == "policy_question"
    base = anomaly.evidence["baseline"]
    assert base["sessions"] == 21 and base["of"] == "agent support, route policy_question"
    assert base["spread_from"] == "route" and anomaly.evidence["value"] > base["threshold"]
    assert "× the usual" in anomaly.title
    assert [a.session_id for a in found["cost.guard"]] == [sids[-1]]


def test_a_legitimately_costly_agent_raises_nothing_and_its_spike_still_does():
    rng = random.Random(7)
    usd = [2.0 * rng.lognormvariate(0, 0.35) for _ in range(40)]
    costly("research", "deep_dive", usd)
    assert by_detector(run()) == {}  # $2 a session, every session: no budget, no anomaly
    (spike,) = costly("research", "deep_dive", [20.0])
    (alert,) = by_detector(run())["cost.anomaly"]
    assert alert.session_id == spike and alert.severity == "warning"


def test_a_legitimate_costly_mode_is_not_an_anomaly_once_the_route_has_seen_it():
    rng = random.Random(3)
    usd = [0.05 if rng.random() < 0.8 else 0.3 for _ in range(60)]  # one task in five is 6x the others
    sids = costly("mixed", "triage", usd)
    flagged = {a.session_id for a in by_detector(run()).get("cost.anomaly", [])}
    # A route's first sessions cannot tell its costly mode from a spike; after 20 they can.
    assert not flagged & set(sids[20:])


def test_a_route_whose_sessions_cost_nothing_is_judged_online_without_dividing_by_zero():
    # Issue 15, item 8: a route's median cost of $0 (calls that used no tokens, a model priced at 0).
    got: list[tracer.AlertRecord] = []
    online = D.OnlineDetector(db(), publish=got.extend, interval_s=0.05)
    recorder = tracer.Recorder(db(), on_sessions_ended=online)
    free = message([{"type": "text", "text": "done"}], "end_turn", input_tokens=0, output_tokens=0)
    client = recorder.instrument(FakeAPI(lambda _: free).client())
    for _ in range(25):
        with recorder.session("cheap", **{"flightrec.route": "free"}):
            client.messages.create(model="claude-haiku-4-5", max_tokens=10,
                                   messages=[{"role": "user", "content": "hi"}])
    recorder.flush()
    assert online.flush(10)
    costly("cheap", "free", [0.5])  # then a session that costs something, judged against the route's $0
    with tracer.Store(db()) as store:
        rows = store.sql("SELECT session_id, cost_usd FROM sessions WHERE route = 'free'")
    assert len(rows) == 26 and max(cost for _, cost in rows) == pytest.approx(0.5, rel=1e-3)
    online([sid for sid, _ in rows])
    assert online.flush(10)
    online.close()
    recorder.shutdown()
    # Costs are judged on a log scale, where $0 has no place: the route has no cost history to divide by,
    # and its first priced session is a new route's first (too little history to judge), not infinitely costlier.
    assert online.errors == 0 and online.runs >= 2 and got == []


def test_a_new_route_borrows_a_wider_band_and_its_fourth_session_is_judged():
    costly("support", "known", [0.01 * (1 + 0.1 * (i % 5)) for i in range(30)])
    run()
    normal = costly("support", "new", [0.02, 0.022, 0.019, 0.021])
    spike = costly("support", "new", [0.2])
    found = by_detector(run())
    (alert,) = found["cost.anomaly"]
    assert alert.session_id == spike[0] and alert.evidence["baseline"]["spread_from"] == "agent"
    assert normal[-1] not in {a.session_id for a in found.get("cost.anomaly", [])}


def test_a_route_detector_reads_the_sessions_its_run_judges_need_not_the_whole_history():
    sids = costly("support", "long", [0.01] * 60)
    other = costly("support", "short", [0.01] * 30)  # other[-1] ended last

    def read(judged: str) -> set[str]:
        scope = D.Scope(session_ids=(judged,))
        head = "WITH " + D._scope.TARGET.format(where=scope.where()[0])
        with tracer.Store(db()) as store:
            return {r[0] for r in store.sql(f"{head}, {D._scope.route_history(scope, 5, newest=10)} "
                                            "SELECT session_id FROM history", scope.where()[1])}

    # The session judged and the 5 before it; the agent's newest 10, whatever their route.
    assert read(sids[-1]) == set(sids[54:]) | set(other[20:])
    # One judged long ago: from the 5 before it on, so that every window between is whole.
    assert read(sids[30]) == set(sids[25:]) | set(other[20:])


def test_a_run_over_many_sessions_passes_their_ids_as_one_list_and_judges_the_same(monkeypatch):
    usd = [0.01] * 25 + [0.2]
    sids = costly("support", "long", usd) + [tools("lookup", [("fetch_order", {"order": "A1"}, "not found")] * 8)]
    scope = D.Scope(session_ids=tuple(sids))
    found = []
    for listed in (D._scope.LISTED_IDS, 0):  # values, then one list parameter
        monkeypatch.setattr(D._scope, "LISTED_IDS", listed)
        sql, params = scope.where()
        assert ("unnest" in sql) == (listed == 0) and len(params) == (2 if listed == 0 else 1 + len(sids))
        found.append(sorted((a.detector, a.session_id) for a in run(scope=scope).alerts))
        with tracer.Store(db()) as store:
            store.sql("DELETE FROM alert_observations")
            store.sql("DELETE FROM alerts")
    assert found[0] == found[1]
    assert ("cost.anomaly", sids[25]) in found[0] and ("loop.calls", sids[-1]) in found[0]


def test_a_session_judged_long_after_it_ended_meets_the_baseline_it_would_have_met_then():
    rng = random.Random(5)
    usd = [0.01 * rng.lognormvariate(0, 0.2) for _ in range(100)]
    usd[40] = 0.2
    sids = costly("support", "long", usd)
    found = []
    for pool in (5, 10_000):  # a run reads the route's newest 5 (and 20 before them), or all of it
        config = D.DetectConfig(baseline=D.BaselineLimits(window=20, pool=pool))
        (alert,) = by_detector(run(config, scope=D.Scope(session_ids=(sids[40],))))["cost.anomaly"]
        found.append(alert.evidence)
        with tracer.Store(db()) as store:
            store.sql("DELETE FROM alert_observations")
            store.sql("DELETE FROM alerts")
    assert found[0] == found[1] and found[0]["baseline"]["sessions"] == 20


def test_a_slow_drift_is_caught_on_its_route():
    base = costly("support", "drifting", [0.01] * 30)
    drift = costly("support", "drifting", [0.01 * 1.05 ** i for i in range(1, 41)])
    alerts = by_detector(run())["cost.drift"]
    (alert,) = alerts
    with tracer.Store(db()) as store:
        seen = {r[0] for r in store.sql("SELECT observation FROM alert_observations o JOIN alerts a "
                                        "USING (fingerprint) WHERE a.detector = 'cost.drift'")}
    assert seen <= set(drift[15:]) and drift[-1] in seen and not seen & set(base)
    assert alert.route == "drifting" and alert.evidence["recent_median_usd"] > 2 * alert.evidence[
        "reference_median_usd"]


def test_steps_far_above_the_routes_usual_are_flagged():
    calls = [tracer.LoopCall("lookup", {"sku": f"S-{k}"}, f"stock {k}") for k in range(30)]
    for i in range(25):
        record("shop", "browse", calls[:3 + i % 3])
    wander = record("shop", "browse", calls[:24])
    (alert,) = by_detector(run())["steps.anomaly"]
    assert alert.session_id == wander and alert.family == "steps"


def test_a_switch_to_a_pricier_model_shows_in_the_price_per_token():
    rng = random.Random(5)
    costly("triage", "inbox", [0.004 * rng.lognormvariate(0, 0.6) for _ in range(30)], model="claude-haiku-4-5")
    # The same work on a model that costs three times as much per token: within the route's
    # spread of session costs, but not of what a token costs.
    (switched,) = costly("triage", "inbox", [0.012], model="claude-sonnet-4-5")
    found = by_detector(run())
    assert [a.session_id for a in found["cost.price"]] == [switched]
    assert "cost.anomaly" not in found


def test_pages_of_one_listing_are_one_step_not_an_anomaly():
    for i in range(25):
        record("crm", "export", [tracer.LoopCall("list", {"cursor": f"c{p}x"}, f"rows {p}") for p in range(2 + i % 3)])
    record("crm", "export", [tracer.LoopCall("list", {"cursor": f"c{p}x"}, f"rows {p}") for p in range(40)])
    assert by_detector(run()) == {}


def test_budgets_apply_only_where_set_the_most_specific_first():
    (sid,) = play(("long_conversation", {}))
    assert not {"cost.budget", "steps.budget"} & set(by_detector(run()))
    config = D.DetectConfig(budgets=[D.Budget(session_usd=100.0), D.Budget(agent="support", session_usd=0.001,
                                                                           turns=2)],
                            cost=D.CostLimits(context_warning=0.005, context_critical=0.9))
    with tracer.Store(db()) as store:
        store.sql("DELETE FROM alert_observations")
    found = by_detector(run(config))
    assert found["cost.budget"][0].session_id == sid and found["cost.budget"][0].severity == "critical"
    assert "agent support" in found["cost.budget"][0].title and found["steps.budget"][0].session_id == sid
    assert found["context.window"][0].severity == "warning"


def test_outages_injections_retries_and_unapproved_refunds():
    play(("tool_outage", {}), ("kb_injection", {}), ("api_overloaded", {}))
    play(("refund_over_threshold", {}), config=AgentConfig(approval_threshold_cents=10**8))
    found = by_detector(run(D.DetectConfig(reliability=D.ReliabilityLimits(retry_storm=3))))
    assert {"reliability.breaker", "reliability.tool_errors", "reliability.retry_storm", "safety.injection",
            "safety.unapproved"} <= set(found)
    injection = found["safety.injection"][0]
    assert injection.severity == "critical" and "ignore" in injection.evidence["markers"][0].lower()
    assert found["safety.unapproved"][0].evidence["arguments"]["amount_cents"] > 20_000


def test_detect_is_idempotent_and_a_repeat_raises_the_count():
    play(("stuck_tracking", {}))
    first = run()
    assert [a.count for a in first.alerts] == [1]
    assert run().alerts == []  # the same history: nothing new
    play(("stuck_tracking", {"seed": 1}))
    (again,) = run().alerts
    assert again.alert_id == first.alerts[0].alert_id and again.count == 2 and len(again.session_ids) == 2


def test_a_resolved_alert_reopens_when_seen_again():
    play(("stuck_tracking", {}))
    (alert,) = run().alerts
    with tracer.Store(db()) as store:
        store.set_alert_status(alert.alert_id, "resolved")
    play(("stuck_tracking", {"seed": 2}))
    assert run().alerts[0].status == "open"


def test_online_detection_as_sessions_end():
    got: list[tracer.AlertRecord] = []
    online = D.OnlineDetector(db(), publish=got.extend, interval_s=0.05)
    recorder = tracer.Recorder(db(), on_sessions_ended=online)
    with World(default_world_path(db())) as world:
        Agent(world, recorder).run(get_scenario("stuck_tracking"))
    recorder.flush()
    assert online.flush(10)
    online.close()
    recorder.shutdown()
    assert [a.detector for a in got] == ["loop.guard"] and online.errors == 0


def test_online_detection_gathers_sessions_for_its_interval_and_closing_does_not_wait_it_out():
    # serve gathers ended sessions for SERVE_INTERVAL_S so that one run covers many: the sessions
    # handed over are looked at in one run when the detector closes, not after the interval.
    sessions = play(("stuck_tracking", {}), ("stuck_tracking", {"seed": 2}))
    got: list[tracer.AlertRecord] = []
    online = D.OnlineDetector(db(), publish=got.extend, interval_s=3600)
    for sid in sessions:
        online([sid])
    online.close(timeout_s=30)
    assert online.runs == 1 and online.errors == 0
    assert [a.detector for a in got] == ["loop.guard"] and got[0].count == 2


def test_a_burst_of_ended_sessions_is_judged_in_runs_of_bounded_size(monkeypatch):
    # A sweep or a fleet ends thousands of sessions at once: one run over all of them took serve
    # past its 500 MB bound, so a run covers RUN_SESSIONS at most, and every session still gets judged.
    from evals.detectors import _online

    monkeypatch.setattr(_online, "RUN_SESSIONS", 2)
    sessions = play(*[("stuck_tracking", {"seed": seed}) for seed in range(5)])
    runs: list[list[str]] = []
    got: list[tracer.AlertRecord] = []

    class Counting(D.OnlineDetector):
        def run(self, store: tracer.Store, session_ids: list[str]) -> None:
            runs.append(session_ids)
            super().run(store, session_ids)

    online = Counting(db(), publish=got.extend, interval_s=3600)
    online([*sessions, sessions[0]])  # one handed over twice is judged once
    online.close(timeout_s=30)
    assert [len(ids) for ids in runs] == [2, 2, 1] and [s for ids in runs for s in ids] == sessions
    # Each run publishes the alert it added to (one alert for the five), seen in all five by the last.
    assert online.errors == 0 and {(a.alert_id, a.detector) for a in got} == {(got[0].alert_id, "loop.guard")}
    assert [a.count for a in got] == [2, 4, 5]


def test_a_run_in_a_store_held_to_little_memory_borrows_what_it_needs_and_gives_it_back():
    # serve --no-dashboard holds DuckDB to 48 MB, which the detectors' queries do not fit in beside a
    # sustained load: every run failed (RESULTS §75). Here the bound is 4 MB, where detect fails.
    sessions = [*play(("stuck_tracking", {})),  # and an agent of another shape: tool calls only, no LLM spans
                tools("lookup", [("fetch_order", {"order": "A1"}, "not found")] * 8)]
    with tracer.Store(db()) as writer:
        writer.limit_memory(4)
        bound = writer.sql("SELECT current_setting('memory_limit')")[0][0]  # 4 MB, and the keys' indexes
        with pytest.raises(tracer.StoreMemoryError):
            D.detect(writer, scope=D.Scope(session_ids=tuple(sessions)))
        got: list[tracer.AlertRecord] = []
        online = D.OnlineDetector(db(), publish=got.extend, interval_s=3600)
        online(sessions)
        online.close(timeout_s=30)
        assert online.errors == 0 and sorted(a.detector for a in got) == ["loop.calls", "loop.guard"]
        assert writer.sql("SELECT current_setting('memory_limit')")[0][0] == bound


@pytest.mark.parametrize("failures, runs, errors", [(1, 2, 0), (2, 2, 1)])
def test_a_run_out_of_memory_is_tried_once_more(failures, runs, errors):
    # Beside the writer, whose rows fill the memory a run is lent, 1 run in about 30 ran out of it (RESULTS §75).
    calls: list[list[str]] = []

    class Failing(D.SessionWorker):
        def run(self, store: tracer.Store, session_ids: list[str]) -> None:
            calls.append(session_ids)
            if len(calls) <= failures:
                raise tracer.StoreMemoryError("reading the trace store failed: Out of Memory Error")

    worker = Failing(db(), interval_s=3600, max_pending=10)
    worker(["a", "b"])
    worker.close(timeout_s=30)
    assert calls == [["a", "b"]] * runs and worker.errors == errors


def test_a_run_that_fails_otherwise_is_not_tried_again():
    calls: list[list[str]] = []

    class Failing(D.SessionWorker):
        def run(self, store: tracer.Store, session_ids: list[str]) -> None:
            calls.append(session_ids)
            raise tracer.StoreError("reading the trace store failed: Binder Error")

    worker = Failing(db(), interval_s=3600, max_pending=10)
    worker(["a"])
    worker.close(timeout_s=30)
    assert calls == [["a"]] and worker.errors == 1


def test_config_files_and_their_errors(tmp_path):
    good = tmp_path / "detect.yaml"
    good.write_text("loops: {repeat: 6}\ndisabled: [cost]\n")
    config = D.load_config(good)
    assert config.loops.repeat == 6 and config.loops.wait_polls == 10 and config.disabled == ["cost"]
    assert D.load_config(None) == D.DetectConfig()
    for text, error in (("loops: {repet: 6}", "loops.repet: unknown setting"),
                          ("loops: {repeat: 1}", "greater than or equal to 2"),
                          ("disabled: [nope]", r"unknown detector\(s\) nope"),
                          ("safety: {injection_patterns: ['(']}", "is not a regular expression"),
                          ("loops: [", "not valid YAML")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(tracer.ConfigError, match=error):
            D.load_config(bad)
    with pytest.raises(tracer.ConfigError, match="cannot read"):
        D.load_config(tmp_path / "missing.yaml")


def test_the_printed_config_is_a_valid_config(tmp_path):
    path = tmp_path / "printed.yaml"
    path.write_text(D.config_yaml())
    assert D.load_config(path) == D.DetectConfig()


def test_cli_detect_list_show_ack_resolve():
    play(("stuck_tracking", {}))
    cli = CliRunner()
    out = cli.invoke(main, ["detect"])
    assert out.exit_code == 0 and "looked at 1 sessions" in out.output and "loop.guard" in out.output
    again = cli.invoke(main, ["detect", "--json"])
    assert json.loads(again.output)["alerts"] == []
    listed = cli.invoke(main, ["alerts", "list", "--json"])
    (alert,) = json.loads(listed.output)
    shown = cli.invoke(main, ["alerts", "show", alert["alert_id"][:6]])
    assert shown.exit_code == 0 and "evidence" in shown.output and "flightrec traces show" in shown.output
    assert "acknowledged" in cli.invoke(main, ["alerts", "ack", alert["alert_id"], "--actor", "ana"]).output
    assert cli.invoke(main, ["alerts", "list", "--status", "open"]).output.startswith("No alerts")
    assert "resolved" in cli.invoke(main, ["alerts", "resolve", alert["alert_id"]],
                                    env={"FLIGHTREC_ACTOR": "oncall-bot"}).output
    blank = cli.invoke(main, ["alerts", "resolve", alert["alert_id"], "--actor", " "])
    assert blank.exit_code == 2 and "error: the actor name is empty: pass --actor NAME" in blank.output
    with tracer.Store(read_only=True) as store:
        assert [(e.actor, e.action, e.target, e.via) for e in store.audit_entries()] == [
            ("oncall-bot", "resolve", alert["alert_id"], "cli"), ("ana", "acknowledge", alert["alert_id"], "cli")]
    missing = cli.invoke(main, ["alerts", "show", "zzzzzz"])
    assert missing.exit_code == 2 and "no alert 'zzzzzz'" in missing.output
    bad = cli.invoke(main, ["detect", "--since", "yesterday"])
    assert bad.exit_code == 2 and "use a number and a unit" in bad.output
    printed = cli.invoke(main, ["detect", "--print-config"])
    assert printed.exit_code == 0 and "repeat: 4" in printed.output
    assert "#  \n" not in printed.output and "# \n" not in printed.output  # every setting is explained


def test_cli_detect_delivers_new_alerts_to_a_jsonl_sink(tmp_path):
    play(("stuck_tracking", {}))
    sink = tmp_path / "alerts.jsonl"
    out = CliRunner().invoke(main, ["detect", "--sink", f"jsonl:{sink}", "--sink", "console"])
    assert out.exit_code == 0, out.output
    (line,) = sink.read_text().splitlines()
    assert json.loads(line)["detector"] == "loop.guard"


def test_latency_drift_against_a_baseline_of_zero_ms_is_reported_not_a_crash():
    # Some producers' spans start and end at the same nanosecond: the baseline's p95 is then 0 ms.
    from tests.tracer.test_foreign_shapes import Producer, genai_chat, send
    from tracer._collector import Collector

    p = Producer()
    for i in range(120):  # 60 calls at 0 ms, then 60 at 900 ms
        start = i * 2_000
        root = p.open("app", "POST /chat", start, {"gen_ai.conversation.id": f"z{i:03d}"})
        p.span("sdk", "chat", start + 1, start + 1 + (900 if i >= 60 else 0), genai_chat("c", "stop"), root)
        root.end(end_time=root.start_time + 1_000_000_000)
    with Collector(db(), port=0) as collector:
        send(collector, p.take())
    with tracer.Store(db()) as store:
        since = store.sql("SELECT min(end_ns) FROM sessions WHERE session_id >= 'z060'")[0][0]
        result = D.detect(store, scope=D.Scope(since_ns=since))
    (drift,) = by_detector(result)["reliability.latency_drift"]
    assert "900 ms, against a baseline of 0 ms" in drift.title


def test_eval_trials_replays_and_forks_are_judged_only_when_asked_for():
    # An eval case that tests the loop guard loops on purpose; a fork carries on a session that looped.
    with tracer.eval_trial("run-1", "stuck", 0):
        (trial,) = play(("stuck_tracking", {}))
    recorder = tracer.Recorder(db())
    with recorder.session("support", **{"flightrec.replay.kind": "fork", "flightrec.replay.session": trial,
                                        "flightrec.route": "stuck_tracking"}) as fork:
        for _ in range(6):
            with fork.turn(), fork.tool_call("track_parcel", {"id": "P1"}) as call:
                call.set_result("in transit")
    recorder.shutdown()
    assert run().sessions == 0 and run().alerts == []  # production only: nothing to judge
    assert [a.session_id for a in run(scope=D.Scope(origins=("eval",))).alerts] == [trial]
    (loop,) = run(scope=D.Scope(origins=None)).alerts  # the trial's alert is stored already: only the fork's is new
    assert loop.detector == "loop.calls" and loop.session_ids == [fork.id]
    with pytest.raises(tracer.ConfigError, match="origin evals: not a session origin; use one or more of production"):
        D.Scope(origins=("evals",))
    cli = CliRunner()
    assert "looked at 0 sessions (production)" in cli.invoke(main, ["detect"]).output
    out = cli.invoke(main, ["detect", "--origin", "eval", "--origin", "fork"])
    assert out.exit_code == 0 and "looked at 2 sessions (eval, fork)" in out.output
    bad = cli.invoke(main, ["detect", "--origin", "evals"])
    assert bad.exit_code == 2 and "'evals' is not one of 'production', 'eval', 'replay', 'fork', 'all'" in bad.output


def test_cost_baselines_are_built_from_production_sessions_only():
    costly("support", "triage", [0.01] * 25)
    with tracer.eval_trial("run-1", "pricey-model", 0):  # an eval run of a model ten times dearer
        costly("support", "triage", [0.10] * 40)
    (spike,) = costly("support", "triage", [0.05])
    (alert,) = by_detector(run())["cost.anomaly"]
    assert alert.session_id == spike and alert.evidence["baseline"]["sessions"] == 25
    assert alert.evidence["baseline"]["median"] == pytest.approx(0.01, rel=0.01)
    # Judged with every origin, the eval run's sessions raise the alerts and hide the spike.
    with tracer.Store(db()) as store:
        store.sql("DELETE FROM alert_observations")
        store.sql("DELETE FROM alerts")
    (mixed,) = by_detector(run(scope=D.Scope(origins=None)))["cost.anomaly"]
    assert spike not in mixed.session_ids and mixed.evidence["value"] == pytest.approx(0.10, rel=0.01)


def test_online_detection_leaves_eval_trials_alone():
    got: list[tracer.AlertRecord] = []
    online = D.OnlineDetector(db(), publish=got.extend, interval_s=0.05)
    recorder = tracer.Recorder(db(), on_sessions_ended=online)
    with World(default_world_path(db())) as world, tracer.eval_trial("run-1", "stuck", 0):
        Agent(world, recorder).run(get_scenario("stuck_tracking"))
    recorder.flush()
    assert online.flush(10)
    online.close()
    recorder.shutdown()
    assert got == [] and online.errors == 0 and online.runs == 1
