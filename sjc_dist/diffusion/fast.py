"""FastDenoiser: the same D(x; sigma, cond) as VPDenoiser, with the UNet call made fast on a GPU.

A plain UNet call at small batch is bound by kernel-launch overhead (about 40 ms for SD 1.5 at batch 2 on an
H100, ~5% of the matmul peak). The fast path: half-precision weights (no autocast), channels-last memory,
SDPA attention (diffusers' default AttnProcessor2_0), cuDNN autotuning, optionally torch.compile, and the
UNet call captured once per batch bucket as a CUDA graph. Batches are zero-padded to a bucket size (powers of
two up to `bucket`, then multiples of it) so that shapes stay static; padded rows are discarded. The
preconditioning (c_skip, c_out, c_in, sigma -> t) is VPDenoiser's own, computed eagerly around the call.

On a CPU it calls the wrapped VPDenoiser unchanged (same numbers), unless built with `cpu_fallback=False`
(tests), which runs the fast path minus CUDA graphs and compile. It never builds an autograd graph through the
UNet (the guidance calls it under no-grad; the call here also runs under no-grad) and never syncs the host.
"""
import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from ..configtools import opt
from ..errors import ConfigError
from .denoiser import Cond, Denoiser, append_dims
from .vp_adapter import VPDenoiser, coefficients

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
ATTENTION = ("auto", "flash", "efficient", "cudnn", "math")

# UNetCall: (x [N, C, H, W] in the UNet's dtype, t [N] float32, context [N, L, D] or None) -> F(x; t) [N, C, H, W]
UNetCall = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class FastConfig:
    """How the denoiser's UNet call is sped up on a GPU (on a CPU the plain VPDenoiser runs)."""

    dtype: str = opt("float16", "UNet weight and activation precision (no autocast)",
                     choices=("float32", "float16", "bfloat16"))
    channels_last: bool = opt(True, "channels-last (NHWC) memory format for the UNet's convolutions")
    cuda_graph: bool = opt(True, "capture the UNet call as a CUDA graph per batch bucket (static shapes)")
    compile: str = opt("none", "torch.compile mode of the UNet ('none' = eager kernels)", choices=COMPILE_MODES)
    bucket: int = opt(8, "batches are padded to a power of two up to this size, then to a multiple of it",
                      ge=1, le=4096)
    attention: str = opt("auto", "scaled-dot-product attention backend ('auto' = PyTorch's choice)",
                         choices=ATTENTION)
    cudnn_benchmark: bool = opt(True, "let cuDNN time its convolution algorithms on the first call of a shape")

    def __post_init__(self):
        if self.compile == "reduce-overhead" and self.cuda_graph:
            raise ConfigError("fast.cuda_graph", True, "false when fast.compile is 'reduce-overhead' "
                                                       "(that mode captures its own CUDA graphs)")

    @property
    def static_shapes(self) -> bool:
        """Whether batches are padded to buckets (graphs and compiled code want few distinct shapes)."""
        return self.cuda_graph or self.compile != "none"


def bucket_size(n: int, step: int) -> int:
    """The padded batch size of n: the next power of two while <= step, else the next multiple of step."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    if n <= step:
        return min(1 << (n - 1).bit_length(), step)
    return -(-n // step) * step


def pad_rows(t: Tensor | None, size: int) -> Tensor | None:
    """t [n, ...] zero-padded to [size, ...] (returned as is when n == size)."""
    if t is None or t.shape[0] == size:
        return t
    pad = t.new_zeros((size - t.shape[0],) + tuple(t.shape[1:]))
    return torch.cat([t, pad])


def attention_context(name: str):
    """A context that restricts SDPA to one backend ('auto': a no-op)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([backend])


