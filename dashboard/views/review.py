"""Review: the sessions waiting for a person's verdict, oldest first, and each one (``?id=``) with what
happened, its online scores and outcome, a form for the verdict, and a button that makes it a case of
a dataset; below the queue, how often the scorers agree with the reviewers, and the online scores of
production over time.

The trends are here, not on Overview: online scores exist for production sessions only (Overview's
origin switch would show nothing for the rest) and are read beside the reviews that check them."""

from pathlib import Path

import pandas as pd
import streamlit as st

import evals
import tracer
from dashboard import _html, _ui

_PAGE_SIZE = 50  # every row is drawn on each load (_html.table)
_DAY_NS = 86_400 * 1_000_000_000
_DEFAULT_DATASET = "evals/suites/reviewed.yaml"
# A transcript's lines shown: its start (the customer's problem) and its end (how it ended), each clipped.
_HEAD_LINES, _TAIL_LINES, _LINE_CHARS = 12, 48, 600


@_ui.cached
def _queue(page: int = 0) -> tuple[int, pd.DataFrame]:
    """How many sessions wait for review, and a page of them, the oldest first."""
    total = int(_ui.frame("SELECT count(*) AS n FROM reviews WHERE verdict IS NULL")["n"].iloc[0])
    rows = _ui.frame(
        f"""SELECT r.session_id, r.queued_by, r.queued_ns, s.agent, s.route, s.status, sc.score, sc.failing
            FROM reviews r LEFT JOIN sessions s USING (session_id) LEFT JOIN {_ui.SCORED} sc USING (session_id)
            WHERE r.verdict IS NULL ORDER BY r.queued_ns, r.session_id LIMIT ? OFFSET ?""",
        [_PAGE_SIZE, page * _PAGE_SIZE])
    return total, rows


@_ui.cached
def _reviewed() -> int:
    return int(_ui.frame("SELECT count(*) AS n FROM reviews WHERE verdict IS NOT NULL")["n"].iloc[0])


@_ui.cached
def _categories() -> tuple[list[str], str | None]:
    """The policy's failure categories, and why the defaults stand in for them when the policy does not load."""
    try:
        return list(evals.load_scoring_policy().review.categories), None
    except tracer.FlightrecError as exc:
        return list(evals.ReviewPolicy().categories), str(exc)


@_ui.cached
def _session(session_id: str) -> tuple[tracer.SessionSummary, str | None, str]:
    """The session, its route, and its transcript (what an LLM judge reads) clipped to its start and end."""
    store = _ui.source().store()
    summary = store.get_session(session_id)
    route = _ui.frame("SELECT route FROM sessions WHERE session_id = ?", [summary.session_id])["route"].iloc[0]
    lines = [tracer.clip_text(line, _LINE_CHARS)
             for line in evals.trajectory_of(store, summary.session_id).transcript().splitlines()]
    if len(lines) > _HEAD_LINES + _TAIL_LINES:
        hidden = len(lines) - _HEAD_LINES - _TAIL_LINES
        lines = [*lines[:_HEAD_LINES], f"… {hidden} lines left out …", *lines[-_TAIL_LINES:]]
    return summary, None if pd.isna(route) else route, "\n".join(lines)


_after = _ui.cached(_ui.after_deploy)


@_ui.cached
def _agreement() -> pd.DataFrame:
    """Per scorer, the reviewed sessions it scored and how many of its verdicts the reviewer shared (pass
    is good, fail is bad); first, every scorer at once (a session passes when it passed them all)."""
    return _ui.frame(
        """WITH judged AS (
               SELECT sc.scorer, sc.passed, r.verdict = 'good' AS good
               FROM reviews r JOIN session_scores sc USING (session_id)
               WHERE r.verdict IS NOT NULL AND sc.passed IS NOT NULL
               UNION ALL
               SELECT 'every scorer', bool_and(sc.passed), any_value(r.verdict = 'good')
               FROM reviews r JOIN session_scores sc USING (session_id)
               WHERE r.verdict IS NOT NULL AND sc.passed IS NOT NULL GROUP BY session_id)
           SELECT scorer, count(*) AS reviewed, count(*) FILTER (WHERE passed = good) AS agree,
                  count(*) FILTER (WHERE passed = good) / count(*) AS agreement
           FROM judged GROUP BY scorer ORDER BY scorer <> 'every scorer', scorer""")


