"""SlotStepper timing and device serialisation: WorkerStats' round timestamps and bounded timeline (what
eval/bench/multi_gpu_sweep.py reads steady-state throughput from), and the device lock that keeps scoring (and
opening, saving, finishing) off the device while a round runs. The model is the conftest's tiny empirical one."""
import json
import threading
import time
from pathlib import Path

import pytest

from sjc_dist.configtools import to_dict
from sjc_dist.distributed import stepper as stepper_module
from sjc_dist.distributed.stepper import DeviceLock, SlotStepper, WorkerStats


@pytest.fixture
def stepper(empirical_model):
    st = SlotStepper("empirical", max_slots=3, loader=lambda *a: empirical_model)
    yield st
    st.shutdown()


def config(make_config, *overrides):
    return to_dict(make_config("steps=8", "output.turntable_frames=0", *overrides))


def test_record_round_counts_and_timestamps():
    stats = WorkerStats("m")
    for i, batch in enumerate((1, 3, 3)):
        stats.record_round(batch, 100.0 + i)
    assert (stats.rounds, stats.scene_steps, stats.first_round_at, stats.last_round_at) == (3, 7, 100.0, 102.0)
    assert stats.timeline == [[100.0, 1, 1, 1], [101.0, 2, 4, 3], [102.0, 3, 7, 3]]
    assert stats.mean_batch == pytest.approx(7 / 3)


def test_timeline_is_thinned_but_spans_the_whole_history(monkeypatch):
    monkeypatch.setattr(stepper_module, "TIMELINE_MAX", 8)
    stats = WorkerStats("m")
    for i in range(1, 101):
        stats.record_round(2, float(i))
    assert len(stats.timeline) < 8 and stats.timeline_every == 16
    rounds = [row[1] for row in stats.timeline]
    assert rounds == [16, 32, 48, 64, 80, 96]  # every multiple of the current interval, from the start
    assert all(row[2] == 2 * row[1] and row[0] == float(row[1]) for row in stats.timeline)
    assert (stats.rounds, stats.first_round_at, stats.last_round_at) == (100, 1.0, 100.0)


def test_rounds_fill_the_timeline_and_stats_travel_as_json(stepper, make_config):
    slots = [stepper.open(config(make_config, f"seed={i}")) for i in range(2)]
    before = time.time()
    threads = [threading.Thread(target=stepper.advance, args=(s, 5)) for s in slots]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stats = stepper.worker_stats()
    line = stats["timeline"]
    assert stats["scene_steps"] == 10 and len(line) == stats["rounds"]
    assert line[-1][1:3] == [stats["rounds"], 10]
    assert sum(row[3] for row in line) == 10 and max(row[3] for row in line) == 2
    times = [row[0] for row in line]
    assert before <= stats["first_round_at"] == times[0] <= times[-1] == stats["last_round_at"] <= time.time()
    assert times == sorted(times)
    json.dumps(stats)  # crosses Ray as plain data


def test_device_lock_lets_waiting_callers_go_before_the_next_round():
    lock, order, first_round = DeviceLock(), [], threading.Event()

    def rounds():
        for i in range(3):
            with lock.round():
                order.append(f"round {i}")
                if i == 0:
                    first_round.set()
                    time.sleep(0.2)  # the caller queues meanwhile

    def caller():
        first_round.wait()
        with lock, lock:  # re-entrant
            order.append("caller")

    threads = [threading.Thread(target=rounds), threading.Thread(target=caller)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert order == ["round 0", "caller", "round 1", "round 2"]


def test_scoring_never_overlaps_a_round(stepper, make_config, monkeypatch):
    """Two slots: one reports every step (its scorer runs on the caller's thread) while the other keeps
    stepping; every scoring call and every round hold the device lock, so their intervals never overlap."""
    intervals, lock = {"round": [], "score": []}, threading.Lock()

    def timed(kind, fn):
        def run(*args, **kwargs):
            start = time.perf_counter()
            time.sleep(0.005)
            out = fn(*args, **kwargs)
            with lock:
                intervals[kind].append((start, time.perf_counter()))
            return out
        return run

    class SlowBatch(stepper_module.SceneBatch):
        step_all = timed("round", stepper_module.SceneBatch.step_all)

    monkeypatch.setattr(stepper_module, "SceneBatch", SlowBatch)
    often, steady = (stepper.open(config(make_config, f"seed={i}", "steps=30")) for i in range(2))
    stepper.slots[often].score = timed("score", stepper.slots[often].score)

    def report_often():
        for _ in range(12):
            stepper.advance(often, 1)

    threads = [threading.Thread(target=report_often), threading.Thread(target=stepper.advance, args=(steady, 30))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(intervals["score"]) == 12 and len(intervals["round"]) >= 30
    overlaps = [(r, s) for r in intervals["round"] for s in intervals["score"] if r[0] < s[1] and s[0] < r[1]]
    assert not overlaps


def test_a_finishing_trial_writes_its_files_while_the_others_step(stepper, make_config, tmp_path, monkeypatch):
    """Issue 14: only the device part of a finish (renders, decodes, copies) holds the device lock. While the
    finished slot's files are being written, another slot's advance runs its rounds and returns."""
    done, steady = (stepper.open(config(make_config, f"seed={i}", "steps=30")) for i in range(2))
    stepper.advance(done, 8)
    stepped_meanwhile = {}
    write = stepper_module.RunFolder.write

    def slow_write(folder, *args, **kwargs):
        before = stepper.slots[steady].run.step_index
        t = threading.Thread(target=stepper.advance, args=(steady, 3))
        t.start()
        t.join(timeout=60)  # would time out if the writing thread held the device lock
        stepped_meanwhile["steps"] = stepper.slots[steady].run.step_index - before
        return write(folder, *args, **kwargs)

    monkeypatch.setattr(stepper_module.RunFolder, "write", slow_write)
    files = stepper.finish(done, str(tmp_path / "run"))["files"]
    assert stepped_meanwhile["steps"] == 3
    assert {"field", "views", "depth", "checkpoint", "config"} <= set(files)
    assert all(Path(p).is_file() for p in files.values())


def test_finish_phases_are_counted_and_blocked_time_is_a_wait(stepper, make_config, tmp_path, monkeypatch):
    """WorkerStats.phase_s / phase_n: the open (with the model's load in it), each advance's report and each
    finish's gather, write and evaluate are counted once; a finish that has to wait for another holder of the
    device lock books that time as 'gather_wait', not as 'gather'."""
    slot = stepper.open(config(make_config))
    stepper.advance(slot, 4)
    stepper.advance(slot, 4)
    held = threading.Event()

    def hold_the_device():
        with stepper.device_lock:
            held.set()
            time.sleep(0.5)

    holder = threading.Thread(target=hold_the_device)
    holder.start()
    held.wait(10)
    stepper.finish(slot, str(tmp_path / "run"), evaluate=lambda run_dir: ({"x": 1.0}, ""))
    holder.join()
    stats = stepper.worker_stats()
    assert stats["phase_n"] == {"load": 1, "open_wait": 1, "open": 1, "report_wait": 2, "report": 2,
                                "gather_wait": 1, "gather": 1, "write": 1, "evaluate_wait": 1, "evaluate": 1}
    assert stats["phase_s"]["open"] >= stats["phase_s"]["load"]  # the load runs inside the first open
    assert stats["started_at"] <= stats["first_open_at"] <= stats["first_round_at"]
    assert stats["phase_s"]["gather_wait"] >= 0.3 > stats["phase_s"]["evaluate_wait"]
    assert all(v >= 0 for v in stats["phase_s"].values())
