"""One config mechanism for every recipe: typed dataclasses parsed by jsonargparse (YAML + CLI overrides).

jsonargparse does the parsing and type checking; this module only turns its errors into one-paragraph
messages that name the dotted key, what is allowed and, for a misspelt key, the closest valid one
(in the spirit of ultralytics' `check_dict_alignment`), because its own messages do not suggest keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from refit.errors import ConfigError

__all__ = [
    "build_parser",
    "parse_config",
    "parse_config_dict",
    "config_to_dict",
    "dotted_keys",
    "load_yaml_file",
]

C = TypeVar("C")

# Readable names for the restricted number types used in the config dataclasses.
_TYPE_WORDS = {
    "PositiveInt": "an integer > 0",
    "NonNegativeInt": "an integer >= 0",
    "PositiveFloat": "a number > 0",
    "NonNegativeFloat": "a number >= 0",
    "ClosedUnitInterval": "a number in [0, 1]",
    "OpenUnitInterval": "a number in (0, 1)",
    "<class 'int'>": "an integer",
    "<class 'float'>": "a number",
    "<class 'bool'>": "true or false",
    "<class 'str'>": "a string",
}


# A config file whose aliases expand past this many YAML nodes is refused: an anchor/alias "bomb" of a few
# hundred bytes otherwise expands to billions of values while the keys are checked (shipped configs: < 200).
MAX_YAML_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader (no `!!python/...` tags) that also refuses a key given twice in one mapping:
    plain PyYAML keeps the last value silently, so `max_epochs: 1` above `max_epochs: 5` would train 5."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` then overriding a key is fine
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, (str, int, float, bool)) and key in seen:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"the key {key!r} is given twice (first on line {seen[key] + 1}); "
                        "YAML would silently keep only the last one: remove one of them",
                        key_node.start_mark,
                    )
                if isinstance(key, (str, int, float, bool)):
                    seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def _expanded_size(node, memo: dict[int, int]) -> int:
    """Number of nodes `node` stands for once every alias is expanded (memoised: aliases share nodes)."""
    known = memo.get(id(node))
    if known is not None:
        return known
    memo[id(node)] = 1  # a recursive alias counts once instead of looping
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[id(node)] = size
    return size


def load_yaml_file(path: str | Path) -> Any:
    """A YAML config file, safely: no Python tags, no duplicated keys, no alias bomb, UTF-8 only.

    Every problem is a ConfigError naming the file (and line)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"Config file {path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    except OSError as e:
        raise ConfigError(f"Config file {path} cannot be read ({e.strerror}).") from None
    loader = _StrictLoader(text)
    loader.name = str(path)  # error marks name the file, not "<unicode string>"
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise ConfigError(
                f"Config file {path} expands (through its anchors and aliases) to more than {MAX_YAML_NODES} "
                "values: refused as an alias bomb. Write the values out, or use fewer nested aliases."
            )
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"Config file {path} is not valid YAML: {e}") from None
    finally:
        loader.dispose()


def build_parser(config_cls: type, prog: str, description: str):
    """A jsonargparse parser for one recipe's config dataclass, with `--config FILE` and `--print_config`."""
    import argparse

    from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter

    class Formatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
        """Keeps the recipe docstring's example commands on their own lines."""

    parser = ArgumentParser(
        prog=prog,
        description=description,
        exit_on_error=False,
        allow_abbrev=False,
        default_env=False,
        formatter_class=Formatter,
    )
    parser.add_argument(
        "--config", action=ActionConfigFile, help="YAML config file (later flags override it)."
    )
    parser.add_class_arguments(config_cls, fail_untyped=True, sub_configs=True)
    return parser


def dotted_keys(config_cls: type, prefix: str = "") -> dict[str, Any]:
    """Every valid dotted key of a (nested) config dataclass, mapped to its field type."""
    keys: dict[str, Any] = {}
    hints = typing.get_type_hints(config_cls)
    for f in dataclasses.fields(config_cls):
        key = f"{prefix}{f.name}"
        ftype = hints[f.name]
        if dataclasses.is_dataclass(ftype):
            keys.update(dotted_keys(ftype, key + "."))
        else:
            keys[key] = ftype
    return keys


