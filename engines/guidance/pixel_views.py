"""The pixel engine's augmented views of a frame (engines/frames/pixel_clip.py, whose docstring
describes both chains): `augment` (`crop_keystone`: resized-crop windows of the frame's aspect,
then a random keystone) and `perspective_crop` (the authors' torchvision chain: random
perspective, then RandomResizedCrop windows), with the window draws `crop_windows` and
`resized_crop_windows` from a CPU generator.
"""

from __future__ import annotations

import math
from typing import Any


def crop_windows(height: int, width: int, n: int, scale: tuple[float, float],
                 generator: Any) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) of n random resized-crop windows, drawn from the CPU `generator`."""
    import torch

    lo, hi = scale
    u = torch.rand(4, n, generator=generator, dtype=torch.float64).tolist()
    out = []
    log_r = math.log(4 / 3)
    for us, ur, uy, ux in zip(*u, strict=True):
        s = lo + (hi - lo) * us
        r = math.exp((2 * ur - 1) * log_r)
        area = s * height * width  # kept when one side is clipped to the frame
        h = max(1, min(height, round(height * math.sqrt(s / r))))
        w = max(1, min(width, round(area / h)))
        h = max(1, min(height, round(area / w)))
        top = min(int(uy * (height - h + 1)), height - h)
        left = min(int(ux * (width - w + 1)), width - w)
        out.append((top, left, h, w))
    return out


def augment(image: Any, size: int, n: int, scale: tuple[float, float], perspective: float,
            generator: Any, device_generator: Any) -> Any:
    """n `crop_keystone` views [n, 3, size, size] of `image` [1, 3, H, W] (module docstring)."""
    import torch
    import torch.nn.functional as F
    from kornia.geometry.transform import homography_warp

    _, _, h, w = image.shape
    views = [F.interpolate(image[:, :, t:t + ch, left:left + cw], (size, size), mode="bilinear",
                           antialias=True, align_corners=False)
             for t, left, ch, cw in crop_windows(h, w, n, scale, generator)]
    batch = torch.cat(views)
    g = (torch.rand(n, 2, generator=device_generator, device=image.device, dtype=image.dtype)
         * 2 - 1) * perspective
    homo = torch.eye(3, device=image.device, dtype=image.dtype).repeat(n, 1, 1)
    homo[:, 2, :2] = g
    return homography_warp(batch, homo, (size, size), padding_mode="border")


def resized_crop_windows(height: int, width: int, n: int, scale: tuple[float, float],
                         generator: Any) -> list[tuple[int, int, int, int]]:
    """(top, left, h, w) of n windows drawn as torchvision's RandomResizedCrop draws them: area
    fraction U(scale), aspect logU(3/4, 4/3) (absolute), up to 10 tries for one that fits, else
    the centre crop with the aspect clamped to that range. From the CPU `generator`."""
    import torch

    lo, hi = scale
    log_r = (math.log(3 / 4), math.log(4 / 3))
    u = torch.rand(n, 10, 4, generator=generator, dtype=torch.float64).tolist()
    area = height * width
    out = []
    for tries in u:
        for us, ur, uy, ux in tries:
            target = area * (lo + (hi - lo) * us)
            r = math.exp(log_r[0] + (log_r[1] - log_r[0]) * ur)
            w, h = round(math.sqrt(target * r)), round(math.sqrt(target / r))
            if 0 < w <= width and 0 < h <= height:
                out.append((min(int(uy * (height - h + 1)), height - h),
                            min(int(ux * (width - w + 1)), width - w), h, w))
                break
        else:
            ratio = width / height
            if ratio < 3 / 4:
                w, h = width, round(width / (3 / 4))
            elif ratio > 4 / 3:
                h, w = height, round(height * 4 / 3)
            else:
                w, h = width, height
            h, w = min(h, height), min(w, width)
            out.append(((height - h) // 2, (width - w) // 2, h, w))
    return out


def perspective_crop(image: Any, size: int, n: int, scale: tuple[float, float],
                     distortion: float, generator: Any, device_generator: Any) -> Any:
    """n `perspective_crop` views [n, 3, size, size] of `image` [1, 3, H, W]: the authors'
    chain (module docstring). The homography from each view to the frame is solved on the
    device (`solve_ex`: no host round trip); what comes into view is white."""
    import torch
    import torch.nn.functional as F

    dev, dt = image.device, image.dtype
    _, _, h, w = image.shape
    if min(h, w) != size:  # torchvision Resize(size): the shorter side to `size`
        h, w = (size, max(1, round(w * size / h))) if h <= w else (max(1, round(h * size / w)), size)
        image = F.interpolate(image, (h, w), mode="bilinear", antialias=True, align_corners=False)
    # corners in normalised coordinates (x, y), clockwise from top-left; each moves inward by
    # U(0, distortion) of the half side (the half side is 1 in these units)
    idx = torch.arange(4, device=dev)  # built on the device: no host-to-device copy
    corners = torch.stack([((idx == 1) | (idx == 2)).float() * 2 - 1,
                           (idx >= 2).float() * 2 - 1], dim=1)  # (-1,-1) (1,-1) (1,1) (-1,1)
    inward = -corners  # the direction toward the centre, per axis
    moved = corners + inward * torch.rand(n, 4, 2, generator=device_generator, device=dev,
                                          dtype=torch.float32) * distortion
    # solve H (8 unknowns, h33 = 1) with H(moved_k) = corner_k: output point -> source point
    x, y = moved[..., 0], moved[..., 1]
    u, v = corners[:, 0].expand(n, 4), corners[:, 1].expand(n, 4)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # [n, 8, 8]
    b = torch.cat([u, v], dim=1)  # [n, 8]
    hvec = torch.linalg.solve_ex(a, b)[0]
    homo = torch.cat([hvec, torch.ones(n, 1, device=dev, dtype=hvec.dtype)], dim=1).view(n, 3, 3)
    ys = (torch.arange(h, device=dev, dtype=torch.float32) * 2 + 1) / h - 1
    xs = (torch.arange(w, device=dev, dtype=torch.float32) * 2 + 1) / w - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, h * w, 3) @ homo.transpose(1, 2)
    grid = (pts[..., :2] / pts[..., 2:]).view(n, h, w, 2).to(dt)
    warped = F.grid_sample(image.expand(n, -1, -1, -1) - 1, grid, mode="bilinear",
                           padding_mode="zeros", align_corners=False) + 1  # white fill
    return torch.cat([F.interpolate(warped[k:k + 1, :, t:t + ch, left:left + cw], (size, size),
                                    mode="bilinear", antialias=True, align_corners=False)
                      for k, (t, left, ch, cw) in enumerate(
                          resized_crop_windows(h, w, n, scale, generator))])
