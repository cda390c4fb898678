"""SJCRun: one scene's optimisation state and its step (SJC Algorithm 1 with the Sec. 4 regularisers).

A step: sample cameras and sigma -> render y = f(theta) -> guidance update u (no grad through the denoiser)
-> loss = -<u, y> + lambda(step) emptiness + w_depth center_depth + TV -> Adamax step on theta.
The step is split into `begin` (render, perturb), the guidance's denoiser `passes` (driven by `passes.drive`),
`loss` and `apply` (optimiser step) so that a SceneBatch can render its scenes in one pass, share each denoiser
pass and one backward between them. Coarse-to-fine (field.coarse_size): `resize_field` upsamples the grid and its
Adamax moments when a step starts a new stage; a checkpoint's grid carries its own size. Randomness: a CPU
generator (cameras, sigma) and a generator on the device (noise), both seeded from the config and saved in
checkpoints, so a resumed run retraces the same path.
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
from ..guidance.base import make_guidance, validate_guidance
from ..guidance.passes import Passes, drive
from ..scene.cameras import Cameras, view_labels
from ..scene.field import resample_grid
from ..scene.render import RenderOutput
from ..scene.scenes import ImageScene, VoxelScene
from . import joint
from .losses import emptiness_weight
from .optimizer import MAX_FIELD_ABS, make_optimizer


@dataclass
class StepMetrics:
    """What one step reports (python floats; read only at the logging cadence)."""

    step: int
    loss: float
    guidance: float
    emptiness: float
    depth: float
    tv: float
    emptiness_lambda: float
    sigma: float
    opacity: float
    update_norm: float
    seconds: float
    evals: int


@dataclass
class Pending:
    """A step between `begin` and `finish`: the render (and its target: the render, or its VAE latent), this step's
    draws (sigma [B] on the host, noise [n_noise B, ...]) and the conditioning [n_noise B]."""

    render: RenderOutput
    target: Tensor
    noise: Tensor
    sigma: Tensor
    cond: Cond
    t0: float


@dataclass
class StepRecord:
    """What `metrics` reads of the last step: scene `index` of the joined terms, its pending step and update."""

    terms: joint.Terms
    index: int
    pending: Pending
    update: Tensor
    loss: Tensor | None = None


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
        validate_guidance(g, cfg.prompt.view_dependent, model.text is not None)
        if dims == 3:
            self.scene = VoxelScene(cfg.field, cfg.background, cfg.camera, channels, res, cfg.render.step,
                                    self.cpu_gen, cfg.render.samples, cfg.render.fuse,
                                    cfg.field.size_at(0, cfg.steps))
        else:
            self.scene = ImageScene(channels, res, self.cpu_gen)
        self.scene.to(self.device)
        self.opt = make_optimizer(self.scene.param_groups(cfg.optim.lr, cfg.optim.lr_background))
        self.guidance = make_guidance(den, g, model.encode if g.through_vae else None)
        lo, hi = resolve_range(cfg.sigma, g.kind, den.sigmas, den.sigma_min, den.sigma_max)
        check_sigma_range(lo, hi, den.sigma_min, den.sigma_max)
        self.sigmas = SigmaSampler(cfg.sigma.kind, lo, hi, den.sigmas)
        self.step_index = 0
        self._first_bad = torch.tensor(-1, device=self.device)  # the first step whose loss was NaN/Inf, folded
        self._bad: list[tuple[int, Tensor]] = []  # (step, its loss's NaN/Inf flag) since the last fold
        self._conds: dict[tuple, Cond] = {}

    # --- conditioning ---------------------------------------------------------------------------------
    def cond_for(self, cams: Cameras | None, n: int) -> Cond:
        """Text conditioning for n views (view-dependent when configured: view prefixes, or Perp-Neg's
        interpolated views), with this run's CFG weight and its estimator's negative prompt."""
        p, g = self.cfg.prompt, self.cfg.guidance
        if self.model.text is None:
            return Cond(weight=torch.full((n,), g.weight, device=self.device))
        negative = self.guidance.negative_text()
        if cams is not None and p.view_dependent and g.cfg == "perp_neg":
            return self.model.text.perp_neg(p.text, cams.azimuth.tolist(), p.view_template, p.negative, g.weight,
                                            negative, g.perp_neg_scale)
        return self.model.text.cond(self.prompts(cams, n), p.negative, g.weight, negative)

    def prompts(self, cams: Cameras | None, n: int) -> list[str]:
        """The n views' prompts: view-prefixed when prompt.view_dependent (and cameras are given)."""
        p = self.cfg.prompt
        if cams is not None and p.view_dependent:
            return [view_prompt(p.text, v, p.view_template) for v in view_labels(cams, self.cfg.camera.overhead_above)]
        return [p.text] * n

    def conditioning(self, cams: Cameras | None, n: int) -> Cond:
        """cond_for repeated for the n_noise draws [n_noise n], kept per set of view prompts (a step's conditioning
        is then a look-up, not embeddings, weights and copies on the device; Perp-Neg's depends on the azimuths)."""
        k = self.cfg.guidance.n_noise
        if self.cfg.guidance.cfg == "perp_neg" and self.model.text is not None:
            return Cond.cat([self.cond_for(cams, n)] * k)
        key = tuple(self.prompts(cams, n))
        if key not in self._conds:
            self._conds[key] = Cond.cat([self.cond_for(cams, n)] * k)
        return self._conds[key]

    @property
    def evals_per_step(self) -> int:
        """UNet image-evaluations of one step (all views, CFG halves and noise draws counted)."""
        return self.cfg.render.views_per_step * self.guidance.evals_per_view(self.model.text is not None)

    # --- the step, in parts ---------------------------------------------------------------------------
    def begin(self, views: tuple[RenderOutput, Cameras] | None = None, t0: float | None = None) -> Pending:
        """Render (or take `views`, rendered by a SceneBatch from this run's own camera draws since `t0`: the
        cameras `scene.views` would draw), then draw sigma and the noise."""
        t0 = time.perf_counter() if t0 is None else t0
        n = self.cfg.render.views_per_step
        if views is None:
            self.resize_field()
        out, cams = views if views is not None else self.scene.views(n, self.cpu_gen)
        sigma = self.sigmas.sample(self.step_index, self.cfg.steps, n, self.cpu_gen)
        target = self.guidance.target(out.image)
        return Pending(out, target, self.guidance.noise(target, self.noise_gen), sigma, self.conditioning(cams, n), t0)

    def passes(self, p: Pending) -> Passes:
        """The guidance's denoiser passes for this step (drive them with `passes.drive`): the update [k B, ...]."""
        return joint.passes(self.guidance, joint.perturb(self.cfg.guidance.n_noise, [p.target], [p.sigma],
                                                         [p.noise], [p.cond]))

    def loss(self, p: Pending, update: Tensor) -> Tensor:
        """The surrogate loss of the update [n_noise B, ...] and the regularisers (with grad into theta)."""
        u = joint.split_update(self.guidance, update, [update.shape[0]])[0]
        terms = joint.terms([self], p.render, [p.target], [u])
        self.record(terms, 0, p, u)
        return terms.total()[0]

    def record(self, terms: joint.Terms, index: int, p: Pending, update: Tensor) -> None:
        """Keep this step's terms (scene `index` of a joined set) for `metrics`."""
        self._last = StepRecord(terms, index, p, update)

    def apply(self, loss: Tensor, bad: Tensor | None = None) -> Tensor:
        """The optimiser step, once `loss` has been backpropagated; returns the loss (no host sync). `bad`: whether
        the loss is NaN/Inf (a view of the batch's flags), else computed here."""
        self.opt.step()
        loss = loss.detach()
        self._bad.append((self.step_index, ~torch.isfinite(loss) if bad is None else bad))
        if len(self._bad) >= 256:
            self.fold_bad()
        self._last.loss = loss
        self.step_index += 1
        return loss

    def fold_bad(self) -> None:
        """Fold the kept NaN/Inf flags into `_first_bad` on the device (no host sync)."""
        if not self._bad:
            return
        steps = torch.tensor([s for s, _ in self._bad], device=self.device)
        flags = torch.stack([f for _, f in self._bad])
        first = torch.where(flags, steps, torch.iinfo(steps.dtype).max).amin()
        self._first_bad = torch.where((self._first_bad < 0) & flags.any(), first, self._first_bad)
        self._bad = []

    def finish(self, p: Pending, update: Tensor) -> Tensor:
        """Apply the update [n_noise B, ...] and regularisers, take the optimiser step; returns the loss."""
        loss = self.loss(p, update)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        return self.apply(loss)

    def step(self) -> Tensor:
        p = self.begin()
        return self.finish(p, drive([self.passes(p)], self.guidance.denoise)[0])

    def loss_terms(self, p: Pending, update: Tensor) -> dict[str, Tensor]:
        """This step's terms (scalars) for the update [B, ...]: `joint.terms` of one scene."""
        return joint.terms([self], p.render, [p.target], [update]).of(0)

    # --- coarse-to-fine -------------------------------------------------------------------------------
    def resize_field(self) -> None:
        """Upsample the grid when this step starts a coarse-to-fine stage (no-op otherwise, and for 2D)."""
        if isinstance(self.scene, VoxelScene):
            n = self.cfg.field.size_at(self.step_index, self.cfg.steps)
            if n != self.scene.field.size:
                self.set_field_size(n)

    def set_field_size(self, n: int) -> None:
        """Resample the grid to n^3 and move its Adamax moments along (resampled the same way)."""
        field = self.scene.field
        old = field.grid
        state = self.opt.state.pop(old, {})
        field.set_grid(resample_grid(old, n))
        for group in self.opt.param_groups:
            group["params"] = [field.grid if q is old else q for q in group["params"]]
        if state:
            self.opt.state[field.grid] = {k: resample_grid(v, n) if v.shape == old.shape else v
                                          for k, v in state.items()}

    # --- health and metrics ---------------------------------------------------------------------------
    def check_finite(self, checkpoint: str | None = None) -> None:
        """Raise DivergenceError naming the first step whose loss was NaN/Inf, or a parameter that is NaN/Inf or
        finite but exploded: max |theta| > MAX_FIELD_ABS (optimizer.py gives the bound's reasons). One host sync
        for all parameters together, at the logging cadence."""
        self.fold_bad()
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
        rec = self._last
        terms, p = rec.terms.of(rec.index), rec.pending
        opacity = float(p.render.opacity.detach().mean()) if p.render.opacity is not None else 1.0
        return StepMetrics(step=self.step_index, loss=float(rec.loss), guidance=float(terms["guidance"].detach()),
                           emptiness=float(terms["emptiness"].detach()), depth=float(terms["depth"].detach()),
                           tv=float(terms["tv"].detach()),
                           emptiness_lambda=emptiness_weight(self.cfg.emptiness, self.step_index - 1,
                                                             self.cfg.steps),
                           sigma=float(p.sigma.float().mean()), opacity=opacity,
                           update_norm=float(rec.update.float().pow(2).mean().sqrt()),
                           seconds=time.perf_counter() - p.t0, evals=self.evals_per_step)

    # --- state ----------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {"scene": self.scene.state_dict(), "optim": self.opt.state_dict(), "step": self.step_index,
                "cpu_rng": self.cpu_gen.get_state(), "noise_rng": self.noise_gen.get_state()}

    def load_state_dict(self, state: dict) -> None:
        grid = state["scene"].get("field.grid")
        if grid is not None and grid.shape[-1] != self.scene.field.size:  # saved at another coarse-to-fine stage
            self.set_field_size(grid.shape[-1])
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
