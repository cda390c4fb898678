"""Denoiser passes: how a guidance asks for D, and how the passes of many scenes share each denoiser call.

A guidance's `passes(...)` is a generator: it yields a `Request` (rows x [N, C, H, W], sigma [N], text context
[N, L, D] or None), receives D(x; sigma, context) [N, C, H, W], and finally returns its update. `drive` runs the
generators of K scenes in lockstep: round r concatenates the r-th request of every scene that still has one into
ONE denoiser call. Scenes of one-pass kinds (PAAS, SDS, CSD, NFSD) share round 1 with everyone; ISM's later
rounds are shared by the ISM scenes. A scene's requests never depend on the others', so its numbers are the same
alone or in a batch (up to the float rounding of a larger batch).
"""
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch
from torch import Tensor

from ..diffusion.denoiser import Cond


@dataclass
class Request:
    """Rows for one denoiser call: x [N, C, H, W], sigma [N], context [N, L, D] (None: a model without text)."""

    x: Tensor
    sigma: Tensor
    context: Tensor | None


Passes = Generator[Request, Tensor, Tensor]
Denoise = Callable[[Tensor, Tensor, Cond], Tensor]


def predict(x: Tensor, sigma: Tensor, contexts: list[Tensor | None]) -> Generator[Request, Tensor, list[Tensor]]:
    """One pass: D(x; sigma, c) [N, C, H, W] for each context block c [N, L, D] (R blocks -> R * N rows)."""
    r = len(contexts)
    context = None if contexts[0] is None else torch.cat(contexts)
    out = yield Request(x.repeat(r, 1, 1, 1), sigma.repeat(r), context)
    return list(out.chunk(r))


def advance(gen: Passes, value: Tensor | None) -> tuple[Request | None, Tensor | None]:
    """Send `value` (None: start) and return (the next request, None) or (None, the generator's result)."""
    try:
        return (next(gen) if value is None else gen.send(value)), None
    except StopIteration as stop:
        return None, stop.value


def join(contexts: list[Tensor | None]) -> Tensor | None:
    """The rows' contexts as one tensor (None when no row has text; mixing both is an error)."""
    missing = [c is None for c in contexts]
    if any(missing) and not all(missing):
        raise ValueError("requests with and without text context cannot share a denoiser call")
    return None if missing[0] else torch.cat(contexts)


def drive(passes: list[Passes], denoise: Denoise) -> list[Tensor]:
    """Every generator's result, calling `denoise` once per round on all pending requests, concatenated."""
    state = [advance(g, None) for g in passes]
    while any(req is not None for req, _ in state):
        live = [i for i, (req, _) in enumerate(state) if req is not None]
        reqs = [state[i][0] for i in live]
        out = denoise(torch.cat([r.x for r in reqs]), torch.cat([r.sigma for r in reqs]),
                      Cond(context=join([r.context for r in reqs])))
        for i, d in zip(live, out.split([r.x.shape[0] for r in reqs])):
            state[i] = advance(passes[i], d)
    return [result for _, result in state]
