"""Alert delivery: sinks that send alerts somewhere, and a dispatcher that feeds them off-thread.

A ``Sink`` sends one batch and may raise. The ``Dispatcher`` gives every sink its own bounded
queue and daemon worker thread, so a slow or dead webhook never delays the console or the file.
``publish`` only enqueues: it never blocks on delivery and never raises. A failed batch is
retried with capped, jittered exponential backoff while a retry may help (a refused connection,
a timeout, HTTP 5xx, 408 or 429; not another 4xx), then given up, counted and logged as a warning
on the ``flightrec.alerts`` logger. When a queue is full its oldest alert is dropped and counted.
``stats()`` says per sink what was delivered and what was not, after how many attempts, why, and
what to do (``SinkStats.problem``); ``flightrec detect`` prints that and exits 2.

Quick start::

    dispatcher = Dispatcher([sink_from_spec("console"), sink_from_spec("slack:https://hooks.slack.com/...")],
                            routes=dict([parse_route("slack=critical")]))
    dispatcher.publish(alerts)
    dispatcher.close()      # waits up to 10 s for delivery
    for stats in dispatcher.stats().values():
        if stats.problem:
            print(stats.problem)

The console, log and Slack sinks show an alert's title and ids only, never its evidence, which
can quote prompts and tool results; the JSONL file and the generic webhook carry the whole alert.
Webhook URLs are logged as scheme and host only, because a Slack webhook's path is its secret.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import random
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from typing import Any, Protocol, TextIO

from tracer import ConfigError, FlightrecError

from ._alerts import SEVERITIES, Alert, Severity
from ._errors import DeliveryError

log = logging.getLogger("flightrec.alerts")

SINK_KINDS: tuple[str, ...] = ("console", "log", "jsonl", "webhook", "slack")
"""The names of the built-in sinks, which are also the names routes use."""

_SPEC_FORMS = "console, log, jsonl:PATH, webhook:URL or slack:URL"
_MAX_BATCH = 100
_MAX_QUEUE = 10_000
_RETRIES = 5
_BACKOFF_S = 0.5
_MAX_BACKOFF_S = 30.0
_FLUSH_TIMEOUT_S = 10.0
_CLOSE_GRACE_S = 0.5
_WEBHOOK_TIMEOUT_S = 5.0
_RANK: dict[str, int] = {severity: rank for rank, severity in enumerate(SEVERITIES)}
_LOG_LEVELS: dict[str, int] = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
# Slack rejects a message with more than 50 blocks or a section over 3,000 characters; the
# top-level text is what notifications show, and Slack truncates it well before its 40,000 limit.
_SLACK_MAX_SECTIONS = 49
_SLACK_MAX_TITLE = 1000
_SLACK_MAX_FACT = 200
_SLACK_EMOJI: dict[str, str] = {"info": ":information_source:", "warning": ":warning:", "critical": ":rotating_light:"}
_SLACK_ESCAPES: dict[str, str] = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}
_ERROR_BODY_CHARS = 200


class Sink(Protocol):
    """Somewhere alerts go. ``send`` is called from one worker thread at a time."""

    name: str
    """The sink's name in routes and stats (``console``, ``log``, ``jsonl``, ``webhook``, ``slack``)."""

    def send(self, alerts: Sequence[Alert]) -> None:
        """Delivers one batch, or raises; the dispatcher retries the whole batch."""
        ...


@dataclass(frozen=True)
class SinkStats:
    """What the dispatcher has done for one sink so far. Counts are alerts, not batches."""

    delivered: int = 0
    """Alerts the sink accepted."""
    failed_attempts: int = 0
    """Calls to ``send`` that raised (each retry counts)."""
    dropped: int = 0
    """Alerts dropped unsent: the oldest, when the queue was full, and those still queued at close."""
    given_up: int = 0
    """Alerts in batches that still failed after every retry (or at once, when a retry could not help)."""
    last_error: str | None = None
    """The most recent failed attempt's error; kept after later successes."""
    target: str = ""
    """The sink as a user knows it: ``webhook http://host:port`` (never a URL's path), ``jsonl PATH``."""
    gave_up_after: int = 0
    """Attempts made on the last batch given up."""
    gave_up_on: str | None = None
    """Why the last batch given up failed, in short: ``connection refused``, ``HTTP 500 Internal Server Error``."""
    hint: str | None = None
    """What to do about that failure."""

    @property
    def undelivered(self) -> int:
        """Alerts that did not reach the sink: given up or dropped."""
        return self.given_up + self.dropped

    @property
    def problem(self) -> str | None:
        """One line saying what was not delivered and what to do next; None when nothing was lost.

        ``webhook http://127.0.0.1:9: 3 attempts failed (connection refused); check the URL or
        that the receiver is up``
        """
        if not self.undelivered:
            return None
        lost = f"{self.undelivered} alert{'s' if self.undelivered != 1 else ''} not delivered"
        if self.gave_up_on is None:  # dropped unsent: the queue overflowed or the wait ran out
            return (f"{self.target}: {lost} (not sent before the wait for delivery ended); "
                    "the sink is too slow for this many alerts: route it fewer with --route")
        attempts = f"{self.gave_up_after} attempt{'s' if self.gave_up_after != 1 else ''} failed"
        return f"{self.target}: {attempts} ({self.gave_up_on}), {lost}; {self.hint}"


