"""2D camera motion between frames and colour coherence (animate_2d mode of the frame engines).

API (tensors are float, RGB in 0..1, shape [1, 3, H, W], any device):
- `warp(image, zoom, angle_deg, tx_px, ty_px) -> Tensor`: the previous frame as seen by a camera
  that moved: content scaled by `zoom` about the frame centre (1.0 = none, 1.02 = 2 % closer),
  rotated `angle_deg` degrees counter-clockwise as seen on screen, then shifted `tx_px` pixels
  right and `ty_px` pixels down. One bilinear resample (torch `affine_grid`/`grid_sample`,
  `align_corners=False`), reflect padding for what comes into view at the edges. Rotation is
  done in pixel space, so non-square frames do not shear. The identity motion resamples exactly
  at pixel centres: the output equals the input to float rounding (< 1e-5).
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


def warp(image: Any, zoom: float, angle_deg: float, tx_px: float, ty_px: float) -> Any:
    """The image moved by (zoom, angle, translation); see the module docstring for conventions."""
    import torch
    import torch.nn.functional as F

    if zoom <= 0:
        raise ValueError(f"zoom must be > 0, got {zoom}")
    _, _, h, w = image.shape
    a = math.radians(angle_deg)
    c, s = math.cos(a), math.sin(a)
    # Output pixel offset o (from the centre, y down) shows source offset R^-1 (o - t) / zoom,
    # where R rotates counter-clockwise on screen. In normalised coordinates (x_n = 2 x / w):
    # src_n = S^-1 R^-1 S (o_n - t_n) / zoom with S = diag(w/2, h/2).
    m = [[c / zoom, -s * h / w / zoom], [s * w / h / zoom, c / zoom]]
    tn = (2 * tx_px / w, 2 * ty_px / h)
    theta = torch.tensor(
        [[m[0][0], m[0][1], -(m[0][0] * tn[0] + m[0][1] * tn[1])],
         [m[1][0], m[1][1], -(m[1][0] * tn[0] + m[1][1] * tn[1])]],
        dtype=torch.float64).to(image.dtype)
    theta = theta.unsqueeze(0).to(image.device).expand(image.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


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
