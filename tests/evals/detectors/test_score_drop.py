"""score.drop: a route's online scores against its own history of the same scorer. The stores hold
session rows and the rows of their scores that the online scorer writes (``Store.record_scores``),
with end times from a counter, so that the tests need no clock."""

from __future__ import annotations

import os
import random

import pytest
from click.testing import CliRunner

import evals.detectors as D
import tracer
from tracer._cli import main

T0 = 1_760_000_000 * 10**9
MINUTE = 60 * 10**9


def db() -> str:
    return os.environ["FLIGHTREC_DB"]


def scored(agent: str, route: str | None, values: list[float | None], *, at: int = 0, step: int = 1,
           scorer: str = "judge", version: str = "v1", binary: bool = False, chosen_by: str = "sample") -> list[str]:
    """Ended production sessions of one agent and route, the ``i``-th ending at minute ``at + i * step``,
    each with one score (``None``: skipped); returns their ids, oldest first."""
    ids = [f"{agent}-{route}-{at + i * step:05d}" for i in range(len(values))]
    ends = [T0 + (at + i * step) * MINUTE for i in range(len(values))]
    with tracer.Store(db()) as store:
        store.sql("""INSERT INTO sessions (session_id, agent, route, start_ns, end_ns, ended, status, turns, llm_calls,
                                           llm_errors, tool_calls, tool_errors, input_tokens, output_tokens,
                                           cache_read_tokens, cache_write_tokens, cost_usd, unpriced_calls)
                     SELECT unnest(?), ?, ?, unnest(?) - 30 * 10^9, unnest(?), true, 'ok', 1, 1, 0, 0, 0, 100, 10,
                            0, 0, 0.001, 0""", [ids, agent, route, ends, ends])
        # The rows record_scores writes, in one statement (a transaction per session would take seconds).
        store.sql("INSERT INTO session_scores SELECT unnest(?), ?, ?, unnest(?), unnest(?), 1.0, unnest(?), ?, NULL, ?",
                  [ids, scorer, version, values,
                   [None if v is None else v >= 0.5 if binary else v >= 0.7 for v in values],
                   ["skipped: over the judge's budget" if v is None else f"scored {v:.2f}" for v in values], T0,
                   chosen_by])
    return ids


def around(rng: random.Random, mean: float, spread: float, n: int) -> list[float]:
    return [min(1.0, max(0.0, rng.gauss(mean, spread))) for _ in range(n)]


def passes(rng: random.Random, rate: float, n: int) -> list[float]:
    return [1.0 if rng.random() < rate else 0.0 for _ in range(n)]


def drops(**kwargs) -> list[tracer.AlertRecord]:
    with tracer.Store(db()) as store:
        return [a for a in D.detect(store, **kwargs).alerts if a.detector == "score.drop"]


@pytest.mark.parametrize("before, after", [
    ("judge 0.9 ± 0.05 over 200", "0.5 ± 0.15 over 40"),
    ("graded anywhere in 0.4..1 over 90", "0.1..0.7 over 35"),
    ("judge 0.8 ± 0.1 over 500", "0.55 ± 0.1 over 30"),
])
def test_a_falling_score_alerts_naming_the_window_s_lowest_sessions(before, after):
    rng = random.Random(before)
    history = {"judge 0.9 ± 0.05 over 200": around(rng, 0.9, 0.05, 200),
               "graded anywhere in 0.4..1 over 90": [rng.uniform(0.4, 1.0) for _ in range(90)],
               "judge 0.8 ± 0.1 over 500": around(rng, 0.8, 0.1, 500)}[before]
    fallen = {"0.5 ± 0.15 over 40": around(rng, 0.5, 0.15, 40),
              "0.1..0.7 over 35": [rng.uniform(0.1, 0.7) for _ in range(35)],
              "0.55 ± 0.1 over 30": around(rng, 0.55, 0.1, 30)}[after]
    old = scored("support", "refund", history)
    new = scored("support", "refund", fallen, at=len(history))
    (alert,) = drops()
    assert alert.family == "quality" and alert.route == "refund" and alert.agent == "support"
    ev = alert.evidence
    assert ev["window"]["sessions"] == 30 and ev["window"]["mean"] < ev["baseline"]["mean"] - 0.15
    assert ev["baseline"]["sessions"] == min(300, len(old) + len(new) - 30)
    assert alert.title == (f"judge score fell to {ev['window']['mean']:.2f} over the last 30 scored sessions of agent "
                           f"support, route refund, against {ev['baseline']['mean']:.2f} over the "
                           f"{ev['baseline']['sessions']} before")
    # The sessions it points at are the fallen ones, the lowest of the latest window, newest last.
    values = dict(zip(new, fallen))
    lowest = [s["session_id"] for s in ev["lowest"]]
    assert lowest == sorted(lowest) and set(lowest) <= set(new[-30:]) and len(lowest) == 10
    assert max(values[s] for s in lowest) <= sorted(fallen[-30:])[9]
    # The alert gathers the lowest sessions of each window it was seen in, for the dashboard to link.
    assert set(lowest) <= set(alert.session_ids)


