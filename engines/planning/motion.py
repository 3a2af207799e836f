"""2D camera motion between frames and colour coherence (animate_2d mode of the frame engines).

API (tensors are float, RGB in 0..1, shape [N, 3, H, W], any device):
- `warp(image, zoom, angle_deg, tx_px, ty_px, border="reflect") -> Tensor`: the previous frame
  moved by the camera, as Deforum's 2D animation moves it. Deforum builds the forward map
  (source pixel -> output pixel) as `M = R @ T`: T translates by (tx, ty) pixels, then R is
  OpenCV's `getRotationMatrix2D(centre, angle, zoom)` about centre = (W // 2, H // 2), with
  alpha = zoom cos(angle), beta = zoom sin(angle):

      R = [[alpha, beta, (1 - alpha) cx - beta cy], [-beta, alpha, beta cx + (1 - alpha) cy]]

  so content at source point p lands at zoom * Rot(angle) (p + t - c) + c: the translation is
  applied before the zoom and the rotation, and is scaled and turned with them (at zoom 1.2 a
  translation of 10 px moves the content 12 px; at angle 90 a translation to the right moves it
  up). Pixel coordinates are OpenCV's (pixel centres at whole numbers, y down); a positive angle
  turns the content counter-clockwise on screen. Each output pixel o shows the source at
  M^-1 o, sampled bilinearly (one resample per frame; the identity motion copies the frame
  exactly). `border` fills what comes into view: `reflect` (fedcba|abcdef, OpenCV's
  BORDER_REFLECT), `replicate` (aaaaaa|abcdef, Deforum's default) or `wrap` (cdef|abcdef, the
  frame tiles the plane).
- `sample(image, sx, sy, border)`: the bilinear read with the border rule that `warp` ends with,
  for warps whose source coordinates come from elsewhere (the 3D camera of
  engines/frames/sd/camera3d.py).
- `deforum_matrix(width, height, zoom, angle_deg, tx_px, ty_px)`: that forward matrix M (3x3,
  plain floats), for tests and for anyone comparing with OpenCV's `warpPerspective`.
- `colour_stats(image) -> Tensor[2, 3]`: per-channel mean (row 0) and std (row 1) in CIE LAB
  (kornia), the reference for `match_colour`.
- `match_colour(image, reference_stats) -> Tensor`: shifts and scales each LAB channel so that
  its mean/std equal the reference's, back to RGB clamped to 0..1 (Reinhard colour transfer).
  Used to keep every frame's palette close to frame 0's (the drift toward one saturated colour
  is the classic failure of long feedback animations).
"""

from __future__ import annotations

import math
from typing import Any

BORDERS = ("reflect", "replicate", "wrap")


def deforum_matrix(width: int, height: int, zoom: float, angle_deg: float, tx_px: float,
                   ty_px: float) -> list[list[float]]:
    """Forward map M = R @ T (source pixel -> output pixel, OpenCV pixel coordinates)."""
    a = math.radians(angle_deg)
    alpha, beta = zoom * math.cos(a), zoom * math.sin(a)
    cx, cy = width // 2, height // 2
    r = [[alpha, beta, (1 - alpha) * cx - beta * cy],
         [-beta, alpha, beta * cx + (1 - alpha) * cy], [0.0, 0.0, 1.0]]
    t = [[1.0, 0.0, tx_px], [0.0, 1.0, ty_px], [0.0, 0.0, 1.0]]
    return [[sum(r[i][k] * t[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def _border_index(i: Any, n: int, border: str) -> Any:
    """Whole-number pixel indices mapped into 0..n-1 by the border rule."""
    if border == "replicate":
        return i.clamp(0, n - 1)
    if border == "wrap":
        return i.remainder(n)
    i = i.remainder(2 * n)  # reflect: period 2n, the edge pixel repeated (fedcba|abcdef)
    return i.where(i < n, 2 * n - 1 - i)


def warp(image: Any, zoom: float, angle_deg: float, tx_px: float, ty_px: float,
         border: str = "reflect") -> Any:
    """The image moved by (zoom, angle, translation); see the module docstring for conventions."""
    import torch

    if zoom <= 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    _, _, h, w = image.shape
    m = deforum_matrix(w, h, zoom, angle_deg, tx_px, ty_px)
    # inverse of the affine map [[A, b]]: A^-1 = Rot(-angle) / zoom, offset -A^-1 b
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    inv = [[m[1][1] / det, -m[0][1] / det], [-m[1][0] / det, m[0][0] / det]]
    off = [-(inv[0][0] * m[0][2] + inv[0][1] * m[1][2]),
           -(inv[1][0] * m[0][2] + inv[1][1] * m[1][2])]
    dev = image.device
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                            torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    sx = inv[0][0] * xs + inv[0][1] * ys + off[0]
    sy = inv[1][0] * xs + inv[1][1] * ys + off[1]
    return sample(image, sx, sy, border)


def sample(image: Any, sx: Any, sy: Any, border: str = "reflect") -> Any:
    """The image read at source pixel coordinates (sx, sy) ([H, W] each, float64, OpenCV pixel
    coordinates) bilinearly, `border` filling what lies outside: every warp's one resample."""
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    _, _, h, w = image.shape
    x0, y0 = sx.floor(), sy.floor()
    fx, fy = (sx - x0).to(image.dtype), (sy - y0).to(image.dtype)
    x0, y0 = x0.long(), y0.long()
    xa, xb = _border_index(x0, w, border), _border_index(x0 + 1, w, border)
    ya, yb = _border_index(y0, h, border), _border_index(y0 + 1, h, border)
    top = image[:, :, ya, xa] * (1 - fx) + image[:, :, ya, xb] * fx
    bottom = image[:, :, yb, xa] * (1 - fx) + image[:, :, yb, xb] * fx
    return top * (1 - fy) + bottom * fy


def colour_stats(image: Any) -> Any:
    """Per-channel LAB mean (row 0) and std (row 1) of an RGB 0..1 image [1, 3, H, W]."""
    import kornia

    lab = kornia.color.rgb_to_lab(image.clamp(0, 1).float())
    flat = lab.flatten(2)[0]
    import torch

    return torch.stack([flat.mean(1), flat.std(1)])


def match_colour(image: Any, reference_stats: Any) -> Any:
    """The image with each LAB channel's mean/std set to `reference_stats` ([2, 3])."""
    import kornia

    ref = reference_stats.to(image.device, image.dtype)
    lab = kornia.color.rgb_to_lab(image.clamp(0, 1))
    flat = lab.flatten(2)
    mean = flat.mean(2)[..., None, None]
    std = flat.std(2)[..., None, None].clamp_min(1e-5)
    lab = (lab - mean) / std * ref[1][None, :, None, None] + ref[0][None, :, None, None]
    return kornia.color.lab_to_rgb(lab, clip=True).clamp(0, 1)
