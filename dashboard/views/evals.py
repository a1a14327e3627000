"""Evals: the stored runs, one run case by case (``?run=ID``), and two runs compared (``?a=RUN&b=RUN``,
with ``&case=ID`` for one case's trials in both).

The comparison is ``evals.compare_stored``, the same one ``flightrec eval compare`` and the CI gate
print: this page lays it out and computes nothing of its own. As on the other pages, every choice is
in the URL: a row, a header, a switch and the pickers' form load the page anew with it (``_html``).
"""

from __future__ import annotations

import html
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

import evals
import tracer
from dashboard import _html, _ui

_RUNS = 200  # the newest runs, listed and offered to compare; an older one opens by its id or label
_PAGE_SIZE = 50  # every row is drawn on each load (_html.table)
_WHY_CHARS = 300
_CASE_KEY = "evals_case"
_DAYS = {"1": "1 day", "7": "7 days", "30": "30 days"}


@_ui.cached
def _runs() -> list[tracer.EvalRunRecord]:
    return _ui.source().store().eval_runs(limit=_RUNS)


@_ui.cached
def _run(ref: str) -> tuple[tracer.EvalRunRecord, list[tracer.EvalResultRecord]]:
    store = _ui.source().store()
    run = store.find_eval_run(ref)
    return run, store.eval_results(run.run_id)


@_ui.cached
def _vs_production(run_id: str, days: int) -> evals.SuiteVsProduction:
    return evals.suite_vs_production(_ui.source().store(), run_id, since_s=days * 86400)


@_ui.cached
def _comparison(a: str, b: str) -> evals.Comparison:
    return evals.compare_stored(_ui.source().store(), a, b)


def _settings(run: tracer.EvalRunRecord) -> str:
    return " ".join(f"{k}={v}" for k, v in run.settings.items())


def _name(run: tracer.EvalRunRecord) -> str:
    labels = f" ({', '.join(run.labels)})" if run.labels else ""
    settings = f" · {_settings(run)}" if run.settings else ""
    return f"{run.run_id[:8]}{labels} · {run.dataset}{settings} · {_ui.when(run.started_ns)}"


def _pct(rate: float | None) -> str:
    return "–" if rate is None else f"{rate:.0%}"


def _switch(label: str, name: str, choices: dict[str, str], default: str) -> _html.Switch:
    """A row of choices read from the URL (``?name=value``), with a warning for a value it does not offer."""
    current = _ui.param(name) or default
    if current not in choices:
        st.warning(f"`{name}={current}` in the URL is not one of {', '.join(choices)}; showing {default}.")
        current = default
    st.query_params[name] = current
    return _html.Switch(label, name, choices, current)


def _session_link(result: tracer.EvalResultRecord) -> str | None:
    """A trial's session, at the decision its failing score judged (``evals.failing_turn``); none when
    the agent failed before a session started."""
    return _ui.url("session", id=result.session_id, turn=evals.failing_turn(result)) if result.session_id else None


def _why(result: tracer.EvalResultRecord) -> str:
    reason = result.error or "; ".join(s["reason"] for s in result.scores if not s.get("passed") and s.get("reason"))
    return tracer.clip_text(reason, _WHY_CHARS)


def _trial_table(results: Sequence[tracer.EvalResultRecord], *, with_case: bool) -> str:
    """Trials, each row opening its session at the decision that failed."""
    rows = [{**({"case": r.case_id} if with_case else {}), "trial": str(r.trial),
             "passed": "pass" if r.passed else "fail", "status": r.status or "–",
             "turns": "–" if r.turns is None else f"{r.turns:,}",
             "score": f"{r.score:.2f}", "cost": _ui.usd(r.cost_usd), "latency": _ui.ms(r.latency_ms),
             "why it failed": _why(r)} for r in results]
    return _html.table(rows, links=[_session_link(r) for r in results], wrap=("why it failed",),
                       numeric=("trial", "turns", "score", "cost", "latency"))


# -- the runs -------------------------------------------------------------------------------------

