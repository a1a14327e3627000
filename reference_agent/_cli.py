"""The reference agent's commands: ``flightrec agent …``, ``flightrec sim serve`` and ``flightrec demo``.

They plug into the ``flightrec`` command through the ``flightrec.commands`` entry points, so
the tracer never imports this package. Errors follow the tracer's convention: one line, exit 2
(the root command maps every ``FlightrecError``, and this package's errors are ones).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

import tracer
from tracer.cli import actor_option, check_port_free, command_name, db_option, hint, json_option, serve_port_options

from ._agent import Agent, AgentConfig, SessionOutcome
from ._demo import DEFAULT_SESSIONS, DEFAULT_WORKERS, DemoReport, run_demo
from ._errors import WorldError
from ._policy import MISBEHAVIOURS
from ._scenarios import SCENARIOS, get_scenario
from ._sim import DEFAULT_MODEL, SimServer, sim_options
from ._tools import ToolOutcome
from ._world import World, default_world_path

_FAULT_HELP = ("Inject a model API fault: KIND[:MS][@CALL][xTIMES] or KIND[:MS]%PERCENT, KIND one of 429, 500, 529, "
               "timeout, latency, with /MODEL to hit one model only (e.g. 529@1x2, 429%5, 529@1x9/claude-sonnet-4-5). "
               "Repeatable.")


def world_option(fn: Any) -> Any:
    """The ``--world`` option: the agent's business data and checkpoints."""
    return click.option(
        "--world", "world_path", metavar="PATH", envvar="FLIGHTREC_WORLD", default=None,
        help="World file: business data and checkpoints (default: next to the trace store, NAME.world.sqlite).",
    )(fn)


def _world_path(db: str | None, world_path: str | None) -> str:
    return world_path or default_world_path(tracer.default_db_path(db))


@contextmanager
def _agent(db: str | None, world_path: str | None, **options: Any) -> Iterator[Agent]:
    """An agent on the given stores; the recorder is flushed and the world closed afterwards."""
    # The recorder would drop the whole trace of a store another process holds (tracing never
    # breaks an agent); a command can still refuse to start, with a message naming the holder.
    tracer.Store(db).close()
    recorder = tracer.Recorder(db)
    try:
        with World(_world_path(db, world_path)) as world:
            yield Agent(world, recorder, **options)
    finally:
        recorder.shutdown()
        if recorder.stats.dropped:
            click.echo(f"warning: {recorder.stats.dropped} trace spans could not be written to "
                       f"{recorder.db_path}; the session itself is intact in the world file.", err=True)


def _print(out: SessionOutcome, as_json: bool, db: str | None) -> None:
    if as_json:
        click.echo(out.model_dump_json(indent=2))
        return
    sid = out.session_id
    if out.approval_expired:
        click.echo(f"note: approval {out.approval_expired} had passed its deadline, so it expired instead of taking "
                   "a decision; the session went on as its on_approval_timeout setting says.", err=True)
    click.echo(f"session  {sid}" + (f"  ({out.scenario}, seed {out.seed})" if out.scenario else ""))
    click.echo(f"status   {out.status}" + (f": {out.reason}" if out.reason and out.status != "ok" else ""))
    click.echo(f"work     {out.turns} turns, {out.tool_calls} tool calls ({', '.join(out.tools_called) or 'none'}), "
               f"{out.tokens:,} tokens")
    for g in out.guards:
        click.echo(f"guard    {g.guard}: {g.reason}")
    if out.reply:
        click.echo(f"reply    {out.reply}")
    if out.status == "waiting_human":
        click.echo(f"next     {hint('agent', 'approve', sid, db=db)}   (or: "
                   f"{hint('agent', 'reject', sid, '--note', 'WHY', db=db)})")
    elif out.status in ("running", "error"):
        click.echo(f"next     {hint('agent', 'resume', sid, db=db)}")
    click.echo(f"trace    {hint('traces', 'show', sid, db=db)}")