# --- sinks ------------------------------------------------------------------------------------


class MemorySink:
    """Keeps every batch in a list: the in-memory twin for tests and embedding.

    Args:
        name: The name routes and stats use.
    """

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.batches: list[list[Alert]] = []

    @property
    def alerts(self) -> list[Alert]:
        """Every alert received, in order."""
        return [alert for batch in self.batches for alert in batch]

    def send(self, alerts: Sequence[Alert]) -> None:
        self.batches.append(list(alerts))


class ConsoleSink:
    """Writes one line per alert to a stream, or logs it.

    The line holds the severity, title, detector, ids and count, never the evidence, so that
    prompt or tool content does not reach a terminal or a log aggregator.

    Args:
        stream: Where lines go; ``sys.stderr`` (as it is at send time) by default.
        logger: Log each line to this logger instead, at INFO, WARNING or ERROR for an info,
            warning or critical alert. The sink is then named ``log``.

    Raises:
        ConfigError: both a stream and a logger were given.
    """

    def __init__(self, stream: TextIO | None = None, *, logger: logging.Logger | None = None) -> None:
        if stream is not None and logger is not None:
            raise ConfigError("ConsoleSink writes to a stream or to a logger, not both; pass one of them.")
        self.name = "log" if logger is not None else "console"
        self._stream = stream
        self._logger = logger

    def send(self, alerts: Sequence[Alert]) -> None:
        if self._logger is not None:
            for alert in alerts:
                self._logger.log(_LOG_LEVELS[alert.severity], "%s", alert_line(alert))
            return
        stream = self._stream if self._stream is not None else sys.stderr
        stream.write("".join(alert_line(alert) + "\n" for alert in alerts))
        stream.flush()


class JsonlSink:
    """Appends one JSON object per alert (``Alert.model_dump``) to a file.

    Parent directories are created on first send. Each batch is flushed and fsync-ed before
    ``send`` returns, so a delivered alert survives a crash.

    Args:
        path: The file; ``~`` is expanded.
    """

    name = "jsonl"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()

    @property
    def where(self) -> str:
        """The file, for messages."""
        return str(self.path)

    def send(self, alerts: Sequence[Alert]) -> None:
        lines = "".join(json.dumps(_alert_json(alert), ensure_ascii=False) + "\n" for alert in alerts)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as file:
                file.write(lines)
                file.flush()
                os.fsync(file.fileno())
        except OSError as exc:
            reason = (exc.strerror or type(exc).__name__).lower()
            raise DeliveryError(f"cannot append to {self.path} ({reason})", reason=reason,
                                hint="check that the path is a file you may write, on a disk with room",
                                retry=not isinstance(exc, (PermissionError, IsADirectoryError))) from None


