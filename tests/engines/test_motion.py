"""engines/planning/motion.py: 2D warp conventions and LAB colour matching, on CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from engines.planning.motion import colour_stats, match_colour, warp  # noqa: E402

RESAMPLE_TOL = 1e-5  # identity-like warps sample exactly at pixel centres: float rounding only


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(0))


def test_identity_motion_leaves_the_frame_unchanged(image):
    out = warp(image, 1.0, 0.0, 0.0, 0.0)
    assert out.shape == image.shape
    assert (out - image).abs().max() < RESAMPLE_TOL


def test_zoom_two_doubles_the_centre(image):
    out = warp(image, 2.0, 0.0, 0.0, 0.0)
    centre = image[:, :, 12:36, 20:60]  # the middle half in each direction
    doubled = F.interpolate(centre, scale_factor=2, mode="bilinear", align_corners=False)
    # the border row/column differ only in how each samples outside the crop
    assert (out - doubled)[..., 1:-1, 1:-1].abs().max() < RESAMPLE_TOL


def test_angle_is_counter_clockwise_in_degrees():
    square = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert (warp(square, 1.0, 90.0, 0, 0) - torch.rot90(square, 1, [2, 3])).abs().max() < RESAMPLE_TOL
    assert (warp(square, 1.0, -90.0, 0, 0) - torch.rot90(square, -1, [2, 3])).abs().max() < RESAMPLE_TOL


def test_translation_in_pixels_right_and_down(image):
    out = warp(image, 1.0, 0.0, 3.0, -2.0)  # 3 px right, 2 px up
    assert (out[..., :-2, 3:] - image[..., 2:, :-3]).abs().max() < RESAMPLE_TOL


def test_rotation_of_a_wide_frame_does_not_shear():
    # a horizontal bar rotated 90 degrees in a 2:1 frame is a vertical bar of the same length
    img = torch.zeros(1, 3, 40, 80)
    img[:, :, 19:21, 30:50] = 1.0
    out = warp(img, 1.0, 90.0, 0, 0)[0, 0, :, 20:60]  # outside: reflections of the source
    rows = (out > 0.5).any(1).nonzero().flatten()
    cols = (out > 0.5).any(0).nonzero().flatten()
    assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (20, 2)


def test_reflect_padding_fills_what_comes_into_view(image):
    out = warp(image, 0.5, 0.0, 0.0, 0.0)  # zoom out: the edges come from reflections
    assert torch.isfinite(out).all() and out.min() >= 0 and out.abs().sum() > 0
    assert (out[..., 0, :] != 0).all()


def test_warp_rejects_non_positive_zoom(image):
    with pytest.raises(ValueError, match="zoom"):
        warp(image, 0.0, 0, 0, 0)


def test_colour_match_sets_lab_statistics(image):
    ref = colour_stats(image * 0.5 + 0.3)
    assert ref.shape == (2, 3)
    matched = match_colour(image, ref)
    assert matched.shape == image.shape and matched.min() >= 0 and matched.max() <= 1
    assert (colour_stats(matched) - ref).abs().max() < 1e-3
    # matching a frame to its own statistics is the identity (LAB round trip)
    assert (match_colour(image, colour_stats(image)) - image).abs().max() < 1e-4