# -- flightrec agent --------------------------------------------------------------------------------


@click.group()
def agent() -> None:
    """Run the reference customer-support agent, and drive its sessions (resume, approve, reject, say)."""


@agent.command("run")
@click.option("--scenario", "scenario_name", required=True, metavar="NAME",
              help="A bundled scenario (see `flightrec agent scenarios`).")
@click.option("--seed", default=0, show_default=True, type=int, help="The simulated model's seed.")
@click.option("--model", default=None, metavar="MODEL",
              help=f"Model name. With ANTHROPIC_API_KEY set, the real API answers; otherwise the simulator "
                   f"answers under that name. Default: the simulator as {DEFAULT_MODEL}.")
@db_option
@world_option
@click.option("--misbehave", multiple=True, type=click.Choice(list(MISBEHAVIOURS)),
              help="Make the simulated model misbehave (replaces the scenario's default). Repeatable.")
@click.option("--fault", "faults", multiple=True, metavar="SPEC", help=_FAULT_HELP)
@click.option("--sim-url", default=None, envvar="FLIGHTREC_SIM_URL", metavar="URL",
              help="Talk to a running `flightrec sim serve` instead of the in-process simulator.")
@click.option("--max-tool-calls", type=click.IntRange(1), default=None, help="Guard: tool calls per session (25).")
@click.option("--time-limit", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Guard: wall-clock seconds per session (120).")
@click.option("--token-budget", type=click.IntRange(1), default=None, help="Guard: tokens per session (150000).")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Seconds the client waits for each model call attempt (60). Over --sim-url, a timeout fault "
                   "stalls past it.")
@click.option("--approval-timeout", type=click.FloatRange(min=0, min_open=True), default=None, metavar="SECONDS",
              help="Seconds a held refund or e-mail waits for a human before it expires (86400).")
@click.option("--on-approval-timeout", type=click.Choice(["escalate", "refuse"]), default=None,
              help="What an expired approval turns into: a hand-over to a colleague, or a refusal (escalate).")
@click.option("--stream", is_flag=True, help="Stream the model's replies.")
@click.option("--fallback-model", default=None, metavar="MODEL",
              help="Switch to this model when --model stays overloaded (529) or times out past the retries.")
@click.option("--context-window", type=click.IntRange(1), default=None,
              help="The model's context window in tokens (default: from the price table); the agent warns at 70% "
                   "and compacts the conversation at 85%.")
@click.option("--crash-after", default=None, metavar="TOOL", hidden=True,
              help="Kill this process right after TOOL's side effect, before it is checkpointed (crash drills).")
@json_option
def agent_run(scenario_name: str, seed: int, model: str | None, db: str | None, world_path: str | None,
              misbehave: tuple[str, ...], faults: tuple[str, ...], sim_url: str | None, max_tool_calls: int | None,
              time_limit: float | None, token_budget: int | None, request_timeout: float | None,
              approval_timeout: float | None, on_approval_timeout: str | None, stream: bool,
              fallback_model: str | None, context_window: int | None, crash_after: str | None,
              as_json: bool) -> None:
    """Run one scenario as a new session, until it ends, waits for a human, or a guard stops it."""
    scenario = get_scenario(scenario_name)
    real = bool(model) and bool(os.environ.get("ANTHROPIC_API_KEY"))
    if model and not real:
        click.echo(f"note: ANTHROPIC_API_KEY is not set, so the simulator answers as {model}.", err=True)
    # Unset options are left out, so that the scenario's own settings apply.
    options = {"model": model, "fallback_model": fallback_model, "context_window": context_window, "stream": stream,
               "max_tool_calls": max_tool_calls, "time_limit_s": time_limit, "token_budget": token_budget,
               "request_timeout_s": request_timeout, "approval_timeout_s": approval_timeout,
               "on_approval_timeout": on_approval_timeout}
    config = AgentConfig.model_validate({k: v for k, v in options.items() if v is not None})
    if not real:
        sim_options(faults=faults, misbehave=misbehave)  # report a bad spec before anything runs

    def kill(name: str, outcome: ToolOutcome) -> None:
        if name == crash_after and not outcome.is_error and outcome.approval is None:
            session = tracer.current_session()
            click.echo(f"killed after {name}: resume with `flightrec agent resume {session.id if session else '?'}`",
                       err=True)
            # The drill is about resuming from the checkpoint, so the spans so far are written first, however
            # slow the machine (the agent's own flush after a side effect gives up after 2 s).
            a.recorder.flush()
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no checkpoint: a real crash

    with _agent(db, world_path, config=config) as a:
        if crash_after:
            a.after_tool = kill
        out = a.run(scenario, seed=seed, misbehave=misbehave or None, faults=faults or None, sim_url=sim_url,
                    real=real)
    _print(out, as_json, db)


