"""Approvals: the actions agents hold for a person (a refund above the threshold, an e-mail to an address
not on record), oldest first, and each one (``?id=SESSION``) with an approve and a reject button.

The decision is carried out by the session's own agent, through the ``decide`` part of its registration
(``replay.AgentRegistration``): the dashboard never imports an agent. The agent carries the session on,
and its spans are recorded as any run's are (sent to serve's collector under ``flightrec serve``); the
audit log records who decided, as ``flightrec agent approve|reject --actor`` does."""

import json
import time

import pandas as pd
import streamlit as st

import replay
import tracer
from dashboard import _html, _ui

_PAGE_SIZE = 50  # every row is drawn on each load (_html.table)


@_ui.cached
def _pending() -> pd.DataFrame:
    """The production sessions waiting for a person's decision, oldest first, with what each waits on. An eval
    trial's, a replay's or a fork's held action is no customer's: it is left to its run, not a lead's queue."""
    asked = tracer.pending_approvals(_ui.source().store(), "s.origin = 'production'")
    return pd.DataFrame({"session_id": [p.session_id for p in asked], "agent": [p.agent for p in asked],
                         "approval": [p.approval_id for p in asked], "what": [p.what for p in asked],
                         "tool": [p.request.get("tool") for p in asked],
                         "requested_at": [p.request.get("requested_at") for p in asked],
                         "deadline": [p.request.get("deadline") for p in asked]})


def _age(since: float | None, now: float) -> str:
    """How long since ``since`` (epoch seconds), as a lead reads a wait: "5 min", "3.2 h", "2.5 d"."""
    if since is None or pd.isna(since):
        return "–"
    return tracer.format_wait(max(now - since, 0.0))  # a clock behind the agent's is no negative wait


def _list(rows: pd.DataFrame) -> None:
    page, pages, shown = _ui.paged_rows(rows, _PAGE_SIZE)
    total = len(rows)
    head = _html.heading(f"Waiting for a decision ({total:,})")
    if shown.empty:
        _ui.draw(head)
        st.info("No action waits for approval. An agent holds one when its policy says a person must decide (the "
                "reference agent: a refund above its threshold, an e-mail to an address not on record).")
        return
    now = time.time()
    cells = [{"waiting": _age(r.requested_at, now), "agent": r.agent or "–", "approval": r.approval or "–",
              "what": r.what or "–", "tool": r.tool or "–",
              "deadline": _ui.when(r.deadline * 1e9) if r.deadline is not None and not pd.isna(r.deadline) else "–",
              "session": r.session_id[:13]} for r in shown.itertuples()]
    _ui.draw(head, _html.note(_ui.matching(total, "actions", (page - 1) * _PAGE_SIZE, len(cells), one="action")
                              + ". Oldest first. Click a row to approve or reject it."),
             _html.table(cells, links=[_ui.url("approvals", id=sid) for sid in shown["session_id"]], wrap=("what",),
                         tips={"waiting": "Since the agent asked.",
                               "what": "The action held, with its amount or recipient.",
                               "deadline": "Past it, the approval expires and the agent goes on as its settings say "
                                           "(a hand-over or a refusal)."}),
             _html.pager("approvals", _ui.here(), page, pages) if pages > 1 else "")


@_ui.cached
def _decisions(session_id: str) -> pd.DataFrame:
    """The audit log's decisions on a session, newest first."""
    return _ui.frame("""SELECT at_ns, actor, action, via, detail FROM audit_log
                        WHERE target = ? AND action IN ('approve', 'reject') ORDER BY at_ns DESC""", [session_id])


