"""The ``flightrec`` command line.

Each package adds its command group through the ``flightrec.commands`` entry-point group, so
this module never imports the packages that build on the tracer. Errors that a user can cause
are printed as one line, without a traceback, and exit with status 2.
"""

from __future__ import annotations

import ast
import dataclasses
import errno
import json
import os
import shlex
import shutil
import socket
import sys
import time
from datetime import datetime, timezone
from importlib.metadata import EntryPoint, entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

from ._audit import AUDIT_ACTIONS, AuditAction
from ._connect import ServedStore, connect
from ._errors import ConfigError, FlightrecError, StoreError
from ._lake import is_lake
from ._recorder import __version__
from ._records import PruneResult
from ._render import audit_table, session_account, sessions_table
from ._retention import compact, parse_duration
from ._store import default_db_path, store_exists

EXIT_ERROR = 2
_MAX_WIDTH = 100
_OTLP_PORT = 4318  # OTLP/HTTP's registered port
_OTLP_GRPC_PORT = 4317  # OTLP/gRPC's
_DASHBOARD_PORT = 8501  # Streamlit's


def db_option(fn: Any) -> Any:
    """The ``--db`` option every command that reads or writes a store takes."""
    return click.option(
        "--db", "db", metavar="PATH", envvar="FLIGHTREC_DB", default=None,
        help="Trace store file (default: $FLIGHTREC_DB or ./flightrec.duckdb).",
    )(fn)


def serve_port_options(fn: Any) -> Any:
    """``--port``, ``--grpc-port`` and ``--dashboard-port``: what ``flightrec serve`` binds, taken
    also by the commands that hand over to it (``flightrec demo``), so both spell them the same."""
    fn = click.option("--dashboard-port", default=_DASHBOARD_PORT, show_default=True, type=click.IntRange(1, 65535),
                      help="Dashboard port.")(fn)
    fn = click.option("--grpc-port", default=_OTLP_GRPC_PORT, show_default=True, type=click.IntRange(0, 65535),
                      help="The collector's OTLP/gRPC port, on the same interface (0 picks a free one).")(fn)
    return click.option("--port", default=_OTLP_PORT, show_default=True, type=click.IntRange(0, 65535),
                        help="The collector's OTLP/HTTP port (0 picks a free one).")(fn)


def check_port_free(host: str, port: int, option: str) -> None:
    """Fails with a one-line ``ConfigError`` naming ``option`` when ``host:port`` cannot be bound,
    so that a server fails in the terminal before anything starts, rather than with a traceback
    (the collector) or a log line (Streamlit) after a minute of work (the demo).

    Port 0 (any free port) always passes. The port is bound and released at once, so another
    process may still take it before the server binds it; the server's own error then shows.
    A host that is not this machine's (a mistyped address or name) fails here too.
    """
    if port == 0:
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As the servers do: a port whose last connection lingers in TIME_WAIT is free to them.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            why = exc.strerror.lower() if exc.strerror else str(exc)
            if isinstance(exc, socket.gaierror) or exc.errno == errno.EADDRNOTAVAIL:
                raise ConfigError(f"cannot listen on {host}:{port} ({why}): {host} is not an address of this machine; "
                                  "bind to one of its own, 127.0.0.1 (this machine only) or 0.0.0.0 (all).") from None
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            raise ConfigError(f"cannot listen on {host}:{port} ({why}): pass {option} with a free port.") from None


def actor_option(fn: Any) -> Any:
    """The ``--actor`` option every command the audit log records takes (``tracer._audit.actor_name``)."""
    return click.option(
        "--actor", metavar="NAME", envvar="FLIGHTREC_ACTOR", default=None,
        help="Who is acting, for the audit log (default: $FLIGHTREC_ACTOR, else your OS user name).",
    )(fn)


