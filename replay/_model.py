"""The model a re-run talks to, chosen in one order and always said.

A re-run asks, in order: the client factory a Python caller passes; the endpoint the user names
(``--model-url``, any Messages-API-compatible server); the real API (``--real``, with
``ANTHROPIC_API_KEY``); and only then the model the session's own agent registers (the reference
agent's simulator, a team's test double). With none of these, it stops and says how to name one:
a support bot must never answer a trip planner's request. The SDK's errors are mapped here to
replay's.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import EditError, ModelUnreachableError, NoModelError
from ._records import Origin

if TYPE_CHECKING:
    import anthropic

    from ._registry import AgentRegistration

ClientFactory = Callable[[Origin, int], "anthropic.Anthropic"]
"""``(origin, seed) -> client``: the client for one trial of a re-run, its seed varied per trial."""

_RETRIES = 1  # a re-run is interactive: fail fast rather than back off for a minute


@dataclass(frozen=True)
class ModelChoice:
    """The model a re-run asks, and how to name it."""

    factory: ClientFactory
    target: str
    """Recorded as ``flightrec.model_target``: ``url``, ``anthropic``, ``agent`` or ``custom``."""
    label: str
    """For the user: the URL, "the Anthropic API", or the agent's model."""


def choose_model(origin: Origin, *, agent: AgentRegistration | None = None, model_url: str | None = None,
                 real: bool = False, client_factory: ClientFactory | None = None) -> ModelChoice:
    """The model a re-run of a session recorded as ``origin`` asks (see the module docstring).

    Args:
        origin: The recorded session's agent and seed.
        agent: The session's registered agent, if any.
        model_url: A Messages-API-compatible endpoint (``--model-url``).
        real: The real Anthropic API (needs ANTHROPIC_API_KEY).
        client_factory: A caller's own ``(origin, seed) -> client``; wins over the rest.

    Raises:
        ModelUnreachableError: ``real`` without ANTHROPIC_API_KEY, or both ``real`` and ``model_url``.
        NoModelError: nothing is named and the session's agent registers no model.
    """
    if client_factory is not None:
        return ModelChoice(client_factory, "custom", "the caller's client factory")
    if real and model_url:
        raise ModelUnreachableError("name one model: --real (the Anthropic API) or --model-url URL, not both.")
    if model_url:
        url = model_url.rstrip("/")

        def endpoint(origin: Origin, seed: int) -> anthropic.Anthropic:
            import anthropic

            return anthropic.Anthropic(base_url=url, api_key=os.environ.get("ANTHROPIC_API_KEY") or "unused",
                                       max_retries=_RETRIES, timeout=60.0)

        return ModelChoice(endpoint, "url", url)
    if real:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ModelUnreachableError("the real API needs ANTHROPIC_API_KEY; set it, or name another model with "
                                        "--model-url URL.")

        def real_client(origin: Origin, seed: int) -> anthropic.Anthropic:
            import anthropic

            return anthropic.Anthropic(max_retries=_RETRIES)

        return ModelChoice(real_client, "anthropic", "the Anthropic API")
    if agent is not None and agent.model is not None:
        return ModelChoice(agent.model, "agent", agent.label)
    who = f"agent {origin.agent!r}" if origin.agent else "an agent that recorded no name"
    why = "registers no model of its own" if agent is not None else "is not a registered agent"
    raise NoModelError(f"no model to ask: the session was recorded by {who}, which {why}. Name one with --model-url "
                       "URL (any Messages-API-compatible endpoint, such as a test double's serve()) or --real (with "
                       "ANTHROPIC_API_KEY), or pass --agent NAME|MODULE:ATTR for the agent's registration with its "
                       "model.")


_CREATE_PARAMS: frozenset[str] | None = None


def _create_params() -> frozenset[str]:
    """The keyword arguments ``messages.create`` takes; the rest of a body goes in ``extra_body``."""
    global _CREATE_PARAMS
    if _CREATE_PARAMS is None:
        from anthropic.resources.messages import Messages

        _CREATE_PARAMS = frozenset(inspect.signature(Messages.create).parameters) - {
            "self", "extra_headers", "extra_query", "extra_body", "timeout", "stream"}
    return _CREATE_PARAMS


def send(client: anthropic.Anthropic, body: dict[str, Any], *, where: str, betas: list[str] | None = None) -> Any:
    """Sends ``body`` as it is (unknown keys such as ``temperature`` ride in ``extra_body``), with the
    ``anthropic-beta`` header of the recorded call when it had ``betas``, so that beta features stay on.

    Raises:
        ModelUnreachableError: the model cannot be reached, or answered with an error.
        EditError: the model rejected the request as invalid (HTTP 400): an edit broke it.
    """
    import anthropic

    known = _create_params()
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known and k != "stream"}
    try:
        headers = {"anthropic-beta": ",".join(betas)} if betas else None
        return client.messages.create(**kwargs, extra_body=extra or None, extra_headers=headers)
    except anthropic.APIStatusError as exc:
        if exc.status_code == 400:
            raise EditError(f"the model rejected the edited request (HTTP 400): {exc.message}. Check the edits "
                            "(messages must alternate user/assistant, and each tool_result must answer a tool_use).") \
                from None
        raise ModelUnreachableError(f"{where} answered HTTP {exc.status_code}: {exc.message}. Retry later, or name "
                                    "another model (--model-url URL, --real).") from None
    except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
        raise ModelUnreachableError(f"cannot reach {where}: {exc}. Check that it is running and reachable, or name "
                                    "another model (--model-url URL, --real).") from None
