"""Errors raised by the detectors and the alert sinks.

Every error derives from the tracer's root, so the ``flightrec`` CLI prints it as one line and
exits 2. A bad threshold file, sink spec or route is a ``tracer.ConfigError``::

    tracer.FlightrecError
    └── AlertError                the root of the detectors' own errors
        └── DeliveryError         an alert sink refused or could not take a batch (says whether a retry may help)
"""

from __future__ import annotations

from tracer import FlightrecError


class AlertError(FlightrecError):
    """Root of the detectors' and sinks' errors. The message is meant for the user, as is."""


class DeliveryError(AlertError):
    """An alert sink could not deliver a batch.

    Args:
        message: The whole story, for logs (never a webhook's path: a Slack webhook's secret).
        reason: The short cause, such as ``connection refused`` or ``HTTP 500 Internal Server Error``.
        hint: What the user should do about it.
        retry: Whether trying again may help (a refused connection, a 5xx or 429 may pass; a 404 will not).
    """

    def __init__(self, message: str, *, reason: str, hint: str, retry: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.hint = hint
        self.retry = retry
