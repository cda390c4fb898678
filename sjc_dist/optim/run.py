"""SJCRun: one scene's optimisation state and its step (SJC Algorithm 1 with the Sec. 4 regularisers).

A step: sample cameras and sigma -> render y = f(theta) -> guidance update u (no grad through the denoiser)
-> loss = -<u, y> + lambda(step) emptiness + w_depth center_depth -> Adamax step on theta.
The step is split into `begin` (render, perturb), `denoise`, `loss` and `apply` (optimiser step) so that a
SceneBatch can render its scenes in one pass, share one denoiser forward and one backward between them. Randomness: a CPU generator (cameras, sigma) and a generator on the device
(noise), both seeded from the config and saved in checkpoints, so a resumed run retraces the same path.
"""
import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor

from ..config import RunConfig
from ..diffusion.denoiser import Cond
from ..diffusion.load import Model
from ..diffusion.sigmas import SigmaSampler, resolve_range
from ..diffusion.text import view_prompt
from ..errors import ConfigError, DivergenceError
from ..guidance.base import GuidanceOutput, chain, make_guidance
from ..scene.cameras import Cameras, view_labels
from ..scene.render import RenderOutput
from ..scene.scenes import ImageScene, VoxelScene
from .losses import center_depth, emptiness, emptiness_weight
from .optimizer import MAX_FIELD_ABS, make_optimizer


@dataclass
class StepMetrics:
    """What one step reports (python floats; read only at the logging cadence)."""

    step: int
    loss: float
    guidance: float
    emptiness: float
    depth: float
    emptiness_lambda: float
    sigma: float
    opacity: float
    update_norm: float
    seconds: float


@dataclass
class Pending:
    """A step between `begin` and `finish`: the render, the perturbed batch and its conditioning."""

    render: RenderOutput
    target: Tensor
    y: Tensor
    z: Tensor
    noise: Tensor
    sigma: Tensor
    sigma_k: Tensor
    cond: Cond
    t0: float


