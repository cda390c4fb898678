"""FastDenoiser: the same D(x; sigma, cond) as VPDenoiser, with the UNet call made fast on a GPU.

A plain UNet call at small batch is bound by kernel-launch overhead (about 40 ms for SD 1.5 at batch 2 on an
H100, ~5% of the matmul peak). The fast path: half-precision weights (no autocast), channels-last memory (or
NCHW from `nchw_from` images up; diffusers' upsamplers kept in it at any batch, upsample.py), SDPA attention
(diffusers' default AttnProcessor2_0), cuDNN autotuning, optionally float8 linears (fp8.py) and torch.compile,
and the UNet call captured once per batch bucket as a CUDA graph. Batches are zero-padded to a bucket size
(powers of two up to `bucket`, then multiples of it) so that shapes stay static; padded rows are discarded. The
preconditioning (c_skip, c_out, c_in, sigma -> t) is VPDenoiser's own, computed eagerly around the call.

The call is a stack (`build_call`): PaddedCall -> LayoutCall -> per layout [CompileAfter -> GraphedCall ->
EagerCall]. CompileAfter serves a padded size from the eager graph for its first `compile_after` calls and from
the compiled one after: sizes a sweep passes through (slots opening, trials finishing) never compile, and with
`compile_dynamic` one graph with a symbolic batch size serves every size that does (one compile per worker;
Inductor's on-disk caches make a second worker or a resumed sweep load it instead of compiling it again).

On a CPU it calls the wrapped VPDenoiser unchanged (same numbers), unless built with `cpu_fallback=False`
(tests), which runs the fast path minus CUDA graphs and compile. It never builds an autograd graph through the
UNet (the guidance calls it under no-grad; the call here also runs under no-grad) and never syncs the host.
"""
import contextlib
import contextvars
import copy
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..configtools import opt
from ..errors import ConfigError
from .denoiser import Cond, Denoiser, append_dims
from .vp_adapter import VPDenoiser, coefficients

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
COMPILE_MODES = ("none", "default", "max-autotune-no-cudagraphs", "reduce-overhead", "max-autotune")
ATTENTION = ("auto", "flash", "efficient", "cudnn", "math")
DYNAMO_CACHE_LIMIT = 64  # graphs per code object: one per (padded size, layout) at most, when not dynamic
AUTO_COMPILE_MIN_PARAMS = 100e6  # 'auto' compiles SD-class UNets only (the toy world's 6.6 M: CUDA graphs only)
AUTO_COMPILE_AFTER = 8  # calls of a padded size before 'auto' compiles it (gpu_bench.py measured the trade)
log = logging.getLogger(__name__)
_OCCASIONAL = contextvars.ContextVar("sjc_occasional_calls", default=False)  # set by `occasional()`

# UNetCall: (x [N, C, H, W] in the UNet's dtype, t [N] float32, context [N, L, D] or None) -> F(x; t) [N, C, H, W]
UNetCall = Callable[[Tensor, Tensor, Tensor | None], Tensor]


@dataclass(frozen=True)
class FastConfig:
    """How the denoiser's UNet call is sped up on a GPU (on a CPU the plain VPDenoiser runs)."""

    dtype: str = opt("float16", "UNet weight and activation precision (no autocast)",
                     choices=("float32", "float16", "bfloat16"))
    channels_last: bool = opt(True, "channels-last (NHWC) memory format for the UNet's convolutions")
    nchw_from: int = opt(0, "padded batches of at least this many images run in NCHW instead (a second copy of "
                            "the UNet in that layout); 0 = one layout for every batch", ge=0)
    cuda_graph: bool = opt(True, "capture the UNet call as a CUDA graph per batch bucket (static shapes)")
    compile: str = opt("none", "torch.compile mode of the UNet ('none' = eager kernels)", choices=COMPILE_MODES)
    compile_after: int = opt(0, "calls of one padded batch size served by the eager graph before that size is "
                                "compiled (0 = at its first call)", ge=0)
    compile_dynamic: bool = opt(True, "compile one graph with a symbolic batch size for every padded size "
                                      "instead of one graph per size")
    compile_cache: str | None = opt(None, "Inductor's on-disk cache folder (TORCHINDUCTOR_CACHE_DIR); null = "
                                          "torch's default, shared by every process of the machine")
    keep_layout: bool = opt(True, "diffusers' nearest upsamplers keep the memory format at every batch size "
                                  "(upsample.py; diffusers makes them NCHW from 64 images): one compiled "
                                  "graph for batch 4 and batch 64")
    fp8: bool = opt(False, "the transformer blocks' nn.Linear layers as float8 e4m3 matmuls, per-tensor scales "
                           "(torch._scaled_mm; Hopper or newer)")
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


