"""A whole run on a tiny random Stable-Diffusion-shaped pipeline saved in diffusers format and loaded through
the real loader (`load_model` via `run_job`): every output file exists and reads back; SDS through the VAE too."""
import json

import torch
from PIL import Image
from safetensors.torch import load_file

from sjc_dist.config import load_config
from sjc_dist.jobs import run_job
from sjc_dist.optim.checkpoint import load_checkpoint, save_checkpoint
from sjc_dist.optim.run import StepMetrics
from sjc_dist.scene.export import read_mesh
from sjc_dist.toyworld.shapes import grid_points

STEPS, VIEWS, FRAMES = 4, 2, 3


def tiny_sd_config(make_config, folder, out, *extra):
    return make_config(f"model.name={folder}", "prompt.view_dependent=true", "guidance.weight=7.5", "sigma.kind=ticks",
                       "sigma.min=null", "sigma.max=null", f"steps={STEPS}", f"output.dir={out}",
                       f"output.eval_views={VIEWS}", f"output.turntable_frames={FRAMES}", *extra)


def tile(side: int) -> int:
    """Side of one picture in views.png etc.: upscaled by an integer to about 128 pixels."""
    return side * max(1, 128 // side)


def check_common_outputs(run_dir, cfg, rgb_side: int, render_side: int, channels: int):
    assert load_config(json.loads((run_dir / "config.json").read_text())) == cfg
    field = load_file(run_dir / "field.safetensors")
    n = cfg.field.grid_size
    assert field["grid"].shape == (1, 1 + channels, n, n, n) and torch.isfinite(field["grid"]).all()
    assert field["d_scale"].shape == (1,)
    views = Image.open(run_dir / "views.png")
    assert views.size == (VIEWS * tile(rgb_side), tile(rgb_side)) and views.mode == "RGB"
    depth = Image.open(run_dir / "depth.png")
    assert depth.size == (VIEWS * tile(render_side), tile(render_side))
    gif = Image.open(run_dir / "turntable.gif")
    assert gif.n_frames == FRAMES and gif.size == (tile(rgb_side), tile(rgb_side))
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines] == list(range(cfg.output.log_every, STEPS + 1, cfg.output.log_every))
    assert all(set(m) == set(StepMetrics.__dataclass_fields__) for m in lines)
    assert all(isinstance(v, (int, float)) and v == v for m in lines for v in m.values())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == STEPS and summary["device"] == "cpu"
    assert load_checkpoint(run_dir / "checkpoint.pt")["step"] == STEPS


def read_ply_header(path) -> dict:
    xyz, _, faces = read_mesh(path)
    return {"vertex": len(xyz), "face": len(faces), "first_vertex": xyz[0].tolist()}


def put_a_ball(run_dir, radius: float = 0.5) -> None:
    """Edit the checkpoint so the field holds a dense ball: a surface for marching cubes to cut."""
    state = load_checkpoint(run_dir / "checkpoint.pt")
    grid = state["scene"]["field.grid"]
    inside = grid_points(grid.shape[-1]).norm(dim=-1) < radius
    grid[0, 0] = torch.where(inside, 30.0, -30.0)
    save_checkpoint(state, run_dir / "checkpoint.pt")


def test_latent_pipeline_run_writes_every_output(make_config, tiny_pipeline, tmp_path):
    cfg = tiny_sd_config(make_config, tiny_pipeline, tmp_path / "run")
    run_dir = run_job(cfg)  # model=None: loaded from the folder by load_model, like `sjc run --model FOLDER`
    assert run_dir == tmp_path / "run"
    check_common_outputs(run_dir, cfg, rgb_side=64, render_side=8, channels=4)  # 8x8 latents decode to 64x64

    put_a_ball(run_dir)
    run_job(cfg)  # resumes at its last step: no more steps, the outputs again, now with a surface
    ply = read_ply_header(run_dir / "mesh.ply")
    assert ply["vertex"] > 10 and ply["face"] > 10
    assert all(abs(v) <= 1.0 for v in ply["first_vertex"])
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from"] == STEPS


def test_sds_through_the_vae(make_config, tiny_pipeline, tmp_path):
    cfg = tiny_sd_config(make_config, tiny_pipeline, tmp_path / "sds", "guidance.kind=sds", "guidance.through_vae=true")
    run_dir = run_job(cfg)
    check_common_outputs(run_dir, cfg, rgb_side=64, render_side=64, channels=3)  # renders RGB at 8 x 8 latents