class WebhookSink:
    """POSTs each batch as JSON to a URL, with the standard library's ``urllib``.

    The body is ``{"alerts": [alert.model_dump(), ...]}``, or with ``slack=True`` a Slack
    incoming-webhook message: a summary ``text`` and one section block per alert (at most 49;
    a last block says how many more there were). Redirects are not followed.

    Args:
        url: An ``http`` or ``https`` URL.
        slack: Send the Slack shape; the sink is then named ``slack``.
        headers: Extra request headers, such as ``Authorization``. They are never logged.
        timeout_s: Seconds to wait for the connection and for the answer.

    Raises:
        ConfigError: the URL is not http(s) with a host, or the timeout is not positive.
    """

    def __init__(self, url: str, *, slack: bool = False, headers: Mapping[str, str] | None = None,
                 timeout_s: float = _WEBHOOK_TIMEOUT_S) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"Alert webhook URL {url!r} is not an http(s) URL with a host; "
                              "pass one like https://hooks.example.com/alerts.")
        if not timeout_s > 0:
            raise ConfigError(f"Webhook timeout_s must be positive, not {timeout_s!r}.")
        self.name = "slack" if slack else "webhook"
        self.url = url
        self.slack = slack
        self.timeout_s = timeout_s
        self._headers = {"Content-Type": "application/json", "User-Agent": "flightrec-alerts", **(headers or {})}
        self._where = _redact(parts)
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"WebhookSink({self._where!r}, slack={self.slack})"

    @property
    def where(self) -> str:
        """Scheme, host and port: the URL's path is left out, as it is a Slack webhook's secret."""
        return self._where

    def send(self, alerts: Sequence[Alert]) -> None:
        payload = slack_payload(alerts) if self.slack else {"alerts": [_alert_json(alert) for alert in alerts]}
        request = urllib.request.Request(self.url, data=json.dumps(payload).encode(), headers=self._headers,
                                         method="POST")
        # Foreign errors stop here, described without the URL's path (a Slack webhook's secret).
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
                status = response.status
        except urllib.error.HTTPError as exc:
            body = _error_body(exc)
            raise _http_error(self._where, exc.code, f"HTTP {exc.code} {exc.reason}", body) from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise self._timeout() from None
            reason = exc.reason.strerror if isinstance(exc.reason, OSError) and exc.reason.strerror else exc.reason
            raise DeliveryError(f"cannot reach {self._where} ({reason})", reason=str(reason).lower(),
                                hint="check the URL or that the receiver is up", retry=True) from None
        except TimeoutError:
            raise self._timeout() from None
        except (OSError, HTTPException) as exc:
            raise DeliveryError(f"{self._where} broke the connection ({type(exc).__name__}: {exc})",
                                reason=f"connection broken: {type(exc).__name__}",
                                hint="check that the receiver is up and speaks HTTP", retry=True) from None
        if not 200 <= status < 300:
            raise _http_error(self._where, status, f"HTTP {status}", "")

    def _timeout(self) -> DeliveryError:
        return DeliveryError(f"{self._where} did not answer within {self.timeout_s:g} s",
                             reason=f"no answer within {self.timeout_s:g} s",
                             hint="check that the receiver is up and reachable from here", retry=True)


def _http_error(where: str, code: int, status: str, body: str) -> DeliveryError:
    """Maps an HTTP status to a delivery error; only a status that may pass (5xx, 408, 429) is retried."""
    if code >= 500 or code == 408:
        hint, retry = "the receiver is failing; check its logs", True
    elif code == 429:
        hint, retry = "the receiver is rate-limiting; route it fewer alerts with --route or try later", True
    elif code in (401, 403):
        hint, retry = "check the URL's token or the credentials the receiver expects", False
    elif 300 <= code < 400:
        hint, retry = "the URL redirects, and alerts are not re-posted; use the URL it redirects to", False
    else:
        hint, retry = "check the URL and what the receiver accepts", False
    return DeliveryError(f"{where} answered {status}{body}", reason=status, hint=hint, retry=retry)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Turns a redirect into an HTTPError: urllib would re-send a POST as an empty GET."""

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        return None


def _redact(parts: urllib.parse.SplitResult) -> str:
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _error_body(exc: urllib.error.HTTPError) -> str:
    try:
        text = exc.read(_ERROR_BODY_CHARS * 4).decode("utf-8", "replace")
    except Exception:  # the body is a nicety; the status says enough
        return ""
    text = _one_line(text)[:_ERROR_BODY_CHARS]
    return f": {text}" if text else ""


# --- formatting -------------------------------------------------------------------------------


def alert_line(alert: Alert) -> str:
    """The one line the console and log sinks write for an alert: title and ids, no evidence."""
    details = [_one_line(alert.detector), f"id {alert.alert_id}"]
    details += [f"{label} {_one_line(value)}" for label, value in _subject(alert)]
    details.append(f"seen {alert.count}x")
    return f"[{alert.severity}] {_one_line(alert.title)} ({', '.join(details)})"


def slack_payload(alerts: Sequence[Alert]) -> dict[str, Any]:
    """A Slack incoming-webhook message for a batch: summary text and one section per alert."""
    by_severity = collections.Counter(alert.severity for alert in alerts)
    counts = ", ".join(f"{by_severity[s]} {s}" for s in reversed(SEVERITIES) if by_severity[s])
    text = f"flightrec: {len(alerts)} alert{'s' if len(alerts) != 1 else ''} ({counts})"
    shown = alerts if len(alerts) <= _SLACK_MAX_SECTIONS + 1 else alerts[:_SLACK_MAX_SECTIONS]
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": _slack_section(alert)}} for alert in shown]
    if len(shown) < len(alerts):
        more = len(alerts) - len(shown)
        blocks.append({"type": "context", "elements": [
            {"type": "mrkdwn", "text": f"…and {more} more; run `flightrec alerts` to see them all."}]})
    return {"text": text, "blocks": blocks}


def _slack_section(alert: Alert) -> str:
    # A title of 1,000 and four facts of 200 escaped characters stay well inside a section's 3,000.
    facts = [f"`{_slack_code(alert.detector)}`"]
    facts += [f"{label} `{_slack_code(value)}`" for label, value in _subject(alert)]
    facts.append(f"seen {alert.count}×")
    facts.append(f"id `{_slack_code(alert.alert_id)}`")
    title = _slack_text(alert.title, _SLACK_MAX_TITLE)
    return f"{_SLACK_EMOJI[alert.severity]} *{alert.severity.upper()}* {title}\n" + " · ".join(facts)


def _subject(alert: Alert) -> list[tuple[str, str]]:
    fields = [("agent", alert.agent), ("route", alert.route), ("session", alert.session_id)]
    return [(label, value) for label, value in fields if value]


def _one_line(text: str) -> str:
    """Printable characters only, so that a title cannot break lines or send terminal escapes."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