def fast_config(dtype: str, compile: str, unet: torch.nn.Module) -> FastConfig:
    """The FastConfig of `model.compile`. 'auto': a UNet of >= AUTO_COMPILE_MIN_PARAMS parameters compiles each
    padded size once it has served AUTO_COMPILE_AFTER calls (mode 'default', one dynamic-batch graph). Rule: a
    size compiles where its calls will repay the compile (59-92 s cold, 10.5 s from Inductor's cache: a K = 32
    sweep on an H200, 2026-12-03) with the compiled call's saving (about 4 ms per SD-sized scene-step at K = 1,
    about 90 ms per round at K = 32: 0.27 s eager, 0.18 s compiled): a 10,000-step run or a sweep's full batch
    does, a size seen for a few calls does not, nor the toy world, nor a score's calls (`occasional`)."""
    if compile != "auto":
        return FastConfig(dtype=dtype, compile=compile)
    big = sum(p.numel() for p in unet.parameters()) >= AUTO_COMPILE_MIN_PARAMS
    return FastConfig(dtype=dtype, compile="default" if big else "none", compile_after=AUTO_COMPILE_AFTER)


@contextlib.contextmanager
def occasional() -> Iterator[None]:
    """UNet calls made in this thread inside the block are occasional (a report's or an evaluation's fit, not a
    round; threads started inside it may inherit it where Python makes threads inherit the context, 3.14
    free-threaded): CompileAfter serves them from a size already compiled, else from the eager (CUDA-graphed)
    stack, and never counts them toward
    compiling. Why: one dynamic graph covers a range of batch sizes only (Dynamo guards on diffusers' upsampling
    `n >= 64` and, in PyTorch's conv shape rules, 16..63, 2..15 and 1: TORCH_LOGS=recompiles, CPU), so a fit's
    16 padded rows beside a K = 32 sweep's 64 compiled a second graph at the 9th report: a cold 32-trial sweep's
    reports held the H200 66 s, 14 s with Inductor's cache warm (multi_gpu_sweep.py), for calls of a few ms."""
    token = _OCCASIONAL.set(True)
    try:
        yield
    finally:
        _OCCASIONAL.reset(token)


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


def shape_key(x: Tensor, context: Tensor | None) -> tuple:
    """What one CUDA graph (and one static compiled graph) is specific to."""
    return (tuple(x.shape), x.dtype, x.is_contiguous(), None if context is None else tuple(context.shape))


def attention_context(name: str):
    """A context that restricts SDPA to one backend ('auto': a no-op)."""
    if name == "auto":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
               "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}[name]
    return sdpa_kernel([backend])


