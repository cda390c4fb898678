"""Float8 linear layers for the UNet's attention and feed-forward projections (Hopper's e4m3 matmuls).

Per-tensor scaling, as torchao's float8 'dynamic activation, static weight' recipe:
  W ~ s_w q_w with s_w = max|W| / 448 (once),  x ~ s_x q_x with s_x = max|x| / 448 (every call),
  y = s_x s_w (q_x q_w^T) + b,  accumulated in float32 by `torch._scaled_mm`, returned in x's dtype.
e4m3 keeps 3 mantissa bits (relative rounding error <= 2^-4), so the gain (twice the bf16 matrix rate) has to be
checked against fp32 end to end (the GPU bench's `agreement`). `_scaled_mm` wants row counts and both matrix
sides in multiples of 16: rows are zero-padded, layers of other widths stay as they are.
"""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
ALIGN = 16


def scale_of(t: Tensor) -> Tensor:
    """s = max|t| / 448 as a float32 scalar (never 0)."""
    return (t.abs().amax().float() / E4M3_MAX).clamp_min(1e-12)


class Float8Linear(nn.Module):
    """nn.Linear(in, out) as y = s_x s_w (q_x q_w^T) + b; x [..., in] -> y [..., out] in x's dtype."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        w = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("w_scale", scale_of(w))
        # [in, out] column-major, the layout _scaled_mm wants for its second operand
        self.register_buffer("weight_t", (w.float() / self.w_scale).to(E4M3).t())
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach(), requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features)
        rows = x2.shape[0]
        if rows % ALIGN:
            x2 = F.pad(x2, (0, 0, 0, ALIGN - rows % ALIGN))
        s_x = scale_of(x2)
        q = (x2.float() / s_x).to(E4M3)
        bias = None if self.bias is None else self.bias.to(x.dtype)
        y = torch._scaled_mm(q, self.weight_t, scale_a=s_x, scale_b=self.w_scale, bias=bias, out_dtype=x.dtype)
        return y[:rows].reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, e4m3 per-tensor"


def convertible(name: str, module: nn.Module) -> bool:
    """The linears of the transformer blocks (attention q/k/v/out, GEGLU, feed-forward) of aligned widths."""
    return (isinstance(module, nn.Linear) and "transformer_blocks" in name
            and module.in_features % ALIGN == 0 and module.out_features % ALIGN == 0)


def to_float8(unet: nn.Module) -> int:
    """Replace the UNet's convertible nn.Linear layers by Float8Linear in place; returns how many."""
    names = [name for name, m in unet.named_modules() if convertible(name, m)]
    for name in names:
        parent, _, leaf = name.rpartition(".")
        owner = unet.get_submodule(parent) if parent else unet
        setattr(owner, leaf, Float8Linear(getattr(owner, leaf)))
    return len(names)
