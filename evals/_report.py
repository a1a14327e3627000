"""What an eval prints and writes: the terminal summary, a Markdown summary for a pull-request
comment, and JUnit XML for CI."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

import tracer
from tracer.cli import command_name

from ._compare import CaseComparison, Comparison, power_note
from ._stats import case_status

_REASONS = 3
"""Distinct failure reasons shown per case."""


def _pct(x: float) -> str:
    return f"{x:.0%}"


def _by_case(results: Sequence[tracer.EvalResultRecord]) -> dict[str, list[tracer.EvalResultRecord]]:
    out: dict[str, list[tracer.EvalResultRecord]] = {}
    for r in results:
        out.setdefault(r.case_id, []).append(r)
    return out


def _reasons(trials: Sequence[tracer.EvalResultRecord]) -> list[str]:
    found = [s["reason"] for r in trials if not r.passed for s in r.scores if not s.get("passed")]
    found += [r.error for r in trials if r.error]
    return list(dict.fromkeys(found))[:_REASONS]


def run_text(run: tracer.EvalRunRecord, results: Sequence[tracer.EvalResultRecord], *, cases: bool = True) -> str:
    """The terminal summary of one run: totals, then (``cases``) each case that did not pass every trial."""
    by_case = _by_case(results)
    statuses = {cid: case_status([r.passed for r in rs]) for cid, rs in by_case.items()}
    settings = " ".join(f"{k}={v}" for k, v in run.settings.items()) or "defaults"
    lines = [
        f"run       {run.run_id}{' (' + ', '.join(run.labels) + ')' if run.labels else ''}",
        f"dataset   {run.dataset} · {run.cases} cases × {run.trials} trials · agent {run.agent} · {settings} · "
        f"seed {run.seed}",
        f"passed    {run.passed_trials}/{run.total_trials} trials ({_pct(run.passed_trials / run.total_trials)}) · "
        f"cases: {sum(s == 'pass' for s in statuses.values())} pass, {sum(s == 'flaky' for s in statuses.values())} "
        f"flaky, {sum(s == 'fail' for s in statuses.values())} fail · mean score {run.mean_score:.2f}",
        f"cost      {tracer.format_usd(run.cost_usd)} · wall time {run.wall_s:.1f} s",
    ]
    for cid, rs in by_case.items():
        if statuses[cid] == "pass" or not cases:
            continue
        passed = sum(r.passed for r in rs)
        lines.append(f"  {statuses[cid]:<5} {cid}: {passed}/{len(rs)} trials passed")
        lines += [f"          - {reason}" for reason in _reasons(rs)]
        failed = [r.session_id for r in rs if not r.passed and r.session_id]
        if failed:
            lines.append(f"          open: {command_name()} traces show {failed[0]}")
    return "\n".join(lines)


def _counts(case: CaseComparison) -> str:
    return f"{sum(case.baseline)}/{len(case.baseline)} → {sum(case.candidate)}/{len(case.candidate)}"


def _label(case: CaseComparison) -> str:
    """``regression``, ``worse`` or ``flaky``, and ``critical`` when it is."""
    label = case.change if case.change in ("regression", "worse") else "flaky"
    return f"{label} (critical)" if case.critical else label


def _significance(case: CaseComparison) -> str:
    """The case's own test in words: significant or not, and whether the aggregate drop counts it."""
    if case.p_value is None or case.level is None:
        return "in one run only"
    rule = "critical rule, " if case.critical else ""
    if case.change == "regression" and case.p_value <= case.level:
        return f"{rule}p = {case.p_value:.2g} ≤ {case.level:.3g}: a significant drop on its own"
    if case.collapsed:
        return f"{rule}p = {case.p_value:.2g} > {case.level:.3g} on its own, but it no longer passes at all"
    if case.regressed:
        return f"{rule}p = {case.p_value:.2g} > {case.level:.3g} on its own; part of the aggregate drop"
    return f"{rule}p = {case.p_value:.2g} > {case.level:.3g}: within noise"


def _gate_summary(c: Comparison) -> str:
    g = c.gate
    parts = [f"aggregate sign-flip p = {g.aggregate.p_value:.4f} vs {g.aggregate_alpha:g} "
             f"({'REGRESSION' if g.aggregate.regression else 'ok'})",
             f"per case (Fisher exact, Holm-Tarone from {g.case_alpha:g}, first level "
             f"{g.case_alpha / g.testable:.3g}) "
             f"{len([x for x in g.cases if x.regression and not x.critical])} regressed"]
    if g.critical_alpha:
        parts.append(f"critical cases (the same from {g.critical_alpha:g}, first level "
                     f"{g.critical_alpha / g.critical_testable:.3g}) "
                     f"{len([x for x in g.cases if x.regression and x.critical])} regressed")
    return " · ".join(parts) + f" · false-alarm budget {g.alpha:g} in all"


