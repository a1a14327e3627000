"""Errors raised by evals.

Every error derives from the tracer's root, so the ``flightrec`` CLI prints it as one line and
exits 2. Each says what went wrong and what to do next::

    tracer.FlightrecError
    └── EvalError                 the root of evals' errors
        ├── DatasetError          a dataset file that cannot be read or does not validate
        ├── ScorerError           an unknown scorer, bad scorer parameters, a custom scorer that fails
        └── AgentLoadError        --agent MODULE:FACTORY that cannot be imported or built, a bad --set

Tracer errors (``UnknownSessionError``, ``UnknownEvalRunError``, ``StoreError``) pass through unchanged.
The detectors' and sinks' errors are in ``evals.detectors`` (``AlertError``).
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
