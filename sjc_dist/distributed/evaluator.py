"""The final evaluation of a finished trial: the small interface between sweeps and `sjc_dist.evaluation`.

`RunEvaluator(judge)(run_dir) -> (metrics, note)` with metrics named `eval/...`: the ranking signals any run gets
(`eval/clip_score`: CLIP score of the prompt over the re-rendered views with the configured open_clip judge, the
toy CLIP by default; `eval/clip_worst`, `eval/rp_distractors`, `eval/clip_prob`: against a fixed distractor set;
`eval/r_precision`: only when the sweep has several prompts, R@1 among them; `eval/fit` and `eval/judge_fit`:
the denoiser fits of the guiding and the independent judge model, see sjc_dist/evaluation/fit.py), and for
toy-world captions the ground truth: `eval/iou`, `eval/iou_centred`, `eval/color_error`, `eval/toy_r1`,
`eval/occupied_fraction` and the image-space `eval/psnr`, `eval/ssim`, `eval/silhouette_iou`, `eval/depth_error`.
It lives on the worker, so the judge loads once per worker. When the evaluation module or the judge's weights
are missing it degrades step by step (CLIP + truth -> truth only -> nothing) and says why in `note`; the
sweep goes on and ranks by its intermediate metric instead.
"""
import dataclasses
import math
from pathlib import Path

TRUTH_KEYS = ("iou", "iou_centred", "color_error", "toy_r1", "occupied_fraction", "psnr", "ssim", "silhouette_iou",
              "depth_error")
SIGNAL_KEYS = ("clip_worst", "rp_distractors", "clip_prob", "fit", "judge_fit")


class RunEvaluator:
    """Scores run folders with sjc_dist.evaluation, bound lazily on first use."""

    def __init__(self, judge: str = "toy", views: int = 8, prompts: tuple[str, ...] = (), device: str = "auto"):
        self.judge_spec, self.prompts, self.views, self.device = judge, tuple(prompts), views, device
        self.judges: list | None = None
        self.models = None  # an evaluation.saved.ModelCache: each model (guiding, judge) loads once per worker
        self.note = ""

    def _bind(self) -> bool:
        """Import the evaluation layer and load the judge once; False if the module is absent."""
        if self.judges is not None:
            return True
        try:
            from ..evaluation.judges import load_judge
        except ImportError as err:
            self.note = f"evaluation unavailable ({err}); trials are ranked by their intermediate score"
            return False
        try:
            self.judges = [load_judge(self.judge_spec, self._device())]
        except Exception as err:  # noqa: BLE001 - a missing judge must not fail the trial
            self.judges = []
            self.note = f"judge '{self.judge_spec}' unavailable ({type(err).__name__}: {err}); ground truth only"
        return True

    def _device(self):
        from ..diffusion.load import resolve_device

        return resolve_device(self.device)

    def __call__(self, run_dir: str | Path) -> tuple[dict[str, float], str]:
        if not self._bind():
            return {}, self.note
        from ..evaluation.evaluate import EvalConfig, evaluate_runs

        cfg = EvalConfig(views=self.views, device=str(self._device()), save_views=False)
        if not self.judges:
            return self._truth_only(run_dir, cfg), self.note
        prompts = list(self.prompts) if len(self.prompts) > 1 else None
        toy = self.judges[0] if self.judges[0].spec.kind == "toy" else None
        row = evaluate_runs([run_dir], self.judges, prompts, cfg, toy_judge=toy, models=self._models())[0]
        out = {"eval/clip_score": row.clip_score}
        if prompts:
            out["eval/r_precision"] = row.r_precision
        out.update(_metrics(dataclasses.asdict(row), TRUTH_KEYS + SIGNAL_KEYS))
        return out, self.note

    def _models(self):
        from ..evaluation.saved import ModelCache

        if self.models is None:
            self.models = ModelCache(self._device())
        return self.models

    def _truth_only(self, run_dir, cfg) -> dict[str, float]:
        from ..evaluation.saved import load_saved_run
        from ..evaluation.truth import is_toy_caption, truth_scores

        run = load_saved_run(run_dir, self._device())
        if not is_toy_caption(run.cfg.prompt.text):
            return {}
        scores = truth_scores(run.scene.field, run.cfg.prompt.text, run.cfg.output.mesh_level, cfg.yaw_step)
        return _metrics(dataclasses.asdict(scores), TRUTH_KEYS)


def _metrics(values: dict, keys: tuple[str, ...]) -> dict[str, float]:
    return {f"eval/{k}": float(values[k]) for k in keys
            if k in values and isinstance(values[k], (int, float)) and not math.isnan(values[k])}
