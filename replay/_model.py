"""The model a re-run talks to: the simulated one by default, or the real API with a key.

A ``ClientFactory`` is the seam: it makes the ``anthropic`` client for one trial. The default
one uses the reference agent's simulator in process (imported only when it is used), or over
HTTP with ``sim_url``, or the real API with ``real=True``. Tests and other agents can pass
their own. The SDK's errors are mapped here to replay's.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._errors import EditError, ModelUnreachableError
from ._records import Origin

if TYPE_CHECKING:
    import anthropic

ClientFactory = Callable[[Origin, int], "anthropic.Anthropic"]
"""``(origin, seed) -> client``: the client for one trial of a re-run, its seed varied per trial."""

_RETRIES = 1  # a re-run is interactive: fail fast rather than back off for a minute


def target_of(*, real: bool, sim_url: str | None) -> str:
    """The ``flightrec.model_target`` a re-run records."""
    return "anthropic" if real else "sim-http" if sim_url else "sim"


def default_client_factory(*, real: bool = False, sim_url: str | None = None) -> ClientFactory:
    """The simulated model (in process, or at ``sim_url``), or the real API when ``real``.

    Raises:
        ModelUnreachableError: the real API is asked for without ANTHROPIC_API_KEY.
    """
    if real:
        if not os.environ.get("ANTHROPIC_API_KEY"):
            raise ModelUnreachableError("the real API needs ANTHROPIC_API_KEY; set it, or drop --real to re-run "
                                        "against the simulated model.")

        def real_client(origin: Origin, seed: int) -> anthropic.Anthropic:
            import anthropic

            return anthropic.Anthropic(max_retries=_RETRIES)

        return real_client

    def sim(origin: Origin, seed: int) -> anthropic.Anthropic:
        # Imported here: replay depends on the reference agent only when its simulator is used.
        from reference_agent import sim_client, sim_options

        # The recorded misbehaviours are replayed (they are the model's behaviour); faults are not.
        options = sim_options(seed=seed, scenario=origin.scenario, misbehave=tuple(origin.misbehave))
        return sim_client(options, url=sim_url, max_retries=_RETRIES, timeout=30.0)

    return sim


_CREATE_PARAMS: frozenset[str] | None = None


def _create_params() -> frozenset[str]:
    """The keyword arguments ``messages.create`` takes; the rest of a body goes in ``extra_body``."""
    global _CREATE_PARAMS
    if _CREATE_PARAMS is None:
        from anthropic.resources.messages import Messages

        _CREATE_PARAMS = frozenset(inspect.signature(Messages.create).parameters) - {
            "self", "extra_headers", "extra_query", "extra_body", "timeout", "stream"}
    return _CREATE_PARAMS


def send(client: anthropic.Anthropic, body: dict[str, Any], *, where: str) -> Any:
    """Sends ``body`` as it is (unknown keys such as ``temperature`` ride in ``extra_body``).

    Raises:
        ModelUnreachableError: the model cannot be reached, or answered with an error.
        EditError: the model rejected the request as invalid (HTTP 400): an edit broke it.
    """
    import anthropic

    known = _create_params()
    kwargs = {k: v for k, v in body.items() if k in known}
    extra = {k: v for k, v in body.items() if k not in known and k != "stream"}
    try:
        return client.messages.create(**kwargs, extra_body=extra or None)
    except anthropic.APIStatusError as exc:
        if exc.status_code == 400:
            raise EditError(f"the model rejected the edited request (HTTP 400): {exc.message}. Check the edits "
                            "(messages must alternate user/assistant, and each tool_result must answer a tool_use).") \
                from None
        raise ModelUnreachableError(f"the model at {where} answered HTTP {exc.status_code}: {exc.message}. Retry "
                                    "later, or use another model (--model, --sim-url).") from None
    except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
        raise ModelUnreachableError(f"cannot reach the model at {where}: {exc}. Check that it is running (`flightrec "
                                    "sim serve`) or reachable, or drop --sim-url to use the in-process simulator.") \
            from None
