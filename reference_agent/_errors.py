"""Errors raised by the reference agent, its world, its tools and the simulated model.

Every error derives from one root, which is itself a ``tracer.FlightrecError``, so the
``flightrec`` command line prints any of them as one line and exits with status 2::

    tracer.FlightrecError
    └── AgentError                   root of this package's errors
        ├── AgentConfigError         a bad option: fault spec, misbehaviour, limit, model target
        ├── UnknownScenarioError     no bundled scenario has that name
        ├── WorldError               the world's SQLite file cannot be opened or written
        ├── SessionStateError        the session cannot do that now (resume a finished one …)
        │   └── NoCheckpointError    no checkpoint for that session id in the world file
        ├── SimulatedCrash           raised by a crash hook to stop a run as a kill would
        └── ToolError                a tool call failed; the message tells the model how to recover
            ├── InvalidArgumentsError    arguments do not match the tool's JSON Schema
            ├── NotFoundError            the record asked for does not exist
            ├── NotAllowedError          policy forbids it (outside the refund window …)
            ├── ServiceUnavailableError  the backend is down; retrying may help
            ├── ToolTimeoutError         the backend did not answer within the tool's timeout
            └── CircuitOpenError         the tool's circuit breaker is open; do not retry

``sqlite3`` errors are mapped to ``WorldError`` in ``_world.py``. The anthropic client's errors
(after its retries) are not raised: they end the session with status ``error`` and the reason,
which is checkpointed, so ``resume`` can carry on later. A ``ToolError`` never reaches the user
either: the agent turns it into an ``is_error`` tool result for the model.
"""

from __future__ import annotations

from typing import Any

from tracer import FlightrecError


class AgentError(FlightrecError):
    """Root of every reference-agent error. The message is meant for the user, as is."""


class AgentConfigError(AgentError):
    """An option is invalid."""


class UnknownScenarioError(AgentError):
    """No bundled scenario has the given name."""


class WorldError(AgentError):
    """The world's SQLite file cannot be used."""


class SessionStateError(AgentError):
    """The session is not in a state that allows the operation."""


class NoCheckpointError(SessionStateError):
    """The world file holds no checkpoint for the session id."""


class SimulatedCrash(AgentError):
    """Stops a run at the worst moment, as a killed process would; for crash-recovery demos and tests."""

    def __init__(self, session_id: str, after: str) -> None:
        super().__init__(f"simulated crash of session {session_id} after {after}; resume it with "
                         f"`flightrec agent resume {session_id}`.")
        self.session_id = session_id
        self.after = after


class ToolError(AgentError):
    """A tool call failed. ``recovery`` tells the model what to do next.

    Args:
        message: What went wrong, in words the model can act on.
        recovery: The next step that will work.
        retryable: Whether calling again with the same arguments may succeed.
        details: Extra facts for the model (valid values, candidates …).
    """

    code = "tool_error"

    def __init__(self, message: str, *, recovery: str, retryable: bool = False,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.recovery = recovery
        self.retryable = retryable
        self.details = details or {}

    def to_result(self) -> dict[str, Any]:
        """The tool result the model sees."""
        error: dict[str, Any] = {"code": self.code, "message": self.message, "recovery": self.recovery,
                                 "retryable": self.retryable}
        if self.details:
            error["details"] = self.details
        return {"error": error}


class InvalidArgumentsError(ToolError):
    """The arguments do not match the tool's schema."""

    code = "invalid_arguments"


class NotFoundError(ToolError):
    """The record asked for does not exist."""

    code = "not_found"


class NotAllowedError(ToolError):
    """Policy forbids the action."""

    code = "not_allowed"


class ServiceUnavailableError(ToolError):
    """The tool's backend service failed; a later call may succeed."""

    code = "service_unavailable"


class ToolTimeoutError(ToolError):
    """The tool's backend service did not answer within the tool's timeout."""

    code = "timeout"


class CircuitOpenError(ToolError):
    """The tool's circuit breaker is open: calls fail fast until it cools down."""

    code = "circuit_open"