class EagerCall:
    """The UNet (or its torch.compile'd version) called directly, under no-grad."""

    def __init__(self, unet: torch.nn.Module, cfg: FastConfig, compile_mode: str = "none"):
        self.unet, self.cfg = unet, cfg
        self.module = unet if compile_mode == "none" else torch.compile(unet, mode=compile_mode, dynamic=False)
        self.mark_step = compile_mode == "reduce-overhead"

    def scope(self):
        """Backend choices around every call and capture: SDPA backend and cuDNN autotuning."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.no_grad())
        stack.enter_context(attention_context(self.cfg.attention))
        if self.cfg.cudnn_benchmark:
            stack.enter_context(torch.backends.cudnn.flags(enabled=True, benchmark=True))
        return stack

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        kwargs = {} if context is None else {"encoder_hidden_states": context}
        with self.scope():
            if self.mark_step:  # cudagraph trees: each call is a new step, earlier outputs are consumed
                torch.compiler.cudagraph_mark_step_begin()
            return self.module(x, t, **kwargs, return_dict=False)[0]


class GraphedCall:
    """One CUDA graph per input shape, captured on first use; inputs are copied into static buffers.

    The returned tensor is the graph's static output: read it before the next call (the denoiser does, at
    once, on the same stream). All graphs share one memory pool, safe because calls are never concurrent and
    each output is consumed before another graph replays.
    """

    def __init__(self, inner: EagerCall, warmup: int = 2):
        self.inner, self.warmup = inner, warmup
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None

    def capture(self, x: Tensor, t: Tensor, context: Tensor | None) -> tuple:
        static = (x.clone(), t.clone(), None if context is None else context.clone())
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuDNN autotuning, lazy inits, compilation
            for _ in range(self.warmup):
                self.inner(*static)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.inner(*static)
        return graph, static, out

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        key = (tuple(x.shape), x.dtype, None if context is None else tuple(context.shape))
        if key not in self.graphs:
            self.graphs[key] = self.capture(x, t, context)
        graph, (sx, st, sc), out = self.graphs[key]
        sx.copy_(x)
        st.copy_(t)
        if sc is not None:
            sc.copy_(context)
        graph.replay()
        return out

    def reset(self) -> None:
        """Drop every captured graph (frees their memory pool once the caller drops its outputs)."""
        self.graphs.clear()
        self.pool = None


class PaddedCall:
    """Pads the batch to its bucket size, calls the inner UNetCall, returns the first n rows."""

    def __init__(self, inner: UNetCall, step: int):
        self.inner, self.step = inner, step

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        n = x.shape[0]
        size = bucket_size(n, self.step)
        padded = pad_rows(x, size)
        if padded is not x and x.is_contiguous(memory_format=torch.channels_last):
            padded = padded.contiguous(memory_format=torch.channels_last)
        return self.inner(padded, pad_rows(t, size), pad_rows(context, size))[:n]


def build_call(unet: torch.nn.Module, cfg: FastConfig, device: torch.device) -> UNetCall:
    """The UNetCall stack of `cfg` on `device` (no CUDA graphs or compile off the GPU)."""
    on_gpu = device.type == "cuda"
    call: UNetCall = EagerCall(unet, cfg, cfg.compile if on_gpu else "none")
    if cfg.cuda_graph and on_gpu:
        call = GraphedCall(call)
    return PaddedCall(call, cfg.bucket) if cfg.static_shapes else call


class FastDenoiser(Denoiser):
    """A VPDenoiser whose UNet call runs through `build_call`; takes over (converts in place) its UNet."""

    def __init__(self, inner: VPDenoiser, cfg: FastConfig = FastConfig(), cpu_fallback: bool = True):
        self.inner, self.cfg = inner, cfg
        for name in ("sigma_min", "sigma_max", "channels", "size", "is_latent", "sigmas"):
            setattr(self, name, getattr(inner, name))
        self.device = next(inner.unet.parameters()).device
        self.call: UNetCall | None = None
        if self.device.type == "cuda" or not cpu_fallback:
            self.dtype = DTYPES[cfg.dtype]
            fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
            # nn.Module.to: diffusers' own `to` only adds a notice about fp32 modules (none in these UNets)
            torch.nn.Module.to(inner.unet, dtype=self.dtype, memory_format=fmt).eval().requires_grad_(False)
            inner.dtype = self.dtype  # the wrapped denoiser stays usable on the converted weights
            self.memory_format = fmt
            self.call = build_call(inner.unet, cfg, self.device)

    @property
    def unet(self) -> torch.nn.Module:
        return self.inner.unet

    def context(self, cond: Cond | None) -> Tensor | None:
        """Text embeddings [B, L, D] in the UNet's dtype, or None for an unconditional UNet."""
        if not self.inner.conditional:
            return None
        if cond is None or cond.context is None:
            raise ValueError("this UNet is text-conditioned: pass a Cond with `context` [B, L, D]")
        return cond.context.to(self.dtype)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Cond | None = None) -> Tensor:
        """x0_hat [B, C, H, W] float32 for x [B, C, H, W] and sigma [B] (VPDenoiser's formula)."""
        if self.call is None:
            return self.inner(x, sigma, cond)
        sigma = sigma.to(x.device, torch.float32)
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in coefficients(sigma, self.inner.prediction_type))
        t = self.inner.sigma_to_t(sigma).to(x.device, torch.float32)
        with torch.no_grad():
            z = (x * c_in).to(self.dtype).contiguous(memory_format=self.memory_format)
            out = self.call(z, t, self.context(cond))
            return (c_skip * x + c_out * out.float()).float()

    def reset(self) -> None:
        """Drop captured CUDA graphs (e.g. when the set of batch sizes in use changes)."""
        call = self.call.inner if isinstance(self.call, PaddedCall) else self.call
        if isinstance(call, GraphedCall):
            call.reset()
