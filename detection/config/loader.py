"""Typed configuration in general: YAML files with ``_base_`` inheritance into a dataclass tree.

This module knows no schema: every function takes the root dataclass (``schema``); the
detection schema is ``detection.config.schema``, pretraining's ``detection.pretrain.config``.
YAML keys equal the dataclasses' field names, which equal constructor argument names.

Loading order (later wins)::

    dataclass defaults  <-  _base_ files (in list order, recursively)  <-  the file  <-  overrides

An unknown key, a wrong type or a value outside a key's choices (:func:`choice_field`) raises
:class:`ConfigError`, which names the full dotted key, the file it came from, and the closest
valid key.

**Paths.** One rule: a relative path in a config value (``data.*``, ``model.weights``,
``output_dir``, ...) resolves from the current working directory, the folder the command runs
in, wherever the config file lies; :func:`existing_path` checks one and names the key and that
folder when it is missing. Only ``_base_`` entries, which are references between config files
rather than values, resolve from the file that names them.

**Configs by name.** ``find`` (a function from a name to a file, or ``None``) is asked for the
config file itself when no such path exists from the current directory (with or without
``.yaml``), and for a ``_base_`` entry not found beside the file that names it; detection passes
the lookup of the shipped configs (``detection.resources.find_config``).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import field
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional, Union

import yaml

__all__ = [
    "ConfigError", "apply_overrides", "choice_field", "config_from_dict", "config_to_dict",
    "dump_config", "existing_path", "list_field", "load_config", "save_config",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def choice_field(*values: Any, default: Any) -> Any:
    """A dataclass field whose value must be one of ``values`` (checked at load)."""
    return field(default=default, metadata={"choices": values})


def list_field(*values: Any) -> Any:
    """A dataclass field defaulting to a fresh list of ``values`` (nested lists copied)."""
    return field(default_factory=lambda: [list(v) if isinstance(v, list) else v for v in values])


# -------------------------------------------------------------------------------------- loading
def _read_yaml(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, child: dict) -> dict:
    """Deep merge: mappings merge key by key, anything else in ``child`` replaces ``base``."""
    out = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


Finder = Callable[[str], Optional[Path]]  # a config's name -> its file, or None


def resolve_config_path(name: Union[str, os.PathLike], find: Optional[Finder] = None) -> Path:
    """The config file ``name`` names: the path itself (from the current directory), the path
    with ``.yaml``, or else ``find(name)``; an error names what was looked for."""
    path = Path(name).expanduser()
    for candidate in (path, path.with_name(path.name + ".yaml")):
        if candidate.is_file():
            return candidate
    found = find(os.fspath(name)) if find is not None else None
    if found is not None:
        return found
    shipped = (" (nor is it the name of a shipped config: `resdet configs` lists them)"
               if find else "")
    raise ConfigError(f"config file not found: {name}{shipped}")


def _load_tree(path: Path, schema: type, chain: tuple[Path, ...] = (),
               find: Optional[Finder] = None) -> dict:
    """Read ``path`` and its ``_base_`` files (relative to ``path``'s folder, else ``find``),
    merged.

    Each file is validated on its own first, so an error names the file that holds the bad key.
    """
    path = path.resolve()
    if path in chain:
        cycle = " -> ".join(str(p) for p in (*chain, path))
        raise ConfigError(f"_base_ cycle: {cycle}")
    data = _read_yaml(path)
    bases = data.pop("_base_", [])
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigError(f"{path}: _base_ must be a path or a list of paths, got {bases!r}")
    config_from_dict(data, source=str(path), schema=schema)  # validate this file's own keys
    merged: dict = {}
    for base in bases:
        base_path = (path.parent / base).resolve()
        if not base_path.is_file() and find is not None:
            base_path = find(base) or base_path
        if not base_path.is_file():
            among = " and among the shipped configs" if find is not None else ""
            raise ConfigError(f"{path}: _base_ file not found: '{base}' (looked for "
                              f"{base_path}{among})")
        merged = _merge(merged, _load_tree(base_path, schema, (*chain, path), find))
    return _merge(merged, data)


def _check_override(parts: list[str], value: Any, source: str, schema: type) -> None:
    """Validate one override's dotted key and value against the schema; errors name ``source``."""
    cls: Any = schema
    for i, part in enumerate(parts):
        dotted = ".".join(parts[: i + 1])
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            section = "".join(f"{p}." for p in parts[:i])
            raise _unknown_key_error(cls, ".".join(parts), source, section)
        hint = typing.get_type_hints(cls)[part]
        if i < len(parts) - 1:
            if not dataclasses.is_dataclass(hint):
                raise ConfigError(f"{source}: '{dotted}' is a value, not a section; "
                                  f"cannot set '{'.'.join(parts)}'")
            cls = hint
            continue
        _check_field(fields[part], hint, value, dotted, source)


def apply_overrides(tree: dict, overrides: list[str], schema: type) -> dict:
    """Apply ``a.b.c=value`` strings (the value is parsed as YAML: ``0.01``, ``[1, 2]``, ``null``).

    Each override is checked against the schema on its own, so an error names the override (not
    the file) that holds the bad key or value.
    """
    tree = _merge({}, tree)
    for item in overrides:
        key, sep, raw = item.partition("=")
        source = f"override '{item}'"
        if not sep or not key.strip():
            raise ConfigError(f"{source} must look like key.sub_key=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as e:
            raise ConfigError(f"{source}: value is not valid YAML: {e}") from None
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"{source}: empty part in key '{key.strip()}'")
        _check_override(parts, value, source, schema)
        node = tree
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return tree


def load_config(path: Union[str, os.PathLike, None], overrides: Optional[list[str]] = None, *,
                schema: type, find: Optional[Finder] = None) -> Any:
    """Read a YAML file (with ``_base_``), apply ``overrides`` and validate against ``schema``,
    a root dataclass (detection's ``Config``, pretraining's ``PretrainConfig``); ``find`` looks
    configs up by name (module docstring)."""
    tree = (_load_tree(resolve_config_path(path, find), schema, find=find)
            if path is not None else {})
    tree = apply_overrides(tree, list(overrides or []), schema)
    return config_from_dict(tree, source=str(path) if path is not None else "overrides",
                            schema=schema)


def save_config(cfg: Any, path: Union[str, os.PathLike]) -> None:
    """Write the resolved config as YAML (``output_dir/config.yaml``); reloadable as is."""
    from ..engine.files import write_text

    write_text(path, dump_config(cfg))


def existing_path(value: str, key: str, *, kind: str = "file") -> str:
    """``value`` of config key ``key``, checked to be an existing file (``kind="file"``) or
    folder (``"folder"``); returned unchanged. A relative path resolves from the current working
    directory (the one rule of the module docstring); the error names the key, the path and the
    folder it was resolved from."""
    path = Path(value).expanduser()
    if path.is_file() if kind == "file" else path.is_dir():
        return value
    where = "" if path.is_absolute() else (
        f" (relative paths resolve from the current directory, {os.getcwd()})")
    found = "" if not path.exists() else f" ({'a folder' if path.is_dir() else 'a file'})"
    raise FileNotFoundError(f"{key}: {kind} not found: {value}{found}{where}")


# ----------------------------------------------------------------------------------- validation
def _all_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}{f.name}"
        keys.append(dotted)
        hint = typing.get_type_hints(cls)[f.name]
        if dataclasses.is_dataclass(hint):
            keys.extend(_all_keys(hint, dotted + "."))
    return keys


