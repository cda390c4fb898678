"""The search space of a sweep: one distribution per dotted RunConfig key, plus order constraints.

A `space` entry is `KEY: {KIND: ARGS}` with KIND one of
  choice: [v1, v2, ...]    any values (categorical)           grid: [v1, v2, ...]  every value (grid search)
  uniform: [low, high]     floats, uniform in [low, high]     loguniform: [low, high]  log-uniform, low > 0
  randint: [low, high]     integers, low..high inclusive
KEY is the same dotted key as `--set` (checked against RunConfig, with did-you-mean).

Constraints `A < B` (always including `sigma.min < sigma.max`) are met by *conditional sampling*: B is drawn
first, then A from its own distribution restricted to values below B (a truncated range for numbers, the
allowed subset for choices; grid combinations that break a constraint are dropped). Nothing is clamped after
the fact and no trial is wasted. Validation requires every draw of B to leave room for A (low(A) < low(B)).
Does not know Ray: `sample` (random), `grid_points` (grid) and `OptunaSpace` (define-by-run) return plain
dicts of dotted keys.
"""
import difflib
import itertools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

KINDS = ("choice", "grid", "uniform", "loguniform", "randint")
DEFAULT_CONSTRAINTS = ("sigma.min < sigma.max",)


@dataclass(frozen=True)
class Dist:
    """One key's distribution: `values` for choice/grid, `low`/`high` for the numeric kinds."""

    key: str
    kind: str
    values: tuple = ()
    low: float = 0.0
    high: float = 0.0

    @property
    def numeric(self) -> bool:
        return self.kind in ("uniform", "loguniform", "randint")

    def endpoints(self) -> tuple:
        """The values whose validity implies every draw's (the extremes, or every listed value)."""
        return (self.low, self.high) if self.numeric else self.values

    def lowest(self) -> float:
        return self.low if self.numeric else min(self.values)

    def draw(self, rng: np.random.Generator, below: float | None = None) -> Any:
        """One value, restricted to `< below` when given (the caller checked that some value is)."""
        if not self.numeric:
            allowed = [v for v in self.values if below is None or v < below]
            return allowed[int(rng.integers(len(allowed)))]
        high = self.high if below is None else min(self.high, below)
        if self.kind == "randint":
            return int(rng.integers(int(self.low), self._int_top(below) + 1))
        if self.kind == "loguniform":
            return float(math.exp(rng.uniform(math.log(self.low), math.log(high))))
        return float(rng.uniform(self.low, high))

    def _int_top(self, below: float | None) -> int:
        """The largest allowed integer: high, or the last integer strictly below `below`."""
        return int(self.high) if below is None else min(int(self.high), math.ceil(below) - 1)

    def suggest(self, trial, below: float | None = None) -> Any:
        """The same draw through an Optuna trial (define-by-run: ranges may shrink per trial)."""
        if not self.numeric:
            return trial.suggest_categorical(self.key, list(self.values))
        high = self.high if below is None else min(self.high, below)
        if self.kind == "randint":
            return trial.suggest_int(self.key, int(self.low), self._int_top(below))
        if below is not None and high <= self.low:
            high = math.nextafter(self.low, math.inf)
        elif below is not None:  # strictly below: Optuna's float range is closed
            high = math.nextafter(high, -math.inf)
        return trial.suggest_float(self.key, self.low, high, log=self.kind == "loguniform")


@dataclass(frozen=True)
class LessThan:
    """The constraint `lower < upper` between two dotted config keys."""

    lower: str
    upper: str

    def holds(self, values: dict) -> bool:
        a, b = values.get(self.lower), values.get(self.upper)
        return a is None or b is None or a < b


