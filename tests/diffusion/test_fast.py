"""FastDenoiser (sjc_dist/diffusion/fast.py) on CPU, and the GPU bench script (eval/bench/gpu_bench.py) run tiny.

On CPU the wrapper must be the plain VPDenoiser exactly; its fast path (forced with cpu_fallback=False: dtype,
channels-last, batch padding to buckets) must agree with it within float tolerance. CUDA graphs and
torch.compile only exist on the GPU, where the bench checks them against eager fp32 (its 'agreement' notes).
"""
import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SD_BETAS, TINY_CONTEXT_DIM

from sjc_dist.diffusion.cfg import CFGDenoiser
from sjc_dist.diffusion.denoiser import Cond, eps_from_x0
from sjc_dist.diffusion.fast import (
    AUTO_COMPILE_AFTER,
    CompileAfter,
    FastConfig,
    FastDenoiser,
    LayoutCall,
    PaddedCall,
    bucket_size,
    fast_config,
    occasional,
    pad_rows,
)
from sjc_dist.diffusion.fp8 import Float8Linear, scale_of, to_float8
from sjc_dist.diffusion.upsample import keep_layout, layout_keeping_class
from sjc_dist.diffusion.vp_adapter import VPDenoiser
from sjc_dist.errors import ConfigError

BENCH = Path(__file__).resolve().parents[2] / "eval" / "bench" / "gpu_bench.py"


def alphas_cumprod() -> torch.Tensor:
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, **SD_BETAS).alphas_cumprod


def plain(unet) -> VPDenoiser:
    """A VPDenoiser on its own copy of the UNet (FastDenoiser converts the UNet it wraps in place)."""
    return VPDenoiser(copy.deepcopy(unet), alphas_cumprod(), "epsilon")


def batch(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Cond]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 8, 8, generator=g) * 2
    sigma = torch.exp(torch.empty(n).uniform_(-3, 2.5, generator=g))
    return x, sigma, Cond(context=torch.randn(n, 5, TINY_CONTEXT_DIM, generator=g))


@pytest.mark.parametrize(("n", "step", "size"), [(1, 8, 1), (2, 8, 2), (3, 8, 4), (5, 8, 8), (8, 8, 8),
                                                 (9, 8, 16), (17, 8, 24), (64, 8, 64), (5, 6, 6), (7, 6, 12)])
def test_bucket_size(n, step, size):
    assert bucket_size(n, step) == size


def test_bucket_size_rejects_empty_batch():
    with pytest.raises(ValueError, match="batch size"):
        bucket_size(0, 8)


def test_pad_rows_appends_zeros_and_keeps_full_batches():
    t = torch.arange(6.0).reshape(3, 2)
    padded = pad_rows(t, 5)
    assert padded.shape == (5, 2) and torch.equal(padded[:3], t) and not padded[3:].any()
    assert pad_rows(t, 3) is t and pad_rows(None, 4) is None


def test_reduce_overhead_with_manual_graphs_is_a_config_error():
    with pytest.raises(ConfigError, match="fast.cuda_graph"):
        FastConfig(compile="reduce-overhead", cuda_graph=True)
    assert FastConfig(compile="reduce-overhead", cuda_graph=False).static_shapes


def test_cpu_fallback_is_the_plain_denoiser(tiny_unet):
    ref = plain(tiny_unet)
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="bfloat16"))
    assert fast.call is None  # on CPU: no conversion, no graphs
    assert next(fast.unet.parameters()).dtype == torch.float32
    x, sigma, cond = batch(3)
    assert torch.equal(fast(x, sigma, cond), ref(x, sigma, cond))
    for name in ("sigma_min", "sigma_max", "channels", "size", "is_latent"):
        assert getattr(fast, name) == getattr(ref, name)
    assert torch.equal(fast.sigmas, ref.sigmas)


