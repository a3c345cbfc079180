"""Typed configuration: YAML + `key.sub=value` overrides -> nested dataclasses.

Every option is a dataclass field with `metadata={"help": ...}`; this module
turns plain dicts into those dataclasses, rejecting unknown keys and wrong types
with a message that names the key, the value and what is allowed. Value checks
that need more than a type live in each dataclass's `__post_init__` and raise
`ConfigError` with the field name; `build` prefixes the section path. Options passed
through to a library (`LoraConfig`, `SFTConfig`, ...) are checked by that library, which
takes seconds to import, so not here: `lifecycle.core.library_options`, before a stage runs.

One merge rule for every mapping option with a default (`finetune.lora`,
`finetune.training`, `rlhf.weights`, ...): the mapping given in the YAML or on the
command line is merged onto the default, key by key, so the field holds the
complete options and nothing downstream merges again. A key set to null passes
null to the library (its "unset" value).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from lifecycle.core.errors import ConfigError


def option(default: Any = dataclasses.MISSING, help: str = "", **kwargs: Any) -> Any:
    """A dataclass field with help text; mutable defaults (and sections) are built per instance."""
    if isinstance(default, type):
        return dataclasses.field(default_factory=default, metadata={"help": help}, **kwargs)
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kwargs)
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    """Raise a ConfigError for `key` unless `ok`; used in `__post_init__` checks."""
    if not ok:
        raise ConfigError(key, value, allowed)


def build(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a dict, checking keys and types recursively."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path or "<root>", data, f"a mapping of the keys {sorted(_fields(cls))}")
    fields = _fields(cls)
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            near = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean `{_join(path, near[0])}`?)" if near else ""
            raise ConfigError(_join(path, key), data[key], f"a known key{hint}; `{path or 'the root'}` takes {sorted(fields)}", unknown=True)
    data = _merge_defaults(cls, data, hints)
    kwargs = {key: _coerce(hints[key], value, _join(path, key)) for key, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise err.within(path) from None
    except TypeError as err:
        if "required positional argument" not in str(err):
            raise
        raise ConfigError(path or "<root>", data, f"all required keys ({err})") from None


def _merge_defaults(cls: type, data: dict, hints: dict) -> dict:
    """Mapping options merged onto their defaults: giving `training: {max_steps: 4}` keeps the other
    documented training defaults instead of silently replacing them all."""
    merged = dict(data)
    for key, default in mapping_defaults(cls, hints).items():
        if isinstance(data.get(key), dict):
            merged[key] = {**default, **data[key]}
    return merged


def mapping_defaults(cls: type, hints: dict | None = None) -> dict[str, dict]:
    """The non-empty mapping defaults of `cls`'s fields (only those are built: sections are not)."""
    hints = hints or typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        is_mapping = typing.get_origin(tp) is dict or any(typing.get_origin(a) is dict for a in typing.get_args(tp))
        if is_mapping and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if isinstance(default, dict) and default:
                out[f.name] = default
    return out


def to_dict(obj: Any) -> Any:
    """Plain JSON-able dict of a (nested) config dataclass."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def fingerprint(obj: Any) -> str:
    """Stable sha256 of a JSON-able value (config sections, input hashes)."""
    blob = json.dumps(to_dict(obj), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Loader(yaml.SafeLoader):
    """YAML as people write configs: `1e-4` is a float (YAML 1.1 wants `1.0e-4`), and only
    true/false are booleans, so `eval_strategy: no` stays the string transformers expects."""


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                              list("tTfF"))
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
                              list("-+0123456789."))


def load_yaml(path: str | Path, overrides: list[str] = ()) -> dict:
    """Read a YAML config and apply `a.b.c=value` overrides (values parsed as YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError("--config", str(path), "an existing YAML file (see configs/ for the shipped ones)")
    try:
        data = yaml.load(path.read_text(), Loader=_Loader) or {}
    except yaml.YAMLError as err:
        raise ConfigError("--config", str(path), f"valid YAML; the parser says: {err}") from None
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(item, item, "an override of the form `section.key=value`, e.g. `scope.criteria.min_rougeL=0.25`")
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(key, raw, f"a path into nested sections, but `{part}` is a value")
        node[leaf] = parse_value(raw)
    return data


def parse_value(raw: str) -> Any:
    """A command-line value read the way the YAML configs are (`1e-4` a number, `[a, b]` a list)."""
    return yaml.load(raw, Loader=_Loader)


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key, default, help) rows for every option, for `--help` listings."""
    rows = []
    hints = typing.get_type_hints(cls)
    merged = mapping_defaults(cls, hints)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        if dataclasses.is_dataclass(hints[f.name]):
            rows += describe(hints[f.name], key)
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        shown = "required" if default is dataclasses.MISSING else json.dumps(default, default=str)
        note = " Merged onto this default: the keys you give replace only those keys." if f.name in merged else ""
        rows.append((key, shown, f.metadata.get("help", "") + note))
    return rows


def _fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check `value` against type `tp`; convert the few safe cases (YAML's '1e-4' str)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        sections = [a for a in args if dataclasses.is_dataclass(a)]
        if isinstance(value, dict) and len(sections) == 1:  # a mapping means the section: report its own key
            return build(sections[0], value, key)
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as err:
                errors.append(err.allowed)
        raise ConfigError(key, value, " or ".join(errors) + (" or null" if type(None) in args else ""))
    if origin is Literal:
        if value not in args:
            raise ConfigError(key, value, "one of " + ", ".join(repr(a) for a in args))
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(key, value, f"a list of {_name(args[0])}")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(key, value, f"a mapping of {_name(args[0])} to {_name(args[1])}")
        return {_coerce(args[0], k, key): _coerce(args[1], v, _join(key, k)) for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(key, value, "a number")
        if isinstance(value, (int, float)):
            return float(value)
        raise ConfigError(key, value, "a number")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, value, "a whole number")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, value, "a string")
    raise TypeError(f"unsupported config type {tp!r} at {key}")  # a bug in a dataclass, not user input


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))
