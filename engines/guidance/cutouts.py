"""Cutouts of an image for CLIP guidance (engines/guidance/clip_guide.py `Guide` embeds them).

- `Cutouts(cut_size, cutn, cut_pow, augments, noise_fac)`: `(image, generator,
  device_generator) -> Tensor[cutn, 3, cut_size, cut_size]`.
- `check_augments(augments, key)`: the augment names, refused when unknown or mixed.

Cutouts (Crowson): size = min_size + (max_size - min_size) * u ** cut_pow with u ~ U(0, 1),
max_size = the image's shorter side, min_size = min(shorter side, cut_size); a random square
window of that size is resized (antialiased bilinear) to the perceptor input size. cut_pow > 1
favours small cutouts (detail), < 1 large ones (composition). Then the augmentations (names in
`AUGMENTS`, order irrelevant): the geometric ones ("flip" p 0.5; "affine" p 0.7: rotation
+-15 degrees, shift +-10 %, shear +-5 degrees; "perspective" p 0.7: keystone up to 25 %;
"resized_crop" p 1: a window of 70-100 % of the area, aspect 3/4..4/3) are composed into one
homography per cutout and applied with a single `grid_sample` (border padding);
"color_jitter" (p 0.7: hue +-0.05 turn, saturation x0.9..1.1) uses kornia.enhance; "noise"
adds Gaussian noise of std U(0, noise_fac) per cutout. nerdyrodent's `-aug` codes
(`NERDY_AUGMENTS`: Ji Sh Gn Pe Ro Af Et Ts Cr Er Re) instead apply its kornia augmentations with
its parameters, in the order given, then its cutout noise (`nerdy_module`); the two sets of
names are not mixed. `cut_method="pooling"`: every cutout is the whole image pooled to the
perceptor's input, (adaptive average pool + adaptive max pool) / 2 (the notebook's and
nerdyrodent's `latest` cutouts; `cut_pow` unused), made different by the augmentations.

Randomness: window sizes and offsets come from `generator` (a CPU torch.Generator: Python ints,
no device round trip); augmentation parameters and noise from a device generator seeded from it
when the Guide is built. The parameters are drawn here rather than by kornia's random
augmentation modules, because those draw from torch's global RNG and their warps invert the
matrices with `torch.inverse` (a host synchronisation on CUDA). `rng_state()` holds both states,
so a resumed render continues the exact random sequence.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from engines.core.errors import ConfigError

AUGMENTS = ("flip", "affine", "perspective", "color_jitter", "resized_crop", "noise")
# nerdyrodent's generate.py `-aug` names: kornia augmentations with its parameters, applied in
# the order given (NERDY_AUGMENTS), plus its cutout noise (noise_fac) after them
NERDY_AUGMENTS = ("Ji", "Sh", "Gn", "Pe", "Ro", "Af", "Et", "Ts", "Cr", "Er", "Re")
NERDY_DEFAULT = ("Af", "Pe", "Ji", "Er")  # nerdyrodent's default -aug
CUT_METHODS = ("random", "pooling")
DEFAULT_AUGMENTS = ("flip", "affine", "perspective", "color_jitter", "noise")
GEOMETRIC = ("flip", "affine", "perspective", "resized_crop")


def check_augments(augments: Sequence[str], key: str = "augments") -> tuple[str, ...]:
    """The augment names as a tuple; ConfigError naming `key` for an unknown one, or for a mix of
    promptreel's names and nerdyrodent's codes (their orders differ: no single meaning)."""
    out = tuple(augments)
    for name in out:
        if name not in AUGMENTS and name not in NERDY_AUGMENTS:
            raise ConfigError(key, name, f"{', '.join(AUGMENTS)}, or nerdyrodent's "
                              f"{', '.join(NERDY_AUGMENTS)}")
    if any(n in AUGMENTS for n in out) and any(n in NERDY_AUGMENTS for n in out):
        raise ConfigError(key, list(out), "promptreel's names or nerdyrodent's codes, not both",
                          "nerdyrodent's apply in the order given, promptreel's as one warp")
    return out


def nerdy_module(name: str, cut_size: int) -> Any:
    """nerdyrodent's kornia augmentation for a `-aug` code, with its parameters
    (github.com/nerdyrodent/VQGAN-CLIP, generate.py, MakeCutouts)."""
    import kornia.augmentation as K

    s = cut_size
    return {
        "Ji": lambda: K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
        "Sh": lambda: K.RandomSharpness(sharpness=0.3, p=0.5),
        "Gn": lambda: K.RandomGaussianNoise(mean=0.0, std=1.0, p=0.5),
        "Pe": lambda: K.RandomPerspective(distortion_scale=0.7, p=0.7),
        "Ro": lambda: K.RandomRotation(degrees=15, p=0.7),
        "Af": lambda: K.RandomAffine(degrees=15, translate=0.1, shear=5, p=0.7,
                                     padding_mode="zeros", keepdim=True),
        "Et": lambda: K.RandomElasticTransform(p=0.7),
        "Ts": lambda: K.RandomThinPlateSpline(scale=0.8, same_on_batch=True, p=0.7),
        "Cr": lambda: K.RandomCrop(size=(s, s), pad_if_needed=True, padding_mode="reflect",
                                   p=0.5),
        "Er": lambda: K.RandomErasing(scale=(0.1, 0.4), ratio=(0.3, 1 / 0.3), same_on_batch=True,
                                      p=0.7),
        "Re": lambda: K.RandomResizedCrop(size=(s, s), scale=(0.1, 1), ratio=(0.75, 1.333),
                                          cropping_mode="resample", p=0.5),
    }[name]()


def _mat(a: Any, b: Any, c: Any, d: Any, e: Any, f: Any, g: Any = None, h: Any = None) -> Any:
    """Batched 3x3 matrices [[a, b, c], [d, e, f], [g, h, 1]] from [N] tensors."""
    import torch

    zero, one = torch.zeros_like(a), torch.ones_like(a)
    g = zero if g is None else g
    h = zero if h is None else h
    return torch.stack([a, b, c, d, e, f, g, h, one], dim=-1).view(-1, 3, 3)


class Cutouts:
    """Random square crops of an image, resized to `cut_size` and augmented (module docstring);
    `method="pooling"`: every cutout is the whole image pooled to cut_size (the notebook's)."""

    def __init__(self, cut_size: int, cutn: int, cut_pow: float = 1.0,
                 augments: Sequence[str] = DEFAULT_AUGMENTS, noise_fac: float = 0.1,
                 method: str = "random"):
        if cutn < 1 or cut_size < 1 or cut_pow <= 0:
            raise ValueError(f"need cutn >= 1, cut_size >= 1, cut_pow > 0; got {cutn}, "
                             f"{cut_size}, {cut_pow}")
        if method not in CUT_METHODS:
            raise ConfigError("cut_method", method, ", ".join(CUT_METHODS))
        self.cut_size, self.cutn, self.cut_pow = int(cut_size), int(cutn), float(cut_pow)
        self.method = method
        names = check_augments(augments)
        self.nerdy = tuple(n for n in names if n in NERDY_AUGMENTS)
        self.augments = frozenset(n for n in names if n in AUGMENTS)
        self.noise_fac = float(noise_fac)
        self._nerdy_seq: Any = None

    def windows(self, height: int, width: int, generator: Any) -> list[tuple[int, int, int]]:
        """(size, top, left) of each cutout, drawn from the CPU `generator`."""
        import torch

        max_size = min(width, height)
        min_size = min(width, height, self.cut_size)
        u = torch.rand(3, self.cutn, generator=generator, dtype=torch.float64).tolist()
        out = []
        for r, uy, ux in zip(*u, strict=True):
            size = int(min_size + (max_size - min_size) * r ** self.cut_pow)
            top = min(int(uy * (height - size + 1)), height - size)
            left = min(int(ux * (width - size + 1)), width - size)
            out.append((size, top, left))
        return out

    def __call__(self, image: Any, generator: Any, device_generator: Any) -> Any:
        import torch
        import torch.nn.functional as F

        s = self.cut_size
        if self.method == "pooling":  # the notebook's pooled cutouts: (avg + max pool) / 2
            pooled = (F.adaptive_avg_pool2d(image, s) + F.adaptive_max_pool2d(image, s)) / 2
            batch = pooled.expand(self.cutn, -1, -1, -1).contiguous()
        else:
            crops = []
            for size, top, left in self.windows(image.shape[2], image.shape[3], generator):
                crop = image[:, :, top:top + size, left:left + size]
                if size != s:
                    crop = F.interpolate(crop, (s, s), mode="bilinear", antialias=True,
                                         align_corners=False)
                crops.append(crop)
            batch = torch.cat(crops)
        if self.nerdy:
            return self._nerdyrodent(batch, generator, device_generator)
        r = torch.rand(self.cutn, 16, generator=device_generator, device=image.device,
                       dtype=batch.dtype)
        if self.augments & set(GEOMETRIC):
            batch = self._geometric(batch, r)
        if "color_jitter" in self.augments:
            import kornia

            gate = (r[:, 13] < 0.7).to(batch.dtype)
            sat = 1 + (2 * r[:, 15] - 1) * 0.1 * gate
            hue = (2 * r[:, 14] - 1) * (0.05 * 2 * math.pi) * gate
            batch = kornia.enhance.adjust_hue(kornia.enhance.adjust_saturation(batch, sat), hue)
        if "noise" in self.augments and self.noise_fac > 0:
            facs = torch.rand(self.cutn, 1, 1, 1, generator=device_generator,
                              device=batch.device, dtype=batch.dtype) * self.noise_fac
            noise = torch.randn(batch.shape, generator=device_generator, device=batch.device,
                                dtype=batch.dtype)
            batch = batch + facs * noise
        return batch

    def _nerdyrodent(self, batch: Any, generator: Any, device_generator: Any) -> Any:
        """nerdyrodent's kornia chain in its order, then its cutout noise. kornia draws from
        torch's global generators: they run forked, seeded from `generator`, so the draws are
        the shot's own and resume exactly (on CUDA kornia's parameter sampling may wait for the
        GPU: promptreel's own names do not)."""
        import torch

        if self._nerdy_seq is None:
            self._nerdy_seq = torch.nn.Sequential(*(nerdy_module(n, self.cut_size)
                                                    for n in self.nerdy))
        seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
        devices = [batch.device] if batch.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            batch = self._nerdy_seq.to(batch.device)(batch)
        if self.noise_fac:
            facs = torch.rand(self.cutn, 1, 1, 1, generator=device_generator,
                              device=batch.device, dtype=batch.dtype) * self.noise_fac
            batch = batch + facs * torch.randn(batch.shape, generator=device_generator,
                                               device=batch.device, dtype=batch.dtype)
        return batch

    def _geometric(self, batch: Any, r: Any) -> Any:
        """One homography per cutout (output -> source, normalised coords), one grid_sample."""
        import torch
        import torch.nn.functional as F

        n, s = batch.shape[0], self.cut_size
        one, zero = torch.ones_like(r[:, 0]), torch.zeros_like(r[:, 0])
        m = torch.eye(3, dtype=batch.dtype, device=batch.device).expand(n, 3, 3)
        if "flip" in self.augments:
            m = m @ _mat(torch.where(r[:, 0] < 0.5, -one, one), zero, zero, zero, one, zero)
        if "affine" in self.augments:
            gate = (r[:, 1] < 0.7).to(batch.dtype)
            rot = (2 * r[:, 2] - 1) * math.radians(15) * gate
            tx, ty = (2 * r[:, 3] - 1) * 0.2 * gate, (2 * r[:, 4] - 1) * 0.2 * gate
            shear = torch.tan((2 * r[:, 5] - 1) * math.radians(5) * gate)
            c, si = torch.cos(rot), torch.sin(rot)
            m = _mat(c, c * shear - si, tx, si, si * shear + c, ty) @ m
        if "perspective" in self.augments:
            gate = (r[:, 6] < 0.7).to(batch.dtype)
            gx, gy = (2 * r[:, 7] - 1) * 0.25 * gate, (2 * r[:, 8] - 1) * 0.25 * gate
            m = _mat(one, zero, zero, zero, one, zero, gx, gy) @ m
        if "resized_crop" in self.augments:
            area = 0.7 + 0.3 * r[:, 9]
            ratio = torch.exp((2 * r[:, 10] - 1) * math.log(4 / 3))
            a = torch.sqrt(area * ratio).clamp(max=1.0)
            b = torch.sqrt(area / ratio).clamp(max=1.0)
            cx, cy = (2 * r[:, 11] - 1) * (1 - a), (2 * r[:, 12] - 1) * (1 - b)
            m = _mat(a, zero, cx, zero, b, cy) @ m
        ticks = (torch.arange(s, device=batch.device, dtype=batch.dtype) * 2 + 1) / s - 1
        gy_, gx_ = torch.meshgrid(ticks, ticks, indexing="ij")
        base = torch.stack([gx_, gy_, torch.ones_like(gx_)], dim=-1).view(1, s * s, 3)
        pts = base @ m.transpose(1, 2)
        grid = (pts[..., :2] / pts[..., 2:]).view(n, s, s, 2)
        return F.grid_sample(batch, grid, mode="bilinear", padding_mode="border",
                             align_corners=False)
