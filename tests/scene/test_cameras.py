"""Camera conventions: z up, cameras on a sphere looking at the origin down their -z axis (OpenGL), proper
rotations (overhead at elevation 90 included), the official sampling ranges, and view labels."""
import torch

from sjc_dist.scene.cameras import CameraConfig, CameraSampler, orbit, view_labels


def cams_at(az, el, radius=1.5, res=1):
    n = len(az)
    return orbit(torch.tensor(az, dtype=torch.float64), torch.tensor(el, dtype=torch.float64),
                 torch.full((n,), radius), torch.full((n,), 60.0), res, res)


def test_cameras_look_at_origin_with_proper_rotations():
    az = [0.0, 37.0, 90.0, 180.0, -120.0, 10.0, 0.0]
    el = [0.0, 20.0, -6.4, 45.0, 70.0, 90.0, -90.0]
    cams = cams_at(az, el, radius=2.5)
    rot, pos = cams.c2w[:, :3, :3].double(), cams.c2w[:, :3, 3].double()
    assert torch.isfinite(cams.c2w).all()
    torch.testing.assert_close(pos.norm(dim=-1), torch.full((7,), 2.5, dtype=torch.float64))
    torch.testing.assert_close(rot.transpose(1, 2) @ rot, torch.eye(3, dtype=torch.float64).expand(7, 3, 3),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(7, dtype=torch.float64), atol=1e-6, rtol=0)
    torch.testing.assert_close(-rot[:, :, 2], -pos / pos.norm(dim=-1, keepdim=True), atol=1e-6, rtol=0)
    o, d = cams.rays()  # the single (centre) pixel's ray passes through the origin
    torch.testing.assert_close(torch.linalg.cross(o, d).norm(dim=-1), torch.zeros(7, 1), atol=1e-5, rtol=0)


def test_position_convention_and_z_up():
    cams = cams_at([0.0, 90.0, 0.0], [0.0, 0.0, 90.0], radius=2.0)
    torch.testing.assert_close(cams.c2w[:, :3, 3], torch.tensor([[2.0, 0, 0], [0, 2.0, 0], [0, 0, 2.0]]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(cams.c2w[0, :3, 1], torch.tensor([0.0, 0, 1]), atol=1e-6, rtol=0)  # up is +z
    o, d = cams_at([30.0], [10.0], res=4).rays()
    d = d.reshape(4, 4, 3)
    assert (d[0, :, 2] > d[-1, :, 2]).all()  # image row 0 is the top: it looks higher
    overhead = cams_at([0.0], [90.0], res=3).rays()[1].reshape(3, 3, 3)
    torch.testing.assert_close(overhead[1, 1], torch.tensor([0.0, 0, -1]), atol=1e-6, rtol=0)  # straight down


def test_rays_are_unit_and_span_the_field_of_view():
    cams = orbit(torch.zeros(1), torch.zeros(1), torch.ones(1), torch.tensor([90.0]), 2, 2)
    o, d = cams.rays()
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(1, 4))
    forward = -cams.c2w[0, :3, 2]
    cos = d[0] @ forward  # pixel centres at +-1/2 of the half-width: tan = 0.5 in both axes for FoV 90
    torch.testing.assert_close(cos, torch.full((4,), 1 / (1 + 0.25 + 0.25) ** 0.5))


def test_sampler_respects_ranges_and_generator():
    cfg = CameraConfig(radius_min=1.2, radius_max=2.0, fov_min=40, fov_max=70, elevation_min=-6.4, elevation_max=90)
    sampler = CameraSampler(cfg, resolution=8)
    cams = sampler.sample(500, torch.Generator().manual_seed(0))
    radius = cams.c2w[:, :3, 3].norm(dim=-1)
    assert radius.min() >= 1.2 - 1e-5 and radius.max() <= 2.0 + 1e-5
    assert torch.rad2deg(cams.fov).min() >= 40 - 1e-4 and torch.rad2deg(cams.fov).max() <= 70 + 1e-4
    assert cams.elevation.min() >= -6.4 - 1e-4 and cams.elevation.max() <= 90 + 1e-4
    assert cams.azimuth.min() >= -180 and cams.azimuth.max() <= 180
    assert (cams.height, cams.width) == (8, 8)
    # area-uniform elevation: sin(elevation) uniform, so about half of the draws lie above sin = (lo + hi) / 2
    mid = (torch.sin(torch.deg2rad(torch.tensor(-6.4))) + 1) / 2
    frac = float((torch.sin(torch.deg2rad(cams.elevation)) > mid).float().mean())
    assert 0.42 < frac < 0.58
    again = sampler.sample(500, torch.Generator().manual_seed(0))
    torch.testing.assert_close(again.c2w, cams.c2w)


def test_fixed_views_evenly_spaced_front_first():
    cams = CameraSampler(CameraConfig(test_elevation=15.0, fov_test=60.0), 4).fixed(8)
    torch.testing.assert_close(cams.azimuth, torch.arange(8) * 45.0)
    torch.testing.assert_close(cams.elevation, torch.full((8,), 15.0))
    assert view_labels(cams, 41.8)[0] == "front"


def test_view_labels():
    az = [0.0, 45.0, 46.0, 90.0, 134.0, 135.0, 180.0, 225.0, 270.0, 315.0, -30.0, 0.0, 120.0]
    el = [0.0] * 11 + [41.9, 90.0]
    expected = ["front", "front", "side", "side", "side", "backside", "backside", "backside", "side", "front",
                "front", "overhead", "overhead"]
    assert view_labels(cams_at(az, el), overhead_above=41.8) == expected
    assert view_labels(cams_at([0.0], [41.8]), overhead_above=41.8) == ["front"]
