"""Errors raised by evals.

Every error derives from the tracer's root, so the ``flightrec`` CLI prints it as one line and
exits 2. Each says what went wrong and what to do next::

    tracer.FlightrecError
    └── EvalError                 the root of evals' errors
        ├── DatasetError          a dataset file that cannot be read or does not validate
        ├── ScorerError           an unknown scorer, bad scorer parameters, a custom scorer that fails
        ├── AgentLoadError        --agent MODULE:FACTORY that cannot be imported or built, a bad --set
        └── DeliveryError         an alert sink refused or could not take a batch (says whether a retry may help)

Tracer errors (``UnknownSessionError``, ``UnknownEvalRunError``, ``StoreError``) pass through unchanged.
"""

from __future__ import annotations

from tracer import FlightrecError


class EvalError(FlightrecError):
    """Root of evals' errors. The message is meant for the user, as is."""


class DatasetError(EvalError):
    """A dataset cannot be read, or a case in it does not validate."""


class ScorerError(EvalError):
    """A scorer is unknown, has bad parameters, or (a custom one) raised."""


class AgentLoadError(EvalError):
    """The agent under test cannot be loaded or configured."""


class DeliveryError(EvalError):
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