# --- parsing ----------------------------------------------------------------------------------------------------
def parse_dist(key: str, entry: Any) -> Dist:
    """`{uniform: [0, 1]}` -> Dist, or a ConfigError naming `space.KEY`."""
    field = f"space.{key}"
    if not isinstance(entry, dict) or len(entry) != 1:
        raise ConfigError(field, entry, f"a mapping with exactly one of {', '.join(KINDS)}, e.g. {{uniform: [1, 10]}}")
    kind, args = next(iter(entry.items()))
    if kind not in KINDS:
        near = difflib.get_close_matches(str(kind), KINDS, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError(field, entry, f"unknown distribution '{kind}'; {hint}known: {', '.join(KINDS)}")
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise ConfigError(field, args, f"a non-empty list of values for '{kind}'")
        return Dist(key, kind, values=tuple(args))
    return _numeric(field, key, kind, args)


def _numeric(field: str, key: str, kind: str, args: Any) -> Dist:
    ok = isinstance(args, list) and len(args) == 2 and all(
        isinstance(a, (int, float)) and not isinstance(a, bool) for a in args)
    if not ok:
        raise ConfigError(field, args, f"[low, high]: two numbers for '{kind}'")
    low, high = args
    if kind == "randint" and not all(float(a).is_integer() for a in args):
        raise ConfigError(field, args, "two integers for 'randint'")
    if not low < high:
        raise ConfigError(field, args, f"a non-empty range: low < high for '{kind}'")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(field, args, "low > 0 for 'loguniform'")
    return Dist(key, kind, low=float(low), high=float(high))


def parse_constraint(text: Any) -> LessThan:
    """'sigma.min < sigma.max' -> LessThan."""
    parts = str(text).split("<") if isinstance(text, str) else []
    if len(parts) != 2 or not all(p.strip() for p in parts):
        raise ConfigError("constraints", text, "strings of the form 'a.b < c.d'")
    return LessThan(parts[0].strip(), parts[1].strip())


# --- ordering and sampling --------------------------------------------------------------------------------------
def sample_order(space: dict[str, Dist], constraints: list[LessThan]) -> list[str]:
    """Keys ordered so that every constraint's upper key comes before its lower key (raises on cycles)."""
    order, remaining = [], list(space)
    while remaining:
        ready = [k for k in remaining
                 if not any(c.lower == k and c.upper in remaining and c.upper != k for c in constraints)]
        if not ready:
            raise ConfigError("constraints", [f"{c.lower} < {c.upper}" for c in constraints], "no cycles")
        order.append(ready[0])
        remaining.remove(ready[0])
    return order


def bound_below(key: str, values: dict, constants: dict, constraints: list[LessThan]) -> float | None:
    """The tightest upper bound on `key` from constraints, given values drawn so far and the base constants."""
    bounds = []
    for c in constraints:
        if c.lower == key:
            b = values.get(c.upper, constants.get(c.upper))
            if isinstance(b, (int, float)) and not isinstance(b, bool):
                bounds.append(b)
    return min(bounds) if bounds else None


def sample(space: dict[str, Dist], constraints: list[LessThan], constants: dict, n: int, seed: int) -> list[dict]:
    """n independent conditional draws (random search), reproducible from `seed`."""
    rng = np.random.default_rng(seed)
    order = sample_order(space, constraints)
    points = []
    for _ in range(n):
        values: dict = {}
        for key in order:
            values[key] = space[key].draw(rng, bound_below(key, values, constants, constraints))
        points.append({k: values[k] for k in space})
    return points


def grid_points(space: dict[str, Dist], constraints: list[LessThan], constants: dict) -> list[dict]:
    """Every combination of the grid/choice values that satisfies the constraints, in YAML order."""
    for d in space.values():
        if d.numeric:
            raise ConfigError(f"space.{d.key}", d.kind, "grid or choice values under search.kind = grid")
    keys = list(space)
    combos = [dict(zip(keys, vals)) for vals in itertools.product(*(space[k].values for k in keys))]
    return [c for c in combos if all(LessThan.holds(r, {**constants, **c}) for r in constraints)]


class OptunaSpace:
    """Define-by-run search space for Optuna (TPE): the same conditional draws, suggested through a trial."""

    def __init__(self, space: dict[str, Dist], constraints: list[LessThan], constants: dict):
        self.space, self.constraints, self.constants = space, constraints, constants
        self.order = sample_order(space, constraints)

    def __call__(self, trial) -> None:
        values: dict = {}
        for key in self.order:
            below = bound_below(key, values, self.constants, self.constraints)
            values[key] = self.space[key].suggest(trial, below)


def resolved_params(base: dict, params: dict) -> dict:
    """The trial's whole flattened run config (every RunConfig field, defaults filled in) as `--set` keys;
    the raw partial dict if it does not even parse (its trial fails and says why)."""
    from ..config import load_config
    from ..configtools import flatten, to_dict
    from ..errors import SJCError

    data = apply_params(base, params)
    try:
        return flatten(to_dict(load_config(data, validate=False)))
    except SJCError:
        return flatten(data)


def apply_params(base: dict, params: dict) -> dict:
    """A copy of the nested config dict `base` with each dotted key of `params` set (no parsing, no checks)."""
    import copy

    data = copy.deepcopy(base)
    for key, value in params.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.item() if isinstance(value, np.generic) else value
    return data
