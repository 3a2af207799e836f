"""engines/planning/motion.py: 2D warp conventions and LAB colour matching, on CPU."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from engines.planning.motion import colour_stats, deforum_matrix, match_colour, warp  # noqa: E402

RESAMPLE_TOL = 1e-5  # identity-like warps sample exactly at pixel centres: float rounding only


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(0))


def test_identity_motion_leaves_the_frame_unchanged(image):
    out = warp(image, 1.0, 0.0, 0.0, 0.0)
    assert out.shape == image.shape
    assert (out - image).abs().max() < RESAMPLE_TOL


def test_zoom_two_doubles_the_centre():
    # Deforum zooms about pixel (W // 2, H // 2); for odd sizes that is the exact middle pixel,
    # so zoom 2 shows the middle half of the frame at twice the size
    img = torch.rand(1, 3, 49, 81, generator=torch.Generator().manual_seed(2))
    out = warp(img, 2.0, 0.0, 0.0, 0.0)
    # output pixel (x, y) shows source ((x - 40) / 2 + 40, (y - 24) / 2 + 24): even offsets
    # from the centre land on source pixels exactly
    assert (out[..., 24::2, 40::2] - img[..., 24:37, 40:61]).abs().max() < RESAMPLE_TOL
    assert (out[..., 24, 41] - (img[..., 24, 40] + img[..., 24, 41]) / 2).abs().max() < RESAMPLE_TOL


def test_angle_is_counter_clockwise_in_degrees():
    square = torch.rand(1, 3, 33, 33, generator=torch.Generator().manual_seed(1))  # centre 16
    assert (warp(square, 1.0, 90.0, 0, 0) - torch.rot90(square, 1, [2, 3])).abs().max() < RESAMPLE_TOL
    assert (warp(square, 1.0, -90.0, 0, 0) - torch.rot90(square, -1, [2, 3])).abs().max() < RESAMPLE_TOL


def test_translation_in_pixels_right_and_down(image):
    out = warp(image, 1.0, 0.0, 3.0, -2.0)  # 3 px right, 2 px up
    assert (out[..., :-2, 3:] - image[..., 2:, :-3]).abs().max() < RESAMPLE_TOL


def test_rotation_of_a_wide_frame_does_not_shear():
    # a horizontal bar rotated 90 degrees in a 2:1 frame is a vertical bar of the same length
    img = torch.zeros(1, 3, 40, 80)
    img[:, :, 19:21, 30:50] = 1.0
    img = img[..., :39, :79]  # odd sides: the centre (39, 19) is the bar's middle
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


# ------------------------------------------------------------------ Deforum's 2D formula
# Deforum builds the forward map (source pixel -> output pixel) as M = R @ T with
# T = [[1, 0, tx], [0, 1, ty]] and R = cv2.getRotationMatrix2D((W // 2, H // 2), angle, zoom)
#   = [[a, b, (1 - a) cx - b cy], [-b, a, b cx + (1 - a) cy]], a = zoom cos, b = zoom sin.
# So a source point p lands at zoom * Rot(angle) (p + t - c) + c, and output pixel o shows the
# source at c + Rot(-angle) (o - c) / zoom - t. A ramp image (value = x coordinate) makes
# bilinear sampling exact inside the frame, so the warped ramp reads the source x directly.

def ramp(h: int, w: int, axis: str) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    return (xs if axis == "x" else ys).expand(1, 3, h, w).clone()


def source_of(o: tuple[float, float], c: tuple[int, int], zoom: float, angle: float,
              t: tuple[float, float]) -> tuple[float, float]:
    a = math.radians(angle)
    dx, dy = o[0] - c[0], o[1] - c[1]
    # Rot(-angle) in OpenCV's matrix convention: [[cos, -sin], [sin, cos]] applied to (dx, dy)
    return (c[0] + (math.cos(a) * dx - math.sin(a) * dy) / zoom - t[0],
            c[1] + (math.sin(a) * dx + math.cos(a) * dy) / zoom - t[1])


def test_deforum_matrix_is_rotation_about_the_centre_times_translation():
    m = deforum_matrix(80, 48, 1.2, 0.0, 10.0, 0.0)
    # zoom 1.2 about (40, 24) after a 10 px shift: x' = 1.2 (x + 10 - 40) + 40
    assert sum(m, []) == pytest.approx([1.2, 0, 1.2 * 10 - 0.2 * 40, 0, 1.2, -0.2 * 24, 0, 0, 1])
    m = deforum_matrix(80, 48, 1.0, 90.0, 10.0, 0.0)
    # angle 90: x' = y - 24 + 40, y' = -(x + 10 - 40) + 24
    assert sum(m, []) == pytest.approx([0, 1, 16, -1, 0, 54, 0, 0, 1], abs=1e-12)


def test_translation_is_scaled_by_the_zoom_as_deforum_does():
    h, w = 48, 80
    x = ramp(h, w, "x").float()
    moved = warp(x, 1.2, 0.0, 10.0, 0.0, border="replicate")[0, 0]
    zoomed = warp(x, 1.2, 0.0, 0.0, 0.0, border="replicate")[0, 0]
    for ox in (30, 40, 55):
        want = source_of((ox, 20), (40, 24), 1.2, 0.0, (10.0, 0.0))[0]
        assert float(moved[20, ox]) == pytest.approx(want, abs=1e-4)
    # the content moved 12 px on screen (10 px times the zoom), not 10
    assert (moved[10:40, 30:70] - zoomed[10:40, 18:58]).abs().max() < 1e-4


def test_translation_turns_with_the_rotation():
    h, w = 48, 80
    x, y = ramp(h, w, "x").float(), ramp(h, w, "y").float()
    for angle, zoom, t in ((90.0, 1.0, (10.0, 0.0)), (30.0, 1.1, (4.0, -3.0))):
        wx = warp(x, zoom, angle, *t, border="replicate")[0, 0]
        wy = warp(y, zoom, angle, *t, border="replicate")[0, 0]
        for o in ((40, 24), (35, 20), (50, 30)):
            sx, sy = source_of(o, (40, 24), zoom, angle, t)
            assert (float(wx[o[1], o[0]]), float(wy[o[1], o[0]])) == pytest.approx((sx, sy), abs=1e-4)
    # at 90 degrees a shift to the right moves the content up: the centre shows source x 30
    wx = warp(x, 1.0, 90.0, 10.0, 0.0)[0, 0]
    wy = warp(y, 1.0, 90.0, 10.0, 0.0)[0, 0]
    assert (float(wx[24, 40]), float(wy[24, 40])) == pytest.approx((30.0, 24.0))
    # ... which, without the shift, showed 10 px lower (at y 34): the content moved up
    assert float(warp(x, 1.0, 90.0, 0.0, 0.0)[0, 0, 34, 40]) == pytest.approx(30.0)


def test_borders_replicate_wrap_reflect():
    img = torch.rand(1, 3, 6, 9, generator=torch.Generator().manual_seed(3))
    # a whole-pixel shift samples exactly: 3 px right brings 3 columns into view on the left
    wrap = warp(img, 1.0, 0.0, 3.0, 0.0, border="wrap")
    assert torch.equal(wrap, torch.roll(img, 3, dims=3))
    rep = warp(img, 1.0, 0.0, 3.0, 0.0, border="replicate")
    assert torch.equal(rep[..., :3], img[..., :1].expand(1, 3, 6, 3))
    assert torch.equal(rep[..., 3:], img[..., :6])
    ref = warp(img, 1.0, 0.0, 3.0, 0.0, border="reflect")  # cba|abcdef
    assert torch.equal(ref[..., :3], img[..., [2, 1, 0]])
    up = warp(img, 1.0, 0.0, 0.0, -2.0, border="wrap")  # 2 px up, the top rows wrap to the bottom
    assert torch.equal(up, torch.roll(img, -2, dims=2))
    with pytest.raises(ValueError, match="border"):
        warp(img, 1.0, 0.0, 0.0, 0.0, border="mirror")


def test_warp_matches_opencv_warp_perspective_on_float_frames():
    cv2 = pytest.importorskip("cv2")
    np = pytest.importorskip("numpy")
    img = torch.rand(1, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    src = img[0].permute(1, 2, 0).numpy()
    modes = {"replicate": cv2.BORDER_REPLICATE, "wrap": cv2.BORDER_WRAP,
             "reflect": cv2.BORDER_REFLECT}
    for zoom, angle, tx, ty, border in ((1.2, 0, 10, 0, "replicate"), (1.05, 17, 3.3, -2.2, "wrap"),
                                        (0.9, -30, 5, 5, "reflect")):
        m = np.array(deforum_matrix(80, 48, zoom, angle, tx, ty))
        want = cv2.warpPerspective(src, m, (80, 48), flags=cv2.INTER_LINEAR,
                                   borderMode=modes[border])
        got = warp(img, zoom, angle, tx, ty, border)[0].permute(1, 2, 0).numpy()
        assert np.abs(got - want).max() < 1e-4