class Duration(click.ParamType):
    """A duration such as ``30d`` or ``12h`` (``_retention.parse_duration``), in nanoseconds."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ConfigError as exc:
            self.fail(str(exc), param, ctx)


DURATION = Duration()


def json_option(fn: Any) -> Any:
    """The ``--json`` flag of every command that can print its result as JSON (``as_json``)."""
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")(fn)


def command_name() -> str:
    """How to call this command again, for the hints printed after a run: ``flightrec`` when it
    is on PATH, else the path it was run by (``.venv/bin/flightrec`` after ``make demo``)."""
    argv0 = sys.argv[0] if sys.argv and sys.argv[0] else "flightrec"
    found = shutil.which("flightrec")
    if found and os.path.realpath(found) == os.path.realpath(argv0):
        return "flightrec"
    if os.path.basename(argv0) != "flightrec":
        return "flightrec"
    relative = os.path.relpath(argv0)
    return relative if not relative.startswith("..") else os.path.abspath(argv0)


def hint(*words: str, db: str | None = None) -> str:
    """A command to print as a hint, that runs as printed: this binary as it was run, the words, and
    ``--db`` when the user named a store on the command line (so the hint reaches the same file).
    A store named by ``$FLIGHTREC_DB`` is left out: the variable reaches the next command too."""
    ctx = click.get_current_context(silent=True)
    typed = ctx is None or ctx.get_parameter_source("db") in (None, click.core.ParameterSource.COMMANDLINE)
    return " ".join([command_name(), *words, *(("--db", shlex.quote(db)) if db and typed else ())])


def output_width() -> int:
    return min(shutil.get_terminal_size((_MAX_WIDTH, 24)).columns, _MAX_WIDTH)


class _Root(click.Group):
    """Loads the command groups of installed packages, and turns our errors into one-line messages."""

    @staticmethod
    def _plugins() -> dict[str, Any]:
        return {ep.name: ep for ep in entry_points(group="flightrec.commands")}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._plugins()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        # Only the command asked for is imported: some packages (anthropic) are slow to import.
        command = super().get_command(ctx, name)
        if command is None and (ep := self._plugins().get(name)) is not None:
            command = ep.load()
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click's own version loads every command for its one-line help, which imports anthropic,
        # streamlit and pandas and made `flightrec --help` take seconds. The line is read from the
        # command's source instead; a command declared in a way this cannot read is loaded.
        plugins = self._plugins()
        commands: list[tuple[str, click.Command]] = []
        for name in self.list_commands(ctx):
            command = self.commands.get(name) or (_declared(plugins[name]) if name in plugins else None)
            command = command or self.get_command(ctx, name)
            if command is not None and not command.hidden:
                commands.append((name, command))
        if commands:
            limit = formatter.width - 6 - max(len(name) for name, _ in commands)
            with formatter.section("Commands"):
                formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in commands])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FlightrecError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_ERROR)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


_HELP_KEYWORDS = frozenset({"help", "short_help", "hidden", "deprecated"})


def _declared(ep: EntryPoint) -> click.Command | None:
    """A stand-in for the command ``ep`` names, with the help it declares, read from its source
    without importing it; None when the source is not a plain ``@click.command``/``@click.group``
    function with literal help arguments (the caller then loads the real one)."""
    module, _, rest = ep.module.partition(".")
    # A top-level package is found without being imported; `find_spec("pkg.mod")` would import pkg.
    spec = find_spec(module)
    if spec is None or "." in ep.attr:
        return None
    parts = rest.split(".") if rest else []
    roots = list(spec.submodule_search_locations or [])
    candidates = ([Path(spec.origin)] if spec.origin and not parts else
                  [p for root in roots for p in (Path(root, *parts).with_suffix(".py"),
                                                 Path(root, *parts, "__init__.py"))])
    source = next((p for p in candidates if p.suffix == ".py" and p.is_file()), None)
    if source is None:
        return None
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    function = next((node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == ep.attr), None)
    if function is None:
        return None
    for decorator in function.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call is not None else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
            break
    else:
        return None
    attrs: dict[str, Any] = {"help": ast.get_docstring(function)}
    for keyword in call.keywords if call is not None else []:
        if keyword.arg is None:  # **options: what they hold is only known at run time
            return None
        if keyword.arg in _HELP_KEYWORDS:
            if not isinstance(keyword.value, ast.Constant):
                return None
            attrs[keyword.arg] = keyword.value.value
    return click.Command(ep.name, **attrs)


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="flightrec")
def main() -> None:
    """flightrec: a flight recorder for LLM agents.

    Every decision an agent makes is stored as OpenTelemetry spans in a local DuckDB file.
    """


@click.group()
def traces() -> None:
    """List and inspect recorded sessions."""


@traces.command("list")
@db_option
@json_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000), help="Sessions to show.")
@click.option("--offset", default=0, type=click.IntRange(0), help="Skip this many newest sessions.")
@click.option("--agent", default=None, help="Only sessions of this agent.")
def traces_list(db: str | None, as_json: bool, limit: int, offset: int, agent: str | None) -> None:
    """List sessions, newest first."""
    with connect(db) as store:
        rows = store.list_sessions(limit=limit, offset=offset, agent=agent)
        total = store.count_sessions()
    if as_json:
        click.echo("[" + ",".join(r.model_dump_json() for r in rows) + "]")
        return
    if not rows:
        click.echo("No sessions recorded yet. Run an instrumented agent (for example `make demo`) first.")
        return
    click.echo(sessions_table(rows, output_width()))
    shown_to = offset + len(rows)
    if shown_to < total:
        click.echo(f"\n{shown_to - offset} of {total} sessions shown; more with --offset {shown_to}.")
    click.echo(f"Details of one: {hint('traces', 'show', 'SESSION_ID', db=db)} (a unique prefix of 8+ characters "
               "works).")


@traces.command("show")
@click.argument("session_id")
@db_option
@json_option
def traces_show(session_id: str, db: str | None, as_json: bool) -> None:
    """Show a session decision by decision: what the model saw, could pick, picked, why, and the cost."""
    with connect(db) as store:
        account = store.session_account(session_id)
    if as_json:
        click.echo(account.model_dump_json(indent=2))
        return
    click.echo(session_account(account, output_width()))


@click.group()
def audit() -> None:
    """Show the audit log: who acknowledged, resolved, replayed, forked, exported, labelled, pruned or deleted
    what, when, and from where."""


@audit.command("list")
@db_option
@json_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000), help="Entries to show.")
@click.option("--action", type=click.Choice(AUDIT_ACTIONS), default=None, help="Only entries of this action.")
def audit_list(db: str | None, as_json: bool, limit: int, action: str | None) -> None:
    """List audit log entries, newest first."""
    with connect(db) as store:
        entries = store.audit_entries(limit=limit, action=action)
    if as_json:
        click.echo("[" + ",".join(e.model_dump_json() for e in entries) + "]")
        return
    if not entries:
        click.echo(f"No {action + ' ' if action else ''}entries in the audit log yet. Acknowledging or resolving an "
                   "alert, labelling an eval run, replaying, forking or exporting a session records one.")
        return
    click.echo(audit_table(entries, output_width()))


def _compact_option(fn: Any) -> Any:
    return click.option(
        "--compact", is_flag=True,
        help="Then rewrite the file with its live data only, so that it shrinks and the removed bytes are gone from "
             "it (needs the file to itself: not while serve runs).")(fn)


def _removal(db: str | None, do: Any, *, compacting: bool, actor: str | None, action: AuditAction, target: str,
             detail: dict[str, Any]) -> tuple[PruneResult, tuple[int, int] | None]:
    """Runs ``do(store)`` on the store for writing (through the serve that holds it, if one does),
    records it in the audit log, checkpoints, and compacts the file when asked; returns what went
    and the file's sizes."""
    path = default_db_path(db)
    if compacting and is_lake(path):
        raise ConfigError("--compact rewrites a DuckDB file; a lake's files are rewritten by `flightrec maintain`. "
                          "Run without --compact, then `flightrec maintain`.")
    if not store_exists(path):  # opening it for writing would make an empty store
        raise StoreError(f"no trace store at {path}: nothing to remove. Point --db / FLIGHTREC_DB at an existing "
                         "file.")
    with connect(db, read_only=False) as store:
        if compacting and isinstance(store, ServedStore):
            raise ConfigError(
                f"--compact rewrites {store.path}, which `flightrec serve` (PID {store.holder.pid}) holds. Run "
                "without --compact (serve then removes the data, and reuses the space it held), or stop serve "
                "and run this again.")
        result = do(store)
        store.audit(actor, action, target, {**detail, "sessions": result.sessions}, via="cli")
        store.checkpoint()
    sizes = compact(path) if compacting else None
    return result, sizes


