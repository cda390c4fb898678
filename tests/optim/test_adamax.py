"""Grouped Adamax steps (sjc_dist/optim/adamax.py): K optimisers stepped together equal K separate torch
Adamax steps, whatever their learning rates and step counts, and SceneBatch uses them."""
import copy

import pytest
import torch

from sjc_dist.optim.adamax import Adamax, step_grouped, together


def scenes(k: int, seed: int = 0) -> list[list[dict]]:
    """K scenes' param groups: a grid (own lr per scene) and a background (shared lr)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(k):
        grid = torch.randn(2, 3, 4, generator=gen).requires_grad_(True)
        scale = torch.zeros((), requires_grad=True)
        texture = torch.randn(1, 3, 2, 2, generator=gen).requires_grad_(True)
        out.append([{"params": [grid, scale], "lr": 0.05 * (1 + i % 2)}, {"params": [texture], "lr": 1e-4}])
    return out


def set_grads(opts: list[torch.optim.Optimizer], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    for opt in opts:
        for group in opt.param_groups:
            for p in group["params"]:
                p.grad = torch.randn(p.shape, generator=gen) * 3


@pytest.mark.parametrize("foreach", [False, True])
def test_grouped_steps_equal_separate_steps(foreach):
    groups = scenes(4)
    alone = [torch.optim.Adamax(copy.deepcopy(g), foreach=foreach) for g in groups]
    grouped = [Adamax(copy.deepcopy(g)) for g in groups]
    for step in range(3):
        set_grads(alone, step)
        set_grads(grouped, step)
        if step == 1:
            grouped[3].param_groups[0]["params"][1].grad = None  # a param without grad is skipped
            alone[3].param_groups[0]["params"][1].grad = None
        for opt in alone:
            opt.step()
        with together():
            assert all(opt.step() is None for opt in grouped)  # queued, not yet applied
        for a, g in zip(alone, grouped):
            for pa, pg in zip(*([q for grp in o.param_groups for q in grp["params"]] for o in (a, g))):
                torch.testing.assert_close(pg, pa, rtol=1e-6, atol=1e-7)
                for key in ("exp_avg", "exp_inf", "step"):
                    if pa in a.state:
                        torch.testing.assert_close(g.state[pg][key], a.state[pa][key], rtol=1e-6, atol=1e-7)
    assert grouped[0].state_dict().keys() == alone[0].state_dict().keys()


def test_outside_together_and_disabled_steps_apply_at_once():
    opt = Adamax(scenes(1)[0])
    before = opt.param_groups[0]["params"][0].detach().clone()
    set_grads([opt], 0)
    with together(enabled=False):
        opt.step()
        assert not torch.equal(opt.param_groups[0]["params"][0], before)
    step_grouped([])  # nothing queued: nothing to do


def test_scene_batch_groups_its_optimiser_steps(monkeypatch, make_config, empirical_model):
    from sjc_dist.optim import adamax
    from sjc_dist.optim.multiscene import SceneBatch
    from sjc_dist.optim.run import SJCRun

    calls = []
    monkeypatch.setattr(adamax, "step_grouped", lambda opts: calls.append(len(opts)))
    runs = [SJCRun(make_config(f"seed={s}"), empirical_model) for s in range(3)]
    SceneBatch(runs).step_all()
    assert calls == [3]
    SceneBatch(runs, grouped_steps=False).step_all()
    assert calls == [3]
