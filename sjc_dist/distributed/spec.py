"""SweepSpec: a `tune_configs/*.yaml` file, validated completely before Ray starts.

Top-level keys: `base` (a preset name / YAML path, or a partial RunConfig mapping, optionally with
`preset: NAME` to start from one), `space` (dotted key -> distribution, see space.py), `constraints`
(['a.b < c.d', ...]; `sigma.min < sigma.max` always applies), and the SweepSettings fields below (`search`,
`scheduler`, `resources`, `rank`, `num_samples`, `max_concurrent`, `report_every`, ...).
Every error is a ConfigError naming the YAML field. Every trial config goes through `load_config`, the same
validation as `sjc run`: grid and random points here, before Ray; Optuna's on the worker when it opens a slot.
"""
import difflib
from dataclasses import dataclass, fields
from pathlib import Path

from ..config import RunConfig, load_config, preset_path
from ..configtools import flatten, from_dict, load_yaml, merge, opt, set_dotted, sub, to_dict
from ..errors import ConfigError
from .space import DEFAULT_CONSTRAINTS, Dist, LessThan, apply_params, grid_points, parse_constraint, parse_dist
from .space import sample as sample_space

STEP_METRICS = ("loss", "guidance", "emptiness", "depth", "opacity", "sigma", "update_norm")
SCORE_METRICS = ("score", "score/soft_iou", "score/iou", "score/fit")


@dataclass(frozen=True)
class SearchConfig:
    """How trial configs are chosen."""

    kind: str = opt("random", "grid (every combination of grid/choice values), random (independent draws) or "
                              "optuna (TPE, define-by-run)", choices=("grid", "random", "optuna"))
    seed: int = opt(0, "seed of the sampler (random and optuna)", ge=0)


@dataclass(frozen=True)
class SchedulerConfig:
    """When trials are stopped early: never (fifo) or by ASHA on an intermediate metric."""

    kind: str = opt("fifo", "fifo (run every trial to the end) or asha (stop poor trials at rungs)",
                    choices=("fifo", "asha"))
    metric: str = opt("score", "the intermediate metric ASHA compares and Optuna optimises (reported every "
                               "report_every steps): score, score/soft_iou, score/iou, score/fit, loss, ...")
    mode: str = opt("max", "max or min of the metric is better", choices=("max", "min"))
    grace_period: int = opt(50, "ASHA: optimisation steps before a trial may be stopped (the first rung)", ge=1)
    reduction_factor: float = opt(2.0, "ASHA: keep the top 1/reduction_factor of trials at each rung", gt=1.0)
    brackets: int = opt(1, "ASHA: number of brackets", ge=1)


@dataclass(frozen=True)
class ResourcesConfig:
    """The SceneWorker actors and what Tune reserves for each trial's thin Trainable."""

    workers: int = opt(1, "SceneWorker actors per model (each loads the model once)", ge=1)
    cpus_per_worker: float = opt(1.0, "Ray CPUs reserved by each worker", ge=0.0)
    gpus_per_worker: float = opt(0.0, "GPUs per worker; 0.5 puts two workers on one GPU", ge=0.0)
    slots_per_worker: int = opt(4, "scenes a worker holds at once: bounds its memory and its batch", ge=1, le=256)
    cpus_per_trial: float = opt(0.25, "Ray CPUs reserved by each trial's Trainable (it only waits on a worker)",
                                gt=0.0)
    torch_threads: int = opt(0, "intra-op threads of a worker (0 = max(1, cpus_per_worker))", ge=0)


@dataclass(frozen=True)
class RankConfig:
    """How finished trials are ranked (after evaluation)."""

    metric: str | None = opt(None, "final metric to rank by, e.g. eval/iou or eval/clip_score; null = the "
                                   "scheduler's metric; falls back to it when the evaluator did not report it")
    mode: str | None = opt(None, "max or min; null = the scheduler's mode", choices=(None, "max", "min"))


