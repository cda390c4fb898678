"""SceneBatch: K scenes (SJCRuns on one model) stepped together, their denoiser calls fused into one forward.

Scenes may differ in prompt, seed and every hyperparameter (guidance kind and weight, sigma window, lambda
schedule, ...): only D(z; sigma, cond) is shared, with per-sample sigma, text embeddings and CFG weight.
Each scene keeps its own generators, so its trajectory is the same alone or in a batch (tested).
"""
import torch

from ..diffusion.denoiser import Cond
from .run import SJCRun


class SceneBatch:
    """Holds K runs sharing one Model; `step_all()` advances each by one step with one denoiser call."""

    def __init__(self, runs: list[SJCRun] | None = None):
        self.runs: list[SJCRun] = list(runs or [])

    def add(self, run: SJCRun) -> int:
        if self.runs and run.model is not self.runs[0].model:
            raise ValueError("all scenes of a SceneBatch must share one loaded Model")
        self.runs.append(run)
        return len(self.runs) - 1

    def remove(self, run: SJCRun) -> None:
        self.runs.remove(run)

    def step_all(self, runs: list[SJCRun] | None = None) -> list[torch.Tensor]:
        """One step of each run (default: all); returns their losses (on device, no host sync)."""
        runs = self.runs if runs is None else runs
        if not runs:
            return []
        pending = [r.begin() for r in runs]
        z = torch.cat([p.z for p in pending])
        sigma = torch.cat([p.sigma_k for p in pending])
        cond = Cond.cat([p.cond for p in pending])
        denoised = runs[0].guidance.denoise(z, sigma, cond)
        sizes = [p.z.shape[0] for p in pending]
        return [r.finish(p, d) for r, p, d in zip(runs, pending, denoised.split(sizes))]
