"""The detectors on real recorded sessions: what each flags, what it leaves alone, and that a
re-run over the same history changes nothing."""

from __future__ import annotations

import json
import os

import pytest
from click.testing import CliRunner

import evals._detect as D
import tracer
from reference_agent import Agent, AgentConfig, World, default_world_path, get_scenario
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
    found = by_detector(run())
    (alert,) = found["loop.repeat"]
    assert alert.session_id == sid and alert.severity == "critical" and alert.family == "loops"
    assert alert.evidence["tool"] == "get_order" and alert.evidence["repeats"] >= 8
    assert "called" in alert.title and "in a row with the same arguments" in alert.title
    assert "loop.window" not in found  # the same loop, reported once


def test_the_in_process_guard_stops_the_loop_and_the_detector_reports_it():
    (sid,) = play(("stuck_tracking", {}))
    (alert,) = by_detector(run())["loop.guard"]
    assert alert.session_id == sid and "get_order called 4 times in a row" in alert.title


def test_cycles_and_no_progress_are_loops_too():
    cycle = tools("r1", [("a", {"x": 1}, "1"), ("b", {"y": 2}, "2")] * 4)
    stuck = tools("r2", [("search", {"q": q}, "no results") for q in ("desk", "desks", "a desk", "the desk", "desk!")])
    found = by_detector(run())
    assert [a.session_id for a in found["loop.cycle"]] == [cycle]
    assert found["loop.cycle"][0].evidence["cycle"] == ["a", "b"]
    assert [a.session_id for a in found["loop.no_progress"]] == [stuck]
    assert "loop.repeat" not in found


def test_a_runaway_session_is_a_cost_alert_and_an_anomaly_against_its_route():
    sids = play(*[("policy_question", {"seed": s}) for s in range(21)],
                ("policy_question", {"misbehave": ("runaway",)}))
    found = by_detector(run())
    (anomaly,) = found["cost.anomaly"]
    assert anomaly.session_id == sids[-1] and anomaly.route == "policy_question"
    base = anomaly.evidence["baseline"]
    assert base["sessions"] == 21 and base["of"] == "agent support, route policy_question"
    assert anomaly.evidence["cost_usd"] > base["fence_usd"] and "× the median" in anomaly.title
    assert [a.session_id for a in found["cost.guard"]] == [sids[-1]]


def test_budgets_context_and_spikes_follow_the_config():
    (sid,) = play(("long_conversation", {}))
    config = D.DetectConfig(cost=D.CostLimits(session_usd=0.001, context_warning=0.005, context_critical=0.9,
                                               spike_ratio=1.01, spike_tokens=10))
    found = by_detector(run(config))
    assert found["cost.budget"][0].session_id == sid and found["cost.budget"][0].severity == "critical"
    assert found["cost.context"][0].severity == "warning"
    assert found["cost.token_spike"][0].evidence["input_tokens"] > found["cost.token_spike"][0].evidence[
        "previous_input_tokens"]


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


def test_config_files_and_their_errors(tmp_path):
    good = tmp_path / "detect.yaml"
    good.write_text("loops: {repeat: 6}\ndisabled: [cost]\n")
    config = D.load_config(good)
    assert config.loops.repeat == 6 and config.loops.window == 10 and config.disabled == ["cost"]
    assert D.load_config(None) == D.DetectConfig()
    for text, message in (("loops: {repet: 6}", "loops.repet: unknown setting"),
                          ("loops: {repeat: 1}", "greater than or equal to 2"),
                          ("disabled: [nope]", r"unknown detector\(s\) nope"),
                          ("safety: {injection_patterns: ['(']}", "is not a regular expression"),
                          ("loops: [", "not valid YAML")):
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(tracer.ConfigError, match=message):
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
    assert "acknowledged" in cli.invoke(main, ["alerts", "ack", alert["alert_id"]]).output
    assert cli.invoke(main, ["alerts", "list", "--status", "open"]).output.startswith("No alerts")
    assert "resolved" in cli.invoke(main, ["alerts", "resolve", alert["alert_id"]]).output
    missing = cli.invoke(main, ["alerts", "show", "zzzzzz"])
    assert missing.exit_code == 2 and "no alert 'zzzzzz'" in missing.output
    bad = cli.invoke(main, ["detect", "--since", "yesterday"])
    assert bad.exit_code == 2 and "use a number and a unit" in bad.output
    printed = cli.invoke(main, ["detect", "--print-config"])
    assert printed.exit_code == 0 and "repeat: 4" in printed.output


def test_cli_detect_delivers_new_alerts_to_a_jsonl_sink(tmp_path):
    play(("stuck_tracking", {}))
    sink = tmp_path / "alerts.jsonl"
    out = CliRunner().invoke(main, ["detect", "--sink", f"jsonl:{sink}", "--sink", "console"])
    assert out.exit_code == 0, out.output
    (line,) = sink.read_text().splitlines()
    assert json.loads(line)["detector"] == "loop.guard"
