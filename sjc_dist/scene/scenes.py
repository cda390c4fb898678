"""What the optimiser holds: theta and its f(theta). `views(n, generator) -> (RenderOutput, Cameras | None)`.

VoxelScene: theta = voxel field + background, f = volume rendering from sampled cameras (the 3D case).
ImageScene: theta = an image (or latent) [1, C, H, W], f = identity (the paper's 2D check).
"""
import torch
from torch import nn

from .background import Background, BackgroundConfig
from .cameras import CameraConfig, Cameras, CameraSampler
from .field import FieldConfig, VoxelField
from .render import RenderOutput, render


class VoxelScene(nn.Module):
    """A voxel field and its background, rendered at `resolution` with step `step`."""

    def __init__(self, field: FieldConfig, background: BackgroundConfig, camera: CameraConfig, channels: int,
                 resolution: int, step: float, generator: torch.Generator | None = None):
        super().__init__()
        self.field = VoxelField(field, channels, generator)
        self.background = Background(background, channels)
        self.cameras = CameraSampler(camera, resolution)
        self.step = step

    def render(self, cams: Cameras) -> RenderOutput:
        return render(self.field, self.background, cams.to(self.field.grid.device), self.step)

    def views(self, n: int, generator: torch.Generator) -> tuple[RenderOutput, Cameras]:
        cams = self.cameras.sample(n, generator)
        return self.render(cams), cams

    def param_groups(self, lr: float, lr_background: float) -> list[dict]:
        groups = [{"name": "grid", "params": [self.field.grid, self.field.d_scale], "lr": lr}]
        if self.background.texture.requires_grad:
            groups.append({"name": "background", "params": [self.background.texture], "lr": lr_background})
        return groups


class ImageScene(nn.Module):
    """theta is the image itself; every 'view' is the same image."""

    def __init__(self, channels: int, size: int, generator: torch.Generator | None = None, std: float = 1.0):
        super().__init__()
        self.image = nn.Parameter(torch.randn(1, channels, size, size, generator=generator) * std)

    def views(self, n: int, generator: torch.Generator) -> tuple[RenderOutput, None]:
        return RenderOutput(image=self.image.expand(n, -1, -1, -1)), None

    def param_groups(self, lr: float, lr_background: float) -> list[dict]:
        return [{"name": "image", "params": [self.image], "lr": lr}]