def _decide(row: pd.Series, action: replay.ApprovalAction, actor: str, note: str) -> None:
    """Has the session's agent carry out the decision, audits it, and reruns so that the page shows the result."""
    if not actor.strip():
        st.warning("Fill in your name: the audit log records who decided.")
        return
    agent = row["agent"] if not pd.isna(row["agent"]) else None
    registration = replay.registered_agents().get(agent) if agent else None
    if registration is None or registration.decide is None:
        who = f"agent {agent!r}" if agent else "an agent that recorded no name"
        why = "is not registered" if registration is None else "registers no decide hook"
        st.error(f"This session was recorded by {who}, which {why} here, so the dashboard cannot carry out a "
                 f"decision for it. Install the agent's package (its `{replay.GROUP}` entry point, with `decide=`), "
                 "or decide with the agent's own tools.", icon=":material/error:")
        return
    source = _ui.source()
    with source.recording() as recorder:
        decided = registration.decide(db=source.db_path, session_id=row["session_id"],
                                      approval_id=row["approval"] or None, action=action,
                                      note=note.strip() or None, recorder=recorder)
    if decided.expired:
        st.session_state["approvals_done"] = ("warning", (
            f"Approval {decided.approval_id} had passed its deadline, so it expired instead of being "
            f"{action}d; the session went on as its agent's settings say (now **{decided.status}**). Nothing was "
            "recorded as your decision."))
    else:
        with source.writing() as store:
            store.audit(actor.strip(), action, decided.session_id, {"approval_id": decided.approval_id,
                                                                    "note": note.strip() or None}, via="dashboard")
        said = f" The agent told the customer: “{tracer.clip_text(decided.reply, 400)}”" if decided.reply else ""
        st.session_state["approvals_done"] = ("success", (
            f"**{'Approved' if action == 'approve' else 'Rejected'}** {decided.approval_id} as {actor.strip()}, "
            f"recorded in the audit log. The session carried on and is now **{decided.status}**.{said}"))
    st.rerun()


def _one(session_id: str, rows: pd.DataFrame) -> None:
    done = st.session_state.pop("approvals_done", None)
    if done:
        if done[0] == "success":
            st.success(done[1], icon=":material/check:")
        else:
            st.warning(done[1], icon=":material/schedule:")
    match = rows[rows["session_id"].astype(str).str.startswith(session_id)]
    if match.empty:
        status = _ui.frame("SELECT session_id, status, origin FROM sessions WHERE session_id = ?", [session_id])
        if status.empty:
            st.error(f"There is no session `{session_id}` in this store. Pick one from the list.",
                     icon=":material/error:")
            return
        if status["origin"].iloc[0] != "production":
            st.info(f"Session `{session_id}` is not a production session (it is from {status['origin'].iloc[0]}): "
                    "what it holds is its run's, not a person's to decide here.", icon=":material/info:")
        elif not done:
            st.info(f"Session `{session_id}` waits for no approval (it is **{status['status'].iloc[0]}**): it was "
                    "decided or expired, and cannot be decided again.", icon=":material/info:")
        decisions = _decisions(session_id)
        if not decisions.empty:
            st.markdown("**Decisions in the audit log**\n\n" + "".join(
                f"- {r.action} by {r.actor} via {r.via}, {_ui.when(r.at_ns)}"
                + (f": “{json.loads(r.detail).get('note')}”" if json.loads(r.detail).get("note") else "") + "\n"
                for r in decisions.itertuples()))
        _ui.link("session", "Open the session", id=session_id)
        return
    row = match.iloc[0]
    sid = row["session_id"]
    st.subheader(row["what"] if isinstance(row["what"], str) else "An action held for approval")
    st.markdown(f"approval **{row['approval'] or '–'}** · tool **{row['tool'] or '–'}** · agent "
                f"**{row['agent'] or '–'}** · waiting {_age(row['requested_at'], time.time())} · deadline "
                + (_ui.when(row["deadline"] * 1e9) if not pd.isna(row["deadline"]) else "–"))
    _ui.link("session", "Open the session decision by decision", id=sid)
    with st.form(f"approval_form_{sid}", border=True):
        if "approvals_actor" not in st.session_state:
            st.session_state["approvals_actor"] = _ui.actor()
        actor = st.text_input("Your name", key="approvals_actor",
                              help="Who decides, for the audit log. Defaults to $FLIGHTREC_ACTOR of the dashboard's "
                                   "process, else its OS user: the dashboard has no login.")
        note = st.text_area("Reason (optional)", key=f"approvals_note_{sid}", height=80,
                            placeholder="the agent tells the customer a rejection's reason")
        left, right = st.columns(2)
        approve = left.form_submit_button("Approve", type="primary", icon=":material/check:")
        reject = right.form_submit_button("Reject", icon=":material/close:")
    if approve or reject:
        _decide(row, "approve" if approve else "reject", actor, note)


def render() -> None:
    st.title("Approvals")
    rows = _pending()
    session_id = _ui.param("id")
    if session_id is not None:
        _ui.link("approvals", "Every pending approval")
        _one(session_id, rows)
        return
    _list(rows)


_ui.guarded(render)
