"""Issue 14: a worker loads its model as soon as it exists (SlotStepper.preload), so the load overlaps Tune's
trial start-up instead of holding the first `open`. The stepper: one load for preload + open, also when they
race, never an exception out of a preload (the first open then loads and reports as without one), no load beside
a running slot. The driver: which sweeps send a preload (sweep.preload_config) and that pool.start sends it to
every worker without waiting for it. The model is the conftest's tiny empirical one (injected, counted loader)."""
import json
import threading
import time

import pytest

from sjc_dist.configtools import to_dict
from sjc_dist.distributed import pool
from sjc_dist.distributed.slot_errors import SlotError
from sjc_dist.distributed.spec import load_sweep
from sjc_dist.distributed.stepper import SlotStepper
from sjc_dist.distributed.sweep import preload_config
from sjc_dist.errors import ModelNotFoundError


class Loader:
    """A counted loader; `gate` (an Event) holds each load until set, `fail` raises instead (once each)."""

    def __init__(self, model, gate: threading.Event | None = None, fail: list | None = None):
        self.model, self.gate, self.fail, self.calls = model, gate, list(fail or []), []
        self.entered = threading.Event()

    def __call__(self, model_cfg, prompt, weight):
        self.calls.append(prompt)
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(30)
        if self.fail:
            raise self.fail.pop(0)
        return self.model


@pytest.fixture
def make_stepper():
    made = []

    def make(loader, **kwargs) -> SlotStepper:
        made.append(SlotStepper("empirical", max_slots=3, loader=loader, **kwargs))
        return made[-1]

    yield make
    for st in made:
        st.shutdown()


def config(make_config, *overrides):
    return to_dict(make_config("steps=8", "output.turntable_frames=0", *overrides))


def in_thread(fn, *args) -> tuple[threading.Thread, dict]:
    """Run fn(*args) on its own thread (as Ray runs an actor call); its result or error lands in the dict."""
    out = {}

    def run():
        try:
            out["result"] = fn(*args)
        except Exception as err:  # noqa: BLE001 - the test looks at it
            out["error"] = err

    thread = threading.Thread(target=run)
    thread.start()
    return thread, out


def test_preload_then_open_loads_once(make_stepper, empirical_model, make_config):
    loader = Loader(empirical_model)
    st = make_stepper(loader)
    assert st.preload(config(make_config)) is True
    assert loader.calls == ["a red cube"] and st.stats.loads == 1 and st.stats.preload == "loaded"
    slot = st.open(config(make_config, "seed=3"))
    assert st.advance(slot, 2)["sjc_step"] == 2
    assert st.preload(config(make_config)) is True and st.stats.preload == "already loaded"
    assert st.preload(config(make_config, "prompt.text=a blue sphere")) is False  # a slot is open: no load
    assert st.stats.preload.startswith("skipped") and loader.calls == ["a red cube"]  # beside its rounds
    st.close(slot)
    assert st.preload(config(make_config, "prompt.text=a blue sphere")) is True and st.stats.preload == "loaded"
    stats = st.worker_stats()
    assert loader.calls == ["a red cube", "a blue sphere"] and stats["loads"] == 2  # the open loaded nothing
    assert stats["phase_n"]["load"] == 2 and stats["phase_n"]["preload"] == 4
    assert stats["started_at"] <= stats["load_started_at"] <= stats["load_done_at"] <= stats["first_open_at"]
    json.dumps(stats)


def during_load(loader: Loader, first, first_cfg: dict, second, second_cfg: dict) -> tuple:
    """`first(first_cfg)` in a thread; once the loader is inside its load, `second(second_cfg)` in another; 0.2 s
    later, with the load still held by the gate: (first thread, its outcome, second thread, its outcome)."""
    t1, out1 = in_thread(first, first_cfg)
    assert loader.entered.wait(30)
    t2, out2 = in_thread(second, second_cfg)
    time.sleep(0.2)
    return t1, out1, t2, out2


def test_an_open_during_the_preload_waits_for_its_load(make_stepper, empirical_model, make_config):
    gate = threading.Event()
    loader = Loader(empirical_model, gate)
    st = make_stepper(loader)
    preload, pre, opening, opened = during_load(loader, st.preload, config(make_config),
                                                st.open, config(make_config, "seed=1"))
    assert "result" not in opened and not st.slots.get(0)  # the open waits for the load (slot reserved only)
    gate.set()
    preload.join(30)
    opening.join(30)
    assert pre == {"result": True} and opened == {"result": 0}
    assert loader.calls == ["a red cube"] and st.stats.loads == 1
    assert st.stats.load_started_at < st.stats.first_open_at