def prepare_compile(cfg: FastConfig) -> None:
    """Process-wide settings torch.compile needs here: room for a graph per (size, layout) and Inductor's and
    AOTAutograd's on-disk caches (on by default in recent torch; set in case), in `compile_cache` if given."""
    import torch._dynamo

    if cfg.compile_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(os.path.expanduser(cfg.compile_cache))
    for name in ("cache_size_limit", "recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), DYNAMO_CACHE_LIMIT))
    import torch._inductor.config as inductor_config

    inductor_config.fx_graph_cache = True
    with contextlib.suppress(AttributeError, ImportError):
        import torch._functorch.config as functorch_config

        functorch_config.enable_autograd_cache = True


class EagerCall:
    """The UNet (or its torch.compile'd version) called directly, under no-grad."""

    def __init__(self, unet: torch.nn.Module, cfg: FastConfig, compile_mode: str = "none"):
        self.unet, self.cfg, self.dynamic = unet, cfg, compile_mode != "none" and cfg.compile_dynamic
        if compile_mode != "none":
            prepare_compile(cfg)
        self.module = unet if compile_mode == "none" else torch.compile(
            unet, mode=compile_mode, dynamic=None if self.dynamic else False)
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
        if self.dynamic:  # one graph for every batch size (a size of 1 still specialises)
            for tensor in (x, t, context):
                if tensor is not None:
                    torch._dynamo.maybe_mark_dynamic(tensor, 0)
        with self.scope():
            if self.mark_step:  # cudagraph trees: each call is a new step, earlier outputs are consumed
                torch.compiler.cudagraph_mark_step_begin()
            return self.module(x, t, **kwargs, return_dict=False)[0]

    def reset(self) -> None:
        pass


class GraphPool:
    """One CUDA-graph memory pool shared by every graph of a denoiser (calls never overlap)."""

    def __init__(self):
        self.handle = None

    def get(self):
        if self.handle is None:
            self.handle = torch.cuda.graph_pool_handle()
        return self.handle


class GraphedCall:
    """One CUDA graph per input shape, captured on first use; inputs are copied into static buffers.

    The returned tensor is the graph's static output: read it before the next call (the denoiser does, at
    once, on the same stream). All graphs share one memory pool, safe because calls are never concurrent and
    each output is consumed before another graph replays.
    """

    def __init__(self, inner: EagerCall, pool: GraphPool | None = None, warmup: int = 2):
        self.inner, self.warmup, self.pool = inner, warmup, pool or GraphPool()
        self.graphs: dict[tuple, tuple] = {}

    def capture(self, x: Tensor, t: Tensor, context: Tensor | None) -> tuple:
        static = (x.clone(memory_format=torch.preserve_format), t.clone(),
                  None if context is None else context.clone())
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):  # warm-up off the capture: cuDNN autotuning, lazy inits, compilation
            for _ in range(self.warmup):
                self.inner(*static)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool.get()):
            out = self.inner(*static)
        return graph, static, out

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        key = shape_key(x, context)
        if key not in self.graphs:
            self.graphs[key] = self.capture(x, t, context)
        graph, (sx, st, sc), out = self.graphs[key]
        sx.copy_(x)
        st.copy_(t)
        if sc is not None:
            sc.copy_(context)
        graph.replay()
        return out

    def drop(self, key: tuple) -> None:
        self.graphs.pop(key, None)

    def reset(self) -> None:
        """Drop every captured graph (frees their memory pool once the caller drops its outputs)."""
        self.graphs.clear()
        self.pool.handle = None


class CompileAfter:
    """A padded size runs `eager` for its first `after` calls, then `compiled` (compiling on its first call
    there); calls under `occasional()` do not count. `compile_s` holds the host seconds of each size's first
    compiled call (compile and capture)."""

    def __init__(self, eager: UNetCall, compiled: UNetCall, after: int):
        self.eager, self.compiled, self.after = eager, compiled, after
        self.calls: dict[tuple, int] = {}
        self.compile_s: dict[tuple, float] = {}
        self.live: set[tuple] = set()  # sizes whose compiled graph is captured

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        key = shape_key(x, context)
        if key in self.live:
            return self.compiled(x, t, context)
        if _OCCASIONAL.get():
            return self.eager(x, t, context)
        n = self.calls[key] = self.calls.get(key, 0) + 1
        if n <= self.after:
            return self.eager(x, t, context)
        if isinstance(self.eager, GraphedCall):
            self.eager.drop(key)  # its memory goes back to the shared pool for the compiled graph
        start = time.perf_counter()
        out = self.compiled(x, t, context)
        self.live.add(key)
        if key not in self.compile_s:
            self.compile_s[key] = time.perf_counter() - start
            log.info("compiled the UNet call of shape %s in %.1f s, after %d eager calls", key[0],
                     self.compile_s[key], n - 1)
        return out

    def reset(self) -> None:
        """Drop both kinds of graphs; the next call of a size captures again (compiled code is kept)."""
        for call in (self.eager, self.compiled):
            call.reset()
        self.live.clear()


class LayoutCall:
    """Sends a padded batch to the stack of its memory format: NCHW from `nchw_from` images up (or always
    without channels-last), channels-last below."""

    def __init__(self, stacks: dict[bool, UNetCall], cfg: FastConfig):
        self.stacks, self.cfg = stacks, cfg

    def nchw(self, n: int) -> bool:
        return not self.cfg.channels_last or (self.cfg.nchw_from > 0 and n >= self.cfg.nchw_from)

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        nchw = self.nchw(x.shape[0])
        fmt = torch.contiguous_format if nchw else torch.channels_last
        return self.stacks[nchw](x.contiguous(memory_format=fmt), t, context)

    def reset(self) -> None:
        for call in self.stacks.values():
            call.reset()


