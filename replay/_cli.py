"""``flightrec replay``: show, verify, run, fork, diff and rerun recorded decisions.

Loaded through the ``flightrec.commands`` entry point; the root group prints replay's errors
(all ``FlightrecError``) as one line and exits 2.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from tracer import actor_name, connect
from tracer.cli import actor_option, db_option, json_option

from . import _render
from ._audit import audit
from ._diff import diff
from ._edits import load_edits
from ._errors import EditError, ReplayError
from ._fork import fork
from ._reconstruct import reconstruct
from ._records import ContextDiff, DecisionDiff, Edits, SessionDiff
from ._rerun import rerun
from ._run import run

EXIT_FAILED = 1


def _json_arg(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise EditError(f"{what} must be JSON, for example '{{\"role\": \"user\", \"content\": \"hi\"}}'; "
                        f"got {text[:60]!r}.") from None


def edit_options(fn: Any) -> Any:
    """The edit flags that ``run`` and ``fork`` take."""
    options = [
        click.option("--edits", "edits_file", metavar="FILE", help="An edit file (JSON, or YAML with PyYAML)."),
        click.option("--system", metavar="TEXT", help="Replace the whole system prompt."),
        click.option("--system-append", metavar="TEXT", help="Append TEXT to the system prompt."),
        click.option("--system-replace", nargs=2, multiple=True, metavar="OLD NEW",
                     help="Replace OLD with NEW in the system prompt (repeatable)."),
        click.option("--system-remove", multiple=True, metavar="TEXT", help="Remove TEXT from the system prompt."),
        click.option("--drop-message", type=int, multiple=True, metavar="I", help="Leave out message I."),
        click.option("--replace-message", nargs=2, multiple=True, metavar="I JSON",
                     help="Put JSON in place of message I."),
        click.option("--insert-message", nargs=2, multiple=True, metavar="I JSON",
                     help="Insert JSON before message I (I = count appends)."),
        click.option("--tool-result", nargs=2, multiple=True, metavar="TOOL_USE_ID CONTENT",
                     help="Replace the result of that tool call."),
        click.option("--add-tool", multiple=True, metavar="JSON", help="Offer one more tool definition."),
        click.option("--remove-tool", multiple=True, metavar="NAME", help="Stop offering a tool."),
        click.option("--model", metavar="NAME", help="Ask another model."),
        click.option("--temperature", type=float, help="Set the temperature."),
        click.option("--max-tokens", type=int, help="Set max_tokens."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def build_edits(edits_file: str | None, system: str | None, system_append: str | None,
                system_replace: tuple[tuple[str, str], ...], system_remove: tuple[str, ...],
                drop_message: tuple[int, ...], replace_message: tuple[tuple[str, str], ...],
                insert_message: tuple[tuple[str, str], ...], tool_result: tuple[tuple[str, str], ...],
                add_tool: tuple[str, ...], remove_tool: tuple[str, ...], model: str | None,
                temperature: float | None, max_tokens: int | None) -> Edits:
    """The edit file's edits, with the flags' added (a flag's single value wins over the file's)."""
    base = load_edits(edits_file) if edits_file else Edits()

    def index(text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise EditError(f"a message index must be a number, not {text!r}.") from None

    return base.model_copy(update={
        "system": system if system is not None else base.system,
        "system_append": system_append if system_append is not None else base.system_append,
        "system_replace": [*base.system_replace, *system_replace, *((t, "") for t in system_remove)],
        "drop_messages": [*base.drop_messages, *drop_message],
        "replace_messages": {**base.replace_messages,
                             **{index(i): _json_arg(m, "--replace-message") for i, m in replace_message}},
        "insert_messages": [*base.insert_messages, *((index(i), _json_arg(m, "--insert-message"))
                                                     for i, m in insert_message)],
        "tool_results": {**base.tool_results, **dict(tool_result)},
        "add_tools": [*base.add_tools, *(_json_arg(t, "--add-tool") for t in add_tool)],
        "remove_tools": [*base.remove_tools, *remove_tool],
        "model": model if model is not None else base.model,
        "temperature": temperature if temperature is not None else base.temperature,
        "max_tokens": max_tokens if max_tokens is not None else base.max_tokens,
    })


def model_options(fn: Any) -> Any:
    """The options that name the model a re-run asks, and the agent it belongs to."""
    fn = click.option("--agent", "agent", metavar="NAME|MODULE:ATTR", default=None,
                      help="The session's agent: a registered NAME or MODULE:ATTR (default: the one registered under "
                           "the name the session recorded).")(fn)
    fn = click.option("--real", is_flag=True, help="Ask the real Anthropic API (needs ANTHROPIC_API_KEY).")(fn)
    return click.option("--model-url", metavar="URL", envvar="FLIGHTREC_MODEL_URL",
                        help="Ask this Messages-API-compatible endpoint (default: the agent's own model, if it "
                             "registers one).")(fn)


@click.group()
def replay() -> None:
    """Rebuild recorded decisions exactly, re-run them with edits, fork sessions, and diff."""


@replay.command("show")
@click.argument("session_id")
@click.option("--turn", type=click.IntRange(1), required=True, help="The turn (1-based).")
@db_option
@json_option
def show(session_id: str, turn: int, db: str | None, as_json: bool) -> None:
    """Print the exact request of one decision, rebuilt from the store, with its hash (a call recorded by other
    instrumentation: reconstructed from semantic conventions, and marked so)."""
    r = reconstruct(session_id, turn, db=db)
    click.echo(r.model_dump_json(indent=2) if as_json else _render.reconstruction(r))


@replay.command("verify")
@db_option
@json_option
@click.option("--session", "session_id", default=None, help="Only this session.")
def verify(db: str | None, as_json: bool, session_id: str | None) -> None:
    """Rebuild every stored call and check it against its recorded hash (exit 1 if any fails; calls recorded by other
    instrumentation have no hash, and calls whose content retention pruned have no content: both are listed apart)."""
    with connect(db) as store:
        if session_id:
            session_id = store.get_session(session_id).session_id
        result = store.verify_requests(session_id)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        click.echo(f"{result.exact}/{result.total} calls rebuilt exactly")
        for f in result.failures:
            click.echo(f"  {f['session_id']} span {f['span_id']}: {f['reason']}")
        if result.not_rebuildable:
            click.echo(f"{len(result.not_rebuildable)} calls kept no exact request (recorded by other instrumentation, "
                       "or sent with a request body that was not JSON) and have no hash to verify (not failures): "
                       "`flightrec replay show` reconstructs them from what was recorded, without a hash check. "
                       "Why each kept none:")
            for f in result.not_rebuildable:
                click.echo(f"  {f['session_id']} span {f['span_id']}: {f['reason']}")
        if result.pruned:
            days = sorted({f["pruned_on"] for f in result.pruned})
            click.echo(f"{len(result.pruned)} calls pruned: retention removed their content ({', '.join(days)}), "
                       "so they cannot be rebuilt (not failures; their tokens, costs and decisions remain).")
    if result.failures:
        sys.exit(EXIT_FAILED)


@replay.command("run")
@click.argument("session_id")
@click.option("--turn", type=click.IntRange(1), required=True, help="The turn whose decision to re-run.")
@click.option("--trials", type=click.IntRange(1, 1000), default=1, show_default=True, help="Re-runs to make.")
@edit_options
@model_options
@db_option
@json_option
@actor_option
def run_cmd(session_id: str, turn: int, trials: int, model_url: str | None, real: bool, agent: str | None,
            db: str | None, as_json: bool, actor: str | None, **edit_flags: Any) -> None:
    """Re-send one decision's request with edits, record the result as a new linked session, and compare."""
    who = actor_name(actor)
    edits = build_edits(**edit_flags)
    result = run(session_id, turn, edits, trials=trials, db=db, model_url=model_url, real=real, agent=agent)
    with connect(db, read_only=False) as store:
        audit(store, result, actor=who, via="cli")
    click.echo(result.model_dump_json(indent=2) if as_json else _render.run_result(result))


