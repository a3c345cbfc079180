"""Options passed through to the libraries, checked by the libraries themselves: PEFT's
`LoraConfig`, TRL's `SFTConfig` / `GRPOConfig` / `DPOConfig`, transformers' `BitsAndBytesConfig`
and `GenerationConfig`, with the key named in the error.

Importing PEFT or TRL takes seconds (they import torch and transformers): more than `status`,
`options` or a typo in a plain option should cost. So these checks do not run when the config
loads. A config section with pass-through options has a `library_checks()` method, and
`check(cfg, sections)` runs them for the stages about to run: `core/preflight.py` calls it
before the first stage, so `learning_rate: abc` is still a ConfigError before any model loads.

    python -c "from lifecycle.config import load; from lifecycle.core import library_options; \
               library_options.check(load('configs/offline.yaml'))"
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Iterable
from typing import Any, Union

from lifecycle.core.config import _coerce, _join  # the loader's own type rules, so these errors read the same
from lifecycle.core.errors import ConfigError, one_line


def check(cfg, sections: Iterable[str] | None = None) -> None:
    """Run `library_checks()` of the config sections named (default: every section that has one);
    a ConfigError names the key under its section, e.g. `finetune.training.learning_rate`."""
    wanted = None if sections is None else set(sections)
    for field in dataclasses.fields(cfg):
        checks = getattr(getattr(cfg, field.name), "library_checks", None)
        if checks is None or (wanted is not None and field.name not in wanted):
            continue
        try:
            checks()
        except ConfigError as err:
            raise err.within(field.name) from None


def library_object(cls: type, options: dict[str, Any], key: str, **fixed: Any) -> Any:
    """Build a library's own config object (`LoraConfig`, `SFTConfig`, ...) from pass-through
    `options`, so a bad value fails before the stage runs with the key, not minutes later inside
    the trainer. Plain number/flag fields are type-checked first (the libraries do not)."""
    import warnings

    checked = check_types(cls, options, key)
    library = f"{cls.__module__.split('.')[0]}.{cls.__name__}"
    if hasattr(cls, "_setup_devices"):
        cls = _without_devices(cls)
    try:
        with warnings.catch_warnings():  # deprecation notes are repeated when the real object is built
            warnings.simplefilter("ignore")
            return cls(**{**checked, **fixed})
    except (TypeError, ValueError, KeyError) as err:
        said = one_line(err, 2000).rstrip(".")
        named = [name for name in options if re.search(rf"\b{re.escape(name)}\b", said)]
        if not named:  # messages like "cosin is not a valid SchedulerType" name the value, not the key
            named = [name for name, value in options.items() if isinstance(value, (str, int, float))
                     and not isinstance(value, bool) and re.search(rf"(?<!\w){re.escape(str(value))}(?!\w)", said)]
        where = _join(key, named[0]) if len(named) == 1 else key
        value = options[named[0]] if len(named) == 1 else options
        raise ConfigError(where, value, f"a value {library} accepts; it says: {said[:400]}") from None


def check_types(cls: type, options: dict[str, Any], key: str) -> dict[str, Any]:
    """`options` with the library's plain number/flag fields checked (`learning_rate: abc` is a
    ConfigError here, not a TypeError inside the optimizer); ints given for floats become floats."""
    hints = _library_hints(cls)
    return {name: _coerce(hints[name], value, _join(key, name)) if name in hints else value
            for name, value in options.items()}


@functools.cache
def _without_devices(cls: type) -> type:
    """A TrainingArguments subclass that validates without setting up devices: the real one
    creates accelerate's process state (and a process group under `accelerate launch`) in
    `__post_init__`, which a config check must not do. Checked as one CPU process."""
    import torch

    return type(f"Checked{cls.__name__}", (cls,), {"device": property(lambda self: torch.device("cpu")),
                                                   "world_size": property(lambda self: 1),
                                                   "n_gpu": property(lambda self: 0)})


# What a TrainingArguments-like object is checked with: a scratch output_dir (never
# created), one CPU process, no report integrations; the run sets the real ones when it trains.
CHECK_ONLY = {"output_dir": "lifecycle-config-check", "use_cpu": True, "report_to": "none"}


@functools.cache
def _library_hints(cls: type) -> dict[str, Any]:
    """The fields of a library dataclass typed only with numbers, flags, strings and lists of them."""
    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # a library annotation that does not resolve: check nothing rather than fail
        return {}
    return {name: tp for name, tp in hints.items() if _plain(tp)}


def _plain(tp: Any) -> bool:
    """A type `_coerce` checks exactly; enum-or-string, dict and callable fields are left to the library."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return all(a is type(None) or _plain(a) for a in args)
    if origin is list:
        return len(args) == 1 and args[0] in (int, float, str)
    return tp in (int, float, bool, str)