def _run_list(runs: list[tracer.EvalRunRecord]) -> str:
    page, pages, shown = _ui.paged_rows(runs, _PAGE_SIZE, name="runs_page")
    total = len(runs)
    rows = [{"run": r.run_id[:8], "labels": ", ".join(r.labels), "dataset": r.dataset,
             "started (UTC)": _ui.when(r.started_ns).removesuffix(" UTC"), "settings": _settings(r),
             "cases": f"{r.cases:,}", "trials / case": str(r.trials),
             "pass rate": _pct(r.passed_trials / r.total_trials if r.total_trials else None),
             "mean score": f"{r.mean_score:.2f}", "cost": _ui.usd(r.cost_usd),
             "wall time": f"{r.wall_s:.1f} s"} for r in shown]
    newest = f"the {_RUNS} newest runs" if total == _RUNS else f"{total:,} run{'s' if total > 1 else ''}"
    return (_html.heading("Runs")
            + _html.note(f"{newest.capitalize()}. Click a run to open it case by case.")
            + _html.table(rows, links=[_ui.url("evals", run=r.run_id) for r in shown], wrap=("settings",),
                          numeric=("cases", "trials / case", "pass rate", "mean score", "cost", "wall time"))
            + (_html.pager("evals", _ui.here(), page, pages, name="runs_page") if pages > 1 else ""))


# -- one run --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Case:
    """One case of a run, its trials summed up."""

    case_id: str
    trials: list[tracer.EvalResultRecord]

    @property
    def passed(self) -> int:
        return sum(r.passed for r in self.trials)

    @property
    def pass_rate(self) -> float:
        return self.passed / len(self.trials)

    @property
    def opens(self) -> tracer.EvalResultRecord:
        """The trial a click opens: its first failing one (at the turn it failed), else its first."""
        return next((r for r in self.trials if not r.passed), self.trials[0])

    def row(self) -> dict[str, str]:
        costs = [r.cost_usd for r in self.trials]
        latencies = [r.latency_ms for r in self.trials if r.latency_ms is not None]
        return {"case": self.case_id, "status": evals.case_status([r.passed for r in self.trials]),
                "pass rate": _pct(self.pass_rate), "passed": f"{self.passed}/{len(self.trials)}",
                "mean score": f"{statistics.fmean(r.score for r in self.trials):.2f}",
                # A case with an unpriced trial is unknown, not cheaper than it was.
                "cost": _ui.usd(None if None in costs else sum(costs)),  # type: ignore[arg-type]
                "median latency": _ui.ms(statistics.median(latencies) if latencies else None),
                "why it failed": _why(self.opens) if not self.opens.passed else ""}


@_ui.cached
def _cases(ref: str) -> list[_Case]:
    """A run's cases, the least passing first."""
    by_case: dict[str, list[tracer.EvalResultRecord]] = {}
    for r in sorted(_run(ref)[1], key=lambda r: (r.case_id, r.trial)):
        by_case.setdefault(r.case_id, []).append(r)
    return sorted((_Case(k, v) for k, v in by_case.items()), key=lambda c: (c.pass_rate, c.case_id))


def _one_run(ref: str) -> None:
    run, results = _run(ref)
    rate = run.passed_trials / run.total_trials if run.total_trials else None
    head = [_html.link("All runs", _ui.url("evals")),
            _html.heading(f"Run {_name(run)}"),
            _html.metrics([
                _html.Metric("Pass rate", "–" if rate is None else f"{rate:.1%}",
                             help=f"{run.passed_trials} of {run.total_trials} trials passed."),
                _html.Metric("Mean score", f"{run.mean_score:.2f}"),
                _html.Metric("Cost", _ui.usd(run.cost_usd), help="Unknown when any trial's model has no known price."),
                _html.Metric("Cases × trials", f"{run.cases} × {run.trials}")]),
            _html.note(f"agent {run.agent} · seed {run.seed} · wall time {run.wall_s:.1f} s · run id {run.run_id}"),
            "<p>" + _html.link(f"Its {run.total_trials} trial sessions, in Sessions",
                               _ui.url("sessions", run=run.run_id, origin="evals")) + "</p>"]
    if not results:
        _ui.draw(*head)
        st.info("This run stored no results.")
        return
    shows = _switch("Show", "show", {"cases": "cases", "trials": "every trial"}, "cases")
    which = _switch("Which", "cases", {"all": "all", "failing": "not passing every trial"}, "all")
    cases = [c for c in _cases(ref) if which.current == "all" or c.passed < len(c.trials)]
    if shows.current == "cases":
        page, pages, shown = _ui.paged_rows(cases, _PAGE_SIZE)
        listed = (_html.note(_ui.matching(len(cases), "cases", (page - 1) * _PAGE_SIZE, len(shown), one="case")
                             + ". Click a case to open its first failing trial's session at the decision that failed.")
                  + _html.table([c.row() for c in shown], links=[_session_link(c.opens) for c in shown],
                                wrap=("why it failed",), numeric=("pass rate", "passed", "mean score", "cost",
                                                                  "median latency")))
    else:
        trials = [r for c in cases for r in c.trials]
        page, pages, shown = _ui.paged_rows(trials, _PAGE_SIZE)
        listed = (_html.note(_ui.matching(len(trials), "trials", (page - 1) * _PAGE_SIZE, len(shown), one="trial")
                             + ". Click a trial to open its session at the decision that failed.")
                  + _trial_table(shown, with_case=True))
    _ui.draw(*head, _html.switches("evals", _ui.here(), shows, which), listed,
             _html.pager("evals", _ui.here(), page, pages) if pages > 1 else "", _beside_production(run),
             f"<p>{_ui.json_link('evals', 'the raw run record (JSON)', 'run')}</p>")
    _ui.json_view("The raw run record (JSON)", "run", run.model_dump())