def comparison_text(c: Comparison) -> str:
    """The terminal summary of a comparison, verdict last."""
    t = c.test

    def side(name: str, s: object) -> str:
        from ._compare import RunSide
        assert isinstance(s, RunSide)
        label = f" ({', '.join(s.labels)})" if s.labels else ""
        latency = "?" if s.latency_ms_median is None else f"{s.latency_ms_median:.0f} ms"
        return (f"{name:<10}{s.run_id[:8]}{label}: pass rate {_pct(s.pass_rate)} · mean score {s.mean_score:.2f} · "
                f"cost/trial {tracer.format_usd(s.cost_usd)} · median session {latency}")

    lines = [side("baseline", c.baseline), side("candidate", c.candidate),
             f"effect    {t.effect * 100:+.1f} points of pass rate per case ({t.confidence:.0%} CI "
             f"{t.ci_low * 100:+.1f} to {t.ci_high * 100:+.1f}) over {t.cases} paired cases",
             f"test      p = {t.p_value:.4f}, one-sided, alpha {t.alpha}: {t.method}"]
    if c.cost_delta_usd is not None or c.latency_delta_ms is not None:
        cost = "?" if c.cost_delta_usd is None else tracer.format_usd(c.cost_delta_usd, signed=True)
        lines.append(f"deltas    cost/trial {cost} · "
                     f"median session {'?' if c.latency_delta_ms is None else f'{c.latency_delta_ms:+.0f} ms'}")
    lines.append(f"gate      {_gate_summary(c)}")
    lines.append(f"pass→fail {', '.join(c.flips_to_fail) or 'none'}")
    lines.append(f"fail→pass {', '.join(c.flips_to_pass) or 'none'}")
    lines.append(f"regressed {', '.join(c.regressions) or 'none'}")
    lines.append(f"flaky     {', '.join(c.flaky) or 'none'}")
    for case in c.cases:
        if case.delta is not None and case.delta < 0:
            lines.append(f"  {_label(case):<10} {case.case_id}: {_counts(case)} ({_significance(case)})")
            lines += [f"          - {r}" for r in case.reasons[:1]]
            if case.failing_sessions:
                lines.append(f"          open: {command_name()} traces show {case.failing_sessions[0]}")
    lines.append(f"power     {c.power}")
    lines.append(f"verdict   {c.verdict.upper()}: {c.verdict_reason}")
    return "\n".join(lines)


def markdown(run: tracer.EvalRunRecord, results: Sequence[tracer.EvalResultRecord],
             comparison: Comparison | None, *, thresholds: Mapping[str, float] | None = None) -> str:
    """A summary for a pull-request comment; without a baseline, the cases below their pass threshold
    (``thresholds``, as for ``junit``)."""
    verdict = comparison.verdict if comparison else "no baseline"
    mark = {"regression": "❌", "no regression": "✅", "improvement": "✅", "no baseline": "ℹ️"}[verdict]
    out = [f"### {mark} flightrec eval: {verdict} — {run.dataset}", ""]
    if comparison:
        out += [comparison.verdict_reason, "", "| run | pass rate | mean score | cost / trial | median session |",
                "|---|---:|---:|---:|---:|"]
        for name, s in (("baseline", comparison.baseline), ("candidate", comparison.candidate)):
            latency = "?" if s.latency_ms_median is None else f"{s.latency_ms_median:.0f} ms"
            out.append(f"| {name} `{s.run_id[:8]}` | {_pct(s.pass_rate)} | {s.mean_score:.2f} | "
                       f"{tracer.format_usd(s.cost_usd)} | {latency} |")
        out += ["", f"**Regressed:** {', '.join(comparison.regressions) or 'none'}. "
                    f"**Flips** pass→fail: {', '.join(comparison.flips_to_fail) or 'none'}; "
                    f"fail→pass: {', '.join(comparison.flips_to_pass) or 'none'}. "
                    f"**Flaky** (mixed outcomes, no regression; they pass): {', '.join(comparison.flaky) or 'none'}.",
                "", f"**Gate:** {_gate_summary(comparison)}.", "", f"**What this run could catch:** {comparison.power}",
                ""]
        worse = [c for c in comparison.cases if c.delta is not None and c.delta < 0]
        if worse:
            out += ["| case | baseline | candidate | verdict | why | session |", "|---|---:|---:|---|---|---|"]
            for c in worse:
                why = (c.reasons[0] if c.reasons else "—").replace("|", "\\|")
                session = f"`{c.failing_sessions[0]}`" if c.failing_sessions else "—"
                out.append(f"| {c.case_id} | {sum(c.baseline)}/{len(c.baseline)} | "
                           f"{sum(c.candidate)}/{len(c.candidate)} | {_label(c)}: {_significance(c)} | {why} | "
                           f"{session} |")
            out.append("")
    else:
        below = [f"{cid} {sum(r.passed for r in rs)}/{len(rs)} (threshold {(thresholds or {}).get(cid, 1.0):.0%})"
                 for cid, rs in _by_case(results).items()
                 if _below(sum(r.passed for r in rs), len(rs), (thresholds or {}).get(cid, 1.0))]
        out += [f"{run.passed_trials}/{run.total_trials} trials passed ({_pct(run.passed_trials / run.total_trials)}) "
                f"over {run.cases} cases × {run.trials} trials. **Below their pass threshold:** "
                f"{', '.join(below) or 'none'}.", "",
                f"**What a comparison at this trial count could catch:** "
                f"{power_note(None, run.trials, run.trials)}", ""]
    out.append(f"<sub>run `{run.run_id}` · agent {run.agent} · "
               f"{' '.join(f'{k}={v}' for k, v in run.settings.items()) or 'default settings'} · seed {run.seed}. "
               "Open a failing session with `flightrec traces show SESSION_ID`.</sub>")
    return "\n".join(out) + "\n"


