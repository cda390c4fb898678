"""The step of K scenes in joined rows: one set of kernels per group of scenes instead of one per scene (at K = 32
the per-scene kernel launches, not the arithmetic, bounded the step: ~115 launches a scene).

perturb: each scene draws its noise n from its own generator (so its numbers are the same alone or joined); then
  z = y + sigma n for the group's rows at once, y, n, z [N, C, H, W], sigma [N], N = sum_i n_noise B_i.
passes: scenes whose guidances agree but for the CFG weight (which rides in each row's Cond) run ONE `passes`
  generator over their joined rows: every estimator is row-wise (per-row sigma, weight, text embeddings).
terms: the loss terms of K scenes rendered together, each a [K] vector, from the joined render:
  guidance_i = -<u_i, y_i>,  emptiness_i = lambda_i mean_b sum_{r,s} log(1 + beta_i w) / (R samples_b),
  depth_i and tv_i for the scenes that weight them (per scene; off by default). A solo run is K = 1.
"""
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from ..diffusion.denoiser import Cond, append_dims
from ..guidance.base import Guidance
from ..guidance.passes import Passes
from ..scene.render import RenderOutput
from .losses import center_depth, chord_samples, emptiness_rows, emptiness_weight, total_variation


@dataclass
class Rows:
    """A group's joined rows: y, z = y + sigma n, noise [N, C, H, W], sigma [N], cond [N]; `counts` [G]: each
    scene's rows (n_noise x views), in order."""

    y: Tensor
    z: Tensor
    noise: Tensor
    sigma: Tensor
    cond: Cond
    counts: list[int]


def join(parts: list[Tensor]) -> Tensor:
    """torch.cat, without a copy for one part."""
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def tile(x: Tensor, k: int) -> Tensor:
    """x [B, ...] repeated k times along dim 0 ([k B, ...], draw-major: guidance.reduce's order); x itself at k = 1."""
    return x if k == 1 else x.repeat(k, *([1] * (x.ndim - 1)))


def perturb(k: int, targets: list[Tensor], sigmas: list[Tensor], noises: list[Tensor], conds: list[Cond]) -> Rows:
    """Rows of G scenes with n_noise k: targets [B_i, C, H, W], sigmas [B_i] (on any device: moved once), noises
    [k B_i, ...] drawn by each scene, conds [k B_i] -> z = y + sigma n over all rows."""
    y = join([tile(t.detach(), k) for t in targets])
    sigma = join([tile(s, k) for s in sigmas]).to(y.device, non_blocking=True)
    noise = join(noises)
    return Rows(y, y + append_dims(sigma, y.ndim) * noise, noise, sigma, Cond.cat(conds), [n.shape[0] for n in noises])


def passes_key(guidance: Guidance) -> tuple:
    """Scenes with equal keys share one passes generator: the same estimator and settings but the CFG weight."""
    return type(guidance), replace(guidance.cfg, weight=0.0), guidance.denoiser, guidance.encode


def passes(guidance: Guidance, rows: Rows) -> Passes:
    """The group's denoiser passes; their result, the update [N, ...], splits by `rows.counts` (`split_update`)."""
    return guidance.passes(rows.y, rows.z, rows.noise, rows.sigma, rows.cond)