@pytest.mark.parametrize("n", [1, 3, 6])
def test_forced_fast_path_matches_plain_in_float32(tiny_unet, n):
    """dtype float32 + channels-last + padding to a bucket: the same numbers as the plain denoiser."""
    ref = plain(tiny_unet)
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32", bucket=4), cpu_fallback=False)
    assert isinstance(fast.call, PaddedCall)  # cuda_graph=True pads; the graph itself is GPU-only
    x, sigma, cond = batch(n, seed=n)
    out = fast(x, sigma, cond)
    assert out.dtype == torch.float32 and out.shape == x.shape
    torch.testing.assert_close(out, ref(x, sigma, cond), rtol=1e-4, atol=1e-4)  # NHWC sums in another order


def test_padding_does_not_leak_between_rows(tiny_unet):
    """Row i of a padded batch equals row i computed alone (GroupNorm and attention are per sample)."""
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32", bucket=8), cpu_fallback=False)
    x, sigma, cond = batch(3, seed=7)
    together = fast(x, sigma, cond)
    alone = torch.cat([fast(x[i:i + 1], sigma[i:i + 1], cond.select(slice(i, i + 1))) for i in range(3)])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-4)


def test_forced_fast_path_in_bfloat16_is_close_under_cfg(tiny_unet):
    """bf16 weights, no autocast, inside CFG with per-sample weights: eps within 5% of the float32 result
    (CFG multiplies the bf16 error of eps_c - eps_u by w, so the weights stay small here)."""
    ref = CFGDenoiser(plain(tiny_unet), 7.5)
    fast = CFGDenoiser(FastDenoiser(plain(tiny_unet), FastConfig(dtype="bfloat16"), cpu_fallback=False), 7.5)
    x, sigma, cond = batch(3, seed=3)
    cond = Cond(cond.context, torch.zeros_like(cond.context), torch.tensor([1.0, 1.5, 2.0]))
    e_ref, e_fast = (eps_from_x0(x, d(x, sigma, cond), sigma) for d in (ref, fast))
    assert next(fast.inner.unet.parameters()).dtype == torch.bfloat16
    assert ((e_fast - e_ref).abs().max() / e_ref.abs().max()) < 0.05


def test_no_autograd_through_the_unet(tiny_unet):
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32"), cpu_fallback=False)
    x, sigma, cond = batch(2)
    x.requires_grad_(True)
    out = fast(x, sigma, cond)
    assert not out.requires_grad
    assert all(not p.requires_grad for p in fast.unet.parameters())


def test_wrapped_denoiser_stays_usable_after_conversion(tiny_unet):
    """The inner VPDenoiser runs on the converted (bf16, channels-last) weights too."""
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="bfloat16"), cpu_fallback=False)
    x, sigma, cond = batch(2)
    torch.testing.assert_close(fast.inner(x, sigma, cond), fast(x, sigma, cond), rtol=0.05, atol=0.05)


def test_conditional_unet_needs_context(tiny_unet):
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32"), cpu_fallback=False)
    x, sigma, _ = batch(2)
    with pytest.raises(ValueError, match="text-conditioned"):
        fast(x, sigma, Cond())


class Recorder:
    """A UNetCall stand-in that records the batch sizes it saw and returns x + offset."""

    def __init__(self, offset: float):
        self.offset, self.seen, self.resets = offset, [], 0

    def __call__(self, x, t, context):
        self.seen.append(x.shape[0])
        return x + self.offset

    def reset(self):
        self.resets += 1


def test_compile_after_serves_each_size_eagerly_first():
    eager, compiled = Recorder(0.0), Recorder(1.0)
    call = CompileAfter(eager, compiled, after=2)
    outs = [call(torch.zeros(n, 1), torch.zeros(n), None) for n in (4, 4, 2, 4, 4, 2, 2)]
    assert eager.seen == [4, 4, 2, 2] and compiled.seen == [4, 4, 2]  # 3rd call of a size on: compiled
    assert [float(o[0, 0]) for o in outs] == [0, 0, 0, 1, 1, 0, 1]
    assert sorted(k[0] for k in call.compile_s) == [(2, 1), (4, 1)] and all(s >= 0 for s in call.compile_s.values())
    call.reset()
    assert eager.resets == compiled.resets == 1 and not call.live
    call(torch.zeros(4, 1), torch.zeros(4), None)
    assert compiled.seen[-1] == 4 and len(call.compile_s) == 2  # captured again, not counted as a compile