def _flatten(d: dict, prefix: str = "") -> list[str]:
    out = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.extend(_flatten(v, key + "."))
        else:
            out.append(key)
    return out


def _check_key(key: str, valid: dict[str, Any], where: str) -> None:
    """Raise a ConfigError for a key that is not in the schema, suggesting the closest valid one."""
    if key in valid or any(v.startswith(key + ".") for v in valid):
        return
    parts = key.split(".")
    for i in range(1, len(parts)):  # keys inside a free-form mapping field (e.g. a search space) are data
        if typing.get_origin(valid.get(".".join(parts[:i]))) is dict:
            return
    # Report at the deepest level that exists: `tracking.wandb` where there is no `tracking` section is an
    # unknown `tracking` at the top level, not an unknown `wandb` inside nothing.
    parent = ""
    for part in parts[:-1]:
        if not any(v.startswith(f"{parent}{part}.") for v in valid):
            break
        parent = f"{parent}{part}."
    siblings = sorted({v[len(parent) :].split(".")[0] for v in valid if v.startswith(parent)})
    close = difflib.get_close_matches(key, list(valid), n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    section = f"'{parent[:-1]}'" if parent else "the top level"
    raise ConfigError(
        f"Unknown config key '{key}' ({where}).{hint} Keys allowed at {section}: {', '.join(siblings)}."
    )


def _check_sections(data: dict, valid: dict[str, Any], where: str, prefix: str = "") -> None:
    """A section (`trainer:`) given a plain value instead of its keys: jsonargparse fails on it with a
    TypeError deep inside instantiation, so it is caught here with the section named."""
    for k, v in data.items():
        key = f"{prefix}{k}"
        is_section = key not in valid and any(name.startswith(key + ".") for name in valid)
        if is_section and not isinstance(v, dict):
            children = sorted(
                {name[len(key) + 1 :].split(".")[0] for name in valid if name.startswith(key + ".")}
            )
            got = (
                "nothing (an empty section: remove it, or give it a key)"
                if v is None
                else f"{type(v).__name__} {v!r}"
            )
            raise ConfigError(
                f"'{key}' ({where}) is a section and needs a mapping of its keys ({', '.join(children)}); got {got}."
            )
        if is_section:
            _check_sections(v, valid, where, key + ".")


def _check_unknown_keys(config_cls: type, argv: Sequence[str]) -> None:
    valid = dotted_keys(config_cls)
    valid["config"] = str
    args = list(argv)
    for i, tok in enumerate(args):
        if tok == "--config" and i + 1 < len(args):
            path = Path(args[i + 1])
            if path.is_dir():
                raise ConfigError(
                    f"--config {path} is a folder: give a YAML file (`refit configs` lists the shipped ones)."
                )
            if not path.is_file():
                raise ConfigError(f"Config file not found: {path}. `refit configs` lists the shipped ones.")
            data = load_yaml_file(path) or {}
            if not isinstance(data, dict):
                raise ConfigError(
                    f"Config file {path} must hold a mapping of keys, not {type(data).__name__}."
                )
            for key in _flatten(data):
                _check_key(key, valid, f"in {path}")
            _check_sections(data, valid, f"in {path}")
        elif tok.startswith("--") and tok not in ("--print_config", "--help", "-h"):
            key = tok[2:].split("=", 1)[0]
            if key.startswith("print_config"):
                continue
            _check_key(key, valid, "on the command line")


def _allowed(ftype: Any) -> str:
    """Describe what a field type accepts, for error messages."""
    origin = typing.get_origin(ftype)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ftype))
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_allowed(a) for a in typing.get_args(ftype) if a is not type(None)]
        null = " or null" if type(None) in typing.get_args(ftype) else ""
        return " or ".join(parts) + null
    name = getattr(ftype, "__name__", str(ftype))
    return _TYPE_WORDS.get(name, _TYPE_WORDS.get(str(ftype), name))