def _unknown_key_error(cls: type, dotted: str, source: str, section: str) -> ConfigError:
    valid = _all_keys(cls, section)  # the keys under the section ``cls`` (at ``section``)
    close = difflib.get_close_matches(dotted, valid, n=1, cutoff=0.6)
    if not close:  # a typo in the last part only: compare leaf names under the same parent
        parent, _, leaf = dotted.rpartition(".")
        leaves = [f.name for f in dataclasses.fields(cls)]
        close = [f"{parent}.{m}" if parent else m
                 for m in difflib.get_close_matches(leaf, leaves, n=1, cutoff=0.5)]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{source}: unknown config key '{dotted}'{hint}")


def _check(value: Any, hint: Any, dotted: str, source: str) -> Any:
    """Return ``value`` converted to ``hint`` or raise a ConfigError naming ``dotted``."""
    origin = typing.get_origin(hint)
    if origin is Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(args) < len(typing.get_args(hint)):
            return None
        for arg in args[:-1]:  # Union[bool, str]: the first type that fits
            try:
                return _check(value, arg, dotted, source)
            except ConfigError:
                pass
        return _check(value, args[-1], dotted, source)
    if dataclasses.is_dataclass(hint):
        if value is None:  # an empty section (`solver:` with every key commented out)
            value = {}
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping, got {value!r}")
        return _build(hint, value, dotted + ".", source)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{source}: '{dotted}' must be a list, got {value!r}")
        (item_hint,) = typing.get_args(hint)
        return [_check(v, item_hint, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is dict or origin is dict:  # a free mapping (an augmentation's or hook's arguments)
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{source}: '{dotted}' must be a mapping with string keys, got "
                              f"{value!r}")
        return dict(value)
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `1e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint in (str, bool) and isinstance(value, hint):
        return value
    name = getattr(hint, "__name__", str(hint))
    raise ConfigError(f"{source}: '{dotted}' must be of type {name}, got {value!r}")


def _check_field(f: dataclasses.Field, hint: Any, value: Any, dotted: str, source: str) -> Any:
    """``value`` converted to the field's type and checked against its choices."""
    checked = _check(value, hint, dotted, source)
    choices = f.metadata.get("choices")
    if choices and checked not in choices:
        raise ConfigError(f"{source}: '{dotted}' must be one of {list(choices)}, got {checked!r}")
    return checked


def _build(cls: type, tree: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise _unknown_key_error(cls, dotted, source, prefix)
        kwargs[key] = _check_field(fields[key], hints[key], value, dotted, source)
    return cls(**kwargs)


def config_from_dict(tree: dict, source: str = "config", *, schema: type) -> Any:
    """Validate a plain dict (e.g. from a checkpoint) into an instance of ``schema``."""
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a config must be a mapping, got {type(tree).__name__}")
    return _build(schema, tree, "", source)


def config_to_dict(cfg: Any) -> dict:
    """The resolved config as plain Python values (safe for ``torch.load(weights_only=True)``)."""
    return dataclasses.asdict(cfg)


def dump_config(cfg: Any) -> str:
    """The resolved config as YAML text; ``load_config`` of it gives back an equal config."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=None)