@dataclass(frozen=True)
class SweepSettings:
    """Everything in a sweep YAML except `base`, `space` and `constraints`."""

    name: str = opt("sweep", "the sweep's name (MLflow experiment, default output folder runs/sweeps/NAME)")
    num_samples: int = opt(1, "trials drawn (random, optuna); repeats of the whole grid (grid)", ge=1)
    max_concurrent: int = opt(4, "trials running at once (at most workers x slots_per_worker)", ge=1)
    report_every: int = opt(50, "optimisation steps between intermediate reports (and scores)", ge=1)
    checkpoint_every: int = opt(1, "reports between trial checkpoints (a dead worker's trial resumes there)", ge=1)
    max_failures: int = opt(2, "retries of a trial whose worker died (a diverged trial is never retried)", ge=0)
    scorer: str = opt("auto", "intermediate score: truth (toy world soft 3D IoU at best yaw), fit (denoiser fit "
                              "of fixed views, any model), auto (truth for toy captions, else fit)",
                      choices=("auto", "truth", "fit"))
    evaluate: bool = opt(True, "score each finished trial with sjc_dist.evaluation (CLIP score, ground truth)")
    judge: str = opt("toy", "CLIP judge of the final evaluation: 'toy' or an open_clip spec (see sjc bench)")
    eval_views: int = opt(8, "views rendered per trial for the final evaluation", ge=1, le=64)
    search: SearchConfig = sub(SearchConfig)
    scheduler: SchedulerConfig = sub(SchedulerConfig)
    resources: ResourcesConfig = sub(ResourcesConfig)
    rank: RankConfig = sub(RankConfig)


TOP_KEYS = ("base", "space", "constraints", *(f.name for f in fields(SweepSettings)))


@dataclass(frozen=True)
class SweepSpec:
    """A validated sweep: settings, the base run config (nested dict), the space and the constraints."""

    settings: SweepSettings
    base: dict
    space: dict[str, Dist]
    constraints: tuple[LessThan, ...]
    source: str = ""

    @property
    def constants(self) -> dict:
        """Flattened base values (the bounds of constraints whose upper key is not swept)."""
        return flatten(self.base)

    def points(self) -> list[dict]:
        """The trial parameter dicts of grid and random search (Optuna draws its own at run time)."""
        s = self.settings
        if s.search.kind == "grid":
            return grid_points(self.space, list(self.constraints), self.constants) * s.num_samples
        if s.search.kind == "random":
            return sample_space(self.space, list(self.constraints), self.constants, s.num_samples, s.search.seed)
        return []

    def n_trials(self) -> int:
        """How many trials the sweep runs (grid/random: its points; Optuna: num_samples)."""
        return len(self.points()) or self.settings.num_samples

    def trial_config(self, params: dict) -> dict:
        return apply_params(self.base, params)

    def model_names(self) -> list[str]:
        names = self.space["model.name"].values if "model.name" in self.space else ()
        return sorted({self.base.get("model", {}).get("name", "toy"), *names})

    def to_dict(self) -> dict:
        """The YAML form of the spec (base fully resolved), for the sweep folder and --resume."""
        out = {"base": self.base, "space": {k: _dist_yaml(d) for k, d in self.space.items()},
               "constraints": [f"{c.lower} < {c.upper}" for c in self.constraints]}
        return {**out, **to_dict(self.settings)}


def _dist_yaml(d: Dist) -> dict:
    return {d.kind: list(d.values) if not d.numeric else [d.low, d.high]}