def _slack_text(text: str, limit: int) -> str:
    """One line, escaped for mrkdwn and cut to ``limit`` characters after escaping."""
    # Slack's mrkdwn treats these three as control characters (links, mentions).
    pieces = [_SLACK_ESCAPES.get(char, char) for char in _one_line(text)]
    if sum(map(len, pieces)) <= limit:
        return "".join(pieces)
    out: list[str] = []
    size = 0
    for piece in pieces:  # cut between pieces, never inside an escape
        if size + len(piece) > limit - 1:
            break
        out.append(piece)
        size += len(piece)
    return "".join(out) + "…"


def _slack_code(text: str) -> str:
    return _slack_text(text.replace("`", "'"), _SLACK_MAX_FACT)


def _alert_json(alert: Alert) -> dict[str, Any]:
    return alert.model_dump(mode="json", fallback=repr)


# --- specs ------------------------------------------------------------------------------------


def sink_from_spec(spec: str) -> Sink:
    """Builds a sink from a command-line spec.

    Args:
        spec: ``console`` (stderr), ``log`` (the ``flightrec.alerts`` logger), ``jsonl:PATH``,
            ``webhook:URL`` or ``slack:URL``.

    Raises:
        ConfigError: the spec is none of those, or its path or URL is empty or malformed.
    """
    kind, sep, arg = spec.strip().partition(":")
    kind = kind.lower()
    if not sep and kind == "console":
        return ConsoleSink()
    if not sep and kind == "log":
        return ConsoleSink(logger=log)
    if sep and arg.strip():
        arg = arg.strip()
        if kind == "jsonl":
            return JsonlSink(arg)
        if kind in ("webhook", "slack"):
            return WebhookSink(arg, slack=kind == "slack")
    raise ConfigError(f"Unknown alert sink {spec!r}. Use {_SPEC_FORMS}.")


def parse_route(spec: str) -> tuple[str, Severity]:
    """Parses ``SINK=SEVERITY`` (``webhook=critical``): that sink gets alerts of that severity and up.

    Raises:
        ConfigError: not of that form, or the severity is not info, warning or critical.
    """
    name, sep, severity = (part.strip() for part in spec.partition("="))
    severity = severity.lower()
    if not sep or not name or severity not in SEVERITIES:
        raise ConfigError(f"Bad alert route {spec!r}. Use SINK=SEVERITY, such as webhook=critical, where SINK is "
                          f"one of {', '.join(SINK_KINDS)} and SEVERITY one of {', '.join(SEVERITIES)}.")
    return name, next(s for s in SEVERITIES if s == severity)


# --- dispatcher -------------------------------------------------------------------------------


