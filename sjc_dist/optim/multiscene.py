"""SceneBatch: K scenes (SJCRuns on one model) stepped together: voxel scenes of one shape rendered in one pass
(`render_groups`), the scenes whose guidances agree but for the CFG weight perturbed and guided as one set of
rows (`joint`), each round of denoiser passes one call for all scenes that need it (`guidance.passes.drive`:
one round for PAAS, SDS, CSD and NFSD, ism_steps + 2 for ISM, so mixed kinds share the first), the losses of a
render group as [K] vectors from its joined render (`joint.terms`), one backward of their sum (the scenes'
parameters are disjoint, so each gets exactly its own gradient), then each scene's own optimiser step (applied
together: one foreach Adamax update per set of hyperparameters, `optim.adamax.together`; `grouped_steps=False`
steps each alone). Per scene a step then launches the kernels of its own random draws only.

Scenes may differ in prompt, seed and every hyperparameter (guidance kind and weight, sigma window, lambda
schedule, grid stage, ...): only the denoiser calls are shared, with per-row x, sigma and text embeddings.
Each scene keeps its own generators, so its trajectory is the same alone or in a batch (tested).
A step's phases are named for torch.profiler (`sjc.render`, `sjc.denoise`, `sjc.loss`, `sjc.backward`, `sjc.optim`;
record_function costs about a microsecond when no profiler runs).
"""
import time

import torch
from torch import Tensor
from torch.profiler import record_function

from ..guidance.passes import drive
from ..scene.cameras import sample_many
from ..scene.render import RenderOutput, split_views
from ..scene.scenes import VoxelScene, render_groups
from . import joint
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

    def step_all(self, runs: list[SJCRun] | None = None) -> list[Tensor]:
        """One step of each run (default: all); returns their losses (on device, no host sync)."""
        runs = self.runs if runs is None else runs
        if not runs:
            return []
        t0 = time.perf_counter()
        with record_function("sjc.render"):
            for r in runs:
                r.resize_field()  # coarse-to-fine stages start before the shared render
            groups, views = self.views(runs)
            pending = [r.begin(v, t0) for r, v in zip(runs, views)]
        with record_function("sjc.denoise"):
            updates = self.denoise(runs, pending)
        with record_function("sjc.loss"):
            totals = [self.group_loss([runs[i] for i in idx], joined, [pending[i] for i in idx],
                                      [updates[i] for i in idx]) for idx, joined in groups]
        with record_function("sjc.backward"):
            for r in runs:
                r.opt.zero_grad(set_to_none=True)
            sum(t.sum() for t in totals).backward()
        losses: list[Tensor | None] = [None] * len(runs)
        with record_function("sjc.optim"), together(self.grouped_steps):
            for (idx, _), total in zip(groups, totals):
                total, bad = total.detach(), ~torch.isfinite(total.detach())
                for j, i in enumerate(idx):
                    losses[i] = runs[i].apply(total[j], bad[j])
        return losses

    @staticmethod
    def group_loss(runs: list[SJCRun], joined: RenderOutput | None, pending: list, updates: list[Tensor]) -> Tensor:
        """The losses [G] of a render group's runs from their joined render (`joint.terms`), recorded for metrics."""
        terms = joint.terms(runs, joined if joined is not None else pending[0].render, [p.target for p in pending],
                            updates)
        for j, (r, p, u) in enumerate(zip(runs, pending, updates)):
            r.record(terms, j, p, u)
        return terms.total()

    @staticmethod
    def denoise(runs: list[SJCRun], pending: list) -> list[Tensor]:
        """Each run's update [B, ...]: runs whose guidances agree but for the CFG weight share one passes generator
        over their joined rows (`joint`), and every round of passes is one denoiser call (`drive`)."""
        groups: dict[tuple, list[int]] = {}
        for i, r in enumerate(runs):
            groups.setdefault(joint.passes_key(r.guidance), []).append(i)
        rows = [joint.perturb(runs[idx[0]].cfg.guidance.n_noise, *zip(*[(pending[i].target, pending[i].sigma,
                                                                         pending[i].noise, pending[i].cond)
                                                                        for i in idx])) for idx in groups.values()]
        results = drive([joint.passes(runs[idx[0]].guidance, rw) for idx, rw in zip(groups.values(), rows)],
                        runs[0].guidance.denoise)
        updates: list[Tensor | None] = [None] * len(runs)
        for idx, rw, u in zip(groups.values(), rows, results):
            for i, ui in zip(idx, joint.split_update(runs[idx[0]].guidance, u, rw.counts)):
                updates[i] = ui
        return updates

    @staticmethod
    def views(runs: list[SJCRun]) -> tuple[list[tuple[list[int], RenderOutput | None]], list[tuple | None]]:
        """The render groups (indices into runs, their joined render; a 2D scene alone with None) and each run's
        (render, cameras) for this step (None for 2D scenes: `begin` renders them)."""
        voxel = [i for i, r in enumerate(runs) if isinstance(r.scene, VoxelScene)]
        picked = [runs[i] for i in voxel]  # each run's own draws: the cameras its scene.views would draw
        cams = sample_many([r.scene.cameras for r in picked], [r.cfg.render.views_per_step for r in picked],
                           [r.cpu_gen for r in picked])
        out: list[tuple | None] = [None] * len(runs)
        groups = []
        for idx, joined in render_groups([r.scene for r in picked], cams):
            for i, rendered in zip(idx, split_views(joined, len(idx))):
                out[voxel[i]] = (rendered, cams[i])
            groups.append(([voxel[i] for i in idx], joined))
        groups += [([i], None) for i, r in enumerate(runs) if not isinstance(r.scene, VoxelScene)]
        return groups, out
