"""The benchmark's plan: prompts x methods x seeds -> one validated RunConfig per object, and the groups of
objects that can share one loaded model (and so step together in a SceneBatch).

Methods are the same engine with one setting changed: sjc = guidance.kind paas; sds, csd, nfsd and ism = the
kind of that name; every other value comes from the same preset and `--set` overrides.
Run folders: OUT/runs/<method>/<NNN>-<slug>/seed<S>.
The 'empirical' model is the exact denoiser of one prompt's renders, so its groups are per prompt; any other
model is shared by all prompts. Does not run anything (batch_runs.py) nor talk to Ray (distributed/bench.py).
"""
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig, load_config, replace_in
from ..configtools import to_dict
from ..errors import ConfigError

METHODS = {"sjc": "paas", "sds": "sds", "csd": "csd", "nfsd": "nfsd", "ism": "ism"}


@dataclass(frozen=True)
class BenchJob:
    """One object of the benchmark: which prompt, method and seed, where it goes, and its resolved config."""

    prompt: str
    prompt_index: int
    method: str
    seed: int
    run_dir: str
    config: dict

    def run_config(self) -> RunConfig:
        return load_config(self.config, validate=False)


def parse_methods(text: str) -> list[str]:
    methods = list(dict.fromkeys(m.strip() for m in text.split(",") if m.strip()))
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise ConfigError("methods", text, f"a comma-separated list of {', '.join(METHODS)}")
    return methods


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = list(dict.fromkeys(int(s) for s in text.split(",") if s.strip()))
    except ValueError:
        raise ConfigError("seeds", text, "a comma-separated list of integers >= 0, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise ConfigError("seeds", text, "a comma-separated list of integers >= 0, e.g. 0,1,2")
    return seeds


def slug(text: str, n: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:n] or "prompt"


def parse_method_sets(items: list[str] | tuple, methods: list[str]) -> dict[str, list[str]]:
    """'METHOD:KEY=VALUE' items (--set-for) -> {method: [KEY=VALUE, ...]}; each METHOD must be benchmarked."""
    out: dict[str, list[str]] = {m: [] for m in methods}
    for item in items:
        method, sep, kv = item.partition(":")
        if not sep or method not in out or "=" not in kv:
            raise ConfigError("set-for", item, f"METHOD:KEY=VALUE with METHOD one of --methods ({', '.join(methods)})")
        out[method].append(kv)
    return out


def plan_jobs(prompts: list[str], methods: list[str], seeds: list[int], out: Path, preset: str = "toy",
              sets: list[str] | tuple = (), method_sets: list[str] | tuple = ()) -> list[BenchJob]:
    """Every (prompt, method, seed) as a job with a validated config, prompt-major. `sets` apply to every run,
    then `method_sets` ('METHOD:KEY=VALUE', e.g. each method at its best setting of a sweep) to that method's."""
    per = parse_method_sets(method_sets, methods)
    bases = {m: load_config(preset, [*sets, *per[m]], validate=False) for m in methods}  # validated per job below
    jobs = []
    for i, prompt in enumerate(prompts):
        for method in methods:
            base = bases[method]
            for seed in seeds:
                run_dir = Path(out).resolve() / "runs" / method / f"{i:03d}-{slug(prompt)}" / f"seed{seed}"
                cfg = replace_in(base, **{"prompt.text": prompt, "guidance.kind": METHODS[method], "seed": seed,
                                          "output.dir": str(run_dir), "output.progress": False}).validate()
                jobs.append(BenchJob(prompt, i, method, seed, str(run_dir), to_dict(cfg)))
    return jobs


def group_key(job: BenchJob) -> tuple:
    """Jobs with equal keys can share one loaded model."""
    model = job.config["model"]
    per_prompt = job.prompt if model["name"] == "empirical" else ""
    return (model["name"], model["device"], model["dtype"], model["sigma_to_t"], per_prompt)


def batch_groups(jobs: list[BenchJob], max_batch: int = 8) -> list[list[BenchJob]]:
    """Jobs grouped by shared model, each group cut into batches of at most max_batch scenes."""
    if max_batch < 1:
        raise ConfigError("max_batch", max_batch, ">= 1")
    groups: dict[tuple, list[BenchJob]] = {}
    for job in jobs:
        groups.setdefault(group_key(job), []).append(job)
    return [g[i:i + max_batch] for g in groups.values() for i in range(0, len(g), max_batch)]