# --- loading ----------------------------------------------------------------------------------------------------
def load_sweep(source: str | Path | dict, overrides: list[str] | tuple = (),
               sweep_overrides: list[str] | tuple = ()) -> SweepSpec:
    """Read and validate a sweep YAML (or dict); `overrides` (`a.b=c`) apply to the base run config,
    `sweep_overrides` to the sweep's own keys (`scheduler.grace_period=5`, `num_samples=64`)."""
    data = dict(source) if isinstance(source, dict) else read_yaml(source, "spec")
    for item in sweep_overrides:
        data = set_dotted(merge({}, data), item)
    here = Path(source).resolve().parent if not isinstance(source, dict) else Path.cwd()
    check_top_keys(data)
    base = resolve_base(data.get("base", "toy"), here)
    for item in overrides:
        base = set_dotted(merge({}, base), item)
    settings = from_dict(SweepSettings, {k: v for k, v in data.items() if k not in ("base", "space", "constraints")})
    space = parse_space(data.get("space") or {})
    constraints = parse_constraints(data.get("constraints") or [])
    spec = SweepSpec(settings, base, space, constraints, str(source) if not isinstance(source, dict) else "")
    validate_spec(spec)
    return spec


def read_yaml(path: str | Path, field: str) -> dict:
    """A YAML file as a dict; a syntax error is one ConfigError naming the file and the place, not a traceback."""
    import yaml

    try:
        return load_yaml(path)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(field, str(path), f"valid YAML (it has a syntax error{where}: {problem})") from None


