"""Model prices and context windows, from a data file that a user file can extend or override.

A model that the table does not know has an unknown cost (``None``), never 0: a silent zero
would make a runaway session look free.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._errors import ConfigError, validation_problems

_DATED_SUFFIX = re.compile(r"-\d{8}$")
_PER_TOKEN = 1e-6


class ModelPrice(BaseModel):
    """Prices of one model, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: float = Field(ge=0)
    """Uncached input tokens."""
    output: float = Field(ge=0)
    """Output tokens, thinking included."""
    cache_write_5m: float = Field(ge=0)
    """Input tokens written to the 5-minute prompt cache."""
    cache_write_1h: float = Field(ge=0)
    """Input tokens written to the 1-hour prompt cache."""
    cache_read: float = Field(ge=0)
    """Input tokens read from the prompt cache."""
    context_window: int = Field(gt=0)
    """Input tokens the model can see at once."""
    aliases: list[str] = Field(default_factory=list)
    """Other ids that name this model."""


class _PriceFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    models: dict[str, ModelPrice]


@dataclass(frozen=True)
class Usage:
    """Token counts of one LLM call, as the Messages API reports them."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_5m_tokens: int = 0
    cache_write_1h_tokens: int = 0

    @property
    def total_input(self) -> int:
        """Every input token the model saw, cached or not."""
        return (
            self.input_tokens
            + self.cache_read_tokens
            + self.cache_write_5m_tokens
            + self.cache_write_1h_tokens
        )


class PriceTable:
    """Looks up prices by model id; dated ids fall back to their base id."""

    def __init__(self, models: dict[str, ModelPrice]) -> None:
        self._models: dict[str, ModelPrice] = {}
        for name, price in models.items():
            self._models[name] = price
            for alias in price.aliases:
                self._models[alias] = price

    @classmethod
    def load(cls, user_file: str | os.PathLike[str] | None = None) -> PriceTable:
        """The bundled table, updated by ``user_file`` or else ``$FLIGHTREC_PRICES`` when set.

        Raises:
            ConfigError: the user file is missing, is not JSON, or has a bad entry.
        """
        bundled = resources.files("tracer").joinpath("prices.json").read_text("utf-8")
        models = _parse(bundled, "the bundled price table")
        path = user_file if user_file is not None else os.environ.get("FLIGHTREC_PRICES")
        if path:
            try:
                text = Path(path).read_text("utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"cannot read price file {path}: {exc.strerror}. "
                    "Point FLIGHTREC_PRICES (or prices=) at a JSON file shaped like tracer/prices.json."
                ) from None
            models.update(_parse(text, f"price file {path}"))
        return cls(models)

    def lookup(self, model: str | None) -> ModelPrice | None:
        """The prices of ``model``, or ``None`` when the table does not know it."""
        if not model:
            return None
        return self._models.get(model) or self._models.get(_DATED_SUFFIX.sub("", model))

    def cost(self, model: str | None, usage: Usage) -> float | None:
        """The cost in USD of one call, or ``None`` when the model's prices are unknown."""
        price = self.lookup(model)
        if price is None:
            return None
        return _PER_TOKEN * (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_read_tokens * price.cache_read
            + usage.cache_write_5m_tokens * price.cache_write_5m
            + usage.cache_write_1h_tokens * price.cache_write_1h
        )

    def context_window(self, model: str | None) -> int | None:
        """The model's context window in tokens, or ``None`` when unknown."""
        price = self.lookup(model)
        return price.context_window if price else None


def _parse(text: str, where: str) -> dict[str, ModelPrice]:
    try:
        data: Any = json.loads(text)
        return dict(_PriceFile.model_validate(data).models)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} is not valid JSON ({exc.msg}, line {exc.lineno}).") from None
    except ValidationError as exc:
        raise ConfigError(
            f"{where} has a bad entry at {validation_problems(exc, most=1)}. "
            "Each model needs input, output, cache_write_5m, cache_write_1h, cache_read "
            "(USD per million tokens) and context_window."
        ) from None