@_ui.cached
def _trends() -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Production's online scores: the daily mean of the sessions' scores by agent and route, the daily
    pass rate by scorer (both in ``_ui.chart``'s long form), and each scorer over all days."""
    by_route = _ui.frame(
        f"""SELECT s.start_ns // ? * ? AS day, coalesce(s.agent, '–') || ' · ' || coalesce(s.route, '–') AS series,
                   avg(sc.score) AS value, count(*) AS sessions
            FROM {_ui.SCORED} sc JOIN sessions s USING (session_id)
            WHERE s.origin = 'production' AND sc.score IS NOT NULL AND NOT sc.alerted
            GROUP BY ALL ORDER BY 1, 2""", [_DAY_NS, _DAY_NS])
    by_scorer = _ui.frame(
        """SELECT s.start_ns // ? * ? AS day, sc.scorer AS series, avg(sc.passed::INT) AS value
           FROM session_scores sc JOIN sessions s USING (session_id)
           WHERE s.origin = 'production' AND sc.passed IS NOT NULL AND sc.chosen_by <> 'alert'
           GROUP BY ALL ORDER BY 1, 2""", [_DAY_NS, _DAY_NS])
    scorers = _ui.frame(
        """SELECT sc.scorer, count(sc.passed) AS scored, count(*) FILTER (WHERE sc.passed IS NULL) AS skipped,
                  avg(sc.passed::INT) AS pass_rate, avg(sc.value) AS mean_score,
                  string_agg(DISTINCT sc.version, ', ') AS versions
           FROM session_scores sc JOIN sessions s USING (session_id)
           WHERE s.origin = 'production' AND sc.chosen_by <> 'alert' GROUP BY 1 ORDER BY 1""")

    def at(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(time=pd.to_datetime(frame["day"], unit="ns", utc=True))

    return at(by_route), at(by_scorer), scorers


def _text(value: object) -> str:
    return "–" if value is None or pd.isna(value) else str(value)


def _queue_list() -> str:
    page, pages, (total, rows) = _ui.paged(_queue, _PAGE_SIZE)
    head = _html.heading(f"Waiting for review ({total:,})")
    if rows.empty:
        return head + _html.callout(
            "No session waits for review. Online scoring queues them (<code>flightrec serve --scoring</code>, or "
            "<code>flightrec eval score</code> after the fact): a sample, every session a scorer failed and every "
            "one that raised an alert. Queue one by hand with <b>Queue for review</b> on the Session page.", "info")
    shown = [{"queued (UTC)": _ui.when(r.queued_ns).removesuffix(" UTC"), "why": r.queued_by, "agent": _text(r.agent),
              "route": _text(r.route), "status": _text(r.status),
              "online score": "–" if pd.isna(r.score) else f"{r.score:.2f}",
              "failed scorers": "" if pd.isna(r.failing) else r.failing, "session": r.session_id[:13]}
             for r in rows.itertuples()]
    return (head + _html.note(_ui.matching(total, "sessions", (page - 1) * _PAGE_SIZE, len(shown), one="session")
                              + ". Oldest first. Click a row to review its session.")
            + _html.table(shown, links=[_ui.url("review", id=sid) for sid in rows["session_id"]],
                          numeric=("online score",), wrap=("failed scorers",), tips={
                              "why": "sample: the policy's review share; alert: it raised one; score: a scorer "
                                     "failed it; hand: someone queued it.",
                              "online score": "Its scorers' mean, by their weights."})
            + (_html.pager("review", _ui.here(), page, pages) if pages > 1 else ""))


def _agreement_view() -> str:
    head = _html.heading(f"Scorers against reviewers ({_reviewed():,} sessions reviewed)")
    rows = _agreement()
    if rows.empty:
        return head + _html.note("No reviewed session has online scores yet: agreement shows once some are reviewed.")
    judge = rows[rows["scorer"].str.contains("judge", case=False)]
    if judge.empty:
        said = _html.note("No LLM judge scored a reviewed session (add a scorer of type judge to the scoring "
                          "policy); the rule-based scorers' agreement is below.")
    else:
        said = _html.metrics([_html.Metric(
            "Judge agrees with reviewers", f"{judge['agree'].sum() / judge['reviewed'].sum():.1%}",
            help=f"Of {int(judge['reviewed'].sum()):,} reviewed sessions a judge scored: the judge passed the ones "
                 "reviewed good and failed the ones reviewed bad.")])
    shown = [{"scorer": r.scorer, "reviewed sessions": f"{r.reviewed:,}", "agreed": f"{r.agree:,}",
              "agreement": f"{r.agreement:.0%}"} for r in rows.itertuples()]
    return head + said + _html.table(shown, links=[None] * len(shown), numeric=("reviewed sessions", "agreed",
                                                                                "agreement"),
                                     tips={"agreement": "Passed and reviewed good, or failed and reviewed bad."})


def _trends_view() -> str:
    head = _html.heading("Online scores of production, by day")
    by_route, by_scorer, scorers = _trends()
    if scorers.empty:
        return head + _html.note("No production session has online scores yet (flightrec serve --scoring, "
                                 "flightrec eval score).")

    def line(data: pd.DataFrame, title: str) -> str:
        return _ui.chart_html(data, "line", series="series", order=sorted(data["series"].unique()), points=True,
                              title=title) if not data.empty else _html.note("Every score was skipped.")

    shown = [{"scorer": r.scorer, "sessions scored": f"{r.scored:,}", "skipped": f"{r.skipped:,}",
              "pass rate": "–" if pd.isna(r.pass_rate) else f"{r.pass_rate:.0%}",
              "mean score": "–" if pd.isna(r.mean_score) else f"{r.mean_score:.2f}", "versions": _text(r.versions)}
             for r in scorers.itertuples()]
    return (head + _html.note("The policy's sample only: a session scored because it raised an alert is not a random "
                              "pick of its route, and would pull the trend down (the score.drop alert leaves those "
                              "out too).")
            + _html.panels([("Mean score by agent · route", line(by_route, "mean score"))],
                           [("Pass rate by scorer", line(by_scorer, "passed"))])
            + _html.table(shown, links=[None] * len(shown), numeric=("sessions scored", "skipped", "pass rate",
                                                                     "mean score"),
                          tips={"skipped": "A judge over its hourly budget.",
                                "versions": "A changed spec is a new version."}))


def _submit(session_id: str, verdict: str | None, category: str | None, note: str, reviewer: str,
            categories: list[str]) -> None:
    """Checks the form, then writes the review and reruns so that the page shows it."""
    if verdict is None:
        st.warning("Pick a verdict, good or bad, then submit again.")
        return
    if verdict == "bad" and category is None:
        st.warning(f"Pick the failure category of a bad session ({', '.join(categories)}), then submit again. "
                   "The list is the scoring policy's `review.categories`.")
        return
    if not reviewer.strip():
        st.warning("Fill in the reviewer: the review and the audit log name who gave it.")
        return
    with _ui.source().writing() as store:
        record = store.review_session(session_id, verdict, category=category if verdict == "bad" else None,
                                      note=note.strip() or None, actor=reviewer.strip(), via="dashboard")
    st.session_state["review_done"] = (f"Reviewed as **{record.verdict}**" + (f" ({record.category})"
                                       if record.category else "") + f" by {record.reviewer}.")
    st.rerun()


def _form(session_id: str, after: _ui.AfterDeploy) -> None:
    categories, problem = _categories()
    if problem:
        st.warning(f"{problem} Until it loads, the default categories are offered.")
    done = after.review if after.review is not None and after.review.verdict is not None else None
    with st.form(f"review_form_{session_id}", border=True):
        st.markdown("#### Your verdict" + (" (replaces the one above)" if done else ""))
        verdict = st.radio("Verdict", list(tracer.REVIEW_VERDICTS), index=None, horizontal=True,
                           key=f"review_verdict_{session_id}")
        category = st.selectbox("Failure category (for a bad verdict)", categories, index=None,
                                placeholder="what went wrong", key=f"review_category_{session_id}")
        note = st.text_area("Note", key=f"review_note_{session_id}", height=80,
                            placeholder="what went wrong, or what was right")
        if "review_reviewer" not in st.session_state:
            st.session_state["review_reviewer"] = _ui.actor()
        reviewer = st.text_input("Reviewer", key="review_reviewer",
                                 help="Who gives this verdict. Defaults to $FLIGHTREC_ACTOR of the dashboard's "
                                      "process, else its OS user: the dashboard has no login.")
        if st.form_submit_button("Submit review", type="primary"):
            _submit(session_id, verdict, category, note, reviewer, categories)


def _add_to_dataset(session_id: str) -> None:
    st.markdown("#### Add to a dataset")
    st.caption("Drafts an eval case from this session, as `flightrec eval add-case` does: its customer messages "
               "become the input, what it did becomes the expectations. Review them before you commit the file.")
    left, right = st.columns([3, 2])
    path = left.text_input("Dataset file", value=_DEFAULT_DATASET, key="review_dataset",
                           help=f"A .yaml or .jsonl dataset, created if missing; relative to {Path.cwd()}.")
    case_id = right.text_input("Case id", key=f"review_case_id_{session_id}", placeholder="default: scenario + id",
                               help="Name the case yourself (`--id` of `flightrec eval add-case`).")
    if not st.button("Add to dataset", key="review_add_case", icon=":material/playlist_add:"):
        return
    target = Path(path.strip()).expanduser()
    if not path.strip():
        st.warning("Give the dataset file to add the case to (a .yaml or .jsonl path).")
        return
    if not target.parent.is_dir():
        st.error(f"There is no folder {target.parent.resolve()}. Create it, or give a path in a folder that exists "
                 f"(a relative path starts at {Path.cwd()}).", icon=":material/error:")
        return
    actor = st.session_state.get("review_reviewer") or _ui.actor()
    try:
        with _ui.source().writing() as store:
            # Opened for writing first, as `flightrec eval add-case` does: the session's content leaves
            # the store only if the audit log can say so.
            case = evals.draft_case(store, session_id, case_id=case_id.strip() or None)
            evals.add_case(target, case)
            store.audit(actor, "export", session_id, {"to": "dataset", "dataset": str(target), "case": case["id"]},
                        via="dashboard")
    except OSError as exc:
        st.error(f"Cannot write {target}: {exc.strerror or exc}. Give a path you may write to.",
                 icon=":material/error:")
        return
    except evals.DatasetError as exc:
        st.error(f"{exc} (Here: fill in **Case id**.)" if "already has a case" in str(exc) else str(exc),
                 icon=":material/error:")
        return
    st.success(f"Added case `{case['id']}` to {target} with {len(case['expect'])} draft expectations (what the "
               "session did). Review them: they become the bar every future run must meet.", icon=":material/check:")


def _one(session_id: str) -> None:
    summary, route, transcript = _session(session_id)
    sid = summary.session_id
    after = _after(sid)
    done = st.session_state.pop("review_done", None)
    if done:
        st.success(done, icon=":material/check:")
        total, rows = _queue()
        following = rows[rows["session_id"] != sid]
        if not following.empty:
            _ui.link("review", f"Next in the queue ({total:,} waiting)", id=following["session_id"].iloc[0])
    st.subheader(f"Session `{sid[:13]}…`", help=sid)
    color = "green" if summary.status == "ok" else "gray" if summary.status in ("running", "waiting_human") else "red"
    st.markdown(f"agent **{summary.agent or '–'}** · route **{route or '–'}** · :{color}-badge[{summary.status}]"
                + (f" {summary.status_reason}" if summary.status_reason else "")
                + f" · {summary.turns} turns · {_ui.usd(summary.cost_usd)} · {_ui.when(summary.start_ns)}")
    _ui.link("session", "Open it decision by decision", id=sid)
    left, right = st.columns([3, 2])
    with left:
        st.markdown("#### What happened")
        st.code(transcript, language=None, wrap_lines=True, height=520)
    with right:
        _ui.show_after_deploy(after)
        _form(sid, after)
    _add_to_dataset(sid)


def render() -> None:
    st.title("Review")
    session_id = _ui.param("id")
    if session_id is not None:
        _ui.link("review", "The review queue")
        _one(session_id)
        return
    _ui.draw(_queue_list(), _agreement_view(), _trends_view())


_ui.guarded(render)