def test_a_preload_during_the_first_open_finds_its_load(make_stepper, empirical_model, make_config):
    gate = threading.Event()
    loader = Loader(empirical_model, gate)
    st = make_stepper(loader)
    opening, opened, preload, pre = during_load(loader, st.open, config(make_config), st.preload, config(make_config))
    gate.set()
    opening.join(30)
    preload.join(30)
    assert opened == {"result": 0} and pre == {"result": True}  # it waited for the open's load, then found it
    assert st.stats.preload == "already loaded" and loader.calls == ["a red cube"] and st.stats.loads == 1


def test_a_bad_preload_never_raises_and_the_open_reports_as_before(make_stepper, empirical_model, make_config):
    bad = config(make_config)
    bad["sigma"] = {"kind": "uniform", "min": 5.0, "max": 1.0}
    without, with_preload = make_stepper(Loader(empirical_model)), make_stepper(Loader(empirical_model))
    assert with_preload.preload(bad) is False and with_preload.stats.preload.startswith("failed: SlotError")
    assert with_preload.preload(config(make_config, "model.name=toy")) is False
    assert "serves model 'empirical'" in with_preload.stats.preload
    errors = []
    for st in (without, with_preload):
        with pytest.raises(SlotError) as err:
            st.open(bad)
        errors.append(str(err.value))
    assert errors[0] == errors[1] and "sigma.min" in errors[0]
    assert with_preload.stats.loads == 0 and with_preload.load() == 0


@pytest.mark.parametrize("error, raised", [(RuntimeError("CUDA out of memory"), RuntimeError),
                                           (ModelNotFoundError("sd", "no such folder"), SlotError)])
def test_a_failed_load_is_the_first_opens_to_report(make_stepper, empirical_model, make_config, error, raised):
    """A loader that raises in the preload (out of memory, missing weights) leaves nothing behind: the open loads
    again and raises what an open without a preload raises (a SlotError for the engine's own errors), and a
    loader that works the next time serves the open after it."""
    st = make_stepper(Loader(empirical_model, fail=[error, error]))
    assert st.preload(config(make_config)) is False
    assert st.stats.preload == f"failed: {type(error).__name__}: {error}" and st.stats.loads == 0
    with pytest.raises(raised, match="out of memory|was not found"):
        st.open(config(make_config))
    assert st.load() == 0
    assert st.advance(st.open(config(make_config)), 1)["sjc_step"] == 1
    assert st.stats.loads == 1 and st.loader.calls == ["a red cube"] * 3


# --- the driver -------------------------------------------------------------------------------------------------
def test_preload_config_only_for_a_model_every_trial_uses(tiny_sweep, tmp_path):
    fixed = load_sweep(tiny_sweep("fixed", {"seed": {"grid": [0, 1]}, "guidance.weight": {"grid": [1.0, 3.0]}}))
    assert preload_config(fixed, tmp_path, resume=False) == fixed.base
    dtype = load_sweep(tiny_sweep("dtype", {"model.dtype": {"grid": ["auto", "float32"]}}))
    assert preload_config(dtype, tmp_path, resume=False) is None  # a model.* key is searched
    prompts = {"prompt.text": {"choice": ["a red cube", "a blue sphere"]}}
    empirical = load_sweep(tiny_sweep("prompts", prompts))
    assert preload_config(empirical, tmp_path, resume=False) is None  # the empirical model is the prompt's
    toy = load_sweep(tiny_sweep("toy", prompts, base_overrides={"preset": "toy", "model": {"name": "toy"}}))
    assert toy.model_names() == ["toy"] and preload_config(toy, tmp_path, resume=False) == toy.base


def test_a_resumed_sweep_preloads_only_with_trials_left(tiny_sweep, tmp_path):
    spec = load_sweep(tiny_sweep("resumed", {"seed": {"grid": [0, 1]}}))
    ended = tmp_path / "ended.jsonl"
    ended.write_text(json.dumps({"trial_id": "a", "status": "ok"}) + "\n")
    assert preload_config(spec, tmp_path, resume=True) == spec.base
    ended.write_text(ended.read_text() + json.dumps({"trial_id": "b", "status": "stopped"}) + "\n")
    assert preload_config(spec, tmp_path, resume=True) is None  # every trial ended: nothing would use it
    assert preload_config(spec, tmp_path, resume=False) == spec.base