def test_occasional_calls_never_compile_a_size():
    """Calls under occasional() (a report's fit) run eagerly and do not count toward compiling their size;
    a size the rounds already compiled serves them compiled; another thread's calls are unaffected."""
    import threading

    eager, compiled = Recorder(0.0), Recorder(1.0)
    call = CompileAfter(eager, compiled, after=1)
    go = threading.Event()

    def rounds():  # a thread started before the block, as the stepper's round thread is
        go.wait(10)
        for _ in range(2):
            call(torch.zeros(4, 1), torch.zeros(4), None)

    other = threading.Thread(target=rounds)
    other.start()
    with occasional():
        for _ in range(5):
            call(torch.zeros(2, 1), torch.zeros(2), None)
        go.set()
        other.join()
    assert eager.seen == [2] * 5 + [4] and compiled.seen == [4] and not any(k[0] == (2, 1) for k in call.calls)
    with occasional():
        out = call(torch.zeros(4, 1), torch.zeros(4), None)
    assert compiled.seen == [4, 4] and float(out[0, 0]) == 1.0
    call(torch.zeros(2, 1), torch.zeros(2), None)
    assert eager.seen[-1] == 2 and call.calls[next(k for k in call.calls if k[0] == (2, 1))] == 1  # counting starts


def test_auto_compile_policy_by_unet_size():
    small = torch.nn.Linear(10, 10)
    big = torch.nn.Linear(10_000, 10_001, device="meta")  # 100 M parameters, no memory
    assert fast_config("float16", "auto", small).compile == "none"
    cfg = fast_config("float16", "auto", big)
    assert (cfg.compile, cfg.compile_after, cfg.compile_dynamic) == ("default", AUTO_COMPILE_AFTER, True)
    assert fast_config("float16", "default", small).compile_after == 0  # asked for: compiled at once


def test_nchw_from_switches_layout_by_padded_size(tiny_unet):
    """Padded batches of >= nchw_from images run an NCHW copy of the UNet, smaller ones the channels-last one,
    with the plain denoiser's numbers either way."""
    ref = plain(tiny_unet)
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32", bucket=4, nchw_from=4), cpu_fallback=False)
    layout = fast.call.inner
    assert isinstance(layout, LayoutCall) and set(layout.stacks) == {False, True}
    convs = {nchw: next(m.weight for m in stack.unet.modules() if isinstance(m, torch.nn.Conv2d))
             for nchw, stack in layout.stacks.items()}
    assert convs[True].is_contiguous() and convs[False].is_contiguous(memory_format=torch.channels_last)
    assert layout.nchw(4) and not layout.nchw(2)
    for n in (2, 3):  # 3 pads to 4: NCHW
        x, sigma, cond = batch(n, seed=10 + n)
        torch.testing.assert_close(fast(x, sigma, cond), ref(x, sigma, cond), rtol=1e-4, atol=1e-4)