@agent.command("scenarios")
@json_option
def agent_scenarios(as_json: bool) -> None:
    """List the bundled scenarios, one line each."""
    if as_json:
        click.echo("[" + ",".join(s.model_dump_json() for s in SCENARIOS) + "]")
        return
    width = max(len(s.name) for s in SCENARIOS)
    for s in SCENARIOS:
        extras = [f"misbehaves: {', '.join(s.misbehave)}"] if s.misbehave else []
        extras += [f"faults: {' '.join(s.faults)}"] if s.faults else []
        click.echo(f"{s.name:<{width}}  {s.title}" + (f" [{'; '.join(extras)}]" if extras else ""))


@agent.command("resume")
@click.argument("session_id")
@db_option
@world_option
@json_option
def agent_resume(session_id: str, db: str | None, world_path: str | None, as_json: bool) -> None:
    """Carry on an interrupted session (killed, or stopped by a model error) from its last checkpoint."""
    with _agent(db, world_path) as a:
        out = a.resume(session_id)
    _print(out, as_json, db)


@agent.command("approve")
@click.argument("session_id")
@click.option("--note", default=None, help="Why, for the record.")
@db_option
@world_option
@json_option
@actor_option
def agent_approve(session_id: str, note: str | None, db: str | None, world_path: str | None, as_json: bool,
                  actor: str | None) -> None:
    """Approve the refund or e-mail a session waits for; the session carries on (past the deadline it expires)."""
    _decided(session_id, "approve", note, db, world_path, as_json, actor)


def _decided(session_id: str, action: str, note: str | None, db: str | None, world_path: str | None, as_json: bool,
             actor: str | None) -> None:
    """A person's decision, carried out by the agent, then recorded in the audit log with who made it."""
    tracer.actor_name(actor)  # a blank --actor fails before the agent acts
    with _agent(db, world_path) as a:
        approval_id, out = a.decide(session_id, action, note)  # type: ignore[arg-type]
    if not out.approval_expired:
        with tracer.Store(db) as store:
            store.audit(actor, action, out.session_id,  # type: ignore[arg-type]
                        {"approval_id": approval_id, "note": note}, via="cli")
    _print(out, as_json, db)


@agent.command("reject")
@click.argument("session_id")
@click.option("--note", default=None, help="Why; the agent tells the customer.")
@db_option
@world_option
@json_option
@actor_option
def agent_reject(session_id: str, note: str | None, db: str | None, world_path: str | None, as_json: bool,
                 actor: str | None) -> None:
    """Decline the refund or e-mail a session waits for; the session carries on and tells the customer."""
    _decided(session_id, "reject", note, db, world_path, as_json, actor)


@agent.command("expire-approvals")
@db_option
@world_option
@json_option
def agent_expire_approvals(db: str | None, world_path: str | None, as_json: bool) -> None:
    """Expire every approval waiting past its deadline; each such session carries on (escalate or refuse)."""
    with _agent(db, world_path) as a:
        expired = a.expire_approvals()
    if as_json:
        click.echo("[" + ",".join(o.model_dump_json() for o in expired) + "]")
        return
    if not expired:
        click.echo("No approval is past its deadline.")
    for out in expired:
        click.echo(f"{out.session_id}  {out.approval_expired} expired  -> {out.status}, {out.tickets} tickets")