class FakeHandle:
    """An actor handle whose calls are recorded; `ref` names the call (what ray.get is handed)."""

    def __init__(self, name: str, calls: list):
        self.name, self.calls = name, calls

    def __getattr__(self, method: str):
        def remote(*args):
            self.calls.append((self.name, method, args))
            return f"{self.name}.{method}"

        return type("Method", (), {"remote": staticmethod(remote)})()


def test_pool_start_sends_the_preload_without_waiting(monkeypatch):
    calls, got = [], []
    monkeypatch.setattr(pool, "ensure_worker", lambda spec, model, name: FakeHandle(name, calls))
    monkeypatch.setattr(pool.ray, "get", lambda refs, **kw: got.extend(refs) or [True] * len(refs))
    spec, base = pool.PoolSpec("p", workers=2), {"model": {"name": "empirical"}}
    handles = pool.start(spec, ["empirical"], base)
    assert [h.name for h in handles] == ["p-empirical-0", "p-empirical-1"]
    for method in ("preload", "prepare"):
        assert [(n, args) for n, m, args in calls if m == method] == [("p-empirical-0", (base,)),
                                                                      ("p-empirical-1", (base,))]
    # the pings and the imports (prepare) are waited for, before Tune starts the trials; the load is not
    assert sorted(got) == ["p-empirical-0.ping", "p-empirical-0.prepare", "p-empirical-1.ping",
                           "p-empirical-1.prepare"]
    calls.clear()
    pool.start(spec, ["empirical"])
    assert {m for _, m, _ in calls} == {"ping"}


class OldHandle(FakeHandle):
    """A worker of older code, kept in a --pool: it has no preload method (`missing`), nor prepare."""

    missing = ("preload", "prepare")

    def __getattr__(self, method: str):
        if method in self.missing:
            raise AttributeError(method)
        return super().__getattr__(method)


class PreloadOnlyHandle(OldHandle):
    """A worker of the code before prepare: it preloads, nothing is waited for but its ping."""

    missing = ("prepare",)


def test_pool_start_skips_a_worker_without_preload(monkeypatch):
    calls, got = [], []
    monkeypatch.setattr(pool, "ensure_worker", lambda spec, model, name: OldHandle(name, calls))
    monkeypatch.setattr(pool.ray, "get", lambda refs, **kw: got.extend(refs) or [True] * len(refs))
    handles = pool.start(pool.PoolSpec("p", workers=2), ["empirical"], {"model": {"name": "empirical"}})
    assert len(handles) == 2 and {m for _, m, _ in calls} == {"ping"}
    assert got == ["p-empirical-0.ping", "p-empirical-1.ping"]


def test_pool_start_preloads_a_worker_without_prepare(monkeypatch):
    calls, got = [], []
    monkeypatch.setattr(pool, "ensure_worker", lambda spec, model, name: PreloadOnlyHandle(name, calls))
    monkeypatch.setattr(pool.ray, "get", lambda refs, **kw: got.extend(refs) or [True] * len(refs))
    pool.start(pool.PoolSpec("p", workers=1), ["empirical"], {"model": {"name": "empirical"}})
    assert [m for _, m, _ in calls] == ["ping", "preload"] and got == ["p-empirical-0.ping"]


def test_prepare_imports_and_counts_the_phase_never_raising(empirical_model, make_config):
    import sys

    st = SlotStepper("toy", max_slots=1, loader=Loader(empirical_model))
    seconds = st.prepare(config(make_config, "model.name=toy"))
    assert seconds > 0 and "diffusers.models" in sys.modules and "transformers" in sys.modules
    assert st.stats.phase_n["prepare"] == 1 and st.stats.phase_s["prepare"] == pytest.approx(seconds, abs=1e-3)
    assert st.prepare({"steps": -1}) == 0.0 and st.stats.phase_n["prepare"] == 1  # a bad config: 0 s, no raise
    assert st.stats.loads == 0  # imports only: the model is the preload's or the first open's to load
    st.shutdown()
