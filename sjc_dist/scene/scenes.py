"""What the optimiser holds: theta and its f(theta). `views(n, generator) -> (RenderOutput, Cameras | None)`.

VoxelScene: theta = voxel field + background, f = volume rendering from sampled cameras (the 3D case).
ImageScene: theta = an image (or latent) [1, C, H, W], f = identity (the paper's 2D check).
`render_groups` renders many VoxelScenes, those of one shape together (`render_joined`); `render_scenes` splits
them per scene.
"""
import torch
from torch import nn

from .background import Background, BackgroundConfig
from .cameras import CameraConfig, Cameras, CameraSampler
from .field import FieldConfig, VoxelField
from .render import RenderOutput, render_joined, render_many, split_views


class VoxelScene(nn.Module):
    """A voxel field and its background, rendered at `resolution` with step `step`."""

    def __init__(self, field: FieldConfig, background: BackgroundConfig, camera: CameraConfig, channels: int,
                 resolution: int, step: float, generator: torch.Generator | None = None, samples: str = "all",
                 fuse: str = "auto", size: int | None = None):
        super().__init__()
        self.field = VoxelField(field, channels, generator, size)  # size: a coarse-to-fine run's first side
        self.background = Background(background, channels, generator)
        self.cameras = CameraSampler(camera, resolution)
        self.step, self.samples, self.fuse = step, samples, fuse  # how it renders (RenderConfig)

    def render(self, cams: Cameras) -> RenderOutput:
        return render_many([self.field], [self.background], [cams], self.step,
                           self.samples, self.fuse)[0]

    def views(self, n: int, generator: torch.Generator) -> tuple[RenderOutput, Cameras]:
        cams = self.cameras.sample(n, generator)
        return self.render(cams), cams

    def stack_key(self) -> tuple:
        """Scenes with equal keys render together."""
        return self.field.stack_key() + (self.step, self.samples, self.fuse)

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


def render_scenes(scenes: list[VoxelScene], cams: list[Cameras]) -> list[RenderOutput]:
    """Each scene's render of its cameras; scenes of one shape and view count share one `render_joined` pass."""
    out: list[RenderOutput | None] = [None] * len(scenes)
    for idx, joined in render_groups(scenes, cams):
        for i, r in zip(idx, split_views(joined, len(idx))):
            out[i] = r
    return out


def render_groups(scenes: list[VoxelScene], cams: list[Cameras]) -> list[tuple[list[int], RenderOutput]]:
    """The scenes grouped by shape and view count, each group's indices and its joined render (`render_joined`)."""
    groups: dict[tuple, list[int]] = {}
    for i, (sc, c) in enumerate(zip(scenes, cams)):
        groups.setdefault(sc.stack_key() + (len(c), c.height, c.width), []).append(i)
    return [(idx, render_joined([scenes[i].field for i in idx], [scenes[i].background for i in idx],
                                [cams[i] for i in idx], scenes[idx[0]].step, scenes[idx[0]].samples,
                                scenes[idx[0]].fuse)) for idx in groups.values()]
