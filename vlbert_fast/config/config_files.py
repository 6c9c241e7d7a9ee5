"""Typed configs from dataclass defaults, YAML files and command-line dotlist overrides.

The dataclass defaults are the embedded default run. A YAML file only overrides them; it may name other YAML files
to apply first with a top-level `_base_` (a path or a list of paths, relative to the file). Dotlist overrides
(`model.hidden_size=256`) apply last. Every key is checked against the dataclass that owns it: an unknown key is
rejected with the closest valid name, a value of the wrong type with the type that was expected and the value found,
and the source (file or command line) is named. Interpolation (`${model.hidden_size}`) is resolved by OmegaConf.

Each field's documentation is the string literal that follows it in the class body (as torchtitan does); the
`field_docs` helper reads those for `--help-config`.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import textwrap
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import OmegaConf

T = TypeVar("T")

BASE_KEY = "_base_"


class ConfigError(ValueError):
    """A config file or override that does not fit the schema; the message names the key and the source."""


# ----------------------------------------------------------------------------------------------------------------------
# reading sources


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> list[tuple[str, dict]]:
    """Returns [(source name, mapping)] for `path` and, first, every file it names under `_base_`."""
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"{path}: `{BASE_KEY}` chain loops back on itself: {cycle}")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, found {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: `{BASE_KEY}` must be a path or a list of paths, found {bases!r}")
    out: list[tuple[str, dict]] = []
    for base in bases:
        out.extend(_read_yaml(path.parent / base, (*chain, path)))
    out.append((str(path), data))
    return out


def parse_dotlist(overrides: Sequence[str]) -> dict:
    """`["model.hidden_size=256", "train.lr=1e-4"]` -> nested dict, values parsed as YAML scalars."""
    nested: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not of the form key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise ConfigError(f"command line: override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"command line: value of {key!r} is not valid YAML: {raw!r} ({exc})") from exc
        node = nested
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"command line: {key!r} sets a field inside {part!r}, which is given a value too")
        node[parts[-1]] = value
    return nested


# ----------------------------------------------------------------------------------------------------------------------
# checking against the schema


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _closest(name: str, options: Sequence[str]) -> str:
    match = difflib.get_close_matches(name, list(options), n=1, cutoff=0.5)
    return f"; did you mean {match[0]!r}?" if match else f"; valid keys: {', '.join(sorted(options))}"


def _check_keys(cls: type, data: Mapping, prefix: str, source: str) -> None:
    """Rejects keys the dataclass `cls` (recursively) does not have."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key, value in data.items():
        path = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"{source}: unknown key {path!r}{_closest(str(key), [prefix + n for n in names])}")
        sub = _dataclass_in(hints[key])
        if sub is not None and isinstance(value, Mapping):
            _check_keys(sub, value, f"{path}.", source)


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type inside `tp` (itself or inside Optional), if any."""
    if dataclasses.is_dataclass(tp):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if dataclasses.is_dataclass(arg):
                return arg
    return None


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Checks `value` against the annotation `tp`; returns it converted where the conversion is lossless."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(f"{path}: expected {_type_name(tp)}, found {type(value).__name__} {value!r}")
    if origin is typing.Literal:
        options = typing.get_args(tp)
        if value not in options:
            raise ConfigError(
                f"{path}: expected one of {list(options)}, found {value!r}{_closest(str(value), options)}"
            )
        return value
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, found {type(value).__name__} {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{path}: expected {len(args)} values, found {len(value)}: {value!r}")
            items = [_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))]
        else:
            item_tp = args[0] if args else Any
            items = [_coerce(item_tp, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if (origin or tp) is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, found {type(value).__name__} {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping of {tp.__name__} fields, found {value!r}")
        return _build(tp, value, f"{path}.")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected bool (true/false), found {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected int, found {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string; accept what Python reads as a float.
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected float, found {type(value).__name__} {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected str, found {type(value).__name__} {value!r}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        raise ConfigError(f"{path}: expected {tp.__name__}, found {type(value).__name__} {value!r}")
    return value


def _build(cls: type[T], data: Mapping, prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _coerce(hints[f.name], data[f.name], f"{prefix}{f.name}")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as exc:
        where = prefix.rstrip(".") or cls.__name__
        raise ConfigError(f"{where}: {exc}") from exc


# ----------------------------------------------------------------------------------------------------------------------
# public


def load_config(
    cls: type[T],
    files: Sequence[str | Path] = (),
    overrides: Sequence[str] = (),
    extra: Sequence[Mapping] = (),
    defaults: Sequence[Mapping] = (),
) -> T:
    """Builds `cls` from its defaults, then `defaults` mappings (e.g. a task's embedded default), then each YAML file
    in order, then `extra` mappings, then dotlist overrides."""
    sources: list[tuple[str, dict]] = [("embedded default", dict(m)) for m in defaults]
    for file in files:
        sources.extend(_read_yaml(Path(file)))
    sources.extend(("code", dict(m)) for m in extra)
    if overrides:
        sources.append(("command line", parse_dotlist(overrides)))
    for name, data in sources:
        _check_keys(cls, data, "", name)
    merged = OmegaConf.merge(OmegaConf.create(to_dict(cls())), *(OmegaConf.create(d) for _, d in sources))
    try:
        resolved = OmegaConf.to_container(merged, resolve=True)
    except Exception as exc:  # omegaconf raises its own types for bad interpolations
        raise ConfigError(f"could not resolve interpolations: {exc}") from exc
    try:
        return _build(cls, resolved)
    except ConfigError as exc:  # a wrong type or value: name the file (or command line) that set it
        origin = _origin(sources, str(exc).split(":", 1)[0])
        if origin is None:
            raise
        raise ConfigError(f"{origin}: {exc}") from exc


def _origin(sources: Sequence[tuple[str, dict]], key: str) -> str | None:
    """The last source (file, command line, ...) that sets `key` (dotted) or anything under it."""
    for name, data in reversed(sources):
        node: object = data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return name
    return None


def to_dict(config: Any) -> dict:
    """A plain nested dict of a config dataclass (tuples as lists), ready for YAML or JSON."""

    def plain(value: Any) -> Any:
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(config)


def to_yaml(config: Any) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def save_config(config: Any, path: str | Path) -> None:
    Path(path).write_text(to_yaml(config))


def field_docs(cls: type) -> dict[str, str]:
    """Field name -> the docstring written right after the field in the class body (a subclass's over its bases')."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


def _own_field_docs(cls: type) -> dict[str, str]:
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for stmt, nxt in zip(body, body[1:], strict=False):
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[stmt.target.id] = " ".join(nxt.value.value.split())
    return docs


def describe(cls: type, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key, type, default, doc) for every field of `cls`, nested dataclasses flattened with dotted keys."""
    rows = []
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        sub = _dataclass_in(hints[f.name])
        if sub is not None:
            rows.extend(describe(sub, f"{prefix}{f.name}."))
        else:
            rows.append(
                (f"{prefix}{f.name}", _type_name(hints[f.name]), repr(getattr(default, f.name)), docs.get(f.name, ""))
            )
    return rows