def test_a_pass_rate_falling_from_95_to_60_percent_alerts():
    rng = random.Random(5)
    scored("support", "returns", passes(rng, 0.95, 300), scorer="resolved", binary=True)
    assert drops() == []
    fallen = passes(rng, 0.6, 40)
    scored("support", "returns", fallen, at=300, scorer="resolved", binary=True)
    (alert,) = drops()
    ev = alert.evidence
    assert alert.title.startswith("resolved pass rate fell to 6") and ev["baseline"]["mean"] > 0.9
    assert ev["window"]["pass_rate"] == ev["window"]["mean"] < 0.75
    assert all(s["value"] == 0.0 and s["passed"] is False for s in ev["lowest"])


def test_a_smaller_fall_that_lasts_is_found_over_the_long_window():
    # 75% of sessions passed; then half. Thirty sessions at 50% are within chance of a 75% route
    # (their pass rate varies by ±0.08); a hundred and twenty are not.
    scored("support", "billing", [0.0, 1.0, 1.0, 1.0] * 75, scorer="resolved", binary=True)
    scored("support", "billing", [0.0, 1.0] * 45, at=300, scorer="resolved", binary=True)
    assert drops() == []
    scored("support", "billing", [0.0, 1.0] * 15, at=390, scorer="resolved", binary=True)
    (alert,) = drops()
    assert alert.evidence["window"]["sessions"] == 120 and alert.evidence["window"]["mean"] == 0.5
    assert alert.title.startswith("resolved pass rate fell to 50% over the last 120 scored sessions of ")
    assert alert.title.endswith("against 75% over the 300 before")


@pytest.mark.parametrize("shape", ["steady judge", "coin flips", "rare failures", "wide grades", "a young route"])
def test_noise_around_a_steady_mean_does_not_alert(shape):
    rng = random.Random(shape)
    values = {"steady judge": around(rng, 0.85, 0.1, 600),
              "coin flips": passes(rng, 0.5, 400),
              "rare failures": passes(rng, 0.97, 800),
              "wide grades": [rng.random() for _ in range(300)],
              # A route too young to judge: the last 20 of its 60 sessions scored low.
              "a young route": around(rng, 0.9, 0.05, 40) + around(rng, 0.3, 0.1, 20)}[shape]
    scored("support", "triage", values)
    assert drops() == []


def test_a_handful_of_bad_sessions_in_a_window_is_not_a_drop():
    rng = random.Random(11)
    scored("support", "refund", around(rng, 0.9, 0.05, 300) + [0.0, 0.1, 0.0] + around(rng, 0.9, 0.05, 27))
    assert drops() == []


def test_a_new_scorer_version_that_scores_lower_is_not_a_drop():
    rng = random.Random(2)
    scored("support", "refund", around(rng, 0.9, 0.05, 300), version="rubric-1")
    # A stricter rubric: a new version, judged against its own history once it has one.
    scored("support", "refund", around(rng, 0.5, 0.1, 120), at=300, version="rubric-2")
    assert drops() == []
    scored("support", "refund", around(rng, 0.2, 0.1, 30), at=420, version="rubric-2")
    (alert,) = drops()
    assert alert.evidence["version"] == "rubric-2"
    assert alert.evidence["baseline"]["mean"] == pytest.approx(0.5, abs=0.05)


def test_only_the_route_that_dropped_alerts():
    rng = random.Random(3)
    # Three routes whose sessions interleave in time: support's refund drops; its orders and sales' refund hold.
    scored("support", "refund", around(rng, 0.9, 0.05, 200) + around(rng, 0.5, 0.1, 40), at=0, step=3)
    scored("support", "orders", around(rng, 0.9, 0.05, 240), at=1, step=3)
    scored("sales", "refund", passes(rng, 0.9, 240), at=2, step=3)
    scored("support", None, around(rng, 0.7, 0.2, 150))
    (alert,) = drops()
    assert (alert.agent, alert.route) == ("support", "refund")
    assert all(s.startswith("support-refund-") for s in alert.session_ids)


def test_skipped_scores_are_neither_counted_nor_zero():
    rng = random.Random(4)
    scored("support", "refund", around(rng, 0.9, 0.05, 300))
    scored("support", "refund", [None] * 60, at=300)  # the judge over its budget for an hour
    assert drops() == []
    low = around(rng, 0.4, 0.1, 30)
    scored("support", "refund", [v for x in low for v in (None, x)], at=360)
    (alert,) = drops()
    ev = alert.evidence
    assert ev["window"]["sessions"] == 30 and ev["baseline"]["sessions"] == 300
    assert ev["window"]["mean"] == pytest.approx(sum(low) / 30)
    assert all(s["value"] is not None for s in ev["lowest"])


