"""Importing what a ``MODULE:ATTR`` spec names: an agent's registration (``--agent``), a custom
scorer's function (a dataset's ``function:``). One importer, so that both find the same modules and
say the same things when they cannot."""

from __future__ import annotations

import difflib
import importlib
import os
import sys
from typing import Any


class TargetError(Exception):
    """A spec names nothing importable; the message says why and what to do. Callers prefix it with
    what they were loading (``--agent X: …``, ``scorer 'y': …``)."""


def did_you_mean(word: Any, choices: Any) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or nothing when none is close."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def import_target(spec: str) -> Any:
    """The object ``MODULE:ATTR`` names; ``ATTR`` may be dotted (``module:Class.method``).

    As uvicorn does for its APP, the working directory's modules are importable without PYTHONPATH.

    Raises:
        TargetError: the spec is not MODULE:ATTR, the module does not import, or has no such attribute.
    """
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise TargetError(f"{spec!r} is not MODULE:ATTR (for example trips.agent:REGISTRATION).")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r} ({exc}). Check the module path, and run from the "
                          "directory that holds it (it is importable from there), or add its directory to "
                          "PYTHONPATH.") from None
    except Exception as exc:  # the module's own code failed: say where
        raise TargetError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}. Fix the module.") from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            names = [n for n in dir(target) if not n.startswith("_")]
            raise TargetError(f"{module_name!r} has no {attr!r}{did_you_mean(part, names)}. Name an attribute "
                              "of that module after the colon.")
        target = getattr(target, part)
    return target
