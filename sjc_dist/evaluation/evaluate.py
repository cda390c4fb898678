"""Evaluation of saved runs, separate from generation, so a new judge can re-score old runs.

For each run folder: re-render V views at evenly spaced azimuths and one stated elevation (saved.py), embed them
with every judge, and score: CLIP score with the run's own prompt, CLIP R-Precision@1 of that prompt among all
the benchmark's prompts (clip_score.py), and the distractor-based signals (signals.py: worst view's CLIP score,
R@1 and probability of the prompt among a fixed distractor set). Model signals need no judge (fit.py): the
denoiser fit of the guiding model (`fit`) and of an independent judge model (`judge_fit`, 'toy-judge' for the
toy world). Toy-world prompts also get the ground truth (truth.py, image_truth.py): 3D IoU at the best yaw,
colour error, the toy CLIP's zero-shot R@1 over the world's 25 captions, and the image-space agreement with the
true renders (PSNR, SSIM, silhouette IoU, depth error) at that yaw. The output is one `EvalRow` per run per judge;
a list of runs is one call (a chunk of a distributed evaluation), holding only embeddings, never all renders, in
memory.
"""
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..config import RunConfig
from ..configtools import opt
from ..diffusion.load import resolve_device
from ..errors import ConfigError
from ..scene import export
from ..toyworld.shapes import captions
from .clip_score import clip_scores, r_precision_per_object
from .fit import denoiser_fit, fit_prompts, fit_renders
from .image_truth import ImageTruth, image_truth
from .judges import Judge, same_tower_warning
from .saved import ModelCache, SavedRun, load_saved_run, read_run_config, render_saved
from .signals import clip_signals, distractor_prompts
from .truth import TruthScores, is_toy_caption, toy_caption_accuracy, truth_scores

VIEWS_FILE = "eval_views.png"


@dataclass(frozen=True)
class EvalConfig:
    """How saved runs are re-rendered and scored."""

    views: int = opt(8, "views per object, at evenly spaced azimuths starting at the front", ge=1, le=64)
    elevation: float | None = opt(None, "elevation of the views, degrees; null = the run's camera.test_elevation",
                                  ge=-90.0, le=90.0)
    resolution: int | None = opt(None, "rendered side in pixels (latents for SD); null = the run's own", ge=4,
                                 le=1024)
    render_step: float | None = opt(None, "ray-marching step; null = the run's render.step", gt=0.0)
    yaw_step: float = opt(5.0, "yaw search step of the 3D IoU, degrees", gt=0.0, le=90.0)
    iou_level: float = opt(0.1, "voxel opacity 1 - exp(-tau * voxel) from which a voxel counts as occupied (IoU, "
                                "colour surface); the mesh's output.mesh_level is 0.1 too: SJC's fields are soft "
                                "(voxels of opacity 0.2 render opaque together)", gt=0.0, lt=1.0)
    truth_elevations: tuple = opt((0.0, 15.0, 30.0, 45.0, 60.0), "elevations (degrees) of the image-truth views, "
                                                                 "each at every azimuth of truth_azimuths")
    truth_azimuths: int = opt(8, "azimuths of the image-truth views (evenly spaced, front first)", ge=1, le=64)
    distractors: str = opt("auto", "fixed distractor prompts of the CLIP signals: auto (toy for toy-world captions, "
                                   "else coco153), toy, coco153 or a prompt file")
    fit: bool = opt(True, "compute the denoiser fit of the guiding model (fit) and of the judge model (judge_fit)")
    fit_views: int = opt(4, "fixed views the denoiser fits are computed on (the live scorer's 4)", ge=1, le=64)
    judge_model: str = opt("auto", "independent diffusion model of judge_fit: auto (toy-judge for the toy world, "
                                   "none otherwise), none, or a model name / diffusers folder")
    batch_runs: int = opt(8, "runs whose views are embedded together (one judge pass for all their views)", ge=1)
    device: str = opt("auto", "'auto' (cuda if available), 'cpu', 'cuda' or 'cuda:N'")
    save_views: bool = opt(True, f"write the evaluated views into each run folder as {VIEWS_FILE}")