@replay.command("diff")
@click.argument("a")
@click.argument("b")
@click.option("--context", is_flag=True, help="Diff what the model saw (SESSION:TURN twice).")
@db_option
@json_option
def diff_cmd(a: str, b: str, context: bool, db: str | None, as_json: bool) -> None:
    """Compare two decisions (SESSION:TURN) or two sessions (SESSION)."""
    result = diff(a, b, context=context, db=db)
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    elif isinstance(result, DecisionDiff):
        click.echo(_render.decision_diff(result))
    elif isinstance(result, SessionDiff):
        click.echo(_render.session_diff(result))
    else:
        assert isinstance(result, ContextDiff)
        click.echo(_render.context_diff(result))


@replay.command("fork")
@click.argument("session_id")
@click.option("--turn", type=click.IntRange(1), required=True, help="The turn to fork at (its request is edited).")
@click.option("--tools", "tools_mode", type=click.Choice(["live", "recorded"]), default="live", show_default=True,
              help="Tool calls the recording lacks: run them with the agent's own tools, or stop the fork at the "
                   "first one (no agent code runs).")
@click.option("--max-turns", type=click.IntRange(1, 200), default=30, show_default=True, help="Stop after this many.")
@edit_options
@model_options
@db_option
@json_option
@actor_option
def fork_cmd(session_id: str, turn: int, tools_mode: str, max_turns: int, model_url: str | None, real: bool,
             agent: str | None, db: str | None, as_json: bool, actor: str | None, **edit_flags: Any) -> None:
    """Carry a session on from a turn with an edited context, as a new session linked to it."""
    who = actor_name(actor)
    edits = build_edits(**edit_flags)
    result = fork(session_id, turn, edits, tools="live" if tools_mode == "live" else "recorded", agent=agent, db=db,
                  model_url=model_url, real=real, max_turns=max_turns)
    with connect(db, read_only=False) as store:
        audit(store, result, actor=who, via="cli", edits=edits)
    click.echo(result.model_dump_json(indent=2) if as_json else _render.fork_result(result))


@replay.command("rerun")
@click.argument("session_id")
@click.option("--recorded", is_flag=True, help="Serve every model response from the recording (required).")
@click.option("--agent", "agent", metavar="NAME|MODULE:ATTR", default=None,
              help="The session's agent, whose code runs again (default: the one registered under the name the "
                   "session recorded).")
@db_option
@json_option
@actor_option
def rerun_cmd(session_id: str, recorded: bool, agent: str | None, db: str | None, as_json: bool,
              actor: str | None) -> None:
    """Re-execute a session's agent code against the recording and report the first divergence (exit 1)."""
    if not recorded:
        raise ReplayError("rerun needs --recorded: it re-executes the session with the recorded model responses. "
                          "To re-ask the model, use `flightrec replay run` or `fork`.")
    who = actor_name(actor)
    result = rerun(session_id, db=db, agent=agent)
    with connect(db, read_only=False) as store:
        audit(store, result, actor=who, via="cli")
    click.echo(result.model_dump_json(indent=2) if as_json else _render.rerun_result(result))
    if not result.same_path:
        sys.exit(EXIT_FAILED)
