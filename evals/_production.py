"""Pre-deploy meets post-deploy: an eval run's results by route beside the online scores and outcomes of
the same agent's production sessions on those routes, so that a team sees whether its suite predicts
production (``flightrec eval vs-production RUN``, and the Evals page).

A suite predicts production where the routes it passes most are the routes production does best on:
``agreement`` is the rank correlation (Spearman's) of the two pass rates over the routes both sides
have enough sessions of. The routes where production passes far less than the suite are where the
suite is blind: its cases there are easier than what customers bring.
"""

from __future__ import annotations

import time

from pydantic import BaseModel

import tracer

MIN_ROUTE_SESSIONS = 5
"""Sessions a route needs on each side before its pass rates are compared (and count in ``agreement``)."""
BLIND_GAP = 0.2
"""A route whose production pass rate is this much below the suite's is listed as one the suite is blind to."""


class Side(BaseModel):
    """One side of a route: the suite's trials, or production's scored sessions."""

    sessions: int
    """Trials of the run on the route, or production sessions with an online score."""
    pass_rate: float | None
    """The share that passed every scorer (``None`` with no sessions)."""
    mean_score: float | None
    """The mean of their weighted scores."""


class RouteRow(BaseModel):
    """One route of the run, offline and in production."""

    route: str | None
    suite: Side
    production: Side
    outcomes: int
    """Production sessions of the route with an outcome in the window."""
    resolved: float | None
    """The share of those whose newest outcome was resolved."""

    @property
    def gap(self) -> float | None:
        """The suite's pass rate minus production's, where both have ``MIN_ROUTE_SESSIONS``."""
        if self.suite.sessions < MIN_ROUTE_SESSIONS or self.production.sessions < MIN_ROUTE_SESSIONS:
            return None
        return (self.suite.pass_rate or 0.0) - (self.production.pass_rate or 0.0)


class SuiteVsProduction(BaseModel):
    """An eval run beside production, route by route."""

    run_id: str
    agent: str | None
    """The agent of the run's sessions, whose production sessions it is compared with."""
    since_ns: int
    routes: list[RouteRow]
    agreement: float | None
    """Spearman's rank correlation of the two pass rates over the comparable routes; ``None`` below three."""
    compared: int
    """Routes with ``MIN_ROUTE_SESSIONS`` on both sides."""

    @property
    def blind(self) -> list[RouteRow]:
        """Routes where production passes at least ``BLIND_GAP`` less than the suite."""
        return [r for r in self.routes if r.gap is not None and r.gap >= BLIND_GAP]

    def summary(self) -> str:
        """One paragraph a person reads first."""
        if self.agreement is None:
            head = (f"{self.compared} route(s) have {MIN_ROUTE_SESSIONS}+ sessions on both sides; at least 3 are "
                    "needed to say whether the suite predicts production (score more sessions: `flightrec eval "
                    "score`).")
        else:
            word = "follows" if self.agreement >= 0.5 else "barely follows" if self.agreement > 0 else "does not follow"
            head = (f"Production {word} the suite: rank correlation {self.agreement:+.2f} of the pass rates over "
                    f"{self.compared} routes.")
        blind = self.blind
        if blind:
            head += " The suite is blind on " + ", ".join(
                f"{r.route or '(no route)'} ({r.suite.pass_rate:.0%} in the suite, {r.production.pass_rate:.0%} in "
                "production)" for r in blind) + "."
        return head


def suite_vs_production(store: tracer.Store, run: str, *, since_s: float = 7 * 86400,
                        now_ns: int | None = None) -> SuiteVsProduction:
    """The run ``run`` (a label, id or prefix) beside its agent's production sessions that ended in the
    last ``since_s`` seconds, by route.

    Raises:
        tracer.UnknownEvalRunError: no such run.
    """
    record = store.find_eval_run(run)
    since_ns = (now_ns or time.time_ns()) - int(since_s * 1e9)
    suite = {r[0]: (r[1], r[2], r[3], r[4]) for r in store.sql(
        """SELECT s.route, any_value(s.agent), count(*), avg(r.passed::INT), avg(r.score)
           FROM eval_results r JOIN sessions s USING (session_id) WHERE r.run_id = ? GROUP BY s.route""",
        [record.run_id])}
    agents = [a for a, _, _, _ in suite.values() if a]
    agent = max(set(agents), key=agents.count) if agents else None
    production = {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in store.sql(
        """WITH scored AS (
               SELECT session_id, bool_and(passed) AS passed, sum(value * weight) / sum(weight) AS score
               FROM session_scores WHERE value IS NOT NULL GROUP BY session_id),
           outcome AS (
               SELECT session_id, arg_max(resolved, at_ns) AS resolved FROM session_outcomes GROUP BY session_id)
           SELECT s.route, count(c.session_id), avg(c.passed::INT), avg(c.score), count(o.session_id),
                  avg(o.resolved::INT) FILTER (WHERE o.resolved IS NOT NULL)
           FROM sessions s LEFT JOIN scored c USING (session_id) LEFT JOIN outcome o USING (session_id)
           WHERE s.origin = 'production' AND s.ended AND s.end_ns >= ? AND s.agent IS NOT DISTINCT FROM ?
           GROUP BY s.route""", [since_ns, agent])}
    rows = []
    for route in sorted(set(suite) | set(production), key=lambda r: (r is None, r or "")):
        _, n, rate, mean = suite.get(route, (None, 0, None, None))
        pn, prate, pmean, outcomes, resolved = production.get(route, (0, None, None, 0, None))
        rows.append(RouteRow(route=route, suite=Side(sessions=n, pass_rate=rate, mean_score=mean),
                             production=Side(sessions=pn, pass_rate=prate, mean_score=pmean),
                             outcomes=outcomes, resolved=resolved))
    both = [r for r in rows if r.gap is not None]
    agreement = _spearman([r.suite.pass_rate or 0.0 for r in both],
                          [r.production.pass_rate or 0.0 for r in both]) if len(both) >= 3 else None
    return SuiteVsProduction(run_id=record.run_id, agent=agent, since_ns=since_ns, routes=rows, agreement=agreement,
                             compared=len(both))


def _ranks(values: list[float]) -> list[float]:
    """Ranks from 1, ties sharing their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's rank correlation (Pearson's over the ranks); ``None`` when either side is constant."""
    ra, rb = _ranks(a), _ranks(b)
    n = len(a)
    ma, mb = sum(ra) / n, sum(rb) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    va, vb = sum((x - ma) ** 2 for x in ra), sum((y - mb) ** 2 for y in rb)
    if not va or not vb:
        return None
    return cov / (va * vb) ** 0.5