class SJCRun:
    """One scene (3D voxels, or 2D when `dims == 2`) optimised against one model and prompt."""

    def __init__(self, cfg: RunConfig, model: Model, dims: int = 3):
        self.cfg, self.model, self.dims = cfg, model, dims
        self.device = model.device
        den = model.denoiser
        g = cfg.guidance
        if g.through_vae and model.vae is None:
            raise ConfigError("guidance.through_vae", True, f"false: model '{model.name}' has no VAE")
        channels = 3 if g.through_vae else den.channels
        res = cfg.render.resolution or (den.size * 8 if g.through_vae else den.size)
        self.cpu_gen = torch.Generator().manual_seed(cfg.seed)
        self.noise_gen = torch.Generator(self.device).manual_seed(cfg.seed + 1)
        if dims == 3:
            self.scene = VoxelScene(cfg.field, cfg.background, cfg.camera, channels, res, cfg.render.step,
                                    self.cpu_gen, cfg.render.samples, cfg.render.fuse)
        else:
            self.scene = ImageScene(channels, res, self.cpu_gen)
        self.scene.to(self.device)
        self.opt = make_optimizer(self.scene.param_groups(cfg.optim.lr, cfg.optim.lr_background))
        self.guidance = make_guidance(den, g, model.encode if g.through_vae else None)
        lo, hi = resolve_range(cfg.sigma, g.kind, den.sigmas, den.sigma_min, den.sigma_max)
        check_sigma_range(lo, hi, den.sigma_min, den.sigma_max)
        self.sigmas = SigmaSampler(cfg.sigma.kind, lo, hi, den.sigmas)
        self.step_index = 0
        self._first_bad = torch.tensor(-1, device=self.device)

    # --- conditioning ---------------------------------------------------------------------------------
    def cond_for(self, labels: list[str] | None, n: int) -> Cond:
        """Text conditioning for n views (view-dependent when configured), with this run's CFG weight."""
        p = self.cfg.prompt
        if self.model.text is None:
            return Cond(weight=torch.full((n,), self.cfg.guidance.weight, device=self.device))
        if labels is not None and p.view_dependent:
            prompts = [view_prompt(p.text, v, p.view_template) for v in labels]
        else:
            prompts = [p.text] * n
        return self.model.text.cond(prompts, p.negative, self.cfg.guidance.weight)

    # --- the step, in three parts ---------------------------------------------------------------------
    def begin(self, views: tuple[RenderOutput, Cameras] | None = None, t0: float | None = None) -> Pending:
        """Render (or take `views`, rendered by a SceneBatch from this run's `sample_cameras` since `t0`), then
        perturb."""
        t0 = time.perf_counter() if t0 is None else t0
        n = self.cfg.render.views_per_step
        out, cams = views if views is not None else self.scene.views(n, self.cpu_gen)
        labels = view_labels(cams, self.cfg.camera.overhead_above) if cams is not None else None
        sigma = self.sigmas.sample(self.step_index, self.cfg.steps, n, self.cpu_gen).to(self.device,
                                                                                    non_blocking=True)
        target = self.guidance.target(out.image)
        y, s_k, noise, z = self.guidance.perturb(target, sigma, self.noise_gen)
        cond = Cond.cat([self.cond_for(labels, n)] * self.cfg.guidance.n_noise)
        return Pending(out, target, y, z, noise, sigma, s_k, cond, t0)

    def sample_cameras(self) -> Cameras | None:
        """This step's cameras (None for a 2D scene), drawn as `begin` would draw them."""
        if not isinstance(self.scene, VoxelScene):
            return None
        return self.scene.cameras.sample(self.cfg.render.views_per_step, self.cpu_gen)

    def loss(self, p: Pending, denoised: Tensor) -> Tensor:
        """The surrogate loss of the update and the regularisers (with grad into theta)."""
        u = self.guidance.reduce(self.guidance.update(p.y, p.z, p.noise, denoised, p.sigma_k), p.target.shape[0])
        gout = GuidanceOutput(p.target, u, p.sigma)
        terms = self.loss_terms(p.render, gout)
        self._terms = (terms, gout, p)
        return sum(terms.values())

    def apply(self, loss: Tensor) -> Tensor:
        """The optimiser step, once `loss` has been backpropagated; returns the loss (no host sync)."""
        self.opt.step()
        loss = loss.detach()
        bad = ~torch.isfinite(loss)
        self._first_bad = torch.where((self._first_bad < 0) & bad, self.step_index, self._first_bad)
        self._last = (*self._terms, loss)
        self.step_index += 1
        return loss

    def finish(self, p: Pending, denoised: Tensor) -> Tensor:
        """Apply the update and regularisers, take the optimiser step; returns the loss (no host sync)."""
        loss = self.loss(p, denoised)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return self.apply(loss)

    def step(self) -> Tensor:
        p = self.begin()
        return self.finish(p, self.guidance.denoise(p.z, p.sigma_k, p.cond))

    def loss_terms(self, out: RenderOutput, g: GuidanceOutput) -> dict[str, Tensor]:
        terms = {"guidance": chain(g)}
        zero = torch.zeros((), device=self.device)
        terms["emptiness"] = zero
        terms["depth"] = zero
        if out.weights is not None:
            lam = emptiness_weight(self.cfg.emptiness, self.step_index, self.cfg.steps)
            terms["emptiness"] = lam * emptiness(out.weights, self.cfg.emptiness.beta)
            d = self.cfg.depth
            if d.weight > 0:
                terms["depth"] = d.weight * center_depth(out.depth, d.center, d.eps)
        return terms

    # --- health and metrics ---------------------------------------------------------------------------
    def check_finite(self, checkpoint: str | None = None) -> None:
        """Raise DivergenceError naming the first step whose loss was NaN/Inf, or a parameter that is NaN/Inf or
        finite but exploded: max |theta| > MAX_FIELD_ABS (optimizer.py gives the bound's reasons). One host sync
        for all parameters together, at the logging cadence."""
        names, params = zip(*self.scene.named_parameters())
        peaks = [p.detach().abs().amax().float() for p in params]  # NaN stays NaN
        bad, *peaks = torch.stack([self._first_bad.float(), *peaks]).tolist()
        if bad >= 0:
            raise DivergenceError(int(bad), "the loss", checkpoint)
        for name, peak in zip(names, peaks):
            if not math.isfinite(peak):
                raise DivergenceError(self.step_index - 1, f"parameter '{name}'", checkpoint)
            if peak > MAX_FIELD_ABS:
                raise DivergenceError(self.step_index - 1, f"parameter '{name}'", checkpoint,
                                      f"reached |x| = {peak:.3g}, past the bound {MAX_FIELD_ABS:g} of a healthy "
                                      f"field (a learning rate far too large?)")

    def metrics(self) -> StepMetrics:
        """Metrics of the last step (this reads from the device: call it at the logging cadence)."""
        terms, g, p, loss = self._last
        opacity = float(p.render.opacity.detach().mean()) if p.render.opacity is not None else 1.0
        return StepMetrics(step=self.step_index, loss=float(loss), guidance=float(terms["guidance"].detach()),
                           emptiness=float(terms["emptiness"].detach()), depth=float(terms["depth"].detach()),
                           emptiness_lambda=emptiness_weight(self.cfg.emptiness, self.step_index - 1,
                                                             self.cfg.steps),
                           sigma=float(g.sigma.float().mean()), opacity=opacity,
                           update_norm=float(g.update.float().pow(2).mean().sqrt()),
                           seconds=time.perf_counter() - p.t0)

    # --- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"scene": self.scene.state_dict(), "optim": self.opt.state_dict(), "step": self.step_index,
                "cpu_rng": self.cpu_gen.get_state(), "noise_rng": self.noise_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.scene.load_state_dict(state["scene"])
        self.opt.load_state_dict(state["optim"])
        self.step_index = int(state["step"])
        self.cpu_gen.set_state(state["cpu_rng"])
        self.noise_gen.set_state(state["noise_rng"])


def check_sigma_range(lo: float, hi: float, model_min: float, model_max: float) -> None:
    """The resolved sigma window must be ordered and inside the model's range."""
    tol = 1e-4
    if not lo < hi:
        raise ConfigError("sigma.min", lo, f"must be less than sigma.max = {hi}")
    if lo < model_min * (1 - tol) or hi > model_max * (1 + tol):
        raise ConfigError("sigma.min/sigma.max", (lo, hi),
                          f"must be inside the model's range [{model_min:.4g}, {model_max:.4g}]")
