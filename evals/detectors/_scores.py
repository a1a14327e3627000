"""Quality: ``score.drop`` a route whose online scores (``session_scores``, written by
``evals.OnlineScorer``) fell against the route's own history of the same scorer."""

from __future__ import annotations

import math

import tracer

from ._config import DetectConfig
from ._scope import TARGET, Finding, Scope, route_label

_LOWEST = 10
"""The window's lowest-scoring sessions an alert points at."""


def score_drop(store: tracer.Store, scope: Scope, config: DetectConfig) -> list[Finding]:
    """Routes whose recent scores dropped: per agent, route and scorer, the mean score of the
    newest ``window`` scored sessions against the ``baseline`` scored sessions before them.

    Why this rule, and not the cost detectors' median and MAD: a score is bounded (0..1) and often
    binary (passed or not). A median and a MAD say nothing of a pass rate (at 95% both are 1 and 0,
    and they stay so down to 51%), while a mean of bounded values is already robust: one session
    moves the mean of ``window`` sessions by at most ``1/window``. So the window's mean must be
    ``min_drop`` under the baseline's (a drop someone would act on) and ``z`` standard errors under
    it, the standard error from the variance of both sides' values pooled. For pass/fail scores
    that is the two-proportion z-test; for graded ones it is the spread they really have (a judge
    that scores 0.85 to 0.95 shows a fall to 0.7 sooner than one that scores anywhere in 0..1).
    Pooling the two sides keeps the test fair when the baseline is all passes: three failures in a
    window of 30 after 300 passes still has a spread to be measured against. ``min_baseline``
    sessions are needed before a route is judged at all: unlike a cost, a score means different
    things on different routes, so there is no spread to borrow from the agent or the store.

    Only like with like: rows of one scorer ``version`` (a changed rubric or threshold is a new
    scorer, judged once it has its own baseline), and no skipped scores (``value`` NULL).

    The window is a count of sessions, not the run's time range: online, a session is scored a
    moment after it ended (after the detectors looked at it), and a run covers a few seconds of
    sessions. So each run judges, on the routes of the sessions in scope, every scored session in
    scope and each scorer's newest scored session: a drop shows at the next run after the sessions
    that show it are scored. Each judged session is an observation of the alert (agent, route and
    scorer), so re-running over the same history changes nothing.
    """
    q = config.scores
    where, params = scope.where()
    rows = store.sql(f"""WITH {TARGET.format(where=where)},
        routes AS (SELECT DISTINCT agent, coalesce(route, '') AS route FROM target),
        scored AS (
            SELECT c.session_id, s.agent, coalesce(s.route, '') AS route, s.end_ns, c.scorer, c.version, c.value,
                   c.passed::INTEGER AS passed, c.session_id IN (SELECT session_id FROM target) AS in_scope
            FROM session_scores c JOIN sessions s USING (session_id)
            JOIN routes r ON r.agent IS NOT DISTINCT FROM s.agent AND r.route = coalesce(s.route, '')
            WHERE c.value IS NOT NULL AND s.ended AND {scope.of_origins()}),
        rolled AS (
            SELECT *, count(*) OVER w AS n_w, avg(value) OVER w AS m_w, sum(value * value) OVER w AS q_w,
                   avg(passed) OVER w AS p_w, min(end_ns) OVER w AS from_ns,
                   count(*) OVER b AS n_b, avg(value) OVER b AS m_b, sum(value * value) OVER b AS q_b,
                   avg(passed) OVER b AS p_b,
                   row_number() OVER (PARTITION BY agent, route, scorer ORDER BY end_ns DESC, session_id DESC) = 1
                       AS newest
            FROM scored WINDOW
                w AS (PARTITION BY agent, route, scorer, version ORDER BY end_ns, session_id
                      ROWS BETWEEN {q.window - 1} PRECEDING AND CURRENT ROW),
                b AS (PARTITION BY agent, route, scorer, version ORDER BY end_ns, session_id
                      ROWS BETWEEN {q.window + q.baseline - 1} PRECEDING AND {q.window} PRECEDING))
        SELECT session_id, agent, nullif(route, ''), end_ns, scorer, version, n_w, m_w, q_w, p_w, from_ns,
               n_b, m_b, q_b, p_b
        FROM rolled
        WHERE (in_scope OR newest) AND n_w = ? AND n_b >= ? AND m_b - m_w >= ?""",
                     [*params, q.window, q.min_baseline, q.min_drop])
    hits = []
    for row in rows:
        n_w, m_w, q_w, n_b, m_b, q_b = row[6], row[7], row[8], row[11], row[12], row[13]
        n = n_w + n_b
        mean = (n_w * m_w + n_b * m_b) / n
        variance = max((q_w + q_b - n * mean * mean) / (n - 1), 0.0)
        z = (m_b - m_w) / math.sqrt(variance * (1 / n_w + 1 / n_b)) if variance > 0 else math.inf
        if z >= q.z:
            hits.append((row, z))
    if not hits:
        return []
    return _findings(store, scope, hits, config)


def _findings(store: tracer.Store, scope: Scope, hits: list[tuple[tuple, float]],
              config: DetectConfig) -> list[Finding]:
    """The alerts of the judged sessions that dropped, each with its window's lowest-scoring sessions
    (read in a second query: there are few hits, and the windows of all the others are never read)."""
    q = config.scores
    wanted = {(r[1], r[2] or "", r[4], r[5]) for r, _ in hits}
    sessions: dict[tuple, list[tuple]] = {}
    versions = sorted({k[3] for k in wanted})
    marks = ", ".join("?" * len(versions))
    for agent, route, scorer, version, sid, end_ns, value, passed, reason in store.sql(
            f"""SELECT s.agent, coalesce(s.route, ''), c.scorer, c.version, c.session_id, s.end_ns, c.value,
                       c.passed, c.reason
                FROM session_scores c JOIN sessions s USING (session_id)
                WHERE c.value IS NOT NULL AND s.ended AND {scope.of_origins()} AND c.version IN ({marks})
                ORDER BY s.end_ns, c.session_id""", versions):
        if (agent, route, scorer, version) in wanted:
            sessions.setdefault((agent, route, scorer, version), []).append((sid, end_ns, value, passed, reason))
    out = []
    for row, z in hits:
        sid, agent, route, seen, scorer, version, n_w, m_w, _, p_w, from_ns, n_b, m_b, _, p_b = row
        history = sessions[(agent, route or "", scorer, version)]
        at = next(i for i, s in enumerate(history) if s[0] == sid)
        window = history[at + 1 - n_w: at + 1]
        lowest = sorted(sorted(window, key=lambda s: (s[2], -s[1]))[:_LOWEST], key=lambda s: s[1])
        binary = all(s[2] in (0.0, 1.0) for s in history[max(at + 1 - n_w - n_b, 0): at + 1])
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
                          "pass_rate": p_b, "rule": f"the mean of the newest {q.window} scored sessions at least "
                          f"{q.min_drop:g} under the mean of up to {q.baseline} before them (at least "
                          f"{q.min_baseline}), and {q.z:g} standard errors under it (both sides' values pooled)"},
             "lowest": [{"session_id": s[0], "value": s[2], "passed": s[3], "reason": tracer.clip_text(s[4], 200)}
                        for s in lowest]},
            observation=sid, session_ids=[s[0] for s in lowest]))
    return out