def test_a_rerun_changes_nothing_and_each_new_scored_session_is_an_observation():
    rng = random.Random(6)
    scored("support", "refund", around(rng, 0.9, 0.05, 300) + around(rng, 0.4, 0.1, 40))
    (first,) = drops()
    assert drops() == []
    with tracer.Store(db()) as store:
        (again,) = [a for a in store.alerts() if a.detector == "score.drop"]
    # Each scored session whose window had fallen is one observation: the drop shows before the window is all fallen.
    assert again.count == first.count and 40 - 30 < first.count <= 40
    scored("support", "refund", around(rng, 0.4, 0.1, 5), at=340)
    (more,) = drops()
    assert more.alert_id == first.alert_id and more.count == first.count + 5


def test_online_the_drop_shows_at_the_next_run_after_the_sessions_are_scored():
    rng = random.Random(8)
    scored("support", "refund", around(rng, 0.9, 0.05, 300))
    # Sessions end and the detectors look at them before the scorer has: nothing to judge yet.
    ended = scored("support", "refund", [None] * 40, at=300)
    with tracer.Store(db()) as store:
        store.sql("DELETE FROM session_scores WHERE session_id IN (SELECT unnest(?))", [ended])
    assert drops(scope=D.Scope(session_ids=tuple(ended[-5:]))) == []
    with tracer.Store(db()) as store:
        store.record_scores([tracer.SessionScore(session_id=sid, scorer="judge", version="v1", value=value,
                                                 passed=value >= 0.7, weight=1.0, reason="", scored_ns=T0)
                             for sid, value in zip(ended, around(rng, 0.45, 0.1, 40))])
    # A session of another route judges nothing of this one ...
    (other,) = scored("support", "orders", [0.9], at=340)
    assert drops(scope=D.Scope(session_ids=(other,))) == []
    # ... and the next run over a session of the route that has just ended (not scored yet) finds the drop.
    (later,) = scored("support", "refund", [None], at=341)
    got: list[tracer.AlertRecord] = []
    online = D.OnlineDetector(db(), publish=got.extend, interval_s=3600)
    online([later])
    online.close(timeout_s=30)
    assert online.runs == 1 and online.errors == 0
    (alert,) = [a for a in got if a.detector == "score.drop"]
    assert alert.route == "refund" and set(alert.session_ids) <= set(ended)
    assert alert.last_seen_ns == T0 + 339 * MINUTE  # observed at the route's newest scored session


def test_a_run_over_the_last_sessions_judges_them_against_the_whole_window_behind_them():
    rng = random.Random(10)
    scored("support", "refund", around(rng, 0.9, 0.05, 600))
    fallen = scored("support", "refund", around(rng, 0.5, 0.1, 40), at=600)
    (alert,) = drops(scope=D.Scope(since_ns=T0 + 630 * MINUTE))  # `flightrec detect --since`: the last 10
    ev = alert.evidence
    assert ev["baseline"]["sessions"] == 300 and ev["window"]["sessions"] == 30
    assert ev["baseline"]["mean"] == pytest.approx(0.9, abs=0.02) and alert.last_seen_ns == T0 + 639 * MINUTE
    assert alert.count == 10 and set(alert.session_ids) <= set(fallen)


def test_batch_detect_config_and_family():
    rng = random.Random(9)
    scored("support", "refund", around(rng, 0.9, 0.05, 300) + around(rng, 0.5, 0.1, 30))
    out = CliRunner().invoke(main, ["detect"])
    assert out.exit_code == 0 and "refund: judge score fell to 0.5" in out.output
    with tracer.Store(db()) as store:
        (alert,) = store.alerts()
    shown = CliRunner().invoke(main, ["alerts", "show", alert.alert_id]).output
    assert f"sessions  {', '.join(alert.session_ids)} (newest last)" in shown and '"lowest": [' in shown
    assert "scores:" in D.config_yaml() and "min_drop: 0.15" in D.config_yaml()
    strict = D.DetectConfig(scores=D.ScoreLimits(min_drop=0.5))
    with tracer.Store(db()) as store:
        store.sql("DELETE FROM alert_observations")
        store.sql("DELETE FROM alerts")
    assert drops(config=strict) == [] and drops(config=D.DetectConfig(disabled=["quality"])) == []
    assert len(drops()) == 1


def test_sessions_scored_because_they_raised_an_alert_are_not_a_drop():
    """The scoring policy also scores every alerted session; they are not a random pick of the route."""
    rng = random.Random(7)
    scored("support", "refund", around(rng, 0.9, 0.05, 200))
    scored("support", "refund", around(rng, 0.3, 0.1, 40), at=200, chosen_by="alert")
    assert drops() == []
    scored("support", "refund", around(rng, 0.3, 0.1, 40), at=240)
    assert len(drops()) == 1
