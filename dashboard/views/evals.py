"""Evals: the stored runs, one run case by case (``?run=ID``), and two runs compared (``?a=RUN&b=RUN``).

The comparison is ``evals.compare_stored``, the same one ``flightrec eval compare`` and the CI gate
print: this page lays it out and computes nothing of its own.
"""

import pandas as pd
import streamlit as st

import evals
import tracer
from dashboard import _ui

_RUNS = 200
_HIDDEN = {"session_id": None, "turn": None}  # what a row opens, not what it shows


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


def _run_list(runs: list[tracer.EvalRunRecord]) -> None:
    st.subheader("Runs")
    st.caption("Click a run to open it case by case.")
    table = pd.DataFrame([{
        "run": r.run_id[:8], "labels": ", ".join(r.labels), "dataset": r.dataset,
        "started": _ui.when(r.started_ns), "settings": _settings(r),
        "cases": r.cases, "trials": r.trials,
        "pass_rate": r.passed_trials / r.total_trials if r.total_trials else None,
        "mean_score": r.mean_score, "cost_usd": r.cost_usd, "wall_s": r.wall_s, "run_id": r.run_id} for r in runs])
    _ui.table(table, key="evals_runs", opens=lambda row: ("evals", {"run": row["run_id"]}), column_config={
        "trials": st.column_config.NumberColumn("trials / case"),
        "pass_rate": st.column_config.ProgressColumn("pass rate", format="percent", min_value=0, max_value=1),
        "mean_score": st.column_config.NumberColumn("mean score", format="%.2f"),
        "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
        "wall_s": st.column_config.NumberColumn("wall time", format="%.1f s"),
        "run_id": None,
    })


def _opens_session(row: pd.Series) -> _ui.Target | None:
    """A trial's session, at the decision its failing score judged (``evals.failing_turn``)."""
    if not isinstance(row["session_id"], str):
        return None  # the agent failed before a session started
    return "session", {"id": row["session_id"], "turn": None if pd.isna(row["turn"]) else int(row["turn"])}


def _trials(results: list[tracer.EvalResultRecord]) -> pd.DataFrame:
    return pd.DataFrame([{
        "case": r.case_id, "trial": r.trial, "passed": r.passed, "score": r.score, "status": r.status,
        "turns": r.turns, "cost_usd": r.cost_usd, "latency_ms": r.latency_ms, "why": _why(r),
        "session_id": r.session_id, "turn": evals.failing_turn(r)} for r in results])


def _why(result: tracer.EvalResultRecord) -> str:
    if result.error:
        return result.error
    return "; ".join(s["reason"] for s in result.scores if not s.get("passed") and s.get("reason"))


