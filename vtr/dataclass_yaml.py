"""Typed configs from YAML: nested dataclasses built from plain mappings, with dotted ``a.b.c=value`` overrides.

    cfg = load(MyConfig, read_yaml("run.yaml"), ["optim.lr=1e-4"])

The engine behind ``vtr train``'s configs (:mod:`vtr.training.config` holds the schema). Values are converted to
each field's annotated type (``int``, ``float``, ``bool``, ``str``, ``list[...]``, ``tuple[...]``, ``dict``,
optional and union types, nested dataclasses), so ``optim.lr=1e-4`` is a float although YAML 1.1 reads ``1e-4`` as
a string. Unknown keys and wrong types raise :class:`~vtr.errors.ConfigError` naming the dotted key (and the
closest valid key). A dataclass with a ``SHORTHAND`` class variable (a field name) also accepts a plain string,
which becomes that field (``data.val=test.json`` -> ``DataSource(anno="test.json")``).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, Union

import yaml

from vtr.errors import ConfigError

__all__ = ["apply_overrides", "build", "parse_override", "read_yaml", "to_dict"]


def _field_names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _unknown_key_error(key: str, cls: type, where: str) -> ConfigError:
    names = _field_names(cls)
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {where + close[0]!r}?)" if close else ""
    return ConfigError(f"unknown config key {where + key!r}{hint}; valid keys here: {', '.join(names)}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _shorthand(tp: type) -> str | None:
    return getattr(tp, "SHORTHAND", None)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert ``value`` (parsed YAML) to type ``tp``; raise :class:`ConfigError` naming ``key`` if it cannot."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key} must not be null")
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError:
                pass
        names = " or ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(f"{key} must be {names}, got {value!r}")
    if value is None:
        raise ConfigError(f"{key} must not be null (expected {_type_name(tp)})")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, (str, os.PathLike)) and _shorthand(tp):
            return tp(**{_shorthand(tp): os.fspath(value)})
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping of {_type_name(tp)} fields, got {value!r}")
        return build(tp, value, key + ".")
    if origin is list:
        items = value if isinstance(value, (list, tuple)) else [value]
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(items)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key} must be a list of {len(args)} values, got {value!r}")
        return tuple(_coerce(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {value!r}")
        return {str(k): v for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if tp in (int, float):
        return _number(value, tp, key)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key} must be a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported config type {tp}")  # pragma: no cover - schema error


def _number(value: Any, tp: type, key: str) -> int | float:
    what = "an integer" if tp is int else "a number"
    if not isinstance(value, bool):
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if isinstance(value, str):
            try:
                return tp(value)
            except ValueError:
                pass
    raise ConfigError(f"{key} must be {what}, got {value!r}")


def build(cls: type, data: dict[str, Any], prefix: str = "") -> Any:
    """Instantiate dataclass ``cls`` from the mapping ``data`` (nested sections recursively, values converted)."""
    hints = typing.get_type_hints(cls)
    names = set(_field_names(cls))
    for key in data:
        if key not in names:
            raise _unknown_key_error(str(key), cls, prefix)
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: {err}") from None


def to_dict(obj: Any) -> Any:
    """A config (or any part of it) as plain YAML/JSON-friendly data (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> ``(["optim", "lr"], "1e-4")`` (the value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.subkey=value (e.g. optim.lr=1e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def apply_overrides(root: type, data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Set each ``a.b.c=value`` override in the nested mapping ``data`` (in place; also returned).

    Keys are checked against the dataclass ``root`` where the schema is a dataclass (a typo fails here, with a
    suggestion); under free-form mappings (``dict`` fields) any key is accepted.
    """
    for text in overrides:
        parts, value = parse_override(text)
        node, cls, where = data, root, ""
        for i, part in enumerate(parts):
            if cls is not None:
                if part not in _field_names(cls):
                    raise _unknown_key_error(part, cls, where)
                hint = typing.get_type_hints(cls)[part]
                inner = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
                sub = inner[0] if dataclasses.is_dataclass(inner[0]) else None
            else:
                sub = None
            if i == len(parts) - 1:
                node[part] = value
                break
            if not isinstance(node.get(part), dict):
                current = node.get(part)
                if current is not None and cls is not None and sub is None:
                    raise ConfigError(f"override {text!r}: {where + part!r} is not a section")
                # a section given by its shorthand string becomes {SHORTHAND: string} before a sub-key is set
                short = _shorthand(sub) if sub is not None else None
                node[part] = {short: current} if short and isinstance(current, str) else {}
            node, cls, where = node[part], sub, where + part + "."
    return data


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML file that holds a mapping (an empty file is ``{}``); errors name the file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"config {str(path)!r} is not valid YAML: {err}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config {str(path)!r}: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {str(path)!r} must be a YAML mapping, got {type(data).__name__}")
    return data