def conv_inputs_channels_last(unet) -> list[bool]:
    """Hooks that record, per call, whether each (diffusers) upsampler's conv sees channels-last input."""
    seen = []
    for m in unet.modules():
        if isinstance(m, layout_keeping_class().__mro__[1]):
            m.conv.register_forward_pre_hook(
                lambda mod, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    return seen


def test_keep_layout_upsamplers_keep_channels_last_at_batch_64_with_the_same_output(tiny_unet):
    """At 64 images diffusers' Upsample2D turns channels-last input into NCHW; the swapped class keeps it, and
    the UNet's output is the same (nearest copies values; only the conv's rounding may differ)."""
    ref_unet, kept_unet = (copy.deepcopy(tiny_unet).to(memory_format=torch.channels_last) for _ in range(2))
    assert keep_layout(kept_unet) == 1
    seen_ref, seen_kept = conv_inputs_channels_last(ref_unet), conv_inputs_channels_last(kept_unet)
    x, sigma, cond = batch(64, seed=3)
    x = x.contiguous(memory_format=torch.channels_last)
    t = torch.full((64,), 500.0)
    with torch.no_grad():
        ref, kept = (u(x, t, encoder_hidden_states=cond.context).sample for u in (ref_unet, kept_unet))
    assert seen_ref == [False] and seen_kept == [True]
    torch.testing.assert_close(kept, ref, rtol=1e-5, atol=1e-5)
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32"), cpu_fallback=False)
    off = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32", keep_layout=False), cpu_fallback=False)
    assert fast.upsamplers == 1 and not hasattr(off, "upsamplers")


def test_float8_linear_within_e4m3_rounding():
    """|y - y_ref| <= 2 (2^-4) |x| |W|^T (3 mantissa bits on each operand) plus the subnormal floor
    2^-9 s (smallest e4m3 step) on each operand, for rows that are not a multiple of 16 too."""
    gen = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(32, 48)
    with torch.no_grad():
        lin.weight.normal_(generator=gen)
    x = torch.randn(3, 5, 32, generator=gen) * torch.logspace(-2, 1, 32)  # 15 rows, mixed magnitudes
    fp8 = Float8Linear(lin)
    with torch.no_grad():
        y, ref = fp8(x), lin(x)
    assert y.shape == ref.shape == (3, 5, 48) and fp8.weight_t.dtype == torch.float8_e4m3fn
    floor = 2.0**-9 * (scale_of(x) * lin.weight.abs().sum(1) + scale_of(lin.weight) * x.abs().sum(-1, keepdim=True))
    bound = 2 * 2.0**-4 * (x.abs() @ lin.weight.abs().T) + floor
    assert bool(((y - ref).abs() <= bound * 1.01).all())
    assert float((y - ref).abs().max()) > 0  # it did quantise


def test_fp8_fast_path_converts_transformer_linears_and_stays_close(tiny_unet):
    ref = plain(tiny_unet)
    fast = FastDenoiser(plain(tiny_unet), FastConfig(dtype="float32", fp8=True), cpu_fallback=False)
    n_lin = sum(isinstance(m, Float8Linear) for m in fast.unet.modules())
    assert n_lin == fast.fp8_layers > 0
    assert not any(isinstance(m, Float8Linear) for n, m in fast.unet.named_modules() if "time_emb" in n)
    x, sigma, cond = batch(3, seed=5)
    e_ref, e_fast = (eps_from_x0(x, d(x, sigma, cond), sigma) for d in (ref, fast))
    assert 0 < float((e_fast - e_ref).abs().max() / e_ref.abs().max()) < 0.05
    assert to_float8(torch.nn.Sequential(torch.nn.Linear(16, 16))) == 0  # only inside transformer blocks


def run_bench(out: Path, *extra: str) -> tuple[dict, float]:
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(BENCH), "--tiny", "--device", "cpu", "--out", str(out),
                           "--cpu-threads", "1", *extra], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads((out / "report.json").read_text()), time.perf_counter() - t


def test_bench_tiny_cpu_quick(tmp_path):
    """Two variants reusing one denoiser (fast, fast+visible) through the engine's SceneBatch, no parts."""
    report, _ = run_bench(tmp_path, "--force-fast-path", "--no-profile", "--no-parts", "--variants",
                          "fast,fast+visible", "--ks", "1,2")
    assert report["status"] == "done" and not report["failed"]
    assert {(r["variant"], r["k"], r["samples"], r["grouped"]) for r in report["rows"]} == {
        ("fast", 1, "all", False), ("fast", 2, "all", False), ("fast+visible", 1, "visible", True),
        ("fast+visible", 2, "visible", True)}
    assert list(report["agreement"]) == ["fast"]  # fast+visible reused fast's denoiser
    assert "| fast+visible |" in (tmp_path / "report.md").read_text()


