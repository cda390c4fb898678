"""The strict config machinery: typed dataclass fields with help and ranges, YAML + `--set` loading.

Config classes themselves live beside the code they configure; this module only knows how to fill,
check and print any tree of them. It never clamps: a bad value is a ConfigError naming the field.
"""
import argparse
import dataclasses
import difflib
import json
import math
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


def opt(default: Any, help: str, *, ge: float | None = None, gt: float | None = None,
        le: float | None = None, lt: float | None = None, choices: tuple | None = None) -> Any:
    """A config field: its default, the sentence that becomes `--help`, and its allowed range."""
    meta = {"help": help, "ge": ge, "gt": gt, "le": le, "lt": lt, "choices": choices}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def sub(cls: type) -> Any:
    """A nested config section."""
    return dataclasses.field(default_factory=cls, metadata={"help": (cls.__doc__ or "").strip()})


def _range_text(meta: dict) -> str:
    if meta.get("choices"):
        return "one of " + ", ".join(repr(c) for c in meta["choices"])
    parts = [f"{op} {meta[k]}" for k, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<"))
             if meta.get(k) is not None]
    return " and ".join(parts) if parts else "any value of the field's type"


def _rule(meta: dict) -> str:
    """The allowed range as an error's rule: 'must be >= 1', 'must be one of 'a', 'b''."""
    return "must be " + _range_text(meta)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) < len(typing.get_args(tp)):
            return True, args[0]
    return False, tp


def _coerce(path: str, value: Any, tp: Any, meta: dict) -> Any:
    """Convert one YAML/CLI value to the field's type, or raise a ConfigError naming the field."""
    optional, base = _is_optional(tp)
    if value is None or (isinstance(value, str) and value.lower() in ("null", "none") and optional):
        if optional:
            return None
        raise ConfigError(path, value, f"a value is required ({_rule(meta)})")
    try:
        if base is bool:
            if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
                return value.lower() in ("true", "1", "yes")
            if not isinstance(value, bool):
                raise TypeError
            return value
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(float(value)) if isinstance(value, str) else int(value)
        if base is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)  # "1e4" as a string is a number too
        if base is str:
            if not isinstance(value, (str, int, float)):
                raise TypeError
            return str(value)
        if typing.get_origin(base) is tuple:
            seq = yaml.safe_load(value) if isinstance(value, str) else value
            return tuple(float(v) for v in seq)
    except (TypeError, ValueError):
        raise ConfigError(path, value, f"must be a {getattr(base, '__name__', base)} ({_range_text(meta)})") from None
    return value


def check_field(path: str, value: Any, meta: dict) -> None:
    """Range, finiteness and choice checks of one leaf value."""
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(path, value, f"must be a finite number ({_range_text(meta)})")
    if meta.get("choices") and value not in meta["choices"]:
        raise ConfigError(path, value, _rule(meta))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        bad = ((meta.get("ge") is not None and value < meta["ge"]) or
               (meta.get("gt") is not None and value <= meta["gt"]) or
               (meta.get("le") is not None and value > meta["le"]) or
               (meta.get("lt") is not None and value >= meta["lt"]))
        if bad:
            raise ConfigError(path, value, _rule(meta))


def from_dict(cls: type, data: dict, prefix: str = "") -> Any:
    """Build a config dataclass from a (partial) nested dict, strictly: unknown keys are errors."""
    if not isinstance(data, dict):
        raise ConfigError(prefix.rstrip(".") or "<root>", data, "a mapping of config keys")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = prefix + str(key)
        if key not in fields:
            near = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f"did you mean '{prefix}{near[0]}'? " if near else ""
            raise ConfigError(path, value, f"unknown key; {hint}known keys: {', '.join(fields)}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = from_dict(tp, value or {}, path + ".")
        else:
            kwargs[key] = _coerce(path, value, tp, dict(fields[key].metadata))
    obj = cls(**kwargs)
    check_tree(obj, prefix)
    return obj


def check_tree(obj: Any, prefix: str = "") -> None:
    """Check every leaf of a config tree against its field's range."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            check_tree(value, prefix + f.name + ".")
        else:
            check_field(prefix + f.name, value, dict(f.metadata))


def set_dotted(data: dict, assignment: str) -> dict:
    """Apply one `a.b.c=value` override to a nested dict (value parsed as YAML: 1e4 is a number)."""
    if "=" not in assignment:
        raise ConfigError(assignment, None, "an override of the form section.key=value")
    key, raw = assignment.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:  # not YAML (e.g. a template "{view} view of {prompt}"): the literal string
        value = raw
    if isinstance(value, dict):  # no leaf is a mapping: "a photo: a cat" is a prompt, not {a photo: a cat}
        value = raw
    if isinstance(value, str) and _looks_numeric(value):
        value = float(value)
    node = data
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(key, raw, f"'{part}' is a value, not a section")
    node[parts[-1]] = value
    return data


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config file into a nested dict (an empty file is an empty config)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("config", str(path), "an existing YAML file")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ConfigError("config", str(path), "a YAML mapping at the top level")
    return data


def merge(base: dict, over: dict) -> dict:
    """Deep-merge two nested dicts; `over` wins."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def to_dict(obj: Any) -> dict:
    return dataclasses.asdict(obj)


def to_json(obj: Any) -> str:
    return json.dumps(to_dict(obj), indent=2, sort_keys=False)


def flatten(d: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} -> {'a.b': 1}: the `--set` keys, also used as MLflow params and table columns."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def help_lines(cls: type, prefix: str = "", values: dict | None = None) -> list[str]:
    """One line per leaf field: dotted key, default, allowed range and help, for `--help`. With `values` (the
    flattened config that will run, e.g. a preset's), each line shows that value beside the default:
    `steps = 800 (default 10000)`."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = prefix + f.name, hints[f.name]
        if dataclasses.is_dataclass(tp):
            lines += help_lines(tp, key + ".", values)
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        meta = dict(f.metadata)
        rng = _range_text(meta)
        rng = "" if rng.startswith("any value") else f" [{rng}]"
        shown = f" = {values[key]!r}" if values is not None and key in values else ""
        lines.append(f"  {key}{shown} (default {default!r}){rng}: {meta.get('help', '')}")
    return lines


def parse_config_cli(cls: type, argv: list[str] | None, description: str, out_help: str) -> tuple[Any, Path, str]:
    """(config, --out, --device) of a training script: one --flag per field of `cls` (its help and default shown),
    built with `from_dict` (so each flag is checked against its field's range; ConfigError when out of it)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help=out_help)
    p.add_argument("--device", default="cuda", help="torch device, e.g. cuda or cpu")
    for f in dataclasses.fields(cls):
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, default=None,
                       help=f"{f.metadata['help']} (default {f.default})")
    args = vars(p.parse_args(argv))
    out, device = args.pop("out"), args.pop("device")
    return from_dict(cls, {k: v for k, v in args.items() if v is not None}), out, device
