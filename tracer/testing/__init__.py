"""Test doubles for agents on the ``anthropic`` SDK: a fake Messages API, scripted or computed, and a
fake clock (``FakeClock``) for guards, backoff and breakers that read a ``tracer.Clock``.

Quick start::

    from tracer.testing import FakeModel, reply, tool_use

    fake = FakeModel([reply("Checking.", tool_use("get_weather", {"city": "Paris"})), reply("Sunny.")])
    client = fake.client()                 # the real anthropic client, answered offline
    with fake.serve() as url:              # or over a loopback port, for another process
        ...
"""

from ._clock import FakeClock
from ._fake_model import Answer, FakeError, FakeModel, Policy, ScriptExhausted, error, reply, text, thinking, tool_use
from ._postgres import PrivatePostgres, postgres_binaries

__all__ = [
    "Answer",
    "FakeClock",
    "FakeError",
    "FakeModel",
    "Policy",
    "PrivatePostgres",
    "ScriptExhausted",
    "error",
    "reply",
    "text",
    "thinking",
    "tool_use",
    "postgres_binaries",
]
