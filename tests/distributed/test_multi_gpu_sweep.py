"""eval/bench/multi_gpu_sweep.py (issue 7): its steady-state arithmetic on made-up worker timelines, the
stand-in model folder, and (slow) the whole bench run tiny on the CPU, in this session's Ray: a one-worker
sweep and a two-worker sweep through the real run_sweep, steady-state throughput of each, one model load per
worker, the utilisation PNG and CSV, report.json and report.md."""
import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "eval" / "bench" / "multi_gpu_sweep.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("multi_gpu_sweep", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.sweep_steady = sys.modules["sweep_steady"]
    return module


def timeline(start: float, batches: list[int], seconds_per_round: float) -> list[list]:
    """Rows [end time s, rounds so far, scene_steps so far, batch] of rounds run back to back."""
    rows, steps = [], 0
    for i, b in enumerate(batches):
        steps += b
        rows.append([start + (i + 1) * seconds_per_round, i + 1, steps, b])
    return rows


def test_steady_state_is_the_common_full_batch_window(bench):
    # worker a: ramps 1..4 then 40 full rounds of 4 at 0.1 s; worker b starts 1 s later, 0.2 s per round
    a = timeline(0.0, [1, 2, 3] + [4] * 40 + [2, 1], 0.1)
    b = timeline(1.0, [2] + [4] * 30 + [3], 0.2)
    out = bench.steady_state([{"name": "a", "timeline": a}, {"name": "b", "timeline": b}], k=4, skip=2)
    assert out["method"] == "common window"
    t0, t1 = out["window"]
    assert t0 == pytest.approx(1.0 + 4 * 0.2) and t1 == pytest.approx(4.3)  # b's 3rd full round .. a's last
    assert out["scene_its_per_s"] == pytest.approx(4 / 0.1 + 4 / 0.2)
    assert out["mean_batch"] == pytest.approx(4.0)
    assert [w["full_batch"] for w in out["per_worker"]] == [4, 4]


def test_steady_state_without_overlap_or_full_batch(bench):
    a = timeline(0.0, [4] * 10, 0.1)
    b = timeline(5.0, [4] * 10, 0.1)  # starts after a ended
    out = bench.steady_state([{"timeline": a}, {"timeline": b}], k=4, skip=1)
    assert out["method"].startswith("per-worker stretches") and out["scene_its_per_s"] == pytest.approx(80.0)
    never_full = bench.steady_state([{"timeline": timeline(0.0, [1, 2, 2, 2, 2, 1], 0.5)}], k=4, skip=1)
    assert never_full["per_worker"][0]["full_batch"] == 2 and never_full["scene_its_per_s"] == pytest.approx(4.0)
    cut = bench.steady_state([{"name": "w0", "timeline": timeline(0.0, [1, 2, 4, 4], 0.5)}], k=4, skip=13)
    assert math.isnan(cut["scene_its_per_s"]) and "w0 has 2 timeline rows at its full batch (4)" in cut["method"]
    empty = bench.steady_state([{"timeline": []}], k=4, skip=1)
    assert math.isnan(empty["scene_its_per_s"]) and empty["method"].startswith("none")