class _Lane:
    """One sink's queue, worker thread and counters. Everything mutable is guarded by ``cond``."""

    def __init__(self, sink: Sink, min_rank: int, max_queue: int) -> None:
        self.sink = sink
        self.min_rank = min_rank
        self.queue: collections.deque[Alert] = collections.deque(maxlen=max_queue)
        self.cond = threading.Condition()
        self.in_flight = 0
        where = getattr(sink, "where", "")
        self.stats = SinkStats(target=f"{sink.name} {where}" if where else sink.name)
        self.warned_full = False
        self.thread: threading.Thread | None = None

    def count(self, **deltas: int) -> None:
        """Adds to the counters; call with ``cond`` held."""
        self.stats = replace(self.stats, **{key: getattr(self.stats, key) + n for key, n in deltas.items()})


class Dispatcher:
    """Delivers alerts to sinks, each from its own daemon thread.

    Args:
        sinks: Where alerts go; their names must be distinct.
        routes: Sink name to the least severe alert it receives; a sink without a route gets
            every alert.
        max_queue: Alerts that may wait per sink; past that the oldest is dropped and counted.
        retries: Retries of a failed batch after its first attempt, before it is given up.
        backoff_s: The wait before the first retry; it doubles for each retry after that, and is
            jittered down by up to half.
        max_backoff_s: The cap on one wait.
        sleep: Waits between retries; by default a real wait that ``close`` cuts short. Tests
            pass a recorder.

    Raises:
        ConfigError: two sinks share a name, a route names no sink or no severity, or a number
            is out of range.

    ``publish``, ``flush``, ``close`` and ``stats`` may be called from any thread.
    """

    def __init__(self, sinks: Sequence[Sink], *, routes: Mapping[str, Severity] | None = None,
                 max_queue: int = _MAX_QUEUE, retries: int = _RETRIES, backoff_s: float = _BACKOFF_S,
                 max_backoff_s: float = _MAX_BACKOFF_S, sleep: Callable[[float], None] | None = None) -> None:
        names = [sink.name for sink in sinks]
        if duplicates := sorted({name for name in names if names.count(name) > 1}):
            raise ConfigError(f"Two alert sinks are named {duplicates[0]!r}; give each sink a distinct name.")
        routes = dict(routes or {})
        for name, severity in routes.items():
            if name not in names:
                raise ConfigError(f"Alert route {name}={severity} names no sink; the sinks are "
                                  f"{', '.join(names) or 'none'}.")
            if severity not in _RANK:
                raise ConfigError(f"Alert route {name}={severity}: the severity must be one of "
                                  f"{', '.join(SEVERITIES)}.")
        if max_queue < 1 or retries < 0 or backoff_s < 0 or max_backoff_s < 0:
            raise ConfigError("Dispatcher needs max_queue >= 1 and retries, backoff_s, max_backoff_s >= 0.")
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._stop = threading.Event()
        self._sleep = sleep if sleep is not None else self._wait
        self._random = random.Random()
        self._closed = False
        self._lanes = [_Lane(sink, _RANK[routes.get(sink.name, "info")], max_queue) for sink in sinks]
        for lane in self._lanes:
            lane.thread = threading.Thread(target=self._work, args=(lane,), name=f"flightrec-alerts-{lane.sink.name}",
                                           daemon=True)
            lane.thread.start()

    def __enter__(self) -> Dispatcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def publish(self, alerts: Sequence[Alert]) -> None:
        """Queues alerts for every sink whose route admits them, and returns at once.

        Never blocks on delivery and never raises. A full queue drops its oldest alerts and counts
        them; after ``close`` every alert is dropped and counted.
        """
        try:
            alerts = list(alerts)
            for lane in self._lanes:
                chosen = [alert for alert in alerts if _RANK[alert.severity] >= lane.min_rank]
                if not chosen:
                    continue
                with lane.cond:
                    if self._closed:
                        lane.count(dropped=len(chosen))
                        continue
                    before = len(lane.queue)
                    lane.queue.extend(chosen)
                    dropped = before + len(chosen) - len(lane.queue)
                    if dropped:
                        lane.count(dropped=dropped)
                    lane.cond.notify_all()
                if dropped and not lane.warned_full:
                    lane.warned_full = True
                    log.warning("Alert sink %r is not keeping up: its queue is full and the oldest alerts are "
                                "being dropped (see Dispatcher.stats()).", lane.sink.name)
        except Exception:  # alerting must never break the program that raises the alerts
            log.warning("Could not queue alerts for delivery.", exc_info=True)

    def flush(self, timeout_s: float = _FLUSH_TIMEOUT_S) -> bool:
        """Blocks until every queue is empty and no batch is in flight (delivered or given up).

        Returns:
            True when drained, False when ``timeout_s`` passed first.
        """
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes:
            with lane.cond:
                while lane.queue or lane.in_flight:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    lane.cond.wait(remaining)
        return True

    def close(self, timeout_s: float = _FLUSH_TIMEOUT_S) -> None:
        """Delivers what it can within ``timeout_s``, then stops the workers.

        Alerts still queued are dropped, counted and logged; a batch still being retried is given
        up, and one still being sent when the time is up (a receiver that does not answer) is
        counted dropped. Later ``publish`` calls drop their alerts. Blocks up to about
        ``timeout_s``; calling it again does nothing. ``stats()`` then says what was not delivered.
        """
        if self._closed:
            return
        deadline = time.monotonic() + timeout_s
        self.flush(timeout_s)
        self._closed = True
        self._stop.set()
        for lane in self._lanes:
            with lane.cond:
                left = len(lane.queue)
                lane.queue.clear()
                if left:
                    lane.count(dropped=left)
                lane.cond.notify_all()
            if left:
                log.warning("Alert sink %r: %d alert(s) were still queued at close and are dropped.",
                            lane.sink.name, left)
        for lane in self._lanes:
            assert lane.thread is not None
            # A worker cut out of its backoff wait gives up at once; the grace lets it say why.
            lane.thread.join(max(_CLOSE_GRACE_S, deadline - time.monotonic()))
            with lane.cond:
                if lane.thread.is_alive() and lane.in_flight:
                    log.warning("Alert sink %r: %d alert(s) were still being sent at close and are counted "
                                "as dropped.", lane.sink.name, lane.in_flight)

    def stats(self) -> dict[str, SinkStats]:
        """A snapshot of each sink's counters, by sink name.

        After ``close``, a batch its worker is still sending (to a receiver that does not answer)
        counts as dropped: nobody waits for it any more.
        """
        result = {}
        for lane in self._lanes:
            with lane.cond:
                stats = lane.stats
                if self._closed and lane.in_flight:
                    stats = replace(stats, dropped=stats.dropped + lane.in_flight)
                result[lane.sink.name] = stats
        return result

    def _work(self, lane: _Lane) -> None:
        while True:
            with lane.cond:
                while not lane.queue and not self._stop.is_set():
                    lane.cond.wait()
                if self._stop.is_set():
                    return
                batch = [lane.queue.popleft() for _ in range(min(len(lane.queue), _MAX_BATCH))]
                lane.in_flight = len(batch)
            try:
                self._deliver(lane, batch)
            except Exception:  # a broken sleep or counter must not kill the worker and stall flush
                log.warning("Alert sink %r: delivery failed unexpectedly.", lane.sink.name, exc_info=True)
                with lane.cond:
                    lane.count(given_up=len(batch))
            finally:
                with lane.cond:
                    lane.in_flight = 0
                    lane.cond.notify_all()

    def _deliver(self, lane: _Lane, batch: list[Alert]) -> None:
        attempts = 0
        while True:
            attempts += 1
            try:
                lane.sink.send(batch)
            except Exception as exc:
                error = str(exc) if isinstance(exc, FlightrecError) else f"{type(exc).__name__}: {exc}"
                if isinstance(exc, DeliveryError):
                    reason, hint, retry = exc.reason, exc.hint, exc.retry
                else:  # a custom sink's own error: its text is all there is to go on
                    reason, hint, retry = error, "check the sink's settings", True
                with lane.cond:
                    lane.stats = replace(lane.stats, failed_attempts=lane.stats.failed_attempts + 1, last_error=error)
                log.debug("Alert sink %r: attempt %d failed: %s", lane.sink.name, attempts, error)
                if not retry or attempts > self._retries or self._stop.is_set():
                    break
                self._sleep(self._backoff(attempts))
                if self._stop.is_set():
                    break
                continue
            with lane.cond:
                lane.count(delivered=len(batch))
            return
        with lane.cond:
            lane.count(given_up=len(batch))
            lane.stats = replace(lane.stats, gave_up_after=attempts, gave_up_on=reason, hint=hint)
        log.warning("Alert sink %r gave up on %d alert(s) after %d attempt(s): %s; %s", lane.sink.name, len(batch),
                    attempts, error, hint)

    def _wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def _backoff(self, attempt: int) -> float:
        """The wait after failed attempt ``attempt`` (1-based): doubling, capped, jittered into [d/2, d]."""
        delay = min(self._max_backoff_s, self._backoff_s * 2 ** min(attempt - 1, 64))
        return delay * (0.5 + 0.5 * self._random.random())