@agent.command("say")
@click.argument("session_id")
@click.argument("text")
@db_option
@world_option
@json_option
def agent_say(session_id: str, text: str, db: str | None, world_path: str | None, as_json: bool) -> None:
    """Continue a finished session with a new customer message."""
    with _agent(db, world_path) as a:
        out = a.say(session_id, text)
    _print(out, as_json, db)


@agent.command("sessions")
@click.option("--status", default=None, help="Only sessions with this status (e.g. waiting_human).")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 10_000))
@db_option
@world_option
@json_option
def agent_sessions(status: str | None, limit: int, db: str | None, world_path: str | None, as_json: bool) -> None:
    """List the agent's sessions by their last checkpoint, newest first."""
    path = _world_path(db, world_path)
    if not os.path.exists(path):
        raise WorldError(f"no world file at {path}. Run a session first (flightrec agent run --scenario "
                         "order_status), or pass the --db / --world it ran with.")
    with World(path) as world:
        rows = world.checkpoints(status=status, limit=limit)
    if as_json:
        click.echo(json.dumps(rows))
        return
    if not rows:
        click.echo("No sessions" + (f" with status {status}." if status else "."))
    for r in rows:
        click.echo(f"{r['session_id']}  {r['status']:<22}  {r['scenario'] or '-':<24}  step {r['step']}")


# -- flightrec sim -----------------------------------------------------------------------------------


@click.group()
def sim() -> None:
    """The simulated Messages API that the reference agent talks to offline."""


@sim.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="Port to listen on (0 picks a free one).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed for requests that do not set one.")
@click.option("--misbehave", multiple=True, type=click.Choice(list(MISBEHAVIOURS)),
              help="Misbehave for requests that do not say. Repeatable.")
@click.option("--fault", "faults", multiple=True, metavar="SPEC", help=_FAULT_HELP)
@click.option("--latency-ms", default=0, show_default=True, type=click.IntRange(0, 60_000),
              help="Delay every response by this much.")
@click.option("--verbose", is_flag=True, help="Log every request.")
def sim_serve(host: str, port: int, seed: int, misbehave: tuple[str, ...], faults: tuple[str, ...],
              latency_ms: int, verbose: bool) -> None:
    """Serve the simulated Messages API over HTTP until interrupted.

    Point any anthropic client at it with base_url; the reference agent takes --sim-url.
    """
    defaults = sim_options(seed=seed, misbehave=misbehave, faults=faults, latency_ms=latency_ms)
    log = (lambda line: click.echo(line, err=True)) if verbose else None
    server = SimServer(host, port, defaults=defaults, log=log)
    click.echo(f"simulated Messages API on {server.url} (Ctrl-C to stop)")
    click.echo(f"try: flightrec agent run --scenario order_status --sim-url {server.url}")
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.close()


# -- flightrec demo ----------------------------------------------------------------------------------