def test_since_is_one_sweep_of_a_kept_worker(bench):
    steady = bench.sweep_steady
    first = timeline(10.0, [1, 2, 4, 4], 1.0)  # the sweep before: rounds 1..4, ending at 14
    before = {"name": "w", "started_at": 5.0, "load_done_at": 8.0, "first_open_at": 9.0, "loads": 1, "rounds": 4,
              "scene_steps": 11, "timeline": first, "phase_s": {"open": 2.0, "write": 1.0}, "phase_n": {"open": 4}}
    rows = first + [[20.0 + i, 5 + i, 11 + 4 * (i + 1), 4] for i in range(3)]  # this sweep: rounds 5..7
    after = {**before, "rounds": 7, "scene_steps": 23, "timeline": rows, "last_round_at": 22.0,
             "phase_s": {"open": 2.0, "write": 1.5}, "phase_n": {"open": 4, "write": 2}}
    out = steady.since(after, before, t_start=18.0)
    assert out["kept"] and (out["loads"], out["rounds"], out["scene_steps"]) == (0, 3, 12)
    assert out["timeline"] == rows[4:] and out["first_round_at"] == 20.0 and out["mean_batch"] == 4.0
    assert out["phase_s"] == {"write": 0.5} and out["phase_n"] == {"write": 2}
    assert out["started_at"] is None and out["load_done_at"] is None and out["first_open_at"] is None
    reborn = {**after, "started_at": 19.0, "rounds": 2}  # died and recreated under its name: its own counters
    assert steady.since(reborn, before, 18.0) is reborn and steady.since(after, None, 18.0) is after


def test_targets_of_the_kept_worker_sweep(bench):
    steady = bench.sweep_steady
    phases = {"one": {"steady": {"scene_its_per_s": 210.0}, "overhead": {"outside_steady_s": 90.0}},
              "again": {"steady": {"scene_its_per_s": 212.0}, "overhead": {"outside_steady_s": 30.0}}}
    assert steady.targets(phases) == {"steady >= 200 scene-it/s": "met", "outside steady <= 40 s": "missed",
                                      "outside steady <= 40 s, again on the kept worker": "met"}


def test_scaling_verdicts(bench):
    phases = {"one": {"steady": {"scene_its_per_s": 80.0}}, "all": {"steady": {"scene_its_per_s": 150.0}}}
    two = bench.scaling(phases, 2, cpu=False)
    assert two["ratio"] == pytest.approx(1.875) and two["verdict"] == "met"
    four = bench.scaling({**phases, "all": {"steady": {"scene_its_per_s": 280.0}}}, 4, cpu=False)
    assert four["per_device_efficiency"] == pytest.approx(0.875) and four["verdict"] == "missed"
    assert bench.scaling({"one": phases["one"]}, 1, cpu=False)["verdict"] == "n/a"


def test_long_rounds_are_compiles_or_waits(bench):
    """A round 30x its batch's median shows as one long round with its excess over that median."""
    steady = bench.sweep_steady
    rows = timeline(0.0, [4] * 10, 0.1)
    for r in rows[5:]:
        r[0] += 3.0  # the 6th round took 3.1 s (a compile)
    out = steady.long_rounds(rows)
    assert out["rounds"] == 1 and out["excess_s"] == pytest.approx(3.0)
    assert steady.long_rounds(timeline(0.0, [4] * 10, 0.1))["rounds"] == 0


def test_overhead_splits_the_wall_time(bench):
    steady = bench.sweep_steady
    rows = timeline(10.0, [1, 2] + [4] * 20 + [2], 0.5)  # first round ends at 10.5, last at 21.5
    workers = [{"name": "w", "timeline": rows, "first_round_at": rows[0][0], "last_round_at": rows[-1][0],
                "started_at": 4.0, "first_open_at": 7.0, "load_started_at": 4.5, "load_done_at": 6.0}]
    record = {"t_start": 0.0, "t_end": 30.0, "wall_s": 30.0, "gpus": 1,
              "steady": bench.steady_state(workers, k=4, skip=2), "worker_stats": workers}
    o = steady.overhead(record)
    win = record["steady"]["window"]
    assert o["to_first_round_s"] == pytest.approx(10.5) and o["after_last_round_s"] == pytest.approx(8.5)
    assert (o["to_worker_s"], o["to_first_open_s"]) == (4.0, 7.0)  # the first worker built, the first slot asked
    later = {"name": "v", "started_at": 5.0, "load_started_at": 5.5, "load_done_at": 6.5}  # a second worker
    both = steady.overhead({**record, "worker_stats": [*workers, later]})
    assert (both["to_load_start_s"], both["to_loaded_s"]) == (4.5, 6.5)  # the first load began, the last ended
    assert (o["to_load_start_s"], o["to_loaded_s"]) == (4.5, 6.0)
    assert "to_first_open_s" not in steady.overhead({**record, "worker_stats": [{**workers[0], "first_open_at": None}]})
    assert o["outside_steady_s"] == pytest.approx(30.0 - (win[1] - win[0]))
    assert o["ramp_up_s"] == pytest.approx(win[0] - 10.5) and o["ramp_down_s"] == pytest.approx(21.5 - win[1])
    head = steady.headline(record)
    assert head["per_gpu"] == pytest.approx(8.0) and head["trials_10k_per_gpu_hour"] == pytest.approx(8 * 0.36)
    record["overhead"] = o
    assert steady.targets({"one": record}) == {"steady >= 200 scene-it/s": "missed", "outside steady <= 40 s": "met"}
    cut = {**record, "steady": {"scene_its_per_s": float("nan")}}
    assert steady.targets({"one": cut}) == {"steady >= 200 scene-it/s": "n/a", "outside steady <= 40 s": "n/a"}


