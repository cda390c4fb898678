"""`sjc run --guidance K` end to end at a tiny budget for every estimator: on the tiny Stable-Diffusion-shaped
pipeline (view prompts, Perp-Neg, a negative prompt, the VAE decode) and on the embedded toy world (CPU; the CLI
runs are `slow`, loading the toy model each time; by default every kind steps the session's toy model instead).
A coarse-to-fine run's field.safetensors reads back through the evaluation's loader at its final size."""
import json

import pytest
import torch

from sjc_dist.cli import main
from sjc_dist.diffusion.load import TOY_WEIGHTS
from sjc_dist.guidance.base import KINDS
from sjc_dist.optim.run import SJCRun

FAST = ["--no-eval", "--device", "cpu", "--steps", "2", "--set", "field.grid_size=8", "--set", "render.step=0.3",
        "--set", "render.views_per_step=1", "--set", "output.eval_views=2", "--set", "output.turntable_frames=2",
        "--set", "output.progress=false", "--set", "output.log_every=1", "--set", "guidance.ism_steps=2"]


def run_cli(tmp_path, capsys, name: str, *args: str) -> tuple[dict, list[dict]]:
    out = tmp_path / name
    assert main(["run", *args, *FAST, "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["run_dir"] == str(out)
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    return json.loads((out / "config.json").read_text()), metrics


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_steps_the_toy_model(make_config, toy_model, kind):
    cfg = make_config("model.name=toy", "prompt.text=a red cube", f"guidance.kind={kind}", "guidance.ism_steps=2",
                      "guidance.weight=3", "steps=2")
    run = SJCRun(cfg, toy_model)
    for _ in range(2):
        run.step()
    run.check_finite()
    assert run.metrics().evals == run.evals_per_step > 0


@pytest.mark.slow
@pytest.mark.skipif(not (TOY_WEIGHTS / "unet").is_dir(), reason="the toy-world weights are not shipped here")
@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_runs_on_the_toy_world(tmp_path, capsys, kind):
    cfg, metrics = run_cli(tmp_path, capsys, kind, "--prompt", "a red cube", "--guidance", kind)
    assert cfg["guidance"]["kind"] == kind and [m["step"] for m in metrics] == [1, 2]
    assert all(m["loss"] == m["loss"] and m["evals"] > 0 for m in metrics)  # finite, cost reported


@pytest.mark.parametrize("kind,extra", [("paas", ()), ("sds", ()), ("csd", ("guidance.csd_negative=1",)),
                                        ("nfsd", ("guidance.negative_prompt=blurry",)), ("ism", ()),
                                        ("sds", ("guidance.cfg=perp_neg",)),
                                        ("ism", ("guidance.cfg=perp_neg",))])
def test_every_kind_runs_on_the_tiny_sd_pipeline(tmp_path, capsys, tiny_pipeline, kind, extra):
    sets = [x for e in extra for x in ("--set", e)]
    cfg, metrics = run_cli(tmp_path, capsys, f"{kind}-{len(extra)}", "--config", "sd", "--model", str(tiny_pipeline),
                           "--prompt", "a red cube", "--guidance", kind, *sets)
    assert cfg["prompt"]["view_dependent"] and metrics[-1]["step"] == 2
    rows = {"paas": 2, "sds": 2, "csd": 3, "nfsd": 3, "ism": 2 + 3}[kind] + 2 * ("guidance.cfg=perp_neg" in extra)
    assert metrics[-1]["evals"] == rows  # one view per step


def test_coarse_to_fine_field_reads_back_at_its_final_size(tmp_path, capsys, tiny_pipeline):
    from sjc_dist.evaluation.saved import load_saved_run

    run_cli(tmp_path, capsys, "c2f", "--config", "sd", "--model", str(tiny_pipeline), "--prompt", "a red cube",
            "--set", "field.coarse_size=5", "--set", "field.upsample_at=[0.5]")
    run = load_saved_run(tmp_path / "c2f")
    assert run.scene.field.size == 8 and torch.isfinite(run.scene.field.grid).all()
