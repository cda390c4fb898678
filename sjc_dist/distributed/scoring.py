"""Intermediate scores of a live run, computed on its worker every `report_every` steps: `score_fn(run) -> dict`.

Every scorer returns {"score": s, "score/<name>": s} with higher = better, so ASHA and Optuna can always
watch `score` whatever the scorer. The scorers (all cheap: a few renders or one voxel-grid comparison):
  truth  toy world only: soft 3D IoU at the best yaw of the field's opacity against the caption's object
         (primary), and the thresholded IoU of `sjc_dist.evaluation.truth` (see TruthScore). The best signal.
  fit    any model: render 4 fixed views y, noise them at 3 log-spaced sigmas of the run's window with a fixed
         generator, and score -mean |D(y + sigma n; sigma, cond) - y|^2 with CFG weight 1 (the plain conditional
         denoiser). Renders the model finds plausible for the prompt denoise back to themselves; blurry or empty
         ones do not. Comparable across trials and steps (same views, same noise), independent of the guidance
         weight being swept.
  auto   truth for toy-world captions when the evaluation module is present, else fit.
Does not run the final evaluation (evaluator.py) and never touches the run's own generators.
"""
import dataclasses
import math
from collections.abc import Callable

import torch

from ..diffusion.denoiser import append_dims
from ..optim.run import SJCRun
from ..scene.cameras import view_labels
from ..scene.scenes import VoxelScene

ScoreFn = Callable[[SJCRun], dict]
FIT_VIEWS = 4
FIT_QUANTILES = (0.25, 0.5, 0.75)  # positions in log-sigma of the run's [lo, hi] window
TRUTH_YAW_STEP = 15.0


@torch.no_grad()
def fit_score(run: SJCRun, views: int = FIT_VIEWS, seed: int = 0) -> dict[str, float]:
    """-mean squared denoising error of fixed renders [views] at 3 sigmas (higher = more plausible)."""
    gen = torch.Generator().manual_seed(seed)
    if isinstance(run.scene, VoxelScene):
        cams = run.scene.cameras.fixed(views)
        image, labels = run.scene.render(cams).image, view_labels(cams, run.cfg.camera.overhead_above)
    else:
        image, labels = run.scene.views(views, gen)[0].image, None
    y = run.guidance.target(image).detach()
    lo, hi = run.sigmas.lo, run.sigmas.hi
    sig = torch.tensor([math.exp(math.log(lo) + q * (math.log(hi) - math.log(lo))) for q in FIT_QUANTILES])
    s = sig.repeat_interleave(y.shape[0]).to(y.device)
    ys = y.repeat(len(FIT_QUANTILES), 1, 1, 1)
    z = ys + append_dims(s, ys.ndim) * torch.randn(ys.shape, generator=gen).to(y.device)
    cond = run.cond_for(labels, views)
    if cond.weight is not None:
        cond = dataclasses.replace(cond, weight=torch.ones_like(cond.weight))
    d = run.guidance.denoise(z, s, type(cond).cat([cond] * len(FIT_QUANTILES)))
    value = -float((d - ys).float().pow(2).mean())
    return {"score": value, "score/fit": value}


class TruthScore:
    """Toy-world ground truth of a live run against the caption's object, best over yaws (15 degree steps):
    soft IoU = sum min(o, t) / sum max(o, t) of the voxel opacity o and the soft true occupancy t (the
    weighted Jaccard index; the plain IoU for 0/1 volumes), which moves from the first steps on, and the
    thresholded 3D IoU of the final evaluation (`evaluation.truth.best_yaw_iou`), which stays 0 until
    the object has formed. The truth volumes are built once per slot."""

    def __init__(self, run: SJCRun):
        from ..toyworld.shapes import occupancy, parse, volumes

        field, caption = run.scene.field, run.cfg.prompt.text
        n, length = field.cfg.grid_size, field.bbox_len
        self.soft = volumes(caption, n, length)[0]
        self.hard = occupancy(parse(caption)[0], n, length)

    @torch.no_grad()
    def __call__(self, run: SJCRun) -> dict[str, float]:
        from ..evaluation.truth import best_yaw_iou, field_opacity, transform_volume

        opac = field_opacity(run.scene.field).float()
        soft = 0.0
        for yaw in torch.arange(0.0, 360.0, TRUTH_YAW_STEP).tolist():
            moved = transform_volume(opac[None], yaw)[0]
            soft = max(soft, float(torch.minimum(moved, self.soft).sum() / torch.maximum(moved, self.soft).sum()))
        hard = best_yaw_iou(opac, self.hard, run.cfg.output.mesh_level, TRUTH_YAW_STEP).iou
        return {"score": soft, "score/soft_iou": soft, "score/iou": hard}


def truth_available() -> bool:
    """Whether the evaluation layer's ground-truth module can be imported here."""
    try:
        from ..evaluation import truth  # noqa: F401
    except ImportError:
        return False
    return True


def make_scorer(name: str, run: SJCRun) -> tuple[ScoreFn, str]:
    """The score function for a run and a one-line note on which one was chosen and why."""
    from ..toyworld.shapes import parse

    if name == "fit":
        return fit_score, "fit"
    why = ""
    try:
        parse(run.cfg.prompt.text)
    except ValueError:
        why = "not a toy-world caption"
    if not isinstance(run.scene, VoxelScene):
        why = "not a 3D run"
    elif not why and not truth_available():
        why = "sjc_dist.evaluation.truth is not installed"
    if not why:
        return TruthScore(run), "truth"
    if name == "truth":
        raise ValueError(f"scorer 'truth' is unavailable for prompt '{run.cfg.prompt.text}': {why}")
    return fit_score, f"fit (auto: {why})"
