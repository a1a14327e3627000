"""``flightrec detect`` (run the detectors over the store's history, deliver new alerts to sinks) and
``flightrec alerts`` (list, show, acknowledge, resolve).

``flightrec detect`` exits 2 when an alert could not be delivered to a sink, after one line per
failed sink; like every command, it prints a user's error as one line, without a traceback.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import click

import tracer
from tracer.cli import EXIT_ERROR, actor_option, db_option, hint, json_option, output_width

from ._config import config_yaml
from ._detect import detect, load_config, parse_duration
from ._scope import Scope
from ._sinks import Dispatcher, parse_route, sink_from_spec

# A command-line run waits for its alerts, so it retries briefly: a refused connection or a 5xx
# gets 3 attempts, 0.25-0.5 s and 0.5-1 s apart; the whole wait (a receiver that never answers
# takes 5 s an attempt) is cut at _DELIVERY_WAIT_S. A long-running serve keeps the patient defaults.
_DELIVERY_RETRIES = 2
_DELIVERY_BACKOFF_S = 0.5
_DELIVERY_MAX_BACKOFF_S = 2.0
_DELIVERY_WAIT_S = 20.0
_retry_sleep: Callable[[float], None] | None = None
"""The dispatcher's wait between retries; None waits for real. Tests record the waits instead."""


@click.command("detect")
@click.option("--since", metavar="DURATION", help="Only sessions that ended in the last DURATION (30m, 24h, 7d).")
@click.option("--origin", "origins", multiple=True, type=click.Choice([*tracer.ORIGINS, "all"]),
              help="Sessions of this origin (repeatable; default production): eval trials, replays and forks "
                   "are judged, against baselines of their own origins, only when asked for.")
@click.option("--config", "config_path", metavar="FILE", help="Detector thresholds (YAML); see --print-config.")
@click.option("--print-config", is_flag=True, help="Print the default thresholds as YAML and exit.")
@click.option("--sink", "sinks", multiple=True, metavar="SPEC",
              help="Deliver new alerts: console, log, jsonl:PATH, webhook:URL or slack:URL (repeatable); "
                   "exit 2 if a sink could not take them.")
@click.option("--route", "routes", multiple=True, metavar="SINK=SEVERITY",
              help="Send a sink only alerts of at least this severity, e.g. webhook=critical (repeatable).")
@db_option
@json_option
def detect_cmd(since: str | None, origins: tuple[str, ...], config_path: str | None, print_config: bool,
               sinks: tuple[str, ...], routes: tuple[str, ...], db: str | None, as_json: bool) -> None:
    """Run the detectors over the store's history; alerts are deduplicated, so a re-run is safe."""
    if print_config:
        click.echo(config_yaml(), nl=False)
        return
    config = load_config(config_path)
    scope = Scope(since_ns=time.time_ns() - int(parse_duration(since) * 1e9) if since else 0,
                  origins=None if "all" in origins else tuple(dict.fromkeys(origins)) or Scope.origins)
    dispatcher = Dispatcher([sink_from_spec(s) for s in sinks], routes=dict(parse_route(r) for r in routes),
                            retries=_DELIVERY_RETRIES, backoff_s=_DELIVERY_BACKOFF_S,
                            max_backoff_s=_DELIVERY_MAX_BACKOFF_S, sleep=_retry_sleep) if sinks else None
    problems: list[str] = []
    try:
        with tracer.Store(db) as store:
            result = detect(store, scope=scope, config=config)
        if dispatcher is not None:
            dispatcher.publish(result.alerts)
    finally:
        if dispatcher is not None:
            dispatcher.close(_DELIVERY_WAIT_S)
            problems = [p for stats in dispatcher.stats().values() if (p := stats.problem)]
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        of = "" if scope.origins is None else f" ({', '.join(scope.origins)})"
        click.echo(f"looked at {result.sessions} sessions{of} in {result.seconds:.2f} s: {result.findings} findings; "
                   f"{len(result.alerts)} alerts new or seen again (all of them: {hint('alerts', 'list', db=db)})")
        for a in result.alerts:
            click.echo(_alert_line(a))
    if problems:
        for problem in problems:
            click.echo(f"error: {problem}", err=True)
        # A re-run does not send them again (they are no longer new), so say where they are.
        click.echo(f"The alerts are stored all the same: `{hint('alerts', 'list', db=db)}` shows them.", err=True)
        sys.exit(EXIT_ERROR)


