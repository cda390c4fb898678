"""SweepProgress: throttled progress lines while a sweep runs, and one as each trial ends."""
from types import SimpleNamespace

from sjc_dist.distributed.progress import SweepProgress


def trial(i: int) -> SimpleNamespace:
    return SimpleNamespace(trial_id=f"t{i}")


def test_lines_count_trials_steps_and_the_best_so_far(capsys):
    p = SweepProgress(total=4, metric="score/iou", mode="max", every=1e9)
    p.on_trial_result(0, [], trial(0), {"sjc_step": 50, "steps_total": 200, "score/iou": 0.4})
    p.on_trial_result(0, [], trial(1), {"sjc_step": 75, "steps_total": 200, "score/iou": float("nan")})
    assert capsys.readouterr().err == ""  # throttled: nothing before `every` seconds
    p.on_trial_result(0, [], trial(1), {"sjc_step": 100, "steps_total": 200, "score/iou": 0.7})
    p.on_trial_complete(0, [], trial(0))
    assert capsys.readouterr().err.strip() == ("sjc sweep: 2/4 trials reported, 1 ended; furthest step 100/200; "
                                               "best score/iou so far 0.7")


def test_min_mode_keeps_the_lowest_and_errors_count_as_ended(capsys):
    p = SweepProgress(total=2, metric="loss", mode="min", every=0.0)
    p.on_trial_result(0, [], trial(0), {"sjc_step": 10, "steps_total": 20, "loss": 3.0})
    p.on_trial_result(0, [], trial(1), {"sjc_step": 10, "steps_total": 20, "loss": 1.5})
    p.on_trial_error(0, [], trial(1))
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and lines[-1].endswith("2/2 trials reported, 1 ended; furthest step 10/20; best loss so far 1.5")


def test_before_any_result_there_is_no_best():
    assert SweepProgress(3, "score", "max").line() == ("sjc sweep: 0/3 trials reported, 0 ended; furthest step 0/0; "
                                                       "best score so far n/a")


def test_bench_scoring_progress_prints_at_most_every_interval_and_at_the_end(capsys, monkeypatch):
    from sjc_dist.distributed import bench

    now = [100.0]
    monkeypatch.setattr(bench.time, "monotonic", lambda: now[0])
    show = bench.ScoringProgress()
    show(8, 24)  # no time has passed: silent
    now[0] += bench.PROGRESS_EVERY_S
    show(16, 24)
    now[0] += 1.0
    show(24, 24)  # the end is always shown
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["sjc bench: scored 16/24 runs of this chunk in 15 s",
                     "sjc bench: scored 24/24 runs of this chunk in 16 s"]