def _beside_production(run: tracer.EvalRunRecord) -> str:
    """The run's pass rate on each route beside its agent's production sessions there (online scores and
    outcomes): does the suite predict production? (``evals.suite_vs_production``, as ``flightrec eval
    vs-production`` prints it.)"""
    days = _switch("Production sessions of the last", "days", _DAYS, "7")
    result = _vs_production(run.run_id, int(days.current))
    head = _html.heading("Beside production") + _html.switches("evals", _ui.here(), days) + _html.note(result.summary())
    if not any(r.production.sessions or r.outcomes for r in result.routes):
        return head + _html.callout(
            f"No production session of {html.escape(result.agent or 'this agent')} has an online score or an outcome "
            "in these days. Score them with <code>flightrec serve --scoring FILE</code> (as they end) or "
            "<code>flightrec eval score</code> (after the fact), and record outcomes with "
            "<code>flightrec outcome</code>.", "info")
    rows = [{"route": r.route or "(no route)", "suite pass rate": _pct(r.suite.pass_rate),
             "trials": f"{r.suite.sessions:,}", "production pass rate": _pct(r.production.pass_rate),
             "scored sessions": f"{r.production.sessions:,}",
             "gap": "–" if r.gap is None else f"{r.gap * 100:+.0f} pts", "resolved": _pct(r.resolved),
             "with an outcome": f"{r.outcomes:,}"} for r in result.routes]
    return head + _html.note(
        "Click a route to open its production sessions. The gap is the suite's pass rate minus production's, "
        f"where both sides have {evals.MIN_ROUTE_SESSIONS}+ sessions.") + _html.table(
        rows, links=[_ui.url("sessions", route=r.route) if r.route else None for r in result.routes],
        numeric=[c for c in rows[0] if c != "route"])


# -- two runs compared ----------------------------------------------------------------------------

def _pick_pair(runs: list[tracer.EvalRunRecord]) -> tuple[tracer.EvalRunRecord, tracer.EvalRunRecord]:
    """The two runs to compare: the URL's, or the baseline against the newest other run (the two
    newest when nothing is labelled baseline)."""
    a, b = _ui.param("a"), _ui.param("b")
    if a is None or b is None:
        baseline = next((r for r in runs if "baseline" in r.labels), None)
        newest = next(r for r in runs if r is not baseline)
        default = (baseline or runs[1], newest)
        a, b = a or default[0].run_id, b or default[1].run_id
    # Labels and prefixes in the URL resolve to ids; an unknown one stops here with the store's message.
    a_run, b_run = _run(a)[0], _run(b)[0]
    st.query_params.update({"a": a_run.run_id, "b": b_run.run_id})
    return a_run, b_run


def _pickers(runs: list[tracer.EvalRunRecord], a: tracer.EvalRunRecord, b: tracer.EvalRunRecord) -> str:
    offered = [(r.run_id, _name(r)) for r in {r.run_id: r for r in [*runs, a, b]}.values()]
    return _html.filters("evals", kept={"cases": _ui.param("cases")}, submit="Compare", fields=[
        _html.select_field("a", "Baseline", offered, a.run_id),
        _html.select_field("b", "Candidate", offered, b.run_id)])


def _gate_label(k: evals.CaseComparison) -> str:
    """What the gate made of the case, as the reports say it."""
    label = ("regression" if k.change == "regression" else "regressed (aggregate)" if k.regressed
             else k.change or "one run only")
    return f"{label}, critical" if k.critical else label


def _rate(trials: list[bool]) -> float | None:
    return sum(trials) / len(trials) if trials else None


