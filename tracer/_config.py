"""Settings an operator chooses for a deployment without changing code: the environment and a file.

The file is ``flightrec.toml`` in the working directory, or the one ``$FLIGHTREC_CONFIG`` names::

    # flightrec.toml
    content = "redacted"    # full | redacted | none

For each setting an argument given in code wins, then the environment variable
(``$FLIGHTREC_CONTENT``), then the file, then the default.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, ValidationError

from ._errors import ConfigError, validation_problems
from ._redact import ContentMode

CONFIG_FILE = "flightrec.toml"
"""The config file looked for in the working directory."""
_CONFIG_ENV = "FLIGHTREC_CONFIG"
_CONTENT_ENV = "FLIGHTREC_CONTENT"
_DEFAULT_CONTENT: ContentMode = "full"
_MODES = ", ".join(get_args(ContentMode))


class FileConfig(BaseModel):
    """What ``flightrec.toml`` may set."""

    model_config = ConfigDict(extra="forbid")

    content: ContentMode | None = None
    """The content capture mode of recorders started in this directory: full, redacted or none."""


def _config_path() -> Path | None:
    named = os.environ.get(_CONFIG_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"${_CONFIG_ENV} names {path}, which is not a file; point it at a flightrec.toml "
                              f"or unset it.")
        return path
    path = Path(CONFIG_FILE)
    return path if path.is_file() else None


def load_config() -> tuple[FileConfig, Path | None]:
    """The config file's settings and its path (empty settings and ``None`` without a file).

    Raises:
        ConfigError: the file is not TOML, or sets something unknown or a bad value.
    """
    path = _config_path()
    if path is None:
        return FileConfig(), None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path} cannot be read as TOML: {exc}. Fix the file or remove it.") from None
    try:
        return FileConfig.model_validate(data), path
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_problems(exc)}. Its settings are: content ({_MODES}).") from None


def content_mode(explicit: str | None = None) -> ContentMode:
    """The content mode: ``explicit`` if given, else ``$FLIGHTREC_CONTENT``, else the config file's, else full.

    Raises:
        ConfigError: the mode given (and where it came from) is not one of full, redacted, none.
    """
    if explicit is not None:
        return _checked(explicit, "content=")
    env = os.environ.get(_CONTENT_ENV)
    if env is not None and env.strip():
        return _checked(env.strip(), f"${_CONTENT_ENV}")
    config, _ = load_config()
    return config.content or _DEFAULT_CONTENT


def _checked(value: str, where: str) -> ContentMode:
    if value not in get_args(ContentMode):
        raise ConfigError(f"content mode {value!r} (from {where}) is not one of {_MODES}; "
                          f"`redacted` or `none` is advised in production.")
    return value  # type: ignore[return-value]