def _report(result: PruneResult, sizes: tuple[int, int] | None, what: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps({**result.model_dump(), "file_bytes_before": sizes and sizes[0],
                               "file_bytes_after": sizes and sizes[1]}))
        return
    content = result.content_only
    rows = ((result.spans, "span's events" if content else "span"),
            (result.turns, "turn's events" if content else "turn"), (result.llm_calls, "LLM call"),
            (result.tool_calls, "tool call"), (result.chain_nodes, "message chain node"),
            (result.content, "content body"))
    counts = ", ".join(_counted(n, label) for n, label in rows if n)
    click.echo(f"{what}: {counts or 'no rows'}.")
    if content:
        click.echo("Their tokens, costs and decisions stay; replay reports their calls as pruned.")
    notes = [(result.eval_results, "eval result", "unlinked (kept, without its session)"),
             (result.alerts_changed, "alert",
              "lost evidence that came from them" if content else "stopped citing them"),
             (result.alerts_deleted, "alert", "deleted (observed in these sessions alone)")]
    for n, noun, note in notes:
        if n:
            click.echo(f"{_counted(n, noun)} {note}.")
    _report_sizes(sizes)


def _counted(n: int, noun: str) -> str:
    """``1 LLM call``, ``2 LLM calls``, ``3 span's events`` → ``3 spans' events``."""
    if n == 1:
        return f"1 {noun}"
    plural = noun.replace("'s ", "s' ") if "'s " in noun else noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{n:,} {plural}"