def _explain(error: Exception, config_cls: type) -> ConfigError:
    text = str(error)
    match = re.search(r'(?:Parser key|key) "([\w.]+)"', text)
    if match and match.group(1) != "config":
        key = match.group(1)
        ftype = dotted_keys(config_cls).get(key)
        got = (
            re.search(r"Got value: (.*)", text)
            or re.search(r"Given value: (.*)", text)  # a Union's (X | None) error; its "value type" is 'str'
            or re.search(r"(?:literal|value)[^']*('.*')", text)
            or re.search(r"could not convert string to \w+: (.*)", text)
            or re.search(r"Unable to load config (.*)", text)
        )
        got_s = f"; got {got.group(1).strip()}" if got else ""
        is_section = ftype is None and any(k.startswith(key + ".") for k in dotted_keys(config_cls))
        allowed = (
            _allowed(ftype)
            if ftype is not None
            else "a mapping of this section's keys"
            if is_section
            else "a valid value"
        )
        return ConfigError(f"Invalid value for '{key}': expected {allowed}{got_s}.")
    if match:  # problems with the --config file itself
        return ConfigError(text.split(":", 1)[-1].strip().replace("\n", " "))
    return ConfigError(" ".join(text.split()))


def _expand_bool_flags(argv: Sequence[str], keys: dict[str, Any]) -> list[str]:
    """Let a boolean key stand alone as a flag (`--resume` means `--resume true`)."""
    out: list[str] = []
    args = list(argv)
    for i, tok in enumerate(args):
        out.append(tok)
        key = tok[2:] if tok.startswith("--") else None
        is_flag = key is not None and keys.get(key) in (bool, bool | None)
        if is_flag and (i + 1 == len(args) or args[i + 1].startswith("--")):
            out.append("true")
    return out


def parse_config(parser, config_cls: type[C], argv: Sequence[str]) -> C:
    """Parse argv (with --config files) into an instance of `config_cls`, or raise a ConfigError."""
    from jsonargparse import ArgumentError

    _check_unknown_keys(config_cls, argv)
    argv = _expand_bool_flags(argv, dotted_keys(config_cls))
    try:
        namespace = parser.parse_args(argv)
        namespace.pop("config", None)
        cfg = parser.instantiate(namespace)
        # Rebuild the top-level dataclass so its own cross-section checks (__post_init__) run too.
        return _plain(config_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(config_cls)}))
    except ArgumentError as e:
        raise _explain(e, config_cls) from None
    except ValueError as e:  # cross-field checks in __post_init__ raise ValueError naming their keys
        raise ConfigError(str(e)) from None


def parse_config_dict(config_cls: type[C], data: dict, where: str = "in the config") -> C:
    """Validate a nested dict (e.g. a base config with tuned overrides) exactly like a config file."""
    from jsonargparse import ArgumentError

    valid = dotted_keys(config_cls)
    for key in _flatten(data):
        _check_key(key, valid, where)
    _check_sections(data, valid, where)
    parser = build_parser(config_cls, prog="refit", description="")
    try:
        cfg = parser.instantiate(parser.parse_object(data))
        return _plain(config_cls(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(config_cls)}))
    except ArgumentError as e:
        raise _explain(e, config_cls) from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _plain(value: Any) -> Any:
    """Restricted types (PositiveInt, ...) back to int/float/str, so that configs pickle, dump and
    compare as plain values everywhere (checkpoints, W&B, YAML)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(
            value, **{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        )
    if type(value) in (bool, int, float, str):
        return value
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


def config_to_dict(cfg: Any) -> dict:
    """A plain dict of a config dataclass, for refit.json, W&B and YAML dumps."""
    return dataclasses.asdict(cfg)