def split_update(guidance: Guidance, update: Tensor, counts: list[int]) -> list[Tensor]:
    """Each scene's update [B_i, ...]: its rows of the group's update [N, ...], the n_noise draws averaged."""
    k = guidance.cfg.n_noise
    return [u if k == 1 else guidance.reduce(u, n // k) for u, n in zip(update.split(counts), counts)]


@dataclass
class Terms:
    """The loss terms of K scenes, each [K] (with grad into the scenes' parameters)."""

    guidance: Tensor
    emptiness: Tensor
    depth: Tensor
    tv: Tensor

    def total(self) -> Tensor:
        return self.guidance + self.emptiness + self.depth + self.tv

    def of(self, i: int) -> dict[str, Tensor]:
        """Scene i's terms as scalars (views: no kernel)."""
        return {"guidance": self.guidance[i], "emptiness": self.emptiness[i], "depth": self.depth[i],
                "tv": self.tv[i]}


def per_row(values: list[float], b: int, device: torch.device) -> float | Tensor:
    """One number when the K scenes agree, else [K b] (each scene's value for each of its b rows)."""
    if len(set(values)) == 1:
        return values[0]
    return torch.tensor(values, device=device).repeat_interleave(b)


def terms(runs: list, render: RenderOutput | None, targets: list[Tensor], updates: list[Tensor]) -> Terms:
    """The terms of K runs (SJCRuns at their current step) rendered together (`render`: their joined render
    [K B, ...], or None for 2D scenes) with their targets and updates [B, C, H, W] each."""
    k = len(runs)
    target = join(targets)
    guidance = -(join(updates).detach() * target).reshape(k, -1).sum(1)
    zero = torch.zeros(k, device=target.device)
    if render is None or render.weights is None:
        return Terms(guidance, zero, zero, zero)
    return Terms(guidance, emptiness_terms(runs, render), *per_scene_terms(runs, render, zero))


def emptiness_terms(runs: list, render: RenderOutput) -> Tensor:
    """lambda_i(step) x the emptiness of scene i's views [K], each view normalised as its config says."""
    k, device = len(runs), render.weights.device
    b = render.weights.shape[0] // k
    beta = per_row([r.cfg.emptiness.beta for r in runs], b, device)
    views = emptiness_rows(render.weights, beta, view_samples(runs, render, b)).view(k, b).mean(1)
    lam = per_row([emptiness_weight(r.cfg.emptiness, r.step_index, r.cfg.steps) for r in runs], 1, device)
    return lam * views


def view_samples(runs: list, render: RenderOutput, b: int) -> Tensor | None:
    """The samples each view's sum is divided by [K b]: the longest chord's official count (normalize 'ray'), or
    the renderer's S per ray ('box'); None when every scene uses 'box' (a plain mean)."""
    ray = [r.cfg.emptiness.normalize == "ray" for r in runs]
    if not any(ray):
        return None
    if render.chord is None:
        raise ValueError("emptiness.normalize 'ray' needs the render's longest chord (RenderOutput.chord)")
    counts = chord_samples(render.chord, runs[0].cfg.render.step)
    if all(ray):
        return counts
    box = torch.tensor(ray, device=counts.device).repeat_interleave(b)
    return torch.where(box, counts, float(render.weights.shape[-1]))


def per_scene_terms(runs: list, render: RenderOutput, zero: Tensor) -> tuple[Tensor, Tensor]:
    """center-depth and TV [K], computed for the scenes that weight them (zero for the rest)."""
    b = render.depth.shape[0] // len(runs)
    depth = [r.cfg.depth.weight * center_depth(d, r.cfg.depth.center, r.cfg.depth.eps) if r.cfg.depth.weight > 0
             else None for r, d in zip(runs, render.depth.split(b))]
    tv = [tv_term(r) for r in runs]
    return stacked(depth, zero), stacked(tv, zero)


def stacked(values: list[Tensor | None], zero: Tensor) -> Tensor:
    """[K] from per-scene scalars (None: 0); `zero` itself when every one is None."""
    if all(v is None for v in values):
        return zero
    return torch.stack([zero[0] if v is None else v for v in values])


def tv_term(run) -> Tensor | None:
    """tv.density TV(raw density) + tv.features TV(features) of the run's voxel grid, or None when both are 0."""
    tv, grid = run.cfg.tv, run.scene.field.grid[0]
    if tv.density <= 0 and tv.features <= 0:
        return None
    parts = [w * total_variation(g) for w, g in ((tv.density, grid[:1]), (tv.features, grid[1:])) if w > 0]
    return sum(parts[1:], parts[0])
