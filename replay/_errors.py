"""Errors raised by replay.

Every error derives from the tracer's root, so the ``flightrec`` CLI prints it as one line and
exits 2. Each says what went wrong and what to do next::

    tracer.FlightrecError
    └── ReplayError                the root of replay's errors
        ├── UnknownTurnError       the session has no decision at that turn
        ├── NoContentError         the call cannot be rebuilt: recorded without content (mode ``none``),
        │   │                      or by other instrumentation that kept no messages
        │   └── IncompleteRequestError  a request reconstructed from semantic conventions lacks a part
        │                          the API requires (model, max_tokens) and no edit supplies it
        ├── EditError              an edit does not apply to the request (bad index, unknown id …)
        ├── ModelUnreachableError  the model for the re-run cannot be reached or refused the call
        ├── NoModelError           no model is named for a session of an agent that brings none
        └── AgentNotFoundError     --agent names no registered agent, or the session's agent is not one

Tracer errors (``UnknownSessionError``, ``StoreError``) pass through unchanged; the anthropic
SDK's errors are mapped to ``ModelUnreachableError`` where the model is called (``_model.py``).
"""

from __future__ import annotations

from tracer import FlightrecError


class ReplayError(FlightrecError):
    """Root of replay's errors. The message is meant for the user, as is."""


class UnknownTurnError(ReplayError):
    """The session has no LLM call at the turn asked for."""


class NoContentError(ReplayError):
    """The call's exact request was not captured (content mode ``none``, or other instrumentation),
    so it cannot be rebuilt."""


class IncompleteRequestError(NoContentError):
    """A request reconstructed from another instrumentation's spans lacks ``model`` or ``max_tokens``,
    and the edits do not supply it."""


class EditError(ReplayError):
    """An edit does not apply to the request it is meant for."""


class ModelUnreachableError(ReplayError):
    """The model of a re-run cannot be reached, or it refused the request."""


class NoModelError(ReplayError):
    """A replay has no model to ask: none was named, and the session's agent registers none."""


class AgentNotFoundError(ReplayError):
    """``--agent`` cannot be loaded, or no registered agent matches the session's (never another agent's tools)."""