def _count(trials: list[bool]) -> str:
    return f"{sum(trials)}/{len(trials)}" if trials else "–"


@dataclass(frozen=True)
class _Column:
    """A column of the comparison: its URL sort key, how a case sorts by it (``None``: last either way),
    whether it sorts descending first, and its tooltip."""

    key: str
    value: Callable[[evals.CaseComparison], Any]
    desc: bool = False
    help: str | None = None


# The reason in view at 1440 px, before the statistics.
_COLUMNS = {
    "case": _Column("case", lambda k: k.case_id),
    "Δ": _Column("delta", lambda k: k.delta, help="Candidate minus baseline pass rate."),
    "why the candidate failed": _Column("why", lambda k: k.reasons[0] if k.reasons else None),
    "gate": _Column("gate", _gate_label),
    "baseline": _Column("baseline", lambda k: _rate(k.baseline), help="The baseline's pass rate."),
    "candidate": _Column("candidate", lambda k: _rate(k.candidate), help="The candidate's pass rate."),
    "passed": _Column("passed", lambda k: sum(k.candidate), desc=True,
                      help="Passed trials, baseline → candidate; sorts by the candidate's."),
    "change": _Column("change", lambda k: f"{k.baseline_status or '–'} → {k.candidate_status or '–'}"),
    "p (worse)": _Column("p", lambda k: k.p_value, help="The case's own one-sided Fisher test, before correction."),
}
_SORTS = {c.key: header for header, c in _COLUMNS.items()}


def _sorted(cases: list[evals.CaseComparison], header: str, desc: bool) -> list[evals.CaseComparison]:
    """``cases`` by a column, then by case; a case with no value there (in one run only) last either way."""
    value = _COLUMNS[header].value
    by_case = sorted(cases, key=lambda k: k.case_id)
    known = sorted((k for k in by_case if value(k) is not None), key=value, reverse=desc)
    return known + [k for k in by_case if value(k) is None]


def _compare_row(k: evals.CaseComparison) -> dict[str, str]:
    return {"case": k.case_id, "Δ": "–" if k.delta is None else f"{k.delta * 100:+.0f} pts",
            "why the candidate failed": tracer.clip_text(k.reasons[0], _WHY_CHARS) if k.reasons else "",
            "gate": _gate_label(k), "baseline": _pct(_rate(k.baseline)), "candidate": _pct(_rate(k.candidate)),
            "passed": f"{_count(k.baseline)} → {_count(k.candidate)}",
            "change": f"{k.baseline_status or '–'} → {k.candidate_status or '–'}",
            "p (worse)": "–" if k.p_value is None else f"{k.p_value:.3g}"}