@_ui.cached
def _cases(ref: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A run's trials, and its cases with their pass rate and the session each opens: built once per
    query, not on every rerun of the page."""
    trials = _trials(_run(ref)[1])
    cases = trials.groupby("case", sort=True).agg(
        trials=("passed", "size"), passed=("passed", "sum"), score=("score", "mean"),
        # min_count keeps a case with an unpriced trial unknown instead of cheaper than it was.
        cost_usd=("cost_usd", lambda c: c.sum(min_count=len(c))), latency_ms=("latency_ms", "median"))
    cases["status"] = [evals.case_status(list(group["passed"])) for _, group in trials.groupby("case", sort=True)]
    # The session to open for a case: its first failing trial (at the turn it failed), else its first trial.
    first = trials.sort_values(["case", "passed", "trial"]).groupby("case").first()
    cases = cases.assign(pass_rate=cases["passed"] / cases["trials"], why=first["why"],
                         session_id=first["session_id"], turn=first["turn"]).reset_index()
    return trials, cases.sort_values(["pass_rate", "case"])


def _one_run(ref: str) -> None:
    run, results = _run(ref)
    st.subheader(f"Run {_name(run)}")
    cols = st.columns(4)
    cols[0].metric("Pass rate", f"{run.passed_trials / run.total_trials:.1%}" if run.total_trials else "–",
                   help=f"{run.passed_trials} of {run.total_trials} trials passed.")
    cols[1].metric("Mean score", f"{run.mean_score:.2f}")
    cols[2].metric("Cost", _ui.usd(run.cost_usd), help="Unknown when any trial's model has no known price.")
    cols[3].metric("Cases × trials", f"{run.cases} × {run.trials}")
    st.caption(f"agent {run.agent} · seed {run.seed} · wall time {run.wall_s:.1f} s · run id `{run.run_id}`")
    _ui.link("sessions", f"Its {run.total_trials} trial sessions, in Sessions", run=run.run_id, origin="evals")
    if not results:
        st.info("This run stored no results.")
        return
    trials, cases = _cases(ref)
    only_failing = st.toggle("Only cases that did not pass every trial", key="evals_failing")
    shown = cases[cases["status"] != "pass"] if only_failing else cases
    st.caption("Click a case to open its first failing trial's session at the decision that failed.")
    _ui.table(shown[["case", "status", "pass_rate", "passed", "trials", "score", "cost_usd", "latency_ms", "why",
                     "session_id", "turn"]], key="evals_cases", opens=_opens_session, column_config={
        "pass_rate": st.column_config.ProgressColumn("pass rate", format="percent", min_value=0, max_value=1),
        "score": st.column_config.NumberColumn("mean score", format="%.2f"),
        "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
        "latency_ms": st.column_config.NumberColumn("median latency", format="%.0f ms"),
        "why": st.column_config.TextColumn("why it failed", width="large"),
        **_HIDDEN,
    })
    # Sent to the browser only once opened, as _ui.raw_json does: a collapsed expander's table is drawn
    # all the same (a run of 40 cases x 5 trials is 200 rows).
    every = st.expander(f"All {len(trials)} trials", expanded=False, on_change="rerun", key="evals_all_trials")
    if every.open:
        with every:
            _ui.table(trials, key="evals_trials", opens=_opens_session, column_config={
                "cost_usd": st.column_config.NumberColumn("cost", format="$%.4f"),
                "latency_ms": st.column_config.NumberColumn("latency", format="%.0f ms"),
                **_HIDDEN})
    _beside_production(run)
    _ui.raw_json("Raw run record (JSON)", run.model_dump())


def _beside_production(run: tracer.EvalRunRecord) -> None:
    """The run's pass rate on each route beside its agent's production sessions there (online scores and
    outcomes): does the suite predict production? (``evals.suite_vs_production``, as ``flightrec eval
    vs-production`` prints it.)"""
    st.subheader("Beside production")
    days = st.segmented_control("Production sessions of the last", [1, 7, 30], default=7, key="evals_prod_days",
                                format_func=lambda d: f"{d} day{'s' if d > 1 else ''}") or 7
    result = _vs_production(run.run_id, days)
    st.caption(result.summary())
    if not any(r.production.sessions or r.outcomes for r in result.routes):
        st.info(f"No production session of {result.agent or 'this agent'} has an online score or an outcome in the "
                "last days. Score them with `flightrec serve --scoring FILE` (as they end) or `flightrec eval score` "
                "(after the fact), and record outcomes with `flightrec outcome`.")
        return
    table = pd.DataFrame([{
        "route": r.route or "(no route)", "suite": r.suite.pass_rate, "suite_n": r.suite.sessions,
        "production": r.production.pass_rate, "production_n": r.production.sessions,
        "gap": None if r.gap is None else r.gap * 100,
        "resolved": r.resolved, "outcomes": r.outcomes, "route_key": r.route} for r in result.routes])
    st.caption("Click a route to open its production sessions. The gap is the suite's pass rate minus production's, "
               f"where both sides have {evals.MIN_ROUTE_SESSIONS}+ sessions.")
    _ui.table(table, key="evals_vs_production",
              opens=lambda row: ("sessions", {"route": row["route_key"]}) if isinstance(row["route_key"], str)
              else None,
              column_config={
                  "suite": st.column_config.ProgressColumn("suite pass rate", format="percent", min_value=0,
                                                           max_value=1),
                  "suite_n": st.column_config.NumberColumn("trials"),
                  "production": st.column_config.ProgressColumn("production pass rate", format="percent",
                                                                min_value=0, max_value=1),
                  "production_n": st.column_config.NumberColumn("scored sessions"),
                  "gap": st.column_config.NumberColumn("gap", format="%+.0f pts"),
                  "resolved": st.column_config.ProgressColumn("resolved", format="percent", min_value=0,
                                                              max_value=1),
                  "outcomes": st.column_config.NumberColumn("with an outcome"),
                  "route_key": None,
              })


def _pick_pair(runs: list[tracer.EvalRunRecord]) -> tuple[str, str]:
    """The two runs to compare: the URL's, or the baseline against the newest other run (the two
    newest when nothing is labelled baseline). Both pickers write back to the URL."""
    a, b = _ui.param("a"), _ui.param("b")
    if a is None or b is None:
        baseline = next((r for r in runs if "baseline" in r.labels), None)
        newest = next(r for r in runs if r is not baseline)
        default = (baseline or runs[1], newest)
        a, b = a or default[0].run_id, b or default[1].run_id
    # Labels and prefixes in the URL resolve to ids; an unknown one stops here with the store's message.
    a_run, b_run = _run(a)[0], _run(b)[0]
    by_id = {r.run_id: r for r in [*runs, a_run, b_run]}
    ids = list(by_id)
    left, right = st.columns(2)
    a_id = left.selectbox("Baseline", ids, index=ids.index(a_run.run_id), format_func=lambda i: _name(by_id[i]),
                          key="evals_a")
    b_id = right.selectbox("Candidate", ids, index=ids.index(b_run.run_id), format_func=lambda i: _name(by_id[i]),
                           key="evals_b")
    st.query_params.update({"a": a_id, "b": b_id})
    return a_id, b_id


def _gate_label(k: evals.CaseComparison) -> str:
    """What the gate made of the case, as the reports say it."""
    label = ("regression" if k.change == "regression" else "regressed (aggregate)" if k.regressed
             else k.change or "one run only")
    return f"{label}, critical" if k.critical else label


def _compare(a: str, b: str) -> None:
    c = _comparison(a, b)
    t = c.test
    cols = st.columns(4)
    cols[0].metric("Pass rate", f"{c.candidate.pass_rate:.1%}",
                   delta=f"{(c.candidate.pass_rate - c.baseline.pass_rate) * 100:+.1f} points",
                   help=f"Baseline {c.baseline.pass_rate:.1%}.")
    cols[1].metric("Mean score", f"{c.candidate.mean_score:.2f}",
                   delta=f"{c.candidate.mean_score - c.baseline.mean_score:+.2f}")
    cols[2].metric("Cost per trial", _ui.usd(c.candidate.cost_usd),
                   delta=None if c.cost_delta_usd is None else tracer.format_usd(c.cost_delta_usd, signed=True),
                   delta_color="inverse")
    cols[3].metric("Median session", _ui.ms(c.candidate.latency_ms_median),
                   delta=None if c.latency_delta_ms is None else f"{c.latency_delta_ms:+.0f} ms",
                   delta_color="inverse")
    message = f"**{c.verdict.upper()}**: {c.verdict_reason}"
    # A regression is a finding about the agent, not a failure of this page: a warning, not an error box.
    {"regression": st.warning, "improvement": st.success}.get(c.verdict, st.info)(message)
    st.markdown(
        f"**Significance** · effect {t.effect * 100:+.1f} points of pass rate per case, {t.confidence:.0%} CI "
        f"{t.ci_low * 100:+.1f} to {t.ci_high * 100:+.1f} · p = {t.p_value:.4f} (worse), "
        f"{t.p_value_improvement:.4f} (better), one-sided at α = {t.alpha} · {t.cases} paired cases  \n"
        f"<small>{t.method}</small>", unsafe_allow_html=True)
    if t.unpaired:
        st.caption(f"Left out of the test (in one run only): {', '.join(t.unpaired)}")
    if not c.same_dataset:
        st.caption("The two runs used different cases or scorers (dataset hash differs).")
    g = c.gate
    st.caption(f"Gate: aggregate p = {g.aggregate.p_value:.4f} vs {g.aggregate_alpha:g}; each case's own test "
               f"(Fisher, Holm-Tarone) at {g.case_alpha:g} over {g.testable} testable case(s)"
               + (f"; critical cases at {g.critical_alpha:g}" if g.critical_alpha else "") + f". {c.power}")
    flips = st.columns(4)
    for col, title, names in ((flips[0], "regressed", c.regressions), (flips[1], "pass → fail", c.flips_to_fail),
                              (flips[2], "fail → pass", c.flips_to_pass), (flips[3], "flaky", c.flaky)):
        col.markdown(f"**{title}** ({len(names)})  \n" + (", ".join(f"`{n}`" for n in names) or "none"))
    cases = pd.DataFrame([{
        "case": k.case_id, "delta": k.delta,
        "why": k.reasons[0] if k.reasons else "",  # in view at 1440 px, before the statistics
        "gate": _gate_label(k),
        "baseline": sum(k.baseline) / len(k.baseline) if k.baseline else None,
        "candidate": sum(k.candidate) / len(k.candidate) if k.candidate else None,
        "trials": f"{_count(k.baseline)} → {_count(k.candidate)}",
        "change": f"{k.baseline_status or '–'} → {k.candidate_status or '–'}", "p (worse)": k.p_value}
        for k in c.cases])
    changed = st.toggle("Only cases whose pass rate changed", value=True, key="evals_changed")
    shown = cases[cases["delta"].fillna(0) != 0] if changed else cases
    st.caption("Sort by any column's header; click a case to see its trials in both runs and open their sessions.")
    # Narrow number columns, so that more of the statistics are in sight at 1440 px.
    columns = {
        "baseline": st.column_config.NumberColumn("baseline", format="percent", width="small",
                                                  help="The baseline's pass rate."),
        "candidate": st.column_config.NumberColumn("candidate", format="percent", width="small",
                                                   help="The candidate's pass rate."),
        "delta": st.column_config.NumberColumn("Δ", format="percent", width="small",
                                               help="Candidate minus baseline pass rate."),
        "trials": st.column_config.TextColumn("passed", width="small", help="Passed trials, baseline → candidate."),
        "change": st.column_config.TextColumn("change", width="small"),
        "p (worse)": st.column_config.NumberColumn("p (worse)", format="%.3g", width="small",
                                                   help="The case's own one-sided Fisher test, before correction."),
        "why": st.column_config.TextColumn("why the candidate failed", width="large"),
    }
    # Keyed on what the table holds: a click is kept as a row position, which another pair of runs
    # or the other toggle would give to another case.
    picked = _ui.table(shown.sort_values(["delta", "case"]), key=f"evals_cases_compared:{a}:{b}:{changed}",
                       column_config=columns)
    case = picked["case"] if picked is not None else _ui.param("case")
    if case is not None:
        st.query_params["case"] = case  # a deep link to the case on screen
        _case_in_both(a, b, case)
    _ui.raw_json("Raw comparison (JSON)", c.model_dump())


def _count(trials: list[bool]) -> str:
    return f"{sum(trials)}/{len(trials)}" if trials else "–"


def _case_in_both(a: str, b: str, case: str) -> None:
    """One case's trials in each run, each opening its session at the decision that failed."""
    st.markdown(f"#### Case `{case}` in both runs")
    for col, title, ref in zip(st.columns(2), ("Baseline", "Candidate"), (a, b)):
        run, results = _run(ref)
        trials = _trials([r for r in results if r.case_id == case])
        with col:
            st.markdown(f"**{title}** {_name(run)}")
            if trials.empty:
                st.caption("This run did not have this case.")
                continue
            _ui.table(trials[["trial", "passed", "status", "turns", "why", "session_id", "turn"]],
                      key=f"evals_case_{title.lower()}", opens=_opens_session, column_config={
                          "why": st.column_config.TextColumn("why it failed", width="large"), **_HIDDEN})


def render() -> None:
    st.title("Evals")
    runs = _runs()
    ref = _ui.param("run")
    if ref is not None:
        _ui.link("evals", "All runs")
        _one_run(ref)
        return
    if not runs:
        st.info("No eval run in this store yet. Run one with `flightrec eval run support --label baseline`, "
                "or `make demo`.")
        return
    _run_list(runs)
    st.subheader("Compare two runs")
    if len(runs) < 2:
        st.info("One run so far: run the dataset again (with a change) to compare.")
        return
    _compare(*_pick_pair(runs))


_ui.guarded(render)