@dataclass
class EvalRow:
    """One object scored by one judge: the columns of the benchmark's Parquet table."""

    run_dir: str
    prompt: str
    prompt_index: int
    method: str
    seed: int
    model: str
    judge: str
    views: int
    elevation: float
    clip_score: float
    r_precision: float
    n_prompts: int
    clip_worst: float = math.nan
    rp_distractors: float = math.nan
    clip_prob: float = math.nan
    fit: float = math.nan
    judge_fit: float = math.nan
    toy_r1: float = math.nan
    iou: float = math.nan
    iou_centred: float = math.nan
    yaw: float = math.nan
    color_error: float = math.nan
    color_error_floor: float = math.nan
    occupied_fraction: float = math.nan
    psnr: float = math.nan
    ssim: float = math.nan
    silhouette_iou: float = math.nan
    depth_error: float = math.nan
    steps: int = 0
    seconds: float = math.nan
    guidance_weight: float = math.nan
    views_png: str = ""
    warning: str = ""


@dataclass
class Scored:
    """What one run yields before R-Precision: its metadata, embeddings per judge, truth, toy R@1 and the model
    signals (the field itself is not kept: a chunk of runs holds embeddings only)."""

    run_dir: str
    cfg: RunConfig
    method: str
    summary: dict
    elevation: float
    emb: dict[str, torch.Tensor]
    truth: TruthScores | None
    toy_r1: float
    views_png: str
    image: ImageTruth | None = None
    fits: dict = dataclasses.field(default_factory=dict)


