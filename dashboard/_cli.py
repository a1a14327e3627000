"""``flightrec dashboard`` and ``flightrec serve`` (the collector and the dashboard in one process)."""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import get_args

import click

from tracer import ContentMode, default_db_path
from tracer.cli import DURATION, check_port_free, db_option, serve_port_options

from ._launch import run


@click.command("dashboard")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to bind. The dashboard has no login: another prints a warning; put a login in front.")
@click.option("--port", default=8501, show_default=True, type=click.IntRange(1, 65535), help="Port.")
def dashboard(db: str | None, host: str, port: int) -> None:
    """Browse a store in the browser: sessions, decisions, replay, evals, alerts and costs.

    The file is opened read-only, so nothing may be writing it; to watch agents live, run
    `flightrec serve` instead, which is the store's writer and serves this dashboard too."""
    check_port_free(host, port, "--port")
    run(default_db_path(db), host=host, port=port, mode="read_only")


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@click.command("serve")
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Collector interface (others need --token).")
@serve_port_options
@click.option("--no-grpc", is_flag=True, help="Serve OTLP/HTTP alone, with no OTLP/gRPC port.")
@click.option("--token", envvar="FLIGHTREC_TOKEN", default=None, metavar="TOKEN",
              help="Bearer token senders must present (required off loopback; default $FLIGHTREC_TOKEN).")
@click.option("--dashboard-host", default="127.0.0.1", show_default=True,
              help="Dashboard interface. It has no login of its own: put it behind one before binding elsewhere.")
@click.option("--no-dashboard", is_flag=True, help="Run the collector alone.")
@click.option("--session-timeout", default=30.0, show_default=True, type=click.FloatRange(min=0), metavar="MINUTES",
              help="Close a session that no span ended after this long with no new span, so that metrics and "
                   "detectors see it (0: never).")
@click.option("--retain", type=DURATION, envvar="FLIGHTREC_RETAIN", default=None, metavar="DURATION",
              help="Remove sessions whose last span ended longer ago than this (30d, 12h …), checked hourly "
                   "(default $FLIGHTREC_RETAIN; none: keep them).")
@click.option("--retain-content", type=DURATION, envvar="FLIGHTREC_RETAIN_CONTENT", default=None, metavar="DURATION",
              help="Remove only the content of sessions older than this, keeping tokens, costs and decisions "
                   "(default $FLIGHTREC_RETAIN_CONTENT; at most --retain).")
@click.option("--content", type=click.Choice(get_args(ContentMode)), default=None,
              help="What of the spans' content to store: full (as sent), redacted (the built-in redactors run "
                   "over every string) or none (metadata only). Default $FLIGHTREC_CONTENT, else flightrec.toml's, "
                   "else full.")
@click.option("--scoring", type=click.Path(dir_okay=False, exists=True), envvar="FLIGHTREC_SCORING", default=None,
              metavar="FILE", help="Score production sessions as they end with this scoring policy (default "
                                   "$FLIGHTREC_SCORING, else flightrec.scoring.yaml here; off without one).")
@click.option("--score-sample", type=click.FloatRange(0, 1), default=None, metavar="RATE",
              help="The share of production sessions scored as they end (overrides the policy's sample; turns "
                   "scoring on with the default policy when no file is given).")