class PaddedCall:
    """Pads the batch to its bucket size, calls the inner UNetCall, returns the first n rows."""

    def __init__(self, inner: UNetCall, step: int):
        self.inner, self.step = inner, step

    def __call__(self, x: Tensor, t: Tensor, context: Tensor | None) -> Tensor:
        n = x.shape[0]
        size = bucket_size(n, self.step)
        return self.inner(pad_rows(x, size), pad_rows(t, size), pad_rows(context, size))[:n]

    def reset(self) -> None:
        self.inner.reset()


def unet_stack(unet: torch.nn.Module, cfg: FastConfig, on_gpu: bool, pool: GraphPool) -> UNetCall:
    """Eager (CUDA-graphed on a GPU) calls of one UNet copy, switching to compiled ones per CompileAfter."""
    eager: UNetCall = EagerCall(unet, cfg)
    if not on_gpu:
        return eager
    compiled: UNetCall | None = EagerCall(unet, cfg, cfg.compile) if cfg.compile != "none" else None
    if cfg.cuda_graph:
        eager = GraphedCall(eager, pool)
        compiled = compiled and GraphedCall(compiled, pool)
    return eager if compiled is None else CompileAfter(eager, compiled, cfg.compile_after)


def build_call(unet: torch.nn.Module, cfg: FastConfig, device: torch.device) -> UNetCall:
    """The UNetCall stack of `cfg` on `device` (no CUDA graphs or compile off the GPU). `unet` is already in
    the layout of `cfg.channels_last`; an NCHW copy is made when `nchw_from` asks for both."""
    on_gpu, pool = device.type == "cuda", GraphPool()
    stacks = {not cfg.channels_last: unet_stack(unet, cfg, on_gpu, pool)}
    if cfg.channels_last and cfg.nchw_from > 0:
        nchw = torch.nn.Module.to(copy.deepcopy(unet), memory_format=torch.contiguous_format)
        stacks[True] = unet_stack(nchw, cfg, on_gpu, pool)
    call: UNetCall = LayoutCall(stacks, cfg)
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
            if cfg.keep_layout:
                from .upsample import keep_layout

                self.upsamplers = keep_layout(inner.unet)
            if cfg.fp8:
                from .fp8 import to_float8

                self.fp8_layers = to_float8(inner.unet)
            inner.dtype = self.dtype  # the wrapped denoiser stays usable on the converted weights
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
        sigma = self.inner.round_sigma(sigma.to(x.device, torch.float32))  # the snapped tick's for 'snap'
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in coefficients(sigma, self.inner.prediction_type))
        t = self.inner.sigma_to_t(sigma).to(x.device, torch.float32)
        with torch.no_grad():
            out = self.call((x * c_in).to(self.dtype), t, self.context(cond))
            return (c_skip * x + c_out * out.float()).float()

    def compile_seconds(self) -> dict[str, float]:
        """Host seconds of each padded size's first compiled call (compile + capture), by 'NxCxHxW/layout'."""
        out, layout = {}, self._layout()
        for nchw, call in (layout.stacks if layout is not None else {}).items():
            for key, s in getattr(call, "compile_s", {}).items():
                out["x".join(map(str, key[0])) + ("/nchw" if nchw else "/nhwc")] = s
        return out

    def _layout(self) -> LayoutCall | None:
        call = self.call.inner if isinstance(self.call, PaddedCall) else self.call
        return call if isinstance(call, LayoutCall) else None

    def reset(self) -> None:
        """Drop captured CUDA graphs (e.g. when the set of batch sizes in use changes)."""
        if self.call is not None:
            self.call.reset()


def with_compile(cfg: FastConfig, mode: str, **changes) -> FastConfig:
    """cfg with torch.compile `mode` (and its CUDA-graph rule: 'reduce-overhead' brings its own)."""
    return replace(cfg, compile=mode, cuda_graph=cfg.cuda_graph and mode != "reduce-overhead", **changes)
