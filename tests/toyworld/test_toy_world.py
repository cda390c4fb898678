"""The embedded toy world: the shipped diffusion model loads offline through the diffusers path, its shapes and
captions are consistent, and a short CPU SJC run on it produces an object the toy CLIP names correctly."""
import pytest
import torch

from sjc_dist.artifacts import render_eval
from sjc_dist.config import load_config
from sjc_dist.diffusion.load import TOY_WEIGHTS, ModelConfig, load_model, model_path
from sjc_dist.diffusion.vp_adapter import VPDenoiser
from sjc_dist.optim.loop import optimize
from sjc_dist.optim.run import SJCRun
from sjc_dist.toyworld.packed import shipped
from sjc_dist.toyworld.shapes import COLORS, SHAPES, captions, occupancy, parse


def test_world_has_25_captions_and_parses_them():
    caps = captions()
    assert len(caps) == len(SHAPES) * len(COLORS) == 25
    assert all(parse(c) in [(s, k) for k in COLORS for s in SHAPES] for c in caps)
    with pytest.raises(ValueError, match="not a toy-world caption"):
        parse("a hamburger")


def test_every_shape_is_inside_the_box_and_distinct():
    vols = {s: occupancy(s, 32) for s in SHAPES}
    for s, v in vols.items():
        assert 0.02 < v.float().mean() < 0.5, s
        assert not v[0].any() and not v[-1].any(), f"{s} touches the box"
    assert not torch.equal(vols["cube"], vols["cylinder"])


def test_shipped_model_loads_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert model_path("toy") == shipped(TOY_WEIGHTS)  # the packed weights, unpacked (toyworld/packed.py)
    model = load_model(ModelConfig(name="toy", device="cpu"), "a red cube", 7.5)
    inner = model.denoiser.inner
    assert isinstance(inner, VPDenoiser) and inner.prediction_type == "epsilon"
    assert (model.denoiser.channels, model.denoiser.size) == (3, 32)
    assert model.denoiser.sigma_min == pytest.approx(0.0100, abs=1e-4)
    assert model.denoiser.sigma_max == pytest.approx(157.4, rel=1e-3)
    assert model.vae is None and model.text is not None
    weight_bytes = sum(p.stat().st_size for p in TOY_WEIGHTS.rglob("*.safetensors*"))  # packed (.xz) or plain
    assert weight_bytes <= 25 * 2**20, "all shipped weights together must stay within 25 MB"


@pytest.mark.slow  # 500 toy-preset steps: over 10 minutes on a loaded 2-core machine (issue 17)
@pytest.mark.timeout(900)
def test_short_cpu_run_is_named_right_by_the_toy_clip():
    clip_model = pytest.importorskip("sjc_dist.toyworld.clip_model")
    clip, _, tok = clip_model.load_toy_clip("cpu")
    # Not a sphere: at the toy preset's CFG 3 SJC's spheres come out flat-shaded discs, which the toy CLIP often
    # takes for a cylinder or a cube (sphere R@1 0.53 in BENCHMARKS.md section 3); cones are read right at 1.00.
    prompt = "a blue cone"
    cfg = load_config("toy", [f"prompt.text={prompt}", "steps=500", "output.progress=false", "model.device=cpu"])
    torch.manual_seed(0)
    run = SJCRun(cfg, load_model(cfg.model, prompt, cfg.guidance.weight))
    optimize(run, cfg.steps, progress=False)
    rgb, _, opacity = render_eval(run.scene, run.model, 8)
    assert 0.02 < float(opacity.mean()) < 0.9, "the object is neither empty nor filling the view"
    sims = clip_model.encode_renders(clip, rgb) @ clip_model.encode_texts(clip, tok, captions()).T  # [8, 25]
    score = sims.mean(0)
    truth = captions().index(prompt)
    assert score[truth] > torch.cat([score[:truth], score[truth + 1:]]).max(), "the true caption scores highest"
