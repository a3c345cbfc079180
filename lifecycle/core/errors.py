"""Errors a user can act on. The CLI prints their message (one paragraph, no
stack trace) and exits with status 2; anything else is a bug and keeps its trace."""

from __future__ import annotations

import json
from typing import Any


class LifecycleError(Exception):
    """Base for errors caused by input: config, data, models, run state."""


class ConfigError(LifecycleError):
    """A config value is unknown, of the wrong type, or impossible."""

    def __init__(self, key: str, value: Any, allowed: str, unknown: bool = False):
        self.key, self.value, self.allowed, self.unknown = key, value, allowed, unknown
        super().__init__(self._message())

    def within(self, path: str) -> "ConfigError":
        """The same error with the section path in front of the key."""
        key = f"{path}.{self.key}" if path and not self.key.startswith(path + ".") else self.key
        return ConfigError(key, self.value, self.allowed, self.unknown)

    def _message(self) -> str:
        shown = json.dumps(self.value, default=str)
        if len(shown) > 200:  # long enough for a path, short enough for a one-paragraph error
            shown = shown[:197] + "..."
        what = "is not a known option" if self.unknown else "is not allowed"
        return (
            f"config error: `{self.key}` = {shown} {what}; expected {self.allowed}. "
            f"Fix it in the YAML file or override it on the command line, e.g. `{self.key}=<value>`."
        )


class DataError(LifecycleError):
    """The dataset cannot be used as configured."""


class ModelError(LifecycleError):
    """A model reference cannot be resolved or loaded."""


class StageError(LifecycleError):
    """A stage cannot run: an upstream stage is missing, failed or stale."""


def one_line(text: Any, limit: int = 300) -> str:
    """Whatever a library printed, as one line of at most `limit` characters, to quote in a one-paragraph error."""
    return " ".join(str(text).split())[:limit]
