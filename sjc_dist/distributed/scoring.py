"""Intermediate scores of a live run, computed on its worker every `report_every` steps: `score_fn(run) -> dict`.

Every scorer returns {"score": s, "score/<name>": s} with higher = better, so ASHA and Optuna can always
watch `score` whatever the scorer. The scorers (all cheap: a few renders or one voxel-grid comparison):
  truth  toy world only: soft 3D IoU at the best yaw of the field's opacity against the caption's object
         (primary), and the thresholded IoU of `sjc_dist.evaluation.truth` (see TruthScore). The best signal.
  fit    any model: the denoiser fit of `sjc_dist.evaluation.fit` on 4 fixed views: -mean |D(y + s n; s, c) - y|^2
         with CFG weight 1, fixed noise and fixed sigmas (the same for every trial, whatever sigma window it
         sweeps). Renders the model finds plausible for the prompt denoise back to themselves; blurry or empty
         ones do not. Comparable across trials and steps, independent of the guidance weight being swept.
  auto   truth for toy-world captions when the evaluation module is present, else fit.
Does not run the final evaluation (evaluator.py) and never touches the run's own generators.
"""
from collections.abc import Callable

import torch

from ..optim.run import SJCRun
from ..scene.scenes import VoxelScene

ScoreFn = Callable[[SJCRun], dict]
FIT_VIEWS = 4
TRUTH_YAW_STEP = 15.0


@torch.no_grad()
def fit_score(run: SJCRun, views: int = FIT_VIEWS) -> dict[str, float]:
    """The denoiser fit of the run's current renders under its own model (evaluation.fit: fixed views, noise
    and sigmas, CFG weight 1; higher = more plausible)."""
    from ..evaluation.fit import denoiser_fit, fit_prompts, fit_renders

    if isinstance(run.scene, VoxelScene):
        image, labels = fit_renders(run.scene, run.cfg.camera, views)
    else:
        image, labels = run.scene.views(views, torch.Generator().manual_seed(0))[0].image, None
    y = run.guidance.target(image).detach()
    p = run.cfg.prompt
    prompts, negative = fit_prompts(p.text, p.negative, p.view_dependent, p.view_template, labels, views)
    value = denoiser_fit(run.model, y, prompts, negative)
    return {"score": value, "score/fit": value}


class TruthScore:
    """Toy-world ground truth of a live run against the caption's object, best over yaws (15 degree steps):
    soft IoU = sum min(o, t) / sum max(o, t) of the voxel opacity o and the soft true occupancy t (the
    weighted Jaccard index; the plain IoU for 0/1 volumes), which moves from the first steps on, and the
    thresholded 3D IoU of the final evaluation (`evaluation.truth.best_yaw_iou`), which stays 0 until
    the object has formed. The truth volumes are built once per slot."""

    def __init__(self, run: SJCRun):
        self.build(run)

    def build(self, run: SJCRun) -> None:
        """The truth volumes at the field's current side (again when a coarse-to-fine run upsamples)."""
        from ..toyworld.shapes import occupancy, parse, volumes

        field, caption = run.scene.field, run.cfg.prompt.text
        n, length = field.cfg.grid_size, field.bbox_len
        self.soft = volumes(caption, n, length)[0].to(field.grid.device)
        self.hard = occupancy(parse(caption)[0], n, length).to(field.grid.device)

    @torch.no_grad()
    def __call__(self, run: SJCRun) -> dict[str, float]:
        from ..evaluation.truth import best_yaw_iou, field_opacity, transform_volume

        if self.soft.shape[-1] != run.scene.field.size:
            self.build(run)
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
