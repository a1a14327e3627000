"""The ``flightrec`` command line.

Each package adds its command group through the ``flightrec.commands`` entry-point group, so
this module never imports the packages that build on the tracer. Errors that a user can cause
are printed as one line, without a traceback, and exit with status 2.
"""

from __future__ import annotations

import ast
import errno
import os
import shlex
import shutil
import socket
import sys
from importlib.metadata import EntryPoint, entry_points
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import click

from ._audit import AUDIT_ACTIONS
from ._connect import connect
from ._errors import ConfigError, FlightrecError
from ._recorder import __version__
from ._render import audit_table, session_account, sessions_table

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


def json_option(fn: Any) -> Any:
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