class FakeNvml:
    """The few pynvml calls the sampler makes, for two devices."""

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return b"Fake GPU" if h == 0 else "Fake GPU"

    def nvmlDeviceGetUtilizationRates(self, h):
        return type("Util", (), {"gpu": 40 + 10 * h})()

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Mem", (), {"used": (h + 1) * 2**30})()


def sample_briefly(sampler, seconds: float = 0.5) -> list:
    sampler.start()
    time.sleep(seconds)
    sampler.stop()
    return sampler.rows


def test_sampler_reads_nvml(bench, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml())
    sampler = bench.Sampler(period=0.05)
    assert sampler.backend == "nvml" and sampler.names == ["Fake GPU", "Fake GPU"]
    rows = sample_briefly(sampler)
    assert {r[1] for r in rows} == {0, 1} and {(r[1], r[2], r[3]) for r in rows} == {(0, 40.0, 1024.0),
                                                                                     (1, 50.0, 2048.0)}
    assert sampler.mean_util(0, time.time()) == {0: 40.0, 1: 50.0}


def test_sampler_falls_back_to_nvidia_smi(bench, monkeypatch, tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text('#!/bin/sh\ncase "$*" in\n  *query-gpu=name*) echo "Fake GPU"; echo "Fake GPU";;\n'
                   '  *) while true; do echo "0, 50, 1000"; echo "1, 75, 2000"; sleep 0.05; done;;\nesac\n')
    smi.chmod(0o755)
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    sampler = bench.Sampler(period=0.05)
    assert sampler.backend == "nvidia-smi" and len(sampler.names) == 2 and "NVML" in sampler.fallback_reason
    rows = sample_briefly(sampler)
    assert {(r[1], r[2], r[3]) for r in rows} == {(0, 50.0, 1000.0), (1, 75.0, 2000.0)}


def test_sampler_without_gpus_reads_the_cpu_cores(bench):
    sampler = bench.Sampler(period=0.05, prefer_cpu=True)
    assert sampler.backend.startswith("proc-stat") and sampler.names[0] == "cpu0"
    rows = sample_briefly(sampler)
    assert rows and all(0.0 <= r[2] <= 100.0 and r[3] > 0 for r in rows)


def test_standin_folder_loads_unchanged(bench, tmp_path):
    """The tiny stand-in folder goes through load_model as any diffusers folder: text, VAE (x8), UNet."""
    import torch

    from sjc_dist.diffusion.load import ModelConfig, load_model

    sd_standin = __import__("sd_standin")  # on sys.path once the bench module is loaded
    folder = sd_standin.save_standin_folder(tmp_path / "tiny", sd_standin.TINY)
    model = load_model(ModelConfig(name=str(folder), device="cpu"), "a hamburger", 50.0)
    size = sd_standin.TINY
    assert model.text.embed(["a hamburger"]).shape == (1, size.context_len, size.context_dim)
    latent = size.unet["sample_size"]
    assert model.decode(torch.zeros(1, 4, latent, latent)).shape == (1, 3, 8 * latent, 8 * latent)
    stamp = (folder / "standin.json").stat().st_mtime_ns
    assert sd_standin.save_standin_folder(folder, size) == folder  # reused, not rebuilt
    assert (folder / "standin.json").stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_bench_tiny_cpu_end_to_end(bench, ray_session, tmp_path):
    import ray

    out = tmp_path / "out"
    argv = ["--tiny", "--gpus", "0", "--cpu-workers", "2", "--slots", "2", "--steps", "100",
            "--out", str(out), "--model-dir", str(tmp_path / "model"), "--work", str(tmp_path / "work"),
            "--budget-seconds", "300", "--progress-every", "5", "--again"]
    assert bench.main(argv, exit_on_watchdog=False) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "done" and list(report["phases"]) == ["one", "again", "all"]
    again = report["phases"]["again"]  # the same sweep on the worker the first one kept: no build, load, compile
    assert again["status"] == {"ok": 2} and again["scene_steps"] == 200 and again["loads_per_worker"] == [0]
    (w,) = again["worker_stats"]
    assert w["kept"] and w["preload"] == "already loaded"
    assert report["phases"]["one"]["worker_stats"][0]["started_at"] < again["t_start"]  # built by the sweep before
    assert all(r[0] >= again["t_start"] for r in w["timeline"]) and w["rounds"] == len(w["timeline"])
    assert w["phase_n"]["write"] == 2  # this sweep's two finishes only
    assert again["steady"]["method"] == "common window" and again["overhead"].get("to_worker_s") is None
    assert 0 < again["overhead"]["to_first_round_s"] < again["wall_s"]
    with pytest.raises(ValueError):  # the kept worker is gone: it must not hold this session's Ray
        ray.get_actor(w["name"], namespace="sjc")
    for name, workers in (("one", 1), ("all", 2)):
        p = report["phases"][name]
        assert (p["workers"], p["trials"], p["k"], p["steps"]) == (workers, 2 * workers, 2, 100)
        assert p["status"] == {"ok": 2 * workers} and not p["error"]
        assert p["loads_per_worker"] == [1] * workers and p["one_load_each"]
        assert p["scene_steps"] == 100 * 2 * workers
        assert p["steady"]["scene_its_per_s"] > 0 and p["steady"]["scene_steps"] > 0
        assert p["steady"]["method"] == "common window" and p["steady"]["window_s"] > 0
        assert all(w["timeline"] for w in p["worker_stats"])
        assert sum(w["phase_n"]["write"] for w in p["worker_stats"]) == 2 * workers  # one finish per trial
        o = p["overhead"]
        assert 0 < o["to_worker_s"] <= o["to_first_open_s"] <= o["to_first_round_s"]
        assert all(w["preload"] == "loaded" for w in p["worker_stats"])  # issue 14: loaded as the worker was built
        assert o["to_worker_s"] <= o["to_load_start_s"] <= o["to_first_open_s"]  # begun before a trial asked
        assert o["to_load_start_s"] <= o["to_loaded_s"]
    assert report["scaling"]["ratio"] > 0 and "CPU workers" in report["scaling"]["verdict"]
    assert (out / "gpu_util.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "views_example.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((out / "gpu_samples.csv").read_text().splitlines()) > 10
    md = (out / "report.md").read_text()
    assert "| 1 CPU worker |" in md and "| 2 CPU workers |" in md and "Scaling all / one" in md
    assert "| 1 CPU worker, again (kept worker) | " in md and "| kept | kept | kept | n/a |" in md
    assert "- 1 CPU worker (preload: loaded): prepare " in md and "; preload " in md
    assert all(f"; {k} " in md for k in ("load", "open", "report", "write"))
    assert "| worker built | load start | loaded | 1st slot asked |" in md