def _compare(runs: list[tracer.EvalRunRecord]) -> None:
    a_run, b_run = _pick_pair(runs)
    a, b = a_run.run_id, b_run.run_id
    c = _comparison(a, b)
    t, g = c.test, c.gate
    parts = [_html.heading("Compare two runs"), _pickers(runs, a_run, b_run), _html.metrics([
        _html.Metric("Pass rate", f"{c.candidate.pass_rate:.1%}", help=f"Baseline {c.baseline.pass_rate:.1%}.",
                     note=f"{(c.candidate.pass_rate - c.baseline.pass_rate) * 100:+.1f} points"),
        _html.Metric("Mean score", f"{c.candidate.mean_score:.2f}",
                     note=f"{c.candidate.mean_score - c.baseline.mean_score:+.2f}"),
        _html.Metric("Cost per trial", _ui.usd(c.candidate.cost_usd),
                     note=None if c.cost_delta_usd is None else tracer.format_usd(c.cost_delta_usd, signed=True)),
        _html.Metric("Median session", _ui.ms(c.candidate.latency_ms_median),
                     note=None if c.latency_delta_ms is None else f"{c.latency_delta_ms:+.0f} ms")])]
    # A regression is a finding about the agent, not a failure of this page: a warning, not an error box.
    parts.append(_html.callout(f"<b>{html.escape(c.verdict.upper())}</b>: {html.escape(c.verdict_reason)}",
                               {"regression": "warning", "improvement": "success"}.get(c.verdict, "info")))
    notes = [f"Significance · effect {t.effect * 100:+.1f} points of pass rate per case, {t.confidence:.0%} CI "
             f"{t.ci_low * 100:+.1f} to {t.ci_high * 100:+.1f} · p = {t.p_value:.4f} (worse), "
             f"{t.p_value_improvement:.4f} (better), one-sided at α = {t.alpha} · {t.cases} paired cases. {t.method}",
             f"Gate: aggregate p = {g.aggregate.p_value:.4f} vs {g.aggregate_alpha:g}; each case's own test "
             f"(Fisher, Holm-Tarone) at {g.case_alpha:g} over {g.testable} testable case(s)"
             + (f"; critical cases at {g.critical_alpha:g}" if g.critical_alpha else "") + f". {c.power}"]
    if t.unpaired:
        notes.append(f"Left out of the test (in one run only): {', '.join(t.unpaired)}")
    if not c.same_dataset:
        notes.append("The two runs used different cases or scorers (dataset hash differs).")
    parts += [_html.note(n) for n in notes]
    parts.append(_html.metrics([_html.Metric(title, str(len(names)), note=", ".join(names) or "none")
                                for title, names in (("regressed", c.regressions), ("pass → fail", c.flips_to_fail),
                                                     ("fail → pass", c.flips_to_pass), ("flaky", c.flaky))]))
    which = _switch("Cases", "cases", {"changed": "whose pass rate changed", "all": "all"}, "changed")
    sort = _ui.param("sort") or "delta"
    if sort not in _SORTS:
        st.warning(f"`sort={sort}` in the URL is not one of {', '.join(_SORTS)}; sorted by delta.")
        sort = "delta"
    header = _SORTS[sort]
    desc = _ui.param("desc") == "1"
    cases = _sorted([k for k in c.cases if which.current == "all" or (k.delta or 0) != 0], header, desc)
    query = {"a": a, "b": b, "cases": which.current, "sort": sort, "desc": int(desc)}
    # A header sorts by its column, its own way first; the one sorted by turns the order round.
    sorts = {h: _ui.url("evals", **(query | {"sort": col.key, "desc": int(not desc if h == header else col.desc)}))
             for h, col in _COLUMNS.items()}
    case = _ui.param("case")
    parts += [_html.switches("evals", _ui.here(), which),
              _html.note(f"{len(cases)} case{'s' if len(cases) != 1 else ''}. Click a case to see its trials in both "
                         "runs and open their sessions, a column's header to sort by it.")]
    parts.append(_html.table([_compare_row(k) for k in cases], links=[_ui.url("evals", **query, case=k.case_id)
                                                                      for k in cases],
                             numeric=("Δ", "baseline", "candidate", "p (worse)"), wrap=("why the candidate failed",),
                             sorts=sorts, sorted_by=(header, desc),
                             tips={h: col.help for h, col in _COLUMNS.items() if col.help},
                             chosen=next((n for n, k in enumerate(cases) if k.case_id == case), None)))
    parts.append(f"<p>{_ui.json_link('evals', 'the raw comparison (JSON)', 'comparison')}</p>")
    _ui.draw(*parts)
    if case is not None:
        with st.container(key=_CASE_KEY):
            _ui.draw(_case_in_both(a_run, b_run, case))
        _ui.scroll_once(_CASE_KEY, case)  # a click on a row loads the page at its top; the case is below the table
    _ui.json_view("The raw comparison (JSON)", "comparison", c.model_dump())


def _case_in_both(a: tracer.EvalRunRecord, b: tracer.EvalRunRecord, case: str) -> str:
    """One case's trials in each run, each opening its session at the decision that failed."""
    sides = []
    for title, run in (("Baseline", a), ("Candidate", b)):
        trials = [r for r in _run(run.run_id)[1] if r.case_id == case]
        listed = _trial_table(trials, with_case=False) if trials else _html.note("This run did not have this case.")
        sides.append(f"<div><p><b>{title}</b> {html.escape(_name(run))}</p>{listed}</div>")
    return (_html.heading(f"Case {case} in both runs")
            + _html.note("Click a trial to open its session at the decision that failed.")
            + f'<div class="fr-pair">{"".join(sides)}</div>')


def render() -> None:
    st.title("Evals")
    ref = _ui.param("run")
    if ref is not None:
        _one_run(ref)
        return
    runs = _runs()
    if not runs:
        st.info("No eval run in this store yet. Run one with `flightrec eval run support --label baseline`, "
                "or `make demo`.")
        return
    if len(runs) < 2:
        _ui.draw(_run_list(runs))
        st.info("One run so far: run the dataset again (with a change) to compare.")
        return
    _ui.draw(_run_list(runs))
    _compare(runs)


_ui.guarded(render)