def _alert_line(a: tracer.AlertRecord) -> str:
    line = f"{a.alert_id}  {a.severity:<8} {a.status:<6} ×{a.count:<3} {a.detector:<23} {a.route or '-'}: {a.title}"
    return line if len(line) <= output_width() else line[:output_width() - 1] + "…"


@click.group("alerts")
def alerts() -> None:
    """Alerts raised by the detectors: list, show, acknowledge, resolve."""


@alerts.command("list")
@click.option("--status", type=click.Choice(["open", "acknowledged", "resolved"]), help="Only alerts in this state.")
@click.option("--severity", type=click.Choice(["info", "warning", "critical"]), help="Only this severity.")
@click.option("--session", "session_id", metavar="ID", help="Only alerts seen in this session.")
@click.option("--limit", type=int, default=50, show_default=True)
@db_option
@json_option
def alerts_list(status: str | None, severity: str | None, session_id: str | None, limit: int, db: str | None,
                as_json: bool) -> None:
    """Alerts, most recently seen first."""
    with tracer.connect(db) as store:
        found = store.alerts(status=status, severity=severity, session_id=session_id, limit=limit)
    if as_json:
        click.echo(json.dumps([a.model_dump() for a in found], indent=2))
    elif not found:
        click.echo(f"No alerts. Run the detectors with `{hint('detect', db=db)}`.")
    else:
        for a in found:
            click.echo(_alert_line(a))


@alerts.command("show")
@click.argument("alert_id")
@db_option
@json_option
def alerts_show(alert_id: str, db: str | None, as_json: bool) -> None:
    """One alert with its evidence."""
    with tracer.connect(db) as store:
        a = store.get_alert(alert_id)
    if as_json:
        click.echo(a.model_dump_json(indent=2))
        return
    click.echo("\n".join([
        f"alert     {a.alert_id} · {a.severity} · {a.status} · {a.detector} ({a.family})",
        f"ack/fix   {hint('alerts', 'ack', a.alert_id, db=db)} · {hint('alerts', 'resolve', a.alert_id, db=db)}",
        f"what      {a.title}",
        f"where     agent {a.agent or '-'} · route {a.route or '-'}",
        f"seen      {a.count}× · first {_when(a.first_seen_ns)} · last {_when(a.last_seen_ns)}",
        f"session   {a.session_id or '-'}" + (f" · turns {', '.join(map(str, a.turns))}" if a.turns else ""),
        f"open it   {hint('traces', 'show', a.session_id, db=db)}" if a.session_id else "",
        # A route's alert (score.drop) points at several sessions, none of them the alert's own.
        f"sessions  {', '.join(a.session_ids)} (newest last)" if a.session_ids and not a.session_id else "",
        "evidence",
        json.dumps(a.evidence, indent=2, ensure_ascii=False, default=str),
    ]).replace("\n\n", "\n"))


def _when(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _set_status(alert_id: str, status: str, db: str | None, actor: str | None) -> None:
    with tracer.connect(db, read_only=False) as store:
        a = store.set_alert_status(alert_id, status, actor=actor, via="cli")
    click.echo(f"{a.alert_id} {status}: {a.title}")


@alerts.command("ack")
@click.argument("alert_id")
@db_option
@actor_option
def alerts_ack(alert_id: str, db: str | None, actor: str | None) -> None:
    """Acknowledge an alert (someone is on it)."""
    _set_status(alert_id, "acknowledged", db, actor)


@alerts.command("resolve")
@click.argument("alert_id")
@db_option
@actor_option
def alerts_resolve(alert_id: str, db: str | None, actor: str | None) -> None:
    """Resolve an alert; it reopens if it is seen again."""
    _set_status(alert_id, "resolved", db, actor)
