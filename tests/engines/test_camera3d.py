"""The 3D camera of deforum's 3D mode (engines/frames/sd/camera3d.py): over a flat depth a move
forward is the 2D zoom it should be and a roll is the 2D rotation, the still camera copies the
frame, nearer content moves more than far content (parallax), moves compose and invert, and the
depth model's disparity maps into the near..far range."""

from __future__ import annotations

import pytest
import torch

from engines.frames.sd import camera3d
from engines.planning.motion import warp as warp_2d

H, W, FOV = 48, 64, 40.0


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(3)
    return torch.rand(1, 3, H, W, generator=g, dtype=torch.float64)


def flat(z: float) -> torch.Tensor:
    return torch.full((H, W), z, dtype=torch.float64)


def test_still_camera_copies_the_frame(image):
    assert torch.equal(camera3d.warp(image, flat(2.0), camera3d.compose([]), FOV), image)
    assert torch.equal(camera3d.warp(image, flat(2.0), camera3d.compose([camera3d.STILL]), FOV),
                       image)


@pytest.mark.parametrize("z,tz", [(2.0, 20.0), (5.0, -30.0)])
def test_forward_over_a_flat_depth_is_a_2d_zoom(image, z, tz):
    d = tz * camera3d.TRANSLATION_SCALE
    moved = camera3d.warp(image, flat(z), camera3d.compose([(0, 0, tz, 0, 0, 0)]), FOV)
    assert torch.allclose(moved, warp_2d(image, z / (z - d), 0.0, 0.0, 0.0), atol=1e-9)


def test_roll_is_the_2d_rotation(image):
    moved = camera3d.warp(image, flat(3.0), camera3d.compose([(0, 0, 0, 0, 0, 7.0)]), FOV)
    assert torch.allclose(moved, warp_2d(image, 1.0, 7.0, 0.0, 0.0), atol=1e-9)


def test_sideways_move_shows_parallax():
    # a vertical edge at each depth: near (z 1) on the left half, far (z 4) on the right half
    img = torch.zeros(1, 3, H, W, dtype=torch.float64)
    img[..., 16:] = 1.0  # edge at x = 16 (near half)
    img[..., 48:] = 0.0  # edge at x = 48 (far half)
    depth = flat(4.0)
    depth[:, :32] = 1.0
    tx = 10.0  # content moves right
    moved = camera3d.warp(img, depth, camera3d.compose([(tx, 0, 0, 0, 0, 0)]), FOV, "replicate")
    f = camera3d.focal(W, FOV)

    def edge(row: torch.Tensor, lo: int, hi: int, rising: bool) -> float:
        seg = row[lo:hi] if rising else 1 - row[lo:hi]
        return lo + float((seg < 0.5).sum())  # sub-pixel enough: first x past half

    row = moved[0, 0, H // 2]
    near_shift = edge(row, 2, 30, True) - 16
    far_shift = edge(row, 34, 62, False) - 48
    assert near_shift == pytest.approx(f * tx * camera3d.TRANSLATION_SCALE / 1.0, abs=1.0)
    assert far_shift == pytest.approx(f * tx * camera3d.TRANSLATION_SCALE / 4.0, abs=1.0)
    assert near_shift > 2 * far_shift


def test_moves_compose_and_invert():
    moves = [(3.0, -2.0, 10.0, 0.5, -1.0, 2.0), (0.0, 1.0, -4.0, 0.0, 2.0, -1.0)]
    m = camera3d.compose(moves)
    assert torch.allclose(m @ camera3d.inverse(moves), torch.eye(4, dtype=torch.float64))
    assert torch.allclose(m, camera3d.rigid(moves[1]) @ camera3d.rigid(moves[0]))
    assert torch.allclose(m[:3, :3] @ m[:3, :3].T, torch.eye(3, dtype=torch.float64))


def test_disparity_maps_into_near_far():
    disparity = torch.tensor([[0.0, 1.0], [3.0, 7.0]])
    z = camera3d.depth_units(disparity, 1.0, 10.0)
    assert float(z.max()) == pytest.approx(10.0) and float(z.min()) == pytest.approx(1.0)
    assert z[0, 0] > z[0, 1] > z[1, 0] > z[1, 1]  # larger disparity is nearer
    assert torch.allclose(camera3d.depth_units(torch.zeros(2, 2), 1.0, 10.0),
                          torch.full((2, 2), 1 / (0.1 + 0.5 * 0.9), dtype=torch.float64))