def check_top_keys(data: dict) -> None:
    for key, value in data.items():
        if key not in TOP_KEYS:
            near = difflib.get_close_matches(str(key), TOP_KEYS, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(str(key), value, f"unknown sweep key; {hint}known keys: {', '.join(TOP_KEYS)}")


def resolve_base(base, here: Path) -> dict:
    """A preset name / YAML path, or a mapping (optionally `preset: NAME` plus overrides), as a nested dict."""
    if isinstance(base, str):
        local = here / base
        return read_yaml(local if local.is_file() else preset_path(base), "base")
    if not isinstance(base, dict):
        raise ConfigError("base", base, "a preset name, a YAML path, or a mapping of RunConfig keys")
    rest = {k: v for k, v in base.items() if k != "preset"}
    start = resolve_base(base["preset"], here) if "preset" in base else {}
    return merge(start, rest)


def parse_space(raw) -> dict[str, Dist]:
    if not isinstance(raw, dict):
        raise ConfigError("space", raw, "a mapping of dotted config keys to distributions")
    known = list(flatten(to_dict(RunConfig())))
    for key, entry in raw.items():
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean '{near[0]}'? " if near else ""
            raise ConfigError(f"space.{key}", entry, f"a RunConfig key (as in --set); {hint}see sjc run --help")
    return {key: parse_dist(key, entry) for key, entry in raw.items()}


def parse_constraints(raw) -> tuple[LessThan, ...]:
    if not isinstance(raw, list):
        raise ConfigError("constraints", raw, "a list of strings of the form 'a.b < c.d'")
    known = set(flatten(to_dict(RunConfig())))
    out = [parse_constraint(t) for t in (*DEFAULT_CONSTRAINTS, *raw)]
    for c in out:
        for key in (c.lower, c.upper):
            if key not in known:
                raise ConfigError("constraints", f"{c.lower} < {c.upper}", f"known RunConfig keys ('{key}' is not)")
    return tuple(dict.fromkeys(out))


# --- validation -------------------------------------------------------------------------------------------------
def validate_spec(spec: SweepSpec) -> None:
    """Everything that can be checked before Ray starts; raises ConfigError naming the field."""
    check_endpoints(spec)
    check_constraints(spec)
    check_settings(spec)
    check_base(spec)
    for i, params in enumerate(spec.points()):
        check_trial(spec, params, f"trial {i}")


def check_base(spec: SweepSpec) -> None:
    """The base with the first value of each swept key must be a valid run (prompt, model, ranges)."""
    first = {k: d.endpoints()[0] for k, d in spec.space.items()}
    check_trial(spec, _first_valid(spec, first), "base")


def _first_valid(spec: SweepSpec, first: dict) -> dict:
    points = spec.points()
    return points[0] if points else first


def check_trial(spec: SweepSpec, params: dict, what: str) -> None:
    try:
        load_config(spec.trial_config(params))
    except ConfigError as err:
        where = f" (in {what}: {params})" if params else f" (in {what})"
        raise ConfigError(err.field, err.value, err.allowed + where) from None


def check_endpoints(spec: SweepSpec) -> None:
    """Each extreme (or listed value) of each distribution must pass its field's type and range check."""
    for key, dist in spec.space.items():
        for value in dist.endpoints():
            try:
                from_dict(RunConfig, spec.trial_config({key: value}))
            except ConfigError as err:
                if err.field != key:  # the base itself is wrong: say so, not the space
                    raise ConfigError(err.field, err.value, err.allowed + " (in base)") from None
                raise ConfigError(f"space.{key}", value, f"{dist.kind} values inside the field's range: "
                                                         f"{err.allowed}") from None


def check_constraints(spec: SweepSpec) -> None:
    """Every draw of a constraint's upper key must leave room for its lower key."""
    consts, kind = spec.constants, spec.settings.search.kind
    for c in spec.constraints:
        low = spec.space.get(c.lower)
        if low is None:
            continue
        if kind == "optuna" and not low.numeric and _bounded(c, spec):
            raise ConfigError(f"space.{c.lower}", low.kind, f"uniform, loguniform or randint under optuna: "
                                                             f"'{c.lower} < {c.upper}' must shrink its range")
        up = spec.space.get(c.upper)
        top = up.lowest() if up is not None else consts.get(c.upper)
        if top is not None and kind != "grid" and not low.lowest() < top:
            raise ConfigError(f"space.{c.lower}", low.endpoints(), f"values below {c.upper} for every draw: "
                                                                    f"the lowest {c.lower} must be < {top}")


def max_steps(spec: SweepSpec) -> int:
    """The most steps any trial takes (ASHA's max_t): the base's, or the largest swept value."""
    steps = [int(spec.base.get("steps", fields_default("steps")))]
    d = spec.space.get("steps")
    if d is not None:
        steps += [int(v) for v in d.endpoints()]
    return max(steps)


def fields_default(name: str):
    return next(f.default for f in fields(RunConfig) if f.name == name)


def _bounded(c: LessThan, spec: SweepSpec) -> bool:
    return c.upper in spec.space or spec.constants.get(c.upper) is not None


def check_settings(spec: SweepSpec) -> None:
    s, r = spec.settings, spec.settings.resources
    if s.max_concurrent > r.workers * r.slots_per_worker:
        raise ConfigError("max_concurrent", s.max_concurrent, f"at most resources.workers x "
                                                               f"resources.slots_per_worker = {r.workers * r.slots_per_worker}")
    metric = s.scheduler.metric
    if metric not in (*SCORE_METRICS, *STEP_METRICS):
        near = difflib.get_close_matches(metric, (*SCORE_METRICS, *STEP_METRICS), n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ConfigError("scheduler.metric", metric, f"an intermediate metric; {hint}known: "
                                                      f"{', '.join((*SCORE_METRICS, *STEP_METRICS))}")
    if (metric in ("score/iou", "score/soft_iou") and s.scorer == "fit") or (metric == "score/fit" and
                                                                             s.scorer != "fit"):
        raise ConfigError("scheduler.metric", metric, f"a metric that scorer '{s.scorer}' reports (use 'score', "
                                                      "which every scorer reports)")
    longest = max_steps(spec)
    if s.scheduler.kind == "asha" and s.scheduler.grace_period > longest:
        raise ConfigError("scheduler.grace_period", s.scheduler.grace_period,
                          f"at most the trials' steps ({longest}): ASHA's first rung must be reachable")
    if s.search.kind == "grid" and not spec.points():
        raise ConfigError("space", list(spec.space), "at least one grid combination that meets the constraints")
    if not spec.space and s.search.kind != "grid":
        raise ConfigError("space", {}, "at least one swept key (or search.kind: grid for repeats of the base)")
