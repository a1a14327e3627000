"""Quality: ``score.drop`` a route whose online scores (``session_scores``, written by
``evals.OnlineScorer``) fell against the route's own history of the same scorer."""

from __future__ import annotations

import math

import tracer

from ._config import DetectConfig
from ._scope import TARGET, Finding, Scope, recent_and_reference, route_label

_LOWEST = 10
"""The window's lowest-scoring sessions an alert points at."""


def score_drop(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Routes whose recent scores dropped: per agent, route and scorer, the mean score of the
    newest ``window`` scored sessions, and of the newest ``long_window``, each against the
    ``baseline`` scored sessions before it.

    Why this rule, and not the cost detectors' median and MAD: a score is bounded (0..1) and often
    binary (passed or not). A median and a MAD say nothing of a pass rate (at 95% both are 1 and 0,
    and they stay so down to 51%), while a mean of bounded values is already robust: one session
    moves the mean of ``window`` sessions by at most ``1/window``. So the window's mean must be
    ``min_drop`` under the baseline's (a drop someone would act on) and ``z`` standard errors under
    it (``_z``: for pass/fail scores the two-proportion test, for graded ones the spread they
    really have, so that a judge that scores 0.85 to 0.95 shows a fall to 0.7 sooner than one that
    scores anywhere in 0..1). The short window catches a sharp fall within a few dozen sessions;
    the long one a smaller fall that lasts, which 30 pass/fail sessions are too few to tell from
    chance (at a 75% pass rate their mean varies by ±0.08). ``min_baseline`` sessions are needed
    before a route is judged at all: unlike a cost, a score means different things on different
    routes, so there is no spread to borrow from the agent or the store.
    ``benchmarks/bench_score_drop.py`` measures recall and false alarms by drop size.

    Only like with like: rows of one scorer ``version`` (a changed rubric or threshold is a new
    scorer, judged once it has its own baseline), no skipped scores (``value`` NULL), and no session
    scored because it raised an alert (``chosen_by`` ``alert``): those are not a random pick, and a
    burst of other alerts would lower a window's mean.

    The windows are counts of sessions, not the run's time range: online, a session is scored a
    moment after it ended (after the detectors looked at it), and a run covers a few seconds of
    sessions. So each run judges, on the routes of the sessions in scope, every scored session in
    scope and each scorer's newest scored session: a drop shows at the next run after the sessions
    that show it are scored. Each judged session is an observation of the alert (agent, route and
    scorer), so re-running over the same history changes nothing.
    """
    q = config.scores
    where, params = scope.where()
    windows = dict.fromkeys((q.window, q.long_window))
    key = "PARTITION BY agent, route, scorer, version ORDER BY end_ns, session_id"
    stats = ", ".join(
        f"count(*) OVER w{k} AS n_w{k}, avg(value) OVER w{k} AS m_w{k}, sum(value * value) OVER w{k} AS q_w{k}, "
        f"avg(passed) OVER w{k} AS p_w{k}, min(end_ns) OVER w{k} AS from_ns{k}, count(*) OVER b{k} AS n_b{k}, "
        f"avg(value) OVER b{k} AS m_b{k}, sum(value * value) OVER b{k} AS q_b{k}, avg(passed) OVER b{k} AS p_b{k}"
        for k in windows)
    frames = ", ".join(recent_and_reference(k, q.baseline, names=(f"w{k}", f"b{k}"), order=key) for k in windows)
    cols = ", ".join(f"n_w{k}, m_w{k}, q_w{k}, p_w{k}, from_ns{k}, n_b{k}, m_b{k}, q_b{k}, p_b{k}" for k in windows)
    fell = " OR ".join(f"(n_w{k} = {k} AND n_b{k} >= {q.min_baseline} AND m_b{k} - m_w{k} >= {q.min_drop})"
                       for k in windows)
    rows = store.sql(f"""WITH {TARGET.format(where=where)},
        routes AS (SELECT DISTINCT agent, coalesce(route, '') AS route FROM target),
        scored AS (
            SELECT c.session_id, s.agent, coalesce(s.route, '') AS route, s.end_ns, c.scorer, c.version, c.value,
                   c.passed::INTEGER AS passed, c.session_id IN (SELECT session_id FROM target) AS in_scope
            FROM session_scores c JOIN sessions s USING (session_id)
            JOIN routes r ON r.agent IS NOT DISTINCT FROM s.agent AND r.route = coalesce(s.route, '')
            WHERE c.value IS NOT NULL AND c.chosen_by <> 'alert' AND s.ended AND {scope.of_origins()}),
        ranked AS (SELECT *, row_number() OVER (PARTITION BY agent, route, scorer, version
                                                 ORDER BY end_ns DESC, session_id DESC) AS back FROM scored),
        -- The rows judged and the windows before them: a run over a few new sessions reads a few
        -- hundred rows of each route, however long its history.
        kept AS (SELECT * FROM ranked QUALIFY back <= max(back) FILTER (WHERE in_scope OR back = 1)
                     OVER (PARTITION BY agent, route, scorer, version) + {max(windows) + q.baseline}),
        rolled AS (
            SELECT *, {stats},
                   row_number() OVER (PARTITION BY agent, route, scorer ORDER BY end_ns DESC, session_id DESC) = 1
                       AS newest
            FROM kept WINDOW {frames})
        SELECT session_id, agent, nullif(route, ''), end_ns, scorer, version, {cols}
        FROM rolled
        WHERE (in_scope OR newest) AND ({fell})""", params)
    hits = []
    for row in rows:
        # The short window first: it is the one that shows a sharp fall, and the sooner.
        for at in range(6, len(row), 9):
            n_w, m_w, q_w, p_w, from_ns, n_b, m_b, q_b, p_b = row[at:at + 9]
            if (n_w in windows and n_b >= q.min_baseline and m_b - m_w >= q.min_drop
                    and (z := _z(n_w, m_w, q_w, n_b, m_b, q_b)) >= q.z):
                hits.append((*row[:6], n_w, m_w, p_w, from_ns, n_b, m_b, p_b, z))
                break
    if not hits:
        return []
    return _findings(store, scope, hits, config)


def _z(n_w: int, m_w: float, q_w: float, n_b: int, m_b: float, q_b: float) -> float:
    """How many standard errors the window's mean ``m_w`` is under the baseline's ``m_b`` (``q_*``:
    the sums of squares), on the arcsine scale.

    A pass rate near 1 is skewed: at 97%, six failures in 30 sessions are 4.3 standard errors on
    the plain scale (a one-in-100,000 event, were it normal) but happen once in 4,300 windows, and
    a window is judged at every scored session; on the arcsine scale they are 3.0. ``2·asin(√m)``
    evens that out: its variance is ``1/n`` for a pass rate whatever the rate (the arcsine
    two-proportion test), and ``ρ/n`` for graded scores, ``ρ`` being their variance over the most a
    0..1 value can have at that mean (``M(1 − M)``); both from the two sides pooled, as the null
    hypothesis (one distribution) has it.
    """
    n = n_w + n_b
    mean = (n_w * m_w + n_b * m_b) / n
    if mean * (1 - mean) <= 0:
        return 0.0  # every value 0, or every value 1: nothing fell
    rho = min(max((q_w + q_b - n * mean * mean) / (n - 1), 0.0) / (mean * (1 - mean)), 1.0)
    gap = 2 * (math.asin(math.sqrt(m_b)) - math.asin(math.sqrt(m_w)))
    return gap / math.sqrt(rho * (1 / n_w + 1 / n_b)) if rho > 0 else math.inf


def _findings(store: tracer.Store, scope: Scope, hits: list[tuple], config: DetectConfig) -> list[Finding]:
    """The alerts of the judged sessions that dropped, each with its window's lowest-scoring sessions
    (read in a second query: there are few hits, and the windows of all the others are never read)."""
    q = config.scores
    wanted = {(h[1], h[2] or "", h[4], h[5]) for h in hits}
    sessions: dict[tuple, list[tuple]] = {}
    # The hits' routes and versions narrow the rows read; the exact (agent, route, scorer, version) is
    # checked below. Without the routes, a hit read every route's scores of its days: 0.25 s of a run
    # on a store of 552,000 scores over 240 routes.
    versions, routes = sorted({k[3] for k in wanted}), sorted({k[1] for k in wanted})
    for agent, route, scorer, version, sid, end_ns, value, passed, reason in store.sql(
            f"""SELECT s.agent, coalesce(s.route, ''), c.scorer, c.version, c.session_id, s.end_ns, c.value,
                       c.passed, c.reason
                FROM session_scores c JOIN sessions s USING (session_id)
                WHERE c.value IS NOT NULL AND c.chosen_by <> 'alert' AND s.ended AND {scope.of_origins()}
                  AND c.version IN ({", ".join("?" * len(versions))})
                  AND coalesce(s.route, '') IN ({", ".join("?" * len(routes))})
                  AND s.end_ns BETWEEN ? AND ?
                ORDER BY s.end_ns, c.session_id""",
            [*versions, *routes, min(h[9] for h in hits), max(h[3] for h in hits)]):
        if (agent, route, scorer, version) in wanted:
            sessions.setdefault((agent, route, scorer, version), []).append((sid, end_ns, value, passed, reason))
    rule = (f"the mean of the newest {q.window} scored sessions, or of the newest {q.long_window}, at least "
            f"{q.min_drop:g} under the mean of up to {q.baseline} before them (at least {q.min_baseline}), and "
            f"{q.z:g} standard errors under it (on the arcsine scale, both sides' values pooled)")
    out = []
    for sid, agent, route, seen, scorer, version, n_w, m_w, p_w, from_ns, n_b, m_b, p_b, z in hits:
        history = sessions[(agent, route or "", scorer, version)]
        at = next(i for i, s in enumerate(history) if s[0] == sid)
        window = history[at + 1 - n_w: at + 1]
        lowest = sorted(sorted(window, key=lambda s: (s[2], -s[1]))[:_LOWEST], key=lambda s: s[1])
        # A pass/fail scorer's value is its verdict (1 passed, 0 failed): then the title gives a pass rate.
        binary = p_b is not None and abs(m_b - p_b) < 1e-9 and all(s[2] in (0.0, 1.0) for s in window)
        what, now, before = ((f"{scorer} pass rate", f"{m_w:.0%}", f"{m_b:.0%}") if binary else
                             (f"{scorer} score", f"{m_w:.2f}", f"{m_b:.2f}"))
        of = route_label(agent, route)
        out.append(Finding(
            "score.drop", "warning",
            f"{what} fell to {now} over the last {n_w} scored sessions of {of}, against {before} over the {n_b} "
            "before",
            agent, route, None, scorer, seen, [],
            {"scorer": scorer, "version": version, "drop": m_b - m_w, "z": round(z, 2),
             "window": {"sessions": n_w, "mean": m_w, "pass_rate": p_w, "from_ns": from_ns, "to_ns": seen},
             "baseline": {"of": f"{of}, scorer {scorer} version {version}", "sessions": n_b, "mean": m_b,
                          "pass_rate": p_b, "rule": rule},
             "lowest": [{"session_id": s[0], "value": s[2], "passed": s[3], "reason": tracer.clip_text(s[4], 200)}
                        for s in lowest]},
            observation=sid, session_ids=[s[0] for s in lowest]))
    return out
