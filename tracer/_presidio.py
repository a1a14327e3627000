"""An optional redactor built on Microsoft Presidio's analyzer (names, places, and its other recognisers).

Presidio is not a dependency of flightrec: ``pip install 'flightrec[presidio]'`` installs it (and a
spaCy model is needed, ``python -m spacy download en_core_web_lg``). It is imported only when a
redactor is made without an analyzer of the caller's own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ._errors import ConfigError
from ._redact import Redactor

_INSTALL = "pip install 'flightrec[presidio]'"


def presidio_redactor(analyzer: Any = None, *, entities: Iterable[str] | None = None, language: str = "en",
                      score_threshold: float = 0.5) -> Redactor:
    """A redactor that replaces what Presidio finds with ``[REDACTED:<entity type>]``.

    Args:
        analyzer: A ``presidio_analyzer.AnalyzerEngine`` (or anything with its ``analyze(text=,
            language=, entities=, score_threshold=)``); default: a new engine, made once, here.
        entities: The entity types to look for (``PERSON``, ``LOCATION`` …); default: all it knows.
        language: The language of the text.
        score_threshold: Findings scored below it are left in the text.

    Raises:
        ConfigError: no analyzer was given and presidio is not installed.

    Pass it to the recorder with the built-in redactors: ``Recorder(content="redacted",
    redactors=[presidio_redactor()])``. Presidio's NER takes milliseconds per call: it runs on
    the agent's thread, once for every string of content.
    """
    if analyzer is None:
        try:
            from presidio_analyzer import AnalyzerEngine
        except ImportError:
            raise ConfigError(f"presidio_redactor needs Microsoft Presidio, which is not installed: run "
                              f"`{_INSTALL}`, or pass an analyzer of your own.") from None
        analyzer = AnalyzerEngine()
    wanted = list(entities) if entities is not None else None

    def redact(text: str) -> str:
        if not text.strip():
            return text
        found = analyzer.analyze(text=text, language=language, entities=wanted, score_threshold=score_threshold)
        # Overlapping findings are merged, so that a replacement never cuts another one in half.
        spans: list[list[Any]] = []
        for r in sorted(found, key=lambda r: (r.start, -r.end)):
            if r.score < score_threshold:
                continue
            if spans and r.start < spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], r.end)
            else:
                spans.append([r.start, r.end, r.entity_type])
        for start, end, kind in reversed(spans):
            text = f"{text[:start]}[REDACTED:{str(kind).lower()}]{text[end:]}"
        return text

    return redact