def serve(db: str | None, host: str, port: int, grpc_port: int, no_grpc: bool, token: str | None,
          dashboard_host: str, dashboard_port: int, no_dashboard: bool, session_timeout: float, retain: int | None,
          retain_content: int | None, content: str | None, scoring: str | None, score_sample: float | None) -> None:
    """Run the store's single writer: an OTLP collector (HTTP on /v1/traces, and gRPC) that agents
    in any process or language send traces to, and the dashboard, which shows them as they land.
    Other commands read the file through it meanwhile. Installed packages add to it (the
    detectors run online)."""
    from importlib.metadata import entry_points

    from tracer import content_mode
    from tracer.collector import MAX_RESIDENT_BYTES, Collector, GrpcReceiver, ReadApi, skip_pandas, tune_gc

    content = content_mode(content)  # a bad $FLIGHTREC_CONTENT or flightrec.toml fails before anything starts
    check_port_free(host, port, "--port")
    if not no_grpc:
        check_port_free(host, grpc_port, "--grpc-port")
    if not no_dashboard:
        check_port_free(dashboard_host, dashboard_port, "--dashboard-port")
    db_path = default_db_path(db)
    # The hooks read their settings from the environment (evals._online: the scoring policy), so that a
    # hook of another package needs no option of serve's.
    if scoring:
        os.environ["FLIGHTREC_SCORING"] = scoring
    if score_sample is not None:
        os.environ["FLIGHTREC_SCORE_SAMPLE"] = str(score_sample)
    # A hook that has nothing to do (scoring with no policy) returns None.
    hooks = [h for h in (ep.load()(db_path) for ep in entry_points(group="flightrec.serve_hooks")) if h is not None]

    def ended(session_ids: list[str]) -> None:
        for hook in hooks:
            hook(session_ids)

    # SIGTERM (systemd, docker stop, kill) stops serve as Ctrl-C does: the queued spans are
    # written and the holder file is removed. In dashboard mode Streamlit installs its own.
    signal.signal(signal.SIGTERM, _stop)
    tune_gc()
    if no_dashboard:  # the dashboard imports pandas, and pyarrow's conversions of pandas frames need it known
        skip_pandas()
    # The process's memory bounds requests only when it is the collector's alone: with the dashboard,
    # what its pages hold would throttle the agents' spans (benchmarks/RESULTS.md §39).
    collector = Collector(db_path, host=host, port=port, token=token,
                          max_resident_bytes=MAX_RESIDENT_BYTES if no_dashboard else None,
                          on_sessions_ended=ended if hooks else None,
                          session_timeout_s=session_timeout * 60 or None, retain_s=retain and retain / 1e9,
                          retain_content_s=retain_content and retain_content / 1e9, content=content)
    receiver = None if no_grpc else GrpcReceiver(collector, host=host, port=grpc_port).start()
    # Other commands read the file through it; those that remove data hand that to the writer.
    # A lake has no single writer to go through: every command opens it itself.
    read_api = None if collector.store.lake else ReadApi(db_path, collector_url=collector.url,
                                                         maintain=collector.maintain).start()
    over_grpc = "" if receiver is None else f", OTLP/gRPC on {receiver.url}"
    click.echo(f"flightrec collector on {collector.url}/v1/traces{over_grpc}, writing {collector.store.shown} with "
               f"content mode {collector.policy.mode} (Ctrl-C to stop)")
    click.echo(f"send traces: OTEL_EXPORTER_OTLP_ENDPOINT={collector.url} (any OpenTelemetry SDK), or "
               f"tracer.configure(endpoint=\"{collector.url}\")")
    if receiver is not None:
        click.echo(f"or over gRPC: OTEL_EXPORTER_OTLP_PROTOCOL=grpc OTEL_EXPORTER_OTLP_ENDPOINT={receiver.url}")

    def serve_then_stop() -> None:  # beside the dashboard: a collector that stops on its own stops Streamlit too
        collector.serve_forever()
        if collector.fatal is not None:
            os.kill(os.getpid(), signal.SIGTERM)

    try:
        if no_dashboard:
            collector.serve_forever()
        else:
            threading.Thread(target=serve_then_stop, name="flightrec-collector", daemon=True).start()
            if token:  # the dashboard's own agent runs (an approval's decision) send to the collector with it
                os.environ["FLIGHTREC_TOKEN"] = token
            run(db_path, host=dashboard_host, port=dashboard_port, mode="read_only" if read_api is None else "shared",
                collector=collector.url)
    except KeyboardInterrupt:
        pass
    finally:
        if receiver is not None:  # its requests under way are answered while the writer still runs
            receiver.close()
        if read_api is not None:
            read_api.close()
        collector.close()
        for hook in hooks:
            getattr(hook, "close", lambda: None)()
    if collector.fatal is not None:  # for a supervisor to start it again: the next open replays the log
        raise click.ClickException(f"{collector.fatal}. Start flightrec serve again: every acknowledged span is in "
                                   "the store's log, which the next start replays.")
