"""Alert delivery: console, log, JSONL and webhook sinks, and a dispatcher that retries off-thread.

Webhooks are posted to a real loopback server; backoff waits go to an injected recorder, never
to real time.
"""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

import tracer
from evals.detectors import (
    Alert,
    ConsoleSink,
    Dispatcher,
    JsonlSink,
    MemorySink,
    WebhookSink,
    parse_route,
    sink_from_spec,
)


def _alert(n: int = 0, severity: str = "warning", **fields: Any) -> Alert:
    values: dict[str, Any] = {
        "alert_id": f"a{n:04d}", "fingerprint": f"fp{n}", "detector": "loop.repeat", "family": "loops",
        "severity": severity, "title": f"search_orders called 12x with the same arguments (#{n})",
        "agent": "support", "route": "refund", "session_id": f"s-{n}", "turns": [3, 4],
        "session_ids": [f"s-{n}"], "evidence": {"prompt": "SECRET customer text"}, "status": "open",
        "first_seen_ns": 1_000, "last_seen_ns": 2_000, "count": 3,
    }
    return Alert(**{**values, **fields})


class _Sleeps:
    """Records backoff waits instead of sleeping; with a gate, the first wait holds until it is set."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.calls: list[float] = []
        self.entered = threading.Event()
        self._gate = gate

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.entered.set()
        if self._gate is not None:
            assert self._gate.wait(5)


def _until(condition: Any, timeout_s: float = 5.0) -> bool:
    """Polls a condition the test cannot wait on directly (a worker thread's progress)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        threading.Event().wait(0.005)
    return True


class _Stream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.flushed = threading.Event()

    def flush(self) -> None:
        self.flushed.set()


class _Hook:
    """What a loopback webhook received, and the statuses it answers with (then 200)."""

    def __init__(self) -> None:
        self.url = ""
        self.statuses: list[int] = []
        self.requests: list[tuple[str, str | None, Any]] = []


@pytest.fixture
def hook():
    state = _Hook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status = state.statuses.pop(0) if state.statuses else 200
            state.requests.append((self.path, self.headers.get("Authorization"), body))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/services/T0/SECRET-TOKEN"
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/services/T0/SECRET-TOKEN"


def test_console_sink_writes_one_line_per_alert_with_title_and_ids_only():
    out = io.StringIO()
    alerts = [_alert(1, "critical", title="refund loop\n\x1b[31mred\x1b[0m"), _alert(2, agent=None, route=None)]

    ConsoleSink(out).send(alerts)

    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("[critical] refund loop [31mred [0m (loop.repeat, id a0001")
    assert "agent support, route refund, session s-1, seen 3x" in lines[0]
    assert "agent" not in lines[1] and "session s-2" in lines[1]
    assert "\x1b" not in out.getvalue() and "SECRET" not in out.getvalue()


def test_console_sink_defaults_to_stderr(capsys):
    with Dispatcher([sink_from_spec("console")]) as dispatcher:
        dispatcher.publish([_alert(1)])
    assert capsys.readouterr().err.startswith("[warning] search_orders called 12x")


def test_log_sink_logs_each_alert_at_its_severity(caplog):
    caplog.set_level(logging.INFO, logger="flightrec.alerts")
    sink = sink_from_spec("log")

    sink.send([_alert(1, "info"), _alert(2, "warning"), _alert(3, "critical")])

    assert sink.name == "log"
    assert [(r.name, r.levelno) for r in caplog.records] == [
        ("flightrec.alerts", logging.INFO), ("flightrec.alerts", logging.WARNING), ("flightrec.alerts", logging.ERROR)]
    assert caplog.records[2].getMessage().startswith("[critical] search_orders called 12x")
    assert "SECRET" not in caplog.text


def test_jsonl_appends_parseable_lines_across_two_dispatchers(tmp_path):
    path = tmp_path / "deep" / "er" / "alerts.jsonl"
    first, second = [_alert(1), _alert(2, "critical")], [_alert(3, "info", evidence={"calls": [{"q": "ü"}]})]

    for alerts in (first, second):
        with Dispatcher([sink_from_spec(f"jsonl:{path}")]) as dispatcher:
            dispatcher.publish(alerts)

    lines = path.read_text(encoding="utf-8").splitlines()
    assert [Alert.model_validate_json(line) for line in lines] == first + second


def test_webhook_posts_the_alerts_as_json(hook):
    alerts = [_alert(1), _alert(2, "critical")]
    sink = WebhookSink(hook.url, headers={"Authorization": "Bearer t0k"})

    with Dispatcher([sink]) as dispatcher:
        dispatcher.publish(alerts)
        assert dispatcher.flush(5)
        assert dispatcher.stats()["webhook"].delivered == 2

    assert hook.requests == [("/services/T0/SECRET-TOKEN", "Bearer t0k",
                              {"alerts": [alert.model_dump(mode="json") for alert in alerts]})]


def test_slack_webhook_posts_one_section_per_alert(hook):
    alerts = [_alert(1), _alert(2, "critical", title="<!channel> refunds & retries", route=None)]

    with Dispatcher([sink_from_spec(f"slack:{hook.url}")]) as dispatcher:
        dispatcher.publish(alerts)

    (_, _, body), = hook.requests
    assert body["text"] == "flightrec: 2 alerts (1 critical, 1 warning)"
    assert [block["type"] for block in body["blocks"]] == ["section", "section"]
    first, second = (block["text"]["text"] for block in body["blocks"])
    assert first.startswith(":warning: *WARNING* search_orders called 12x")
    for fact in ("`loop.repeat`", "agent `support`", "route `refund`", "session `s-1`", "seen 3×"):
        assert fact in first
    assert second.startswith(":rotating_light: *CRITICAL* &lt;!channel&gt; refunds &amp; retries\n")
    assert "route" not in second
    assert "SECRET" not in json.dumps(body)


def test_slack_message_stays_within_slack_limits(hook):
    alerts = [_alert(n, title="&" * 5000, agent="<" * 500) for n in range(100)]

    WebhookSink(hook.url, slack=True).send(alerts)

    (_, _, body), = hook.requests
    assert len(body["blocks"]) == 50
    assert all(len(block["text"]["text"]) <= 3000 for block in body["blocks"][:49])
    assert "51 more" in body["blocks"][-1]["elements"][0]["text"]
    assert len(body["text"]) < 3000


def test_dead_webhook_neither_blocks_publish_nor_delays_the_console(dead_url, caplog):
    caplog.set_level(logging.WARNING, logger="flightrec.alerts")
    gate = threading.Event()
    sleeps = _Sleeps(gate)
    console = _Stream()
    dispatcher = Dispatcher([ConsoleSink(console), WebhookSink(dead_url, timeout_s=1)], retries=3,
                            backoff_s=0.5, max_backoff_s=30, sleep=sleeps)

    started = time.perf_counter()
    dispatcher.publish([_alert(1, "critical")])
    assert time.perf_counter() - started < 0.05

    # The webhook is held in its first backoff while the console delivers.
    assert sleeps.entered.wait(5)
    assert console.flushed.wait(5)
    assert "search_orders called 12x" in console.getvalue()
    gate.set()
    assert dispatcher.flush(5)

    assert len(sleeps.calls) == 3
    # Each wait is jittered within [d/2, d] of a doubling d, so they grow.
    for n, seconds in enumerate(sleeps.calls):
        assert 0.5 * 2**n / 2 <= seconds <= 0.5 * 2**n
    stats = dispatcher.stats()
    assert stats["console"].delivered == 1
    webhook = stats["webhook"]
    assert (webhook.delivered, webhook.failed_attempts, webhook.given_up) == (0, 4, 1)
    assert webhook.last_error is not None and webhook.last_error.startswith("cannot reach http://127.0.0.1:")
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'webhook' gave up on 1 alert(s) after 4 attempt(s): cannot reach" in warning.getMessage()
    assert "SECRET" not in caplog.text and "SECRET" not in webhook.last_error
    dispatcher.close()


def test_webhook_that_fails_twice_is_delivered_once(hook):
    hook.statuses = [500, 500]
    sleeps = _Sleeps()

    with Dispatcher([WebhookSink(hook.url)], sleep=sleeps) as dispatcher:
        dispatcher.publish([_alert(1)])
        assert dispatcher.flush(5)
        stats = dispatcher.stats()["webhook"]

    assert len(hook.requests) == 3 and len(sleeps.calls) == 2
    assert (stats.delivered, stats.failed_attempts, stats.given_up) == (1, 2, 0)
    assert stats.last_error is not None and "answered HTTP 500 Internal Server Error: ok" in stats.last_error


def test_backoff_is_capped_and_jittered():
    class Down:
        name = "down"

        def send(self, alerts):
            raise ConnectionRefusedError("nobody home")

    sleeps = _Sleeps()
    with Dispatcher([Down()], retries=12, backoff_s=0.5, max_backoff_s=2.0, sleep=sleeps) as dispatcher:
        dispatcher.publish([_alert(1)])
        assert dispatcher.flush(5)
        stats = dispatcher.stats()["down"]

    assert len(sleeps.calls) == 12 and all(1.0 <= seconds <= 2.0 for seconds in sleeps.calls[2:])
    assert len(set(sleeps.calls[2:])) > 1  # capped waits still differ: jitter
    assert (stats.failed_attempts, stats.given_up, stats.last_error) == (13, 1, "ConnectionRefusedError: nobody home")


def test_routes_give_each_sink_only_the_severities_it_asked_for():
    console, webhook = MemorySink("console"), MemorySink("webhook")
    alerts = [_alert(1, "info"), _alert(2, "warning"), _alert(3, "critical")]

    with Dispatcher([console, webhook], routes=dict([parse_route("webhook=critical")])) as dispatcher:
        dispatcher.publish(alerts)

    assert console.alerts == alerts
    assert webhook.alerts == [alerts[2]]


def test_full_queue_drops_the_oldest_alerts_and_counts_them(caplog):
    class Stuck:
        name = "slow"

        def __init__(self) -> None:
            self.entered, self.release = threading.Event(), threading.Event()
            self.batches: list[list[Alert]] = []

        def send(self, alerts):
            self.entered.set()
            assert self.release.wait(5)
            self.batches.append(list(alerts))

    sink = Stuck()
    alerts = [_alert(n) for n in range(6)]
    with Dispatcher([sink], max_queue=3) as dispatcher:
        dispatcher.publish(alerts[:1])
        assert sink.entered.wait(5)
        dispatcher.publish(alerts[1:])
        assert dispatcher.stats()["slow"].dropped == 2
        sink.release.set()

    assert sink.batches == [alerts[:1], alerts[3:]]
    assert "'slow' is not keeping up" in caplog.text


def test_close_stops_retrying_a_dead_sink_within_its_timeout(dead_url):
    dispatcher = Dispatcher([WebhookSink(dead_url)], backoff_s=30)
    dispatcher.publish([_alert(1)])
    assert _until(lambda: dispatcher.stats()["webhook"].failed_attempts == 1)

    started = time.perf_counter()
    dispatcher.close(timeout_s=0.2)
    assert time.perf_counter() - started < 2
    dispatcher.publish([_alert(2)])

    assert dispatcher.flush(5)
    stats = dispatcher.stats()["webhook"]
    assert (stats.failed_attempts, stats.given_up, stats.dropped) == (1, 1, 1)


@pytest.mark.parametrize(("spec", "kind", "name"), [
    ("console", ConsoleSink, "console"), ("log", ConsoleSink, "log"), ("jsonl:out/a.jsonl", JsonlSink, "jsonl"),
    ("webhook:https://example.com/hook", WebhookSink, "webhook"),
    ("slack:https://hooks.slack.com/services/X", WebhookSink, "slack"),
])
def test_sink_from_spec_builds_each_kind(spec, kind, name):
    sink = sink_from_spec(spec)
    assert isinstance(sink, kind) and sink.name == name


@pytest.mark.parametrize("spec", ["", "stdout", "console:x", "jsonl", "jsonl:", "webhook:", "smtp:me@example.com",
                                  "webhook:ftp://example.com/x", "slack:hooks.slack.com/services/X"])
def test_sink_from_spec_rejects_bad_specs(spec):
    with pytest.raises(tracer.ConfigError, match=r"console, log, jsonl:PATH, webhook:URL or slack:URL|http\(s\)"):
        sink_from_spec(spec)


def test_parse_route():
    assert parse_route("webhook=critical") == ("webhook", "critical")
    assert parse_route(" slack = Warning ") == ("slack", "warning")
    for bad in ("webhook", "webhook=", "=critical", "webhook=severe", "webhook:critical"):
        with pytest.raises(tracer.ConfigError, match="Use SINK=SEVERITY, such as webhook=critical"):
            parse_route(bad)


def test_dispatcher_rejects_routes_to_missing_sinks_and_duplicate_names():
    with pytest.raises(tracer.ConfigError, match="names no sink; the sinks are console"):
        Dispatcher([MemorySink("console")], routes={"webhook": "critical"})
    with pytest.raises(tracer.ConfigError, match="severity must be one of info, warning, critical"):
        Dispatcher([MemorySink("webhook")], routes={"webhook": "severe"})  # type: ignore[dict-item]
    with pytest.raises(tracer.ConfigError, match="Two alert sinks are named 'webhook'"):
        Dispatcher([MemorySink("webhook"), MemorySink("webhook")])


# --- delivery outcomes ------------------------------------------------------------------------


def test_a_webhook_that_rejects_the_alerts_is_not_retried_and_says_what_to_do(hook):
    hook.statuses = [404]
    sleeps = _Sleeps()

    with Dispatcher([WebhookSink(hook.url)], sleep=sleeps) as dispatcher:
        dispatcher.publish([_alert(1), _alert(2)])
        assert dispatcher.flush(5)
        stats = dispatcher.stats()["webhook"]

    assert len(hook.requests) == 1 and sleeps.calls == []  # a 404 will not pass on retry
    assert (stats.given_up, stats.gave_up_after, stats.gave_up_on) == (2, 1, "HTTP 404 Not Found")
    port = hook.url.split(":")[2].split("/")[0]
    assert stats.problem == (f"webhook http://127.0.0.1:{port}: 1 attempt failed (HTTP 404 Not Found), 2 alerts not "
                             "delivered; check the URL and what the receiver accepts")
    assert "SECRET" not in stats.problem


def test_a_rate_limited_webhook_is_retried_with_backoff(hook):
    hook.statuses = [429, 503]
    sleeps = _Sleeps()

    with Dispatcher([WebhookSink(hook.url)], retries=2, sleep=sleeps) as dispatcher:
        dispatcher.publish([_alert(1)])
        assert dispatcher.flush(5)
        stats = dispatcher.stats()["webhook"]

    assert len(hook.requests) == 3 and len(sleeps.calls) == 2
    assert (stats.delivered, stats.failed_attempts, stats.problem) == (1, 2, None)


def test_a_webhook_that_never_answers_times_out_with_its_reason():
    with socket.socket() as listener:  # accepts connections into its backlog and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with Dispatcher([WebhookSink(f"http://127.0.0.1:{port}/x", timeout_s=0.05)], retries=0) as dispatcher:
            dispatcher.publish([_alert(1)])
            assert dispatcher.flush(5)
            stats = dispatcher.stats()["webhook"]

    assert stats.gave_up_on == "no answer within 0.05 s"
    assert stats.problem is not None and stats.problem.endswith("check that the receiver is up and reachable from here")


def test_a_batch_still_being_sent_at_close_counts_as_not_delivered():
    class Hung:
        name = "hung"

        def __init__(self) -> None:
            self.entered, self.release = threading.Event(), threading.Event()

        def send(self, alerts):
            self.entered.set()
            assert self.release.wait(5)

    sink = Hung()
    dispatcher = Dispatcher([sink])
    dispatcher.publish([_alert(1)])
    assert sink.entered.wait(5)

    dispatcher.close(timeout_s=0)
    stats = dispatcher.stats()["hung"]
    sink.release.set()

    assert (stats.delivered, stats.dropped) == (0, 1)
    assert stats.problem is not None and "hung: 1 alert not delivered (not sent before the wait" in stats.problem


def test_an_unwritable_jsonl_file_is_a_failed_delivery(tmp_path):
    (tmp_path / "taken").mkdir()
    with Dispatcher([JsonlSink(tmp_path / "taken")], sleep=_Sleeps()) as dispatcher:
        dispatcher.publish([_alert(1)])
        assert dispatcher.flush(5)
        stats = dispatcher.stats()["jsonl"]

    assert stats.gave_up_after == 1 and stats.gave_up_on == "is a directory"
    assert stats.problem is not None and stats.problem.startswith(f"jsonl {tmp_path / 'taken'}: 1 attempt failed")


# --- flightrec detect --sink ------------------------------------------------------------------


@pytest.fixture
def detect_cli(monkeypatch):
    """Runs `flightrec detect` on a store holding one looping session; backoff waits are recorded."""
    from click.testing import CliRunner

    import evals.detectors._cli
    from tests.evals.detectors.test_detect import play
    from tracer._cli import main

    sleeps = _Sleeps()
    monkeypatch.setattr(evals.detectors._cli, "_retry_sleep", sleeps)
    play(("stuck_tracking", {}))

    def run(*args: str) -> Any:
        return CliRunner().invoke(main, ["detect", *args])

    run.sleeps = sleeps  # type: ignore[attr-defined]
    return run


def test_cli_detect_delivers_to_a_webhook_that_recovers_and_says_nothing_more(hook, detect_cli):
    hook.statuses = [500]

    out = detect_cli("--sink", f"webhook:{hook.url}")

    assert out.exit_code == 0, out.output
    assert len(hook.requests) == 2 and len(detect_cli.sleeps.calls) == 1
    assert hook.requests[-1][2]["alerts"][0]["detector"] == "loop.guard"
    assert "error" not in out.output and "not delivered" not in out.output


def test_cli_detect_exits_2_and_says_which_webhook_failed_and_why(hook, detect_cli):
    hook.statuses = [500] * 10

    out = detect_cli("--sink", f"webhook:{hook.url}", "--sink", "console")

    assert out.exit_code == 2
    assert len(hook.requests) == 3 and len(detect_cli.sleeps.calls) == 2
    assert "looked at 1 sessions" in out.output  # the run's own report is still there
    port = hook.url.split(":")[2].split("/")[0]
    assert (f"error: webhook http://127.0.0.1:{port}: 3 attempts failed (HTTP 500 Internal Server Error), 1 alert "
            "not delivered; the receiver is failing; check its logs") in out.output
    assert "console" not in out.output.split("error:", 1)[1]  # the console sink delivered: no line for it
    assert "flightrec alerts list" in out.output.splitlines()[-1]


def test_cli_detect_fails_fast_on_a_closed_port(dead_url, detect_cli):
    out = detect_cli("--sink", f"webhook:{dead_url}", "--json")

    assert out.exit_code == 2
    # Two short backoff waits (0.25-0.5 s, 0.5-1 s), not the patient defaults of a long-running serve.
    assert len(detect_cli.sleeps.calls) == 2 and sum(detect_cli.sleeps.calls) <= 1.5
    port = dead_url.split(":")[2].split("/")[0]
    assert (f"error: webhook http://127.0.0.1:{port}: 3 attempts failed (connection refused), 1 alert not "
            "delivered; check the URL or that the receiver is up") in out.output
    assert "SECRET" not in out.output


def test_online_detection_logs_and_counts_a_failed_delivery_and_never_raises(dead_url, caplog):
    from evals.detectors import OnlineDetector
    from reference_agent import Agent, World, default_world_path, get_scenario
    from tests.evals.detectors.test_detect import db

    caplog.set_level(logging.WARNING, logger="flightrec.alerts")
    dispatcher = Dispatcher([WebhookSink(dead_url)], retries=1, sleep=_Sleeps())
    online = OnlineDetector(db(), publish=dispatcher.publish, interval_s=0.05)
    recorder = tracer.Recorder(db(), on_sessions_ended=online)
    with World(default_world_path(db())) as world:
        session = Agent(world, recorder).run(get_scenario("stuck_tracking"))
    recorder.flush()
    assert online.flush(10)
    online.close()
    recorder.shutdown()
    assert dispatcher.flush(5)
    dispatcher.close()

    stats = dispatcher.stats()["webhook"]
    assert session.session_id and online.errors == 0 and online.alerts == 1
    assert (stats.given_up, stats.gave_up_after, stats.gave_up_on) == (1, 2, "connection refused")
    assert "'webhook' gave up on 1 alert(s) after 2 attempt(s): cannot reach" in caplog.text
