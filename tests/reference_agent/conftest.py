"""Fixtures for the reference agent: a recorder, a world and an agent, all in the test's temp dir."""

from __future__ import annotations

from typing import Any

import pytest

import tracer
from reference_agent import Agent, World


@pytest.fixture
def recorder(tmp_path):
    rec = tracer.Recorder(tmp_path / "trace.duckdb")
    yield rec
    rec.shutdown()


@pytest.fixture
def world(tmp_path):
    with World(tmp_path / "trace.world.sqlite") as w:
        yield w


@pytest.fixture
def agent(world, recorder):
    return Agent(world, recorder)


def account(recorder: tracer.Recorder, session_id: str) -> tracer.SessionAccount:
    """The session as the trace store has it (after flushing what is in flight)."""
    recorder.flush()
    with tracer.Store(recorder.db_path) as store:
        return store.session_account(session_id)


def events(acc: tracer.SessionAccount, name: str) -> list[dict[str, Any]]:
    """The attributes of every turn event called ``name``, in turn order."""
    return [e["attributes"] for t in acc.turns for e in t.events if e["name"] == name]


def tool_calls(acc: tracer.SessionAccount) -> list[tracer.ToolCallRecord]:
    return [c for t in acc.turns for c in t.tool_calls]