def _below(passed: int, trials: int, threshold: float) -> bool:
    # 4 of 5 against a threshold of 0.8 must pass: compare in integers, not 4/5 < 0.8 in floats.
    return passed < threshold * trials - 1e-9


def junit(run: tracer.EvalRunRecord, results: Sequence[tracer.EvalResultRecord],
          comparison: Comparison | None, *, thresholds: Mapping[str, float] | None = None) -> bytes:
    """JUnit XML: one test case per eval case, plus the gate when there is a baseline.

    With a baseline, a case's test fails exactly when the gate counts the case as regressed; a
    case with failed trials that did not regress (flaky) passes, with a note in ``system-out``,
    so that a "no regression" verdict never turns CI red. Without a baseline, a case fails when
    fewer of its trials passed than its pass threshold asks (``thresholds``: case id -> share of
    trials, ``Dataset.thresholds()``; every trial for a case not in it).
    """
    cases = _by_case(results)
    compared = {c.case_id: c for c in comparison.cases} if comparison else {}
    # JUnit's timestamp is an ISO 8601 date-time; CI parsers reject or misread a bare epoch number.
    started = datetime.fromtimestamp(run.started_ns / 1e9, tz=UTC).isoformat(timespec="seconds")
    suite = ET.Element("testsuite", name=f"flightrec eval {run.dataset}", timestamp=started,
                       time=f"{run.wall_s:.3f}")
    failures = 0
    for cid, rs in cases.items():
        el = ET.SubElement(suite, "testcase", classname=f"flightrec.{run.dataset}", name=cid,
                           time=f"{sum(r.latency_ms or 0 for r in rs) / 1000:.3f}")
        passed = sum(r.passed for r in rs)
        detail = "\n".join([*_reasons(rs), *(f"session {r.session_id}" for r in rs if not r.passed)])
        case = compared.get(cid)
        if comparison is None:
            threshold = (thresholds or {}).get(cid, 1.0)
            if passed < len(rs) and _below(passed, len(rs), threshold):
                failures += 1
                ET.SubElement(el, "failure", message=f"{passed}/{len(rs)} trials passed, below the case's pass "
                                                     f"threshold of {threshold:.0%}").text = detail
            elif passed < len(rs):
                ET.SubElement(el, "system-out").text = (f"flaky: {passed}/{len(rs)} trials passed, at or above the "
                                                        f"case's pass threshold of {threshold:.0%}\n{detail}")
        elif case is not None and case.regressed:
            failures += 1
            ET.SubElement(el, "failure", message=f"regressed: {_counts(case)} trials passed "
                                                 f"({_significance(case)})").text = detail
        elif passed < len(rs):
            note = (f"{_label(case)}: {_counts(case)} trials passed ({_significance(case)})" if case is not None
                    and case.baseline else f"{passed}/{len(rs)} trials passed; not in the baseline")
            ET.SubElement(el, "system-out").text = f"{note}; not a regression\n{detail}"
    if comparison is not None:
        el = ET.SubElement(suite, "testcase", classname=f"flightrec.{run.dataset}", name="regression gate")
        if comparison.verdict == "regression":
            failures += 1
            ET.SubElement(el, "failure", message="regression against the baseline").text = comparison.verdict_reason
        ET.SubElement(el, "system-out").text = f"{_gate_summary(comparison)}\n{comparison.power}"
    suite.set("tests", str(len(cases) + (comparison is not None)))
    suite.set("failures", str(failures))
    root = ET.Element("testsuites")
    root.append(suite)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)
