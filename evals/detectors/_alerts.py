"""Alerts: what a detector found, with the evidence a person needs to act on it.

The record itself is the store's (``tracer.AlertRecord``): the store keeps alerts next to the
traces they point at. Here are the names evals uses for it and its fields' values.
"""

from __future__ import annotations

from typing import Literal

from tracer import AlertRecord as Alert

Severity = Literal["info", "warning", "critical"]
SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
AlertStatus = Literal["open", "acknowledged", "resolved"]
FAMILIES = ("loops", "cost", "steps", "context", "reliability", "safety", "tools", "approvals", "quality")

__all__ = ["FAMILIES", "SEVERITIES", "Alert", "AlertStatus", "Severity"]
