"""``flightrec eval``: run a dataset, compare runs, gate CI; label runs; turn sessions into cases.

Exit codes: 0 no regression, 1 a regression against the baseline, 2 an error (one line, no
traceback: the root group prints every ``FlightrecError``). ``flightrec detect`` and ``flightrec
alerts`` are the detectors' (``evals.detectors._cli``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

import tracer
from tracer.cli import actor_option, db_option, hint, json_option

from . import _report
from ._add_case import add_case, draft_case
from ._compare import Comparison, compare_stored, power_note
from ._dataset import load_dataset
from ._errors import EvalError
from ._runner import DEFAULT_CONCURRENCY, DEFAULT_TRIALS, run_eval

EXIT_REGRESSION = 1


def _settings(pairs: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise EvalError(f"--set {pair!r}: use key=value, for example --set model=claude-sonnet-4-5.")
        out[key.strip()] = value.strip()
    return out


def _write(path: str, data: bytes | str) -> None:
    try:
        # CI steps name a report directory that does not exist yet (`reports/junit.xml`), as pytest's
        # --junitxml allows; failing there would throw away a finished run's verdict.
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data if isinstance(data, bytes) else data.encode())
    except OSError as exc:
        raise EvalError(f"cannot write {path}: {exc.strerror}.") from None


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 0.5:
        raise EvalError(f"--alpha {alpha:g}: give the gate's false-alarm rate, above 0 and below 0.5: 0.05 (the "
                        "default) fails 1 run in 20 at most when nothing changed, 0.01 one in 100.")


@click.group("eval")
def evals() -> None:
    """Regression evals: run a dataset K times per case, compare with a baseline, gate CI."""


@evals.command("run")
@click.argument("dataset")
@click.option("--agent", metavar="NAME|MODULE:ATTR",
              help="The agent under test: a registered NAME or MODULE:ATTR (default: the dataset's `agent:`, else "
                   "the reference agent).")
@click.option("--set", "set_", multiple=True, metavar="KEY=VALUE",
              help="A setting the agent takes (the reference agent: model, system_prompt_file, variant, guards such "
                   "as max_tool_calls …; an evals.agent: model_url, real).")
@click.option("--trials", type=int, default=DEFAULT_TRIALS, show_default=True, help="Trials per case.")
@click.option("--concurrency", type=int, default=DEFAULT_CONCURRENCY, show_default=True, help="Trials at once.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Only cases with this tag (repeatable).")
@click.option("--baseline", metavar="LABEL|RUN_ID", help="Compare with this run; exit 1 on a regression.")
@click.option("--label", metavar="LABEL",
              help="Label this run (for example `baseline`) once stored; with --baseline, only if it passes the gate.")
@click.option("--seed", type=int, help="The run's seed (default: fresh each run).")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="The gate's false-alarm budget: how often a candidate no different from the baseline may fail.")
@click.option("--junit", metavar="PATH", help="Write JUnit XML here.")
@click.option("--report", metavar="PATH.md", help="Write a Markdown summary here (for a pull-request comment).")
@db_option
@json_option
@actor_option
def run_cmd(dataset: str, agent: str | None, set_: tuple[str, ...], trials: int, concurrency: int,
            tags: tuple[str, ...], baseline: str | None, label: str | None, seed: int | None, alpha: float,
            junit: str | None, report: str | None, db: str | None, as_json: bool, actor: str | None) -> None:
    """Run DATASET (a YAML or JSONL file, or a bundled suite: `support`) against the agent.

    Every trial is a traced session; its result links to it.
    """
    who = tracer.actor_name(actor) if label else None  # a blank --actor fails now, not after the run
    settings = _settings(set_)
    _check_alpha(alpha)
    baseline_id: str | None = None
    if baseline:  # a baseline that is not there is an error now, not after the whole run
        path = tracer.default_db_path(db)
        if not tracer.store_exists(path):
            raise EvalError(f"no eval run or label {baseline!r}: there is no trace store at {path} yet. Store a "
                            f"baseline first with `{hint('eval', 'run', dataset, '--label', baseline, db=db)}`.")
        with tracer.Store(db, read_only=True) as store:
            # Resolved now: `--label baseline --baseline baseline` may move the label to this run,
            # which must still be compared with the run the label named before it.
            baseline_id = store.find_eval_run(baseline).run_id

    def progress(result: tracer.EvalResultRecord, done: int, total: int) -> None:
        if not as_json and sys.stderr.isatty():
            click.echo(f"\rscored {done}/{total} trials", nl=done == total, err=True)

    data = load_dataset(dataset)
    result = run_eval(data, agent=agent, settings=settings, trials=trials, concurrency=concurrency, tags=tags,
                      seed=seed, db=db, progress=progress)
    comparison: Comparison | None = None
    if baseline_id or label:
        with tracer.Store(db) as store:
            if baseline_id:
                comparison = compare_stored(store, baseline_id, result.run.run_id, alpha=alpha)
            # A regressed run must not become the bar the next run is held to.
            if label and (comparison is None or comparison.verdict != "regression"):
                store.label_eval_run(result.run.run_id, label, actor=who, via="cli")
                result.run.labels.append(label)
    if junit:
        _write(junit, _report.junit(result.run, result.results, comparison, thresholds=data.thresholds()))
    if report:
        _write(report, _report.markdown(result.run, result.results, comparison, thresholds=data.thresholds()))
    if as_json:
        click.echo(json.dumps({"run": result.run.model_dump(), "results": [r.model_dump() for r in result.results],
                               "comparison": comparison.model_dump() if comparison else None}, indent=2))
    else:
        click.echo(_report.run_text(result.run, result.results, cases=comparison is None))
        if comparison:
            click.echo(_report.comparison_text(comparison))
            if label and comparison.verdict == "regression":
                click.echo(f"not labelled {label!r}: the run regressed against the baseline")
        else:
            click.echo(f"power     {power_note(None, trials, trials)}")
    if comparison is not None and comparison.verdict == "regression":
        sys.exit(EXIT_REGRESSION)


@evals.command("compare")
@click.argument("baseline")
@click.argument("candidate")
@click.option("--report", metavar="PATH.md", help="Write a Markdown summary here.")
@click.option("--alpha", type=float, default=0.05, show_default=True, help="The gate's false-alarm budget.")
@db_option
@json_option
def compare_cmd(baseline: str, candidate: str, report: str | None, alpha: float, db: str | None,
                as_json: bool) -> None:
    """Compare two stored runs (ids, prefixes or labels); exit 1 if CANDIDATE regresses."""
    _check_alpha(alpha)
    with tracer.connect(db) as store:
        comparison = compare_stored(store, baseline, candidate, alpha=alpha)
        run = store.find_eval_run(candidate)
        results = store.eval_results(run.run_id)
    if report:
        _write(report, _report.markdown(run, results, comparison))
    click.echo(comparison.model_dump_json(indent=2) if as_json else _report.comparison_text(comparison))
    if comparison.verdict == "regression":
        sys.exit(EXIT_REGRESSION)


@evals.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@db_option
@json_option
def list_cmd(limit: int, db: str | None, as_json: bool) -> None:
    """Stored eval runs, newest first."""
    runs: list[tracer.EvalRunRecord] = []
    if tracer.store_exists(tracer.default_db_path(db)):  # no store yet is no runs yet, not an error
        with tracer.connect(db) as store:
            runs = store.eval_runs(limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in runs], indent=2))
        return
    if not runs:
        click.echo(f"No eval runs yet. Run one with `{hint('eval', 'run', 'DATASET', db=db)}`.")
        return
    click.echo(f"{'RUN':<10}{'LABELS':<12}{'DATASET':<14}{'CASES':>6}{'TRIALS':>7}{'PASS':>7}  SETTINGS")
    for r in runs:
        settings = " ".join(f"{k}={v}" for k, v in r.settings.items()) or "-"
        click.echo(f"{r.run_id[:8]:<10}{','.join(r.labels)[:11]:<12}{r.dataset[:13]:<14}{r.cases:>6}{r.trials:>7}"
                   f"{r.passed_trials / r.total_trials:>7.0%}  {settings}"[:100])


@evals.command("show")
@click.argument("run")
@db_option
@json_option
def show_cmd(run: str, db: str | None, as_json: bool) -> None:
    """One stored run: totals and the cases that did not pass every trial."""
    with tracer.connect(db) as store:
        record = store.find_eval_run(run)
        results = store.eval_results(record.run_id)
    if as_json:
        click.echo(json.dumps({"run": record.model_dump(), "results": [r.model_dump() for r in results]}, indent=2))
    else:
        click.echo(_report.run_text(record, results))


@evals.command("label")
@click.argument("run")
@click.argument("label")
@db_option
@actor_option
def label_cmd(run: str, label: str, db: str | None, actor: str | None) -> None:
    """Point LABEL (for example `baseline`) at RUN."""
    with tracer.connect(db, read_only=False) as store:
        record = store.find_eval_run(run)
        store.label_eval_run(record.run_id, label, actor=actor, via="cli")
    click.echo(f"{label} → {record.run_id}")


@evals.command("score")
@click.option("--since", default="1d", show_default=True, metavar="DURATION",
              help="Production sessions that ended this long ago or less (30m, 24h, 7d).")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, exists=True), default=None, metavar="FILE",
              help="The scoring policy (default $FLIGHTREC_SCORING, else flightrec.scoring.yaml here, else the "
                   "defaults).")
@click.option("--all", "everything", is_flag=True, help="Score every session of the window, not the policy's sample.")
@db_option
@json_option
def score_cmd(since: str, policy_path: str | None, everything: bool, db: str | None, as_json: bool) -> None:
    """Score production sessions with the online scoring policy after the fact, as `flightrec serve
    --scoring` does when they end: a backfill, or a new scorer tried on history. Scores replace earlier
    ones of the same scorer; sessions that fail a scorer go to the review queue."""
    import time

    from ._online import Scoring, load_scoring_policy
    from .detectors import parse_duration

    policy = load_scoring_policy(policy_path)
    if everything:
        policy = policy.model_copy(update={"sample": 1.0, "routes": []})
    cutoff = time.time_ns() - int(parse_duration(since) * 1e9)
    scoring = Scoring(policy)
    with tracer.Store(tracer.default_db_path(db)) as store:
        ids = [r[0] for r in store.sql("SELECT session_id FROM sessions WHERE origin = 'production' AND ended "
                                       "AND parent_session_id IS NULL AND end_ns >= ? ORDER BY end_ns", [cutoff])]
        scoring.run(store, ids)
        queued = len(store.reviews(pending=True, limit=1_000_000))
    if as_json:
        click.echo(json.dumps({"sessions": len(ids), "scored": scoring.scored,
                               "skipped_for_budget": scoring.skipped_for_budget, "review_queue": queued}))
        return
    which = "all of them" if everything else f"a {policy.sample:.0%} sample" + (
        " and every alerted one" if policy.alerted else "")
    click.echo(f"Scored {scoring.scored} of {len(ids)} production sessions that ended in the last {since} "
               f"({which}, with {', '.join(p.label for p in scoring.scorers)}); {queued} sessions wait for review.")
    if scoring.skipped_for_budget:
        click.echo(f"The judge was skipped {scoring.skipped_for_budget} times for its hourly budget.")


@evals.command("vs-production")
@click.argument("run")
@click.option("--since", default="7d", show_default=True, metavar="DURATION",
              help="Production sessions that ended this long ago or less.")
@db_option
@json_option
def vs_production_cmd(run: str, since: str, db: str | None, as_json: bool) -> None:
    """Put RUN (a label, id or prefix) beside its agent's production sessions, route by route: the suite's
    pass rate against the online scores' and the outcomes' resolution rate, and whether the suite
    predicts production."""
    from ._production import MIN_ROUTE_SESSIONS, suite_vs_production
    from .detectors import parse_duration

    with tracer.Store(tracer.default_db_path(db), read_only=True) as store:
        result = suite_vs_production(store, run, since_s=parse_duration(since))
    if as_json:
        click.echo(result.model_dump_json(indent=2))
        return
    pct = lambda x: "–" if x is None else f"{x:.0%}"  # noqa: E731
    click.echo(f"Eval run {result.run_id} beside production sessions of {result.agent or 'its agent'} that ended in "
               f"the last {since} (routes need {MIN_ROUTE_SESSIONS}+ sessions a side to compare).")
    width = max([len(r.route or "(no route)") for r in result.routes] + [5])
    click.echo(f"{'route':<{width}}  {'suite':>12}  {'production':>12}  {'resolved':>12}")
    for r in result.routes:
        click.echo(f"{r.route or '(no route)':<{width}}  {pct(r.suite.pass_rate):>5} of {r.suite.sessions:<4}  "
                   f"{pct(r.production.pass_rate):>5} of {r.production.sessions:<4}  "
                   f"{pct(r.resolved):>5} of {r.outcomes:<4}")
    click.echo(result.summary())


@evals.group("review")
def review() -> None:
    """The review queue: sessions a scorer failed, that raised an alert, sampled or queued by hand,
    each waiting for a person's verdict (the dashboard's Review page does the same)."""


@review.command("list")
@click.option("--done", is_flag=True, help="Reviewed sessions (newest first), not those waiting.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@db_option
@json_option
def review_list(done: bool, limit: int, db: str | None, as_json: bool) -> None:
    """Sessions waiting for review, oldest first (or, with --done, the verdicts)."""
    with tracer.connect(db) as store:
        rows = store.reviews(pending=not done, limit=limit)
    if as_json:
        click.echo(json.dumps([r.model_dump() for r in rows]))
        return
    if not rows:
        click.echo("No session has been reviewed yet." if done else
                   "No session waits for review. Queue one with `" + hint("eval", "review", "queue", "SESSION", db=db)
                   + "`, or let the scoring policy queue them (see `flightrec eval score`).")
        return
    for r in rows:
        said = f"  {r.verdict}" + (f" ({r.category})" if r.category else "") + f" by {r.reviewer}" if r.verdict else ""
        click.echo((f"{r.session_id}  queued by {r.queued_by:<6}{said}" + (f": {r.note}" if r.note else "")).rstrip())


@review.command("queue")
@click.argument("session_ids", nargs=-1, required=True)
@db_option
def review_queue(session_ids: tuple[str, ...], db: str | None) -> None:
    """Put sessions in the review queue by hand."""
    with tracer.connect(db, read_only=False) as store:
        ids = [store.get_session(s).session_id for s in session_ids]
        added = store.queue_reviews(ids, "hand")
    click.echo(f"queued {added} of {len(ids)} session(s) ({len(ids) - added} were in the queue already)")


@review.command("label")
@click.argument("session_id")
@click.argument("verdict", type=click.Choice(tracer.REVIEW_VERDICTS))
@click.option("--category", default=None, help="The failure category (the scoring policy's review.categories).")
@click.option("--note", default=None, help="What the reviewer saw.")
@click.option("--policy", "policy_path", type=click.Path(dir_okay=False, exists=True), default=None, metavar="FILE",
              help="The scoring policy whose categories apply (default as `flightrec eval score`).")
@db_option
@actor_option
def review_label(session_id: str, verdict: str, category: str | None, note: str | None, policy_path: str | None,
                 db: str | None, actor: str | None) -> None:
    """Record a person's verdict on a session (good or bad), with the reviewer in the audit log."""
    from ._online import load_scoring_policy

    categories = load_scoring_policy(policy_path).review.categories
    if category is not None and category not in categories:
        raise click.BadParameter(f"{category!r} is not one of the policy's categories: {', '.join(categories)} "
                                 "(review.categories in the scoring policy).", param_hint="--category")
    with tracer.connect(db, read_only=False) as store:
        r = store.review_session(session_id, verdict, category=category, note=note, actor=actor, via="cli")
    click.echo(f"{r.session_id} reviewed {r.verdict}" + (f" ({r.category})" if r.category else "")
               + f" by {r.reviewer}")


@evals.command("add-case")
@click.argument("session_id")
@click.option("--dataset", "dataset", required=True, metavar="FILE", help="The dataset to append to (created if new).")
@click.option("--id", "case_id", metavar="ID", help="The case id (default: scenario or 'session', plus the id).")
@db_option
@actor_option
def add_case_cmd(session_id: str, dataset: str, case_id: str | None, db: str | None, actor: str | None) -> None:
    """Turn a recorded session into a draft case; review its expectations before you commit it."""
    # Opened for writing first: the session's content leaves the store only if the audit log can say so.
    with tracer.connect(db, read_only=False) as store:
        case = draft_case(store, session_id, case_id=case_id)
        add_case(dataset, case)
        store.audit(actor, "export", store.get_session(session_id).session_id,
                    {"to": "dataset", "dataset": dataset, "case": case["id"]}, via="cli")
    click.echo(f"added case {case['id']} to {dataset} with {len(case['expect'])} draft expectations "
               "(what the session did). Review them: they become the bar every future run must meet.")