@pytest.mark.slow
def test_bench_tiny_cpu_end_to_end(tmp_path):
    """Every non-compiled variant and K runs through the engine's real SceneBatch path, the parts (render rules,
    Adamax, grid stack, FP8, upsampler layout) are timed; JSON, markdown and figure written, the short table printed last."""
    report, seconds = run_bench(tmp_path, "--force-fast-path", "--no-profile")
    assert report["status"] == "done" and not report["failed"]
    cells = {(r["variant"], r["k"]) for r in report["rows"]}
    assert {("eager-fp32", 1), ("fast", 1), ("fast", 2), ("fast+visible", 2), ("fast-nchw", 2),
            ("fast-fp8", 2)} <= cells
    assert all(r["finite_loss"] and r["step_ms"] > 0 and r["scene_its_per_s"] > 0 for r in report["rows"])
    assert report["stages"]["flops"]["per_image"] > 0 and report["stages"]["matmul_peak"]["tflops"] > 0
    assert report["agreement"]["fast"]["rel_err"] < 0.05 and report["agreement"]["fast-fp8"]["rel_err"] < 0.1
    render = report["stages"]["render"]["rows"]
    assert {(r["samples"], r["state"]) for r in render if "ms" in r} >= {("all", "sphere"), ("visible", "sphere")}
    sphere = next(r for r in render if r["state"] == "sphere" and r["samples"] == "all")
    assert 0 < sphere["visible"] < sphere["inside_first_view"] < 1
    assert report["stages"]["adamax"]["grouped"]["ms"] > 0 and report["stages"]["stack"]["ms"] > 0
    assert report["stages"]["fp8"]["fp8"]["agreement"]["rel_err"] > 0
    ups = report["stages"]["upsample"]
    assert all(ups[name]["agreement"]["rel_err"] < 0.05 and ups[name]["ms_4"]["ms"] > 0
               for name in ("keep_layout", "diffusers"))
    assert ups["nearest_equal"] and all(ups["nearest_equal"].values())
    assert {"K=1", "accuracy"} <= set(report["targets"])
    assert any(s["variant"].startswith("compile") for s in report["skipped"])  # GPU-only, skipped cleanly
    md = (tmp_path / "report.md").read_text()
    assert "| variant | K=1 | K=2 |" in md and "## Render alone" in md
    assert (tmp_path / "rates.png").read_bytes()[:4] == b"\x89PNG"
    print(f"tiny CPU bench: {seconds:.1f} s")  # ~60 s on 2 idle cores; not asserted (no timed tests)


def test_bench_budget_skips_gracefully(tmp_path):
    """With no budget left, every measurement is skipped with a reason and the report is still written."""
    report, _ = run_bench(tmp_path, "--budget-seconds", "0", "--no-profile")
    assert report["status"] == "done" and report["rows"] == []
    assert report["skipped"] and all("budget" in s["reason"] or "GPU" in s["reason"] for s in report["skipped"])
    assert all(n.startswith("stage") and "skipped" in n for n in report["notes"] if n.startswith("stage"))


def test_model_compile_is_validated_and_ignored_on_cpu():
    from sjc_dist.config import load_config
    from sjc_dist.diffusion.load import load_model
    from sjc_dist.diffusion.vp_adapter import VPDenoiser
    from sjc_dist.errors import ConfigError

    with pytest.raises(ConfigError, match="model.compile"):
        load_config("toy", ["model.compile=reduce-overhead"])  # its own CUDA graphs clash with FastDenoiser's
    cfg = load_config("toy", ["model.compile=default", "model.device=cpu", "prompt.text=a red cube"])
    assert cfg.model.compile == "default"
    model = load_model(cfg.model)
    assert isinstance(model.denoiser.inner, VPDenoiser)  # the CPU path: no FastDenoiser, nothing compiled
