"""Optical flow for flow-guided restyling: RAFT (Teed and Deng 2020) from torchvision, backward
warping, and the occlusion test by forward-backward consistency (Sundaram, Brox and Keutzer 2010;
as used for video style transfer by Ruder, Dosovitskiy and Brox 2016).

Conventions: images are float [1, 3, H, W] in 0..1; a flow `f` from image a to image b is
[1, 2, H, W] in pixels of a (x then y): pixel p of a shows what b shows at p + f(p).
- `flow(model, a, b, iters)`: RAFT's last estimate. RAFT needs sides that are multiples of 8 and
  large enough for its 4-level correlation pyramid, so frames are resized (bilinear) to at least
  `MIN_SIDE` on the short side, in multiples of 8, and the flow resized and rescaled back.
  Identical images have zero motion: their flow is zero without running the model.
- `warp(image, f)`: image sampled at p + f(p) (bilinear, edge pixels repeated outside).
- `consistent(f_ab, f_ba)`: 1 where going a -> b -> a returns to the start:
  |f_ab(p) + f_ba(p + f_ab(p))|^2 <= 0.01 (|f_ab|^2 + |f_ba(p + f_ab)|^2) + 0.5 (Sundaram's
  constants), else 0 (occluded or unreliable).
"""

from __future__ import annotations

from typing import Any

MIN_SIDE = 128  # pixels: RAFT's short side at least this (its 1/8 features pooled 3 times)
ALPHA, BETA = 0.01, 0.5  # forward-backward consistency constants (Sundaram et al. 2010)


def _size(h: int, w: int) -> tuple[int, int]:
    scale = max(1.0, MIN_SIDE / min(h, w))
    return (max(8, round(h * scale / 8) * 8), max(8, round(w * scale / 8) * 8))


def flow(model: Any, a: Any, b: Any, iters: int = 12) -> Any:
    import torch
    import torch.nn.functional as F

    _, _, h, w = a.shape
    if torch.equal(a, b):
        return torch.zeros((1, 2, h, w), dtype=a.dtype, device=a.device)
    hh, ww = _size(h, w)
    dev = next(model.parameters()).device

    def prep(x: Any) -> Any:
        x = x.to(dev, torch.float32)
        if (hh, ww) != (h, w):
            x = F.interpolate(x, size=(hh, ww), mode="bilinear", align_corners=False)
        return x * 2 - 1  # RAFT's input range

    with torch.no_grad():
        f = model(prep(a), prep(b), num_flow_updates=iters)[-1].to(a.device, a.dtype)
    if (hh, ww) != (h, w):
        f = F.interpolate(f, size=(h, w), mode="bilinear", align_corners=False)
        f = torch.stack([f[:, 0] * (w / ww), f[:, 1] * (h / hh)], dim=1)
    return f


def warp(image: Any, f: Any) -> Any:
    """`image` sampled at p + f(p)."""
    import torch
    import torch.nn.functional as F

    _, _, h, w = image.shape
    if not torch.any(f):
        return image.clone()
    ys, xs = torch.meshgrid(torch.arange(h, device=f.device, dtype=f.dtype),
                            torch.arange(w, device=f.device, dtype=f.dtype), indexing="ij")
    gx = (xs + f[:, 0]) * 2 / max(1, w - 1) - 1
    gy = (ys + f[:, 1]) * 2 / max(1, h - 1) - 1
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(image, grid.to(image.dtype), mode="bilinear", padding_mode="border",
                         align_corners=True)


def consistent(f_ab: Any, f_ba: Any) -> Any:
    """[1, 1, H, W]: 1 where the two flows agree, 0 where a pixel of a is occluded in b."""
    back = warp(f_ba, f_ab)
    diff = ((f_ab + back) ** 2).sum(1, keepdim=True)
    mag = (f_ab ** 2).sum(1, keepdim=True) + (back ** 2).sum(1, keepdim=True)
    return (diff <= ALPHA * mag + BETA).to(f_ab.dtype)