def render_run(run: SavedRun, cfg: EvalConfig, models: ModelCache) -> tuple[torch.Tensor, Scored]:
    """Render one run's views [V, 3, H, W] (saved as a PNG strip), compute its truth (if any) and its model
    signals; the embeddings are filled in later, for a batch of runs at once."""
    elevation = cfg.elevation if cfg.elevation is not None else run.cfg.camera.test_elevation
    views = render_saved(run, models.decoder(run), cfg.views, elevation)
    png = ""
    if cfg.save_views:
        up = max(1, 96 // views.shape[-1])
        png = str(export.save_grid(views, run.run_dir / VIEWS_FILE, cols=len(views), upscale=up))
    truth, image = run_truth(run, cfg)
    fits = model_signals(run, cfg, models) if cfg.fit else {}
    return views, Scored(str(run.run_dir), run.cfg, run.method, run.summary, elevation, {}, truth, math.nan, png,
                         image, fits)


def run_truth(run: SavedRun, cfg: EvalConfig) -> tuple[TruthScores | None, ImageTruth | None]:
    """3D and image-space truth of a toy-world run (the image views turned by the 3D best yaw), else None."""
    prompt = run.cfg.prompt.text
    if not is_toy_caption(prompt):
        return None, None
    truth = truth_scores(run.scene.field, prompt, cfg.iou_level, cfg.yaw_step)
    step = cfg.render_step or run.cfg.render.step
    image = image_truth(run.scene.field, prompt, run.cfg.camera, run.scene.cameras.res, step, truth.yaw,
                        tuple(cfg.truth_elevations), cfg.truth_azimuths)
    return truth, image


def model_signals(run: SavedRun, cfg: EvalConfig, models: ModelCache) -> dict[str, float]:
    """The denoiser fit of the guiding model and of the judge model (NaN where a model cannot judge the run)."""
    image, labels = fit_renders(run.scene, run.cfg.camera, cfg.fit_views)
    p = run.cfg.prompt
    prompts, negative = fit_prompts(p.text, p.negative, p.view_dependent, p.view_template, labels, len(image))
    out = {}
    for key, model in (("fit", models.guiding(run)), ("judge_fit", models.judge(run, cfg.judge_model))):
        y = models.model_space(model, image) if model is not None else None
        out[key] = denoiser_fit(model, y, prompts, negative) if y is not None else math.nan
    return out


def embed_views(judge: Judge, views: list[torch.Tensor]) -> list[torch.Tensor]:
    """Embeddings [V_i, D] of each run's views, one judge pass per distinct view size."""
    out: list[torch.Tensor | None] = [None] * len(views)
    for shape in dict.fromkeys(v.shape[1:] for v in views):
        idx = [i for i, v in enumerate(views) if v.shape[1:] == shape]
        parts = judge.embed_images(torch.cat([views[i] for i in idx])).split([len(views[i]) for i in idx])
        for i, e in zip(idx, parts):
            out[i] = e
    return out


def embed_batch(views: list[torch.Tensor], scored: list[Scored], judges: list[Judge], toy_judge: Judge | None
                ) -> None:
    """Embed the views of a batch of runs with each judge, and fill in the toy-CLIP accuracy."""
    for judge in judges:
        for s, e in zip(scored, embed_views(judge, views)):
            s.emb[judge.label] = e
    if toy_judge is None or not any(s.truth is not None for s in scored):
        return
    own = toy_judge.label in scored[0].emb
    toy_emb = [s.emb[toy_judge.label] for s in scored] if own else embed_views(toy_judge, views)
    names = toy_judge.embed_texts(captions())
    for s, e in zip(scored, toy_emb):
        if s.truth is not None:
            s.toy_r1 = toy_caption_accuracy(e, names, s.cfg.prompt.text)


def rows_for_judge(scored: list[Scored], judge: Judge, prompts: list[str], warning: str,
                   distractors: str = "auto") -> list[EvalRow]:
    """CLIP score, R-Precision and the distractor signals of every scored run with one judge."""
    text = judge.embed_texts(prompts)
    idx = torch.tensor([prompts.index(s.cfg.prompt.text) for s in scored])
    img = torch.stack([s.emb[judge.label] for s in scored])  # [N, V, D]
    cs = clip_scores(img, text, idx).tolist()
    rp = r_precision_per_object(img, text, idx).tolist()
    rows = []
    for s, i, c, r in zip(scored, idx.tolist(), cs, rp):
        others = judge.embed_texts(distractor_prompts(distractors, s.cfg.prompt.text))
        sig = clip_signals(s.emb[judge.label], text[i], others, judge.logit_scale)
        rows.append(make_row(s, judge.label, int(i), c, r, len(prompts), warning, dataclasses.asdict(sig)))
    return rows


def make_row(s: Scored, judge: str, index: int, clip: float, rp: float, n_prompts: int, warning: str,
             signals: dict | None = None) -> EvalRow:
    c = s.cfg
    row = EvalRow(run_dir=s.run_dir, prompt=c.prompt.text, prompt_index=index, method=s.method,
                  seed=c.seed, model=c.model.name, judge=judge, views=int(s.emb[judge].shape[0]),
                  elevation=s.elevation, clip_score=clip, r_precision=rp, n_prompts=n_prompts, toy_r1=s.toy_r1,
                  steps=int(s.summary.get("steps", 0)), seconds=float(s.summary.get("seconds", math.nan)),
                  guidance_weight=c.guidance.weight, views_png=s.views_png, warning=warning)
    extra = {**(signals or {}), **s.fits}
    for part in (s.truth, s.image):
        if part is not None:
            extra.update({k: v for k, v in dataclasses.asdict(part).items() if k != "views"})
    return dataclasses.replace(row, **extra)


def check_prompts(configs: list[RunConfig], prompts: list[str] | None) -> list[str]:
    """The benchmark's prompt list (default: the runs' own prompts), containing every run's prompt."""
    own = list(dict.fromkeys(c.prompt.text for c in configs))
    if prompts is None:
        return own
    missing = [p for p in own if p not in prompts]
    if missing:
        raise ConfigError("prompts", missing[0], "a prompt of the given prompt list (every run's prompt must be "
                                                 "among the prompts R-Precision ranks)")
    return list(prompts)


def evaluate_runs(run_dirs: list[str | Path], judges: list[Judge], prompts: list[str] | None = None,
                  cfg: EvalConfig = EvalConfig(), toy_judge: Judge | None = None,
                  models: ModelCache | None = None, progress: Callable[[int, int], None] | None = None
                  ) -> list[EvalRow]:
    """Score every run with every judge; one EvalRow per run per judge (runs in order, judges in order).
    `progress(done, total)` is called after each batch of `cfg.batch_runs` runs."""
    device = resolve_device(cfg.device)
    models = models or ModelCache(device)
    configs = [read_run_config(d) for d in run_dirs]  # checked before any rendering
    if not configs:
        return []
    prompts = check_prompts(configs, prompts)
    names = sorted({c.model.name for c in configs})
    warnings = {j.label: "; ".join(filter(None, (same_tower_warning(j.spec, m) for m in names))) for j in judges}
    scored = []
    for i in range(0, len(run_dirs), cfg.batch_runs):
        views, batch = [], []
        for d in run_dirs[i:i + cfg.batch_runs]:  # one field in memory at a time, views kept for the batch
            run = load_saved_run(d, device, cfg.resolution, cfg.render_step)
            v, s = render_run(run, cfg, models)
            views.append(v)
            batch.append(s)
        embed_batch(views, batch, judges, toy_judge)
        scored += batch
        if progress is not None:
            progress(len(scored), len(run_dirs))
    by_judge = [rows_for_judge(scored, j, prompts, warnings[j.label], cfg.distractors) for j in judges]
    return [rows[i] for i in range(len(scored)) for rows in by_judge]
