"""Configs are dataclasses; they round-trip through a small YAML subset (nested mappings of JSON
scalars/lists), so no YAML library is needed to read back what we wrote."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, TypeVar

_T = TypeVar("_T")


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def dump_yaml(data: dict, indent: int = 0) -> str:
    lines = []
    for k, v in data.items():
        pad = "  " * indent
        if isinstance(v, dict) and v:
            lines.append(f"{pad}{k}:")
            lines.append(dump_yaml(v, indent + 1))
        else:
            lines.append(f"{pad}{k}: {json.dumps(v)}")
    return "\n".join(lines)


def load_yaml(text: str) -> dict:
    """Reads what ``dump_yaml`` writes exactly; other YAML through PyYAML when it is installed
    (PyYAML alone would read JSON floats such as 1e-05 back as strings)."""
    try:
        return _load_own(text)
    except (ValueError, IndexError):
        try:
            import yaml
        except ImportError:
            raise ValueError("this YAML is not in datafree's own subset; install pyyaml to read it") from None
        return yaml.safe_load(text) or {}


def _load_own(text: str) -> dict:
    root: dict = {}
    stack = [(-1, root)]
    for raw in text.splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        ind = len(raw) - len(raw.lstrip(" "))
        key, _, val = raw.strip().partition(":")
        while stack[-1][0] >= ind:
            stack.pop()
        parent = stack[-1][1]
        if val.strip() == "":
            parent[key] = {}
            stack.append((ind, parent[key]))
        else:
            parent[key] = json.loads(val.strip())
    return root


def make_strategy_config(registry: dict, kind: str, name: str, overrides: dict) -> Any:
    """The config dataclass registered under ``name`` (registry: name -> (config class, implementation)),
    built from ``overrides``; unknown names and options are one clear error."""
    from datafree.errors import DatafreeError

    if name not in registry:
        raise DatafreeError(f"unknown {kind} '{name}'; choose one of {', '.join(registry)}")
    return make_checked(registry[name][0], overrides, f"{kind} '{name}'")


def make_checked(cls: type[_T], options: dict, what: str) -> _T:
    """Dataclass ``cls`` built from ``options``: an unknown option or a mistyped value is one clear error."""
    from datafree.errors import DatafreeError

    known = {f.name for f in dataclasses.fields(cls)}
    bad = [k for k in options if k not in known]
    if bad:
        raise DatafreeError(f"{what} has no option '{bad[0]}'; options: {', '.join(sorted(known)) or 'none'}")
    return cls(**checked_options(cls, options, what))


def checked_options(cls, options: dict, what: str) -> dict:
    """``options`` for dataclass ``cls``, each checked against its field's annotation when that is made of
    bool, int, float, str and None: a mistyped value (g_steps=abc) is one clear error, not a crash deep inside
    the method.  Numbers must be finite and >= 0.  Integers are accepted for float fields and converted; a field
    that may be None but not a string takes "none" (or "null", "off") as None, as a command line spells it
    (--guide-opt noise_target=none)."""
    from datafree.errors import DatafreeError

    kinds = {"bool": (bool,), "int": (int,), "float": (int, float), "str": (str,), "None": (type(None),)}
    out = dict(options)
    for f in dataclasses.fields(cls):
        if f.name not in options:
            continue
        names = (f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "?")).replace(" ", "").split("|")
        if not all(n in kinds for n in names):
            continue  # containers and other types: the method checks them
        v = options[f.name]
        if "None" in names and "str" not in names and isinstance(v, str) and v.lower() in ("none", "null", "off"):
            out[f.name] = v = None
        ok = any(isinstance(v, kinds[n]) and not (isinstance(v, bool) and n in ("int", "float")) for n in names)
        if not ok:
            raise DatafreeError(f"{what} option '{f.name}' must be {' or '.join(n for n in names if n != 'None')}, "
                                f"got {v!r}")
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (math.isfinite(v) and v >= 0):
            # no option of any method is negative, NaN or infinite (counts, rates, weights, seeds)
            raise DatafreeError(f"{what} option '{f.name}' must be a finite number >= 0, got {v!r}")
        if "float" in names and "int" not in names and type(v) is int:
            out[f.name] = float(v)
    return out


def from_dict(cls: type[_T], data: dict) -> _T:
    """Build dataclass ``cls`` from ``data``, recursing into dataclass-typed fields."""
    kwargs = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}
    for k, v in data.items():
        if k not in hints:
            continue
        default = hints[k].default_factory() if hints[k].default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default) and isinstance(v, dict):
            v = from_dict(type(default), v)
        kwargs[k] = v
    return cls(**kwargs)
