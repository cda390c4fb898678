"""Fixtures of the distributed tests: one local Ray session (2 CPUs, no dashboard, loopback) shared by every test,
a worker pool shared by the sweeps that do not count loads or kill workers (its model loads once for all of
them), and tiny sweep specs on the 'empirical' model (12^3 voxels, 32x32 renders, a few dozen steps)."""
import copy
import os

import pytest

# Ray's single-machine mode, as `sjc sweep` sets it for a local sweep (sweep.prepare_env): every Ray service of
# the test session listens on 127.0.0.1. Set here, before any test module imports Ray (Ray reads it at import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

TINY_BASE = {
    "preset": "empirical",
    "model": {"device": "cpu"},
    "prompt": {"text": "a red cube"},
    "steps": 20,
    "field": {"grid_size": 12},
    "render": {"step": 0.2, "views_per_step": 1},
    "output": {"eval_views": 2, "turntable_frames": 2},
}
TINY_RESOURCES = {"workers": 1, "cpus_per_worker": 0.25, "slots_per_worker": 4, "cpus_per_trial": 0.25,
                  "torch_threads": 1}
SHARED_POOL = "pytest-shared"


def make_tiny_sweep(name: str, space: dict, **settings) -> dict:
    """A sweep dict on the tiny base; `base_overrides` (nested dict) is merged into the base."""
    from sjc_dist.configtools import merge

    base = merge(copy.deepcopy(TINY_BASE), settings.pop("base_overrides", {}))
    resources = {**TINY_RESOURCES, **settings.pop("resources", {})}
    return {"name": name, "base": base, "space": space, "search": {"kind": "grid"}, "report_every": 5,
            "scorer": "fit", "evaluate": True, "resources": resources, **settings}


@pytest.fixture(scope="session")
def tiny_sweep():
    """`tiny_sweep(name, space, **settings) -> dict` (a fixture, so no test imports this conftest by name)."""
    return make_tiny_sweep


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray instance for the whole session (token auth as Ray sets it up: a local token file)."""
    import ray

    from sjc_dist.distributed import pool

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, namespace=pool.NAMESPACE,
                 log_to_driver=False)
    yield ray
    for name in ray.util.list_named_actors(all_namespaces=True):
        if name.get("namespace") == pool.NAMESPACE and name["name"].startswith(f"sjc-pool-{SHARED_POOL}"):
            ray.kill(ray.get_actor(name["name"], namespace=pool.NAMESPACE))
    if started:
        ray.shutdown()


@pytest.fixture
def shared_options(tmp_path):
    """SweepOptions on the shared, kept-alive pool, with the sweep folder in tmp_path."""
    from sjc_dist.distributed.sweep import SweepOptions

    return SweepOptions(out=str(tmp_path / "sweep"), pool=SHARED_POOL, keep_workers=True)