def _report_sizes(sizes: tuple[int, int] | None) -> None:
    if sizes:
        click.echo(f"Compacted the file: {sizes[0] / 1e6:,.1f} MB -> {sizes[1] / 1e6:,.1f} MB.")
    else:
        click.echo("The space it held is reused for new data; the file keeps its size (--compact shrinks it).")


@click.command("prune")
@click.option("--older-than", "older_than", type=DURATION, required=True, metavar="DURATION",
              help="Remove sessions whose last span ended longer ago than this: 30d, 12h, 90m, 2w.")
@click.option("--content-only", is_flag=True,
              help="Remove only their content (messages, request and response bodies, tool arguments and results, "
                   "reasoning); keep tokens, costs, decisions and spans for trends.")
@_compact_option
@db_option
@json_option
@actor_option
def prune(older_than: int, content_only: bool, compact: bool, db: str | None, as_json: bool, actor: str | None) -> None:
    """Remove old sessions, or only their content, keeping the store consistent (retention).

    Works a batch of sessions at a time, so that a running `flightrec serve`, which makes the
    removal itself, keeps taking spans in between."""
    before_ns = time.time_ns() - older_than

    def steps(store: Any) -> PruneResult:
        total = PruneResult(content_only=content_only)
        while True:
            total = total.plus(store.prune_step(before_ns, content_only=content_only))
            if not total.more:
                return total

    result, sizes = _removal(db, steps, compacting=compact, actor=actor, action="prune", target="store",
                             detail={"older_than_s": older_than // 1_000_000_000, "content_only": content_only})
    cutoff = datetime.fromtimestamp(before_ns / 1e9, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if not result.sessions and not as_json:
        click.echo(f"Nothing to prune: no session{' with content' if content_only else ''} ended before {cutoff}.")
        if sizes:
            _report_sizes(sizes)
        return
    sessions = _counted(result.sessions, "session")
    what = (f"Removed the content of {sessions}" if content_only else f"Removed {sessions}") + \
        f" that ended before {cutoff}"
    _report(result, sizes, what, as_json)


@click.command("maintain")
@db_option
@json_option
@click.option("--keep-snapshots", "keep", type=DURATION, default="1d", show_default=True, metavar="DURATION",
              help="Keep the lake's snapshots (and their files) this long, for readers that are still on them.")
def maintain(db: str | None, as_json: bool, keep: int) -> None:
    """Maintain a lake (--db ducklake:…): roll up session deltas, remove duplicate content, merge
    small files, expire old snapshots. Run one, on a schedule (every few minutes to an hour);
    collectors keep writing meanwhile."""
    from ._store import Store

    with Store(default_db_path(db)) as store:
        done = store.maintain_lake(keep_snapshots_s=keep / 1e9)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(done)))
        return
    deltas = _counted(done.session_deltas_removed, "delta")
    click.echo(f"Rolled up {_counted(done.sessions_rolled_up, 'session')} ({deltas} into one each); removed "
               f"{done.content_duplicates_removed} duplicate content rows and {done.chain_duplicates_removed} "
               f"duplicate chain nodes; files {done.files_before} → {done.files_after}.")


@click.command("outcome")
@click.argument("session_id")
@click.option("--resolved/--unresolved", default=None, help="Whether the customer's problem was solved.")
@click.option("--score", type=click.FloatRange(0, 1), default=None, help="A rating from 0 to 1.")
@click.option("--note", default=None, help="Why, or a ticket id.")
@db_option
@json_option
@actor_option
def outcome(session_id: str, resolved: bool | None, score: float | None, note: str | None, db: str | None,
            as_json: bool, actor: str | None) -> None:
    """Record what became of a session after the fact (the newest outcome counts): the Overview's
    resolution rate, beside its completion rate, is the share of sessions with an outcome that were resolved."""
    if resolved is None and score is None:
        raise click.UsageError("give --resolved or --unresolved, or --score (or both).")
    with connect(db, read_only=False) as store:
        record = store.record_outcome(session_id, resolved=resolved, score=score, note=note, actor=actor, via="cli")
    if as_json:
        click.echo(record.model_dump_json())
        return
    said = {True: "resolved", False: "unresolved", None: "no resolution"}[record.resolved]
    rated = "" if record.score is None else f", score {record.score:g}"
    click.echo(f"Session {record.session_id}: {said}{rated}, recorded by {record.actor}.")


@click.group()
def lake() -> None:
    """Scale out: move a file store into a lake (DuckLake on PostgreSQL and shared storage)."""


@lake.command("import")
@click.argument("file", type=click.Path(dir_okay=False))
@db_option
@json_option
def lake_import(file: str, db: str | None, as_json: bool) -> None:
    """Copy the file store FILE into the lake --db (ducklake:…). Idempotent and resumable: run it
    again to go on after a stop, or to copy what FILE gained since."""
    from ._store import Store

    def progress(done: int, total: int) -> None:
        if not as_json:
            click.echo(f"  {done:,}/{total:,} sessions", err=True)

    with Store(default_db_path(db)) as store:
        result = store.import_file(file, progress=progress)
    if as_json:
        click.echo(json.dumps(dataclasses.asdict(result)))
        return
    copied = ", ".join(f"{n:,} {table}" for table, n in (result.rows or {}).items() if n) or "nothing new"
    click.echo(f"Imported {_counted(result.sessions, 'session')} from {file}: {copied}.")


@click.command("delete")
@click.option("--session", "session_id", required=True, metavar="ID",
              help="The session's full id (`flightrec traces list` shows them).")
@_compact_option
@db_option
@json_option
@actor_option
def delete(session_id: str, compact: bool, db: str | None, as_json: bool, actor: str | None) -> None:
    """Delete one session entirely, on request (a person's data): its spans, calls, content only it
    used, and its links from eval results and alerts."""
    result, sizes = _removal(db, lambda store: store.delete_session(session_id), compacting=compact, actor=actor,
                             action="delete", target=session_id, detail={})
    _report(result, sizes, f"Deleted session {session_id}", as_json)
    if not sizes and not as_json:
        click.echo("Until that space is reused, the file may still hold the deleted bytes: --compact rewrites it "
                   "without them.")
