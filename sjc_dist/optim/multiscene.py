"""SceneBatch: K scenes (SJCRuns on one model) stepped together: voxel scenes of one shape rendered in one pass
(`render_scenes`), each round of denoiser passes one call for all scenes that need it (`guidance.passes.drive`:
one round for PAAS, SDS, CSD and NFSD, ism_steps + 2 for ISM, so mixed kinds share the first), one backward
of the summed losses (the scenes' parameters are disjoint, so each gets exactly its own gradient), then each scene's own optimiser step (applied together: one
foreach Adamax update per set of hyperparameters, `optim.adamax.together`; `grouped_steps=False` steps each alone).

Scenes may differ in prompt, seed and every hyperparameter (guidance kind and weight, sigma window, lambda
schedule, grid stage, ...): only the denoiser calls are shared, with per-row x, sigma and text embeddings.
Each scene keeps its own generators, so its trajectory is the same alone or in a batch (tested).
A step's phases are named for torch.profiler (`sjc.render`, `sjc.denoise`, `sjc.loss`, `sjc.backward`, `sjc.optim`;
record_function costs about a microsecond when no profiler runs).
"""
import time

import torch
from torch.profiler import record_function

from ..guidance.passes import drive
from ..scene.cameras import sample_many
from ..scene.scenes import VoxelScene, render_scenes
from .adamax import together
from .run import SJCRun


class SceneBatch:
    """Holds K runs sharing one Model; `step_all()` advances each by one step, sharing each denoiser pass."""

    def __init__(self, runs: list[SJCRun] | None = None, grouped_steps: bool = True):
        self.runs: list[SJCRun] = list(runs or [])
        self.grouped_steps = grouped_steps

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
        t0 = time.perf_counter()
        with record_function("sjc.render"):
            for r in runs:
                r.resize_field()  # coarse-to-fine stages start before the shared render
            pending = [r.begin(v, t0) for r, v in zip(runs, self.views(runs))]
        with record_function("sjc.denoise"):
            updates = drive([r.passes(p) for r, p in zip(runs, pending)], runs[0].guidance.denoise)
        with record_function("sjc.loss"):
            losses = [r.loss(p, u) for r, p, u in zip(runs, pending, updates)]
        with record_function("sjc.backward"):
            for r in runs:
                r.opt.zero_grad(set_to_none=True)
            torch.stack(losses).sum().backward()
        with record_function("sjc.optim"), together(self.grouped_steps):
            return [r.apply(loss) for r, loss in zip(runs, losses)]

    @staticmethod
    def views(runs: list[SJCRun]) -> list[tuple | None]:
        """Each run's (render, cameras) for this step, voxel scenes rendered together; None for 2D scenes."""
        voxel = [i for i, r in enumerate(runs) if isinstance(r.scene, VoxelScene)]
        picked = [runs[i] for i in voxel]  # each run's own draws: the cameras its scene.views would draw
        cams = sample_many([r.scene.cameras for r in picked], [r.cfg.render.views_per_step for r in picked],
                           [r.cpu_gen for r in picked])
        renders = render_scenes([runs[i].scene for i in voxel], cams)
        out: list[tuple | None] = [None] * len(runs)
        for i, rendered, c in zip(voxel, renders, cams):
            out[i] = (rendered, c)
        return out
