"""Adamax whose steps can run together: K scenes' optimisers updated by one foreach call per set of hyperparameters.

Each scene keeps its own `Adamax` (torch's, same state dict, same checkpoints). Inside `together()`, `step()` only
queues the optimiser; leaving the block applies every queued update with `torch.optim.adamax.adamax(foreach=True)`
once per distinct (lr, betas, eps, weight_decay, maximize) group, the same maths as K separate steps:
  m <- beta1 m + (1 - beta1) g,   u <- max(beta2 u, |g| + eps),   theta <- theta - lr / (1 - beta1^t) * m / u.
K scenes of one sweep then cost a handful of kernel launches instead of a handful per scene.
"""
import contextlib
import threading
from collections.abc import Iterator

import torch
from torch.optim.adamax import adamax

_queue = threading.local()  # the optimisers queued by the innermost `together()` of this thread


class Adamax(torch.optim.Adamax):
    """torch.optim.Adamax; inside `together()` its step waits to run with the other queued optimisers'."""

    def step(self, closure=None):
        queued = getattr(_queue, "items", None)
        if queued is None or closure is not None:
            return super().step(closure)
        queued.append(self)
        return None


@contextlib.contextmanager
def together(enabled: bool = True) -> Iterator[None]:
    """Adamax.step() calls in the block are applied on exit, grouped (`enabled=False`: each steps at once)."""
    if not enabled:
        yield
        return
    outer, _queue.items = getattr(_queue, "items", None), []
    try:
        yield
        step_grouped(_queue.items)
    finally:
        _queue.items = outer


def hyper_key(group: dict) -> tuple:
    """What must be equal for two param groups to share one functional call."""
    return (float(group["lr"]), *group["betas"], group["eps"], group["weight_decay"], group["maximize"],
            group["foreach"], group["capturable"], group["differentiable"])


@torch.no_grad()
def step_grouped(optimizers: list[torch.optim.Adamax]) -> None:
    """One Adamax step of every optimiser: params, grads and states [P] gathered by hyperparameters."""
    lists: dict[tuple, tuple[list, ...]] = {}
    for opt in optimizers:
        for group in opt.param_groups:
            bucket = lists.setdefault(hyper_key(group), ([], [], [], [], [], group))
            if opt._init_group(group, *bucket[:5]):
                raise ValueError("grouped Adamax steps do not support complex parameters")
    for params, grads, exp_avgs, exp_infs, steps, group in lists.values():
        if params:
            beta1, beta2 = group["betas"]
            adamax(params, grads, exp_avgs, exp_infs, steps, foreach=group["foreach"] is not False,
                   maximize=group["maximize"], differentiable=group["differentiable"],
                   capturable=group["capturable"], eps=group["eps"], beta1=beta1, beta2=beta2, lr=group["lr"],
                   weight_decay=group["weight_decay"])
