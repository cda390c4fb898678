"""SJC's perturb-and-average scoring (PAAS, SJC Sec. 3.3).

var_red (eq. 16, the official default): u = (D(y + sigma n; sigma) - y) / sigma   (= n - eps_hat)
plain   (eq. 15):                        u = (D(z; sigma) - z) / sigma             (= -eps_hat = sigma * score)
with D the guided D_cfg. One pass: 2 denoiser evaluations per view (CFG halves).
"""
from torch import Tensor

from ..diffusion.denoiser import append_dims
from .base import Guidance
from .guided import Guided


class PAAS(Guidance):
    """The PAAS update, averaged over `n_noise` draws."""

    def update(self, y: Tensor, z: Tensor, noise: Tensor, g: Guided, sigma: Tensor) -> Tensor:
        s = append_dims(sigma, y.ndim)
        return (g.cfg() - (y if self.cfg.estimator == "var_red" else z)) / s