def _summary(r: DemoReport, db: str, world_path: str) -> str:
    def n(x: int) -> str:
        return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x:,}"

    def counts(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    tokens = r.input_tokens + r.cache_read_tokens + r.cache_write_tokens + r.output_tokens
    lines = [
        f"Recorded {r.sessions} sessions in {r.seconds:.1f} s into {db} (world: {world_path}).",
        f"  sessions      {r.sessions}: {counts(r.statuses)}",
        f"                {r.misbehaving} misbehaving, {r.with_faults} with model API faults, "
        f"{r.crashes_resumed} crashed after a refund and resumed",
        f"  turns         {r.turns:,}",
        f"  tool calls    {r.tool_calls:,} ({r.tool_errors:,} failed; the model was told how to recover)",
        f"  tokens        {n(tokens)}: {n(r.input_tokens)} input, {n(r.cache_read_tokens)} cache reads, "
        f"{n(r.cache_write_tokens)} cache writes, {n(r.output_tokens)} output",
        f"  cost          {tracer.format_usd(r.cost_usd)}",
        f"  guards fired  {sum(r.guards.values())}: {counts(r.guards)}",
        f"  failures      {r.llm_errors:,} model call attempts failed and were retried "
        f"(of {r.llm_calls:,}); {r.statuses.get('error', 0)} sessions ended in error; "
        f"{r.duplicate_refunds} duplicated refunds, {r.duplicate_emails} e-mails sent twice"
        + (" (planted: an agent whose idempotency keys are made per turn, resumed after a crash)"
           if r.duplicate_emails else ""),
        f"  approvals     {counts(r.approvals)}",
        f"  exact rebuild {r.calls_verified:,} of {r.calls_stored:,} stored calls rebuild to their recorded hash",
    ]
    if r.dropped_spans:
        lines.append(f"  warning       {r.dropped_spans} spans could not be written")
    prog = command_name()
    lines += ["", f"Next: {prog} traces list --db {db}"]
    if r.approvals.get("waiting"):
        lines.append(f"      {prog} agent sessions --status waiting_human --db {db}   (then approve or reject one)")
    return "\n".join(lines)


def _detect(ctx: click.Context, db_path: str) -> None:
    """The detectors' step of the demo, when they are installed: what the misbehaving sessions raised."""
    detect = ctx.parent.command.get_command(ctx.parent, "detect") if ctx.parent is not None else None  # type: ignore[attr-defined]
    if detect is None:
        return
    click.echo("\nDetectors: loops, cost, steps, context, reliability, safety, tools and approvals over the recorded "
               "sessions")
    detect.main(args=["--db", db_path], prog_name="flightrec detect", standalone_mode=False)
    click.echo(f"Evidence: {command_name()} alerts show ALERT_ID --db {db_path}")


def _after_deploy(ctx: click.Context, db_path: str) -> None:
    """Evaluation after deploy, when evals is installed: customers' feedback on some sessions comes in
    later as outcomes (simulated: resolved when the session ended ok and raised no alert), then the
    online scoring policy scores the sessions, and fills the review queue."""
    group = ctx.parent.command.get_command(ctx.parent, "eval") if ctx.parent is not None else None  # type: ignore[attr-defined]
    score = group.get_command(ctx, "score") if group is not None else None  # type: ignore[attr-defined]
    if score is None:
        return
    with tracer.Store(db_path, read_only=True) as store:
        rows = store.sql("SELECT session_id, status = 'ok' AND session_id NOT IN (SELECT unnest(session_ids) FROM "
                         "alerts) FROM sessions WHERE origin = 'production' AND parent_session_id IS NULL "
                         "ORDER BY session_id")  # a customer answers for the session they talked to, not its sub-agents
    # About two customers in three answer the survey; which ones is fixed by the session id.
    answered = [(sid, ok) for sid, ok in rows if int(tracer.sha256_hex(f"survey:{sid}")[:8], 16) % 3]
    recorder = tracer.Recorder(db_path)  # as the product would: an outcome span, from another process
    for sid, ok in answered:
        recorder.outcome(sid, resolved=bool(ok), source="survey")
    recorder.shutdown()
    resolved = sum(ok for _, ok in answered)
    click.echo(f"\nAfter deploy: {len(answered)} customers answered the survey, {resolved} resolved "
               f"({resolved / max(len(answered), 1):.0%}; `{command_name()} outcome SESSION --resolved` records one)")
    # Every session, where serve would take its policy's sample: 10 sessions a route leave too few to compare.
    score.main(args=["--db", db_path, "--since", "7d", "--all"], prog_name="flightrec eval score",
               standalone_mode=False)


def _gate(ctx: click.Context, db_path: str, seed: int) -> None:
    """The eval step of the demo, when evals is installed: the bundled suite as the baseline, then
    the variant without the refund-confirmation rule, which the gate catches."""
    group = ctx.parent.command.get_command(ctx.parent, "eval") if ctx.parent is not None else None  # type: ignore[attr-defined]
    run = group.get_command(ctx, "run") if group is not None else None  # type: ignore[attr-defined]
    if run is None:
        return
    steps = [("the support suite, stored as the baseline", ["--label", "baseline"]),
             ("a variant without the refund-confirmation rule, gated on the baseline",
              ["--set", "variant=no-refund-confirmation", "--baseline", "baseline"])]
    caught = False
    for i, (what, extra) in enumerate(steps):
        click.echo(f"\nEval {i + 1}/2: {what}")
        try:
            run.main(args=["support", "--db", db_path, "--seed", str(seed + i), *extra], prog_name="flightrec eval run",
                     standalone_mode=False)
        except SystemExit as exc:  # exit 1 is the gate doing its job, which is what the demo shows
            if exc.code != 1:
                raise
            caught = True
    name = command_name()
    click.echo(f"\n{'The gate caught the regression (exit 1 in CI).' if caught else 'The gate did not fire.'} "
               f"In CI: {name} eval run support --baseline baseline --junit junit.xml --report eval.md")


@click.command()
@db_option
@click.option("--sessions", default=DEFAULT_SESSIONS, show_default=True, type=click.IntRange(1, 100_000),
              help="How many sessions to record.")
@click.option("--workers", default=DEFAULT_WORKERS, show_default=True, type=click.IntRange(1, 64),
              help="Sessions run at once.")
@click.option("--seed", default=0, show_default=True, type=int, help="Base seed of the plan.")
@click.option("--no-serve", is_flag=True, help="Do not open the dashboard afterwards.")
@serve_port_options
@click.pass_context
def demo(ctx: click.Context, db: str | None, sessions: int, workers: int, seed: int, no_serve: bool, port: int,
         grpc_port: int, dashboard_port: int) -> None:
    """Record every scenario over several seeds, some misbehaving, and summarise what was recorded."""
    serve = None if no_serve else _serve_command(ctx)
    if serve is not None:  # a port in use is told now, not after the recording
        check_port_free("127.0.0.1", port, "--port")
        check_port_free("127.0.0.1", grpc_port, "--grpc-port")
        check_port_free("127.0.0.1", dashboard_port, "--dashboard-port")
    db_path = tracer.default_db_path(db)
    world_path = default_world_path(db_path)
    click.echo(f"Running {sessions} sessions of {len(SCENARIOS)} scenarios on {workers} threads …", err=True)
    with click.progressbar(length=sessions, label="recording sessions", file=sys.stderr, show_pos=True) as bar:
        report = run_demo(db_path, world_path, sessions=sessions, workers=workers, seed=seed,
                          progress=lambda _out: bar.update(1))
    click.echo(_summary(report, db_path, world_path))
    _detect(ctx, db_path)
    _after_deploy(ctx, db_path)
    _gate(ctx, db_path, seed)
    if no_serve:
        return
    if serve is None:
        click.echo("(The dashboard is not installed in this build; browse with the commands above.)")
        return
    click.echo(f"\nBrowse what was recorded: http://127.0.0.1:{dashboard_port} (the dashboard, served with the "
               f"collector until Ctrl-C; `{command_name()} demo --no-serve` skips this step).\n")
    serve.main(args=["--db", db_path, "--port", str(port), "--grpc-port", str(grpc_port),
                     "--dashboard-port", str(dashboard_port)],
               prog_name="flightrec serve", standalone_mode=False)


def _serve_command(ctx: click.Context) -> click.Command | None:
    """``flightrec serve``, which the demo hands over to, or None without the dashboard."""
    # The dashboard serves the store at the end; until it is installed, the collector alone would
    # only make `make demo` wait forever, so the hand-over keys on the dashboard.
    root = ctx.parent
    if root is None or root.command.get_command(root, "dashboard") is None:  # type: ignore[attr-defined]
        return None
    return root.command.get_command(root, "serve")  # type: ignore[attr-defined]
