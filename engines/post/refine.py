"""Frame refinement of post-production: classical OpenCV denoisers, the settings of every method,
and `refine_dir`, which refines a folder of frames with the chosen method.

Methods (`RefineSettings.method`):
- `none`: frames pass through unchanged.
- `cyclegan`: the 001 paper's learned denoiser (engines/models/cyclegan.py), a registry model
  (`model`) or a generator file the user points at (`checkpoint`); `input_range` "-1..1" (the
  public CycleGAN code's) or "0..1" (the paper authors' inference feeds it the pixels as they
  are).
- `nlmeans`: OpenCV non-local means for colour images (`cv2.fastNlMeansDenoisingColored`):
  each pixel becomes a weighted mean of pixels whose surrounding patches look alike; it converts
  to CIELAB and filters lightness with `nlmeans_h` and colour with `nlmeans_h_color`.
- `bilateral`: OpenCV bilateral filter (`cv2.bilateralFilter`): a Gaussian blur whose weights
  also fall with colour difference, so edges survive.
`mix` blends the result with the original frame (1 = refined only). Every method is
deterministic: the same frames and settings give the same bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

CODE_VERSION = "1"  # bump when refined frames for the same settings would change
INPUT_RANGES = ("-1..1", "0..1")
METHODS = ("none", "cyclegan", "nlmeans", "bilateral")


class RefineSettings(BaseModel):
    """Frame refinement settings (conf/refine/*.yaml document each key)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Literal["none", "cyclegan", "nlmeans", "bilateral"] = "none"
    model: str = "text2video_cyclegan"  # cyclegan: registry entry (conf/refine/models/<name>.yaml)
    checkpoint: str | None = None  # cyclegan: a latest_net_G.pth / .safetensors used instead of model's file
    batch: int = Field(4, ge=1)  # cyclegan: frames per forward pass
    input_range: Literal["-1..1", "0..1"] = "-1..1"  # cyclegan: what frames are mapped to before it
    mix: float = Field(1.0, ge=0, le=1)  # share of the refined frame in the output (0..1)
    nlmeans_h: float = Field(6.0, gt=0)  # lightness filter strength, 0..255 intensity units
    nlmeans_h_color: float = Field(6.0, gt=0)  # colour filter strength, 0..255 intensity units
    nlmeans_template: int = Field(7, ge=1)  # patch side compared, pixels (odd)
    nlmeans_search: int = Field(21, ge=1)  # search window side, pixels (odd)
    bilateral_diameter: int = Field(9, ge=1)  # neighbourhood diameter, pixels
    bilateral_sigma_color: float = Field(50.0, gt=0)  # colour difference scale, 0..255 units
    bilateral_sigma_space: float = Field(5.0, gt=0)  # spatial Gaussian std, pixels

    @field_validator("nlmeans_template", "nlmeans_search")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError("an odd whole number of pixels")
        return v

    def used(self) -> RefineSettings:
        """These settings with every key the method does not read at its default, so the
        refined frames' key changes only with what shapes them (choosing a CycleGAN model
        never re-runs an nlmeans refinement)."""
        reads = {"none": (), "cyclegan": ("model", "checkpoint", "batch", "mix", "input_range"),
                 "nlmeans": ("mix",) + tuple(k for k in type(self).model_fields
                                             if k.startswith("nlmeans_")),
                 "bilateral": ("mix",) + tuple(k for k in type(self).model_fields
                                               if k.startswith("bilateral_"))}[self.method]
        return type(self)(**{k: v for k, v in self.model_dump().items()
                             if k in reads or k in ("name", "method")})


def nlmeans(frame: np.ndarray, h: float = 6.0, h_color: float = 6.0, template: int = 7,
            search: int = 21) -> np.ndarray:
    """Non-local means of a uint8 RGB frame [H, W, 3]; strengths in 0..255 units."""
    import cv2

    bgr = cv2.cvtColor(_check(frame), cv2.COLOR_RGB2BGR)
    out = cv2.fastNlMeansDenoisingColored(bgr, None, float(h), float(h_color), int(template),
                                          int(search))
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def bilateral(frame: np.ndarray, diameter: int = 9, sigma_color: float = 50.0,
              sigma_space: float = 5.0) -> np.ndarray:
    """Bilateral filter of a uint8 RGB frame [H, W, 3]; sigma_color in 0..255 units, the rest in
    pixels."""
    import cv2

    return cv2.bilateralFilter(_check(frame), int(diameter), float(sigma_color),
                               float(sigma_space))


def _check(frame: np.ndarray) -> np.ndarray:
    frame = np.ascontiguousarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a frame must be uint8 [H, W, 3] RGB, got {frame.dtype} {frame.shape}")
    return frame


def _mix(refined: np.ndarray, original: np.ndarray, mix: float) -> np.ndarray:
    if mix >= 1:
        return refined
    out = refined.astype(np.float32) * mix + original.astype(np.float32) * (1 - mix)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def refine_frames(frames: Iterable[np.ndarray], settings: RefineSettings, *, generator: Any = None,
                  device: Any = "cpu") -> Iterator[np.ndarray]:
    """Refined frames, one per input frame, same sizes. `generator`: the loaded CycleGAN for
    method cyclegan (engines/models/cyclegan.py)."""
    s = settings
    if s.method == "cyclegan":
        from engines.models.cyclegan import refine

        originals: deque[np.ndarray] = deque()

        def keep(it: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
            for f in it:
                originals.append(f)
                yield f

        for out in refine(keep(frames), generator, device, s.batch, s.input_range):
            yield _mix(out, originals.popleft(), s.mix)
        return
    for f in frames:
        if s.method == "nlmeans":
            out = nlmeans(f, s.nlmeans_h, s.nlmeans_h_color, s.nlmeans_template, s.nlmeans_search)
        elif s.method == "bilateral":
            out = bilateral(f, s.bilateral_diameter, s.bilateral_sigma_color,
                            s.bilateral_sigma_space)
        else:
            out = f
        yield _mix(out, f, s.mix)


def refine_dir(src: Path, dst: Path, settings: RefineSettings, *, model: Any = None,
               device: Any = "cpu") -> int:
    """Refine every `*.png` of `src` (sorted by name) into `dst` under the same names; returns
    the number of frames. `model`: the prepared cyclegan entry (engines.models.registry.Prepared,
    from select_models), ignored when settings.checkpoint is set."""
    from PIL import Image

    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    paths = sorted(src.glob("*.png"))
    generator = None
    if settings.method == "cyclegan":
        if settings.checkpoint:
            from engines.models.cyclegan import load_generator

            generator = load_generator(Path(settings.checkpoint).expanduser(), device)
        else:
            from engines.models import loaded

            generator = loaded.load(model.entry, model.folder, device)

    def read() -> Iterator[np.ndarray]:
        for p in paths:
            with Image.open(p) as im:
                yield np.asarray(im.convert("RGB"))

    n = 0
    for p, out in zip(paths, refine_frames(read(), settings, generator=generator, device=device),
                      strict=True):
        Image.fromarray(out).save(dst / p.name, format="PNG", compress_level=6)
        n += 1
    return n
