"""CLIP guidance shared by the frame engines: cutouts, augmentations, prompt embeddings, loss.

Public API (stable; tensors are float32, images RGB in 0..1, shape [N, 3, H, W]):
- `Guide(perceptors, cutn=32, cut_pow=1.0, augments=DEFAULT_AUGMENTS, generator=None,
  path="fast", device="cpu", *, noise_fac=0.1, alternate=False, compile_mode="none",
  frame_size=None)`:
  `perceptors` is a list of (Perceptor, weight). `.set_prompts(prompts, image_prompts=(),
  noise_prompts=())` sets the targets (text embeddings cached by text, so calling it every
  iteration is cheap); `.prepare(texts, image_prompts, noise_prompts)` embeds targets ahead of a
  loop (no device copies mid-loop); `.loss(image [1,3,H,W], iteration) -> (total, per_prompt)`
  (with `alternate=True` only perceptor iteration % n is used, as the 001 paper alternates two
  CLIP models); `.rng_state()` / `.set_rng_state(state)` save and restore every random source
  (uint8 tensors). `per_prompt` maps a key (the prompt text, `image:<path>`, `noise:<seed>`)
  to that prompt's signed, weighted share of `total` (detached: read it only when you need it,
  it syncs on CUDA).
- cutouts and their augmentations: engines/guidance/cutouts.py.
- `embed_texts(perceptor, texts)`, `embed_images(perceptor, images)`: raw CLIP embeddings
  [n, d] (no grad). Images use CLIP's own preprocessing (shorter side resized, centre crop).
- `spherical_dist_loss(x, y)`: squared great-circle distance between normalised embeddings,
  2 * arcsin(|x - y| / 2) ** 2, in 0..pi^2/2 (0 = same direction).
- `clip_similarity(perceptor, image, texts) -> list[float]`: cosine similarity (-1..1) of the
  whole image to each text (per-frame records and final scores).
- `clamp_with_grad(x, lo, hi)`, `replace_grad(fake, real)`: straight-through helpers.
- `load_image(path, size=None, device="cpu")`: an image file as [1, 3, H, W] in 0..1, resized
  (Lanczos, stretched) to `size` = (width, height) if given.
- `area_fit(image_size, frame_size)`: the notebook's `resize_image` size: the image's aspect
  ratio, with the area of the frame (never more than its own).

Image prompts (the VQGAN+CLIP notebook's way): the target image is resized to `area_fit` of the
frame (`frame_size`; its own size when none is given), cut into the same `cutn` augmented
cutouts as the frame (the perceptor's `Cutouts`, from a generator of its own seeded from the
Guide's, so the frame's random sequence is untouched and every render embeds the image the same
way), and every cutout is embedded: the target is [cutn, d], and the prompt's distance is the
mean over every pair (frame cutout, image cutout). A 16:9 image keeps its sides (a centre crop,
CLIP's own preprocessing, would drop them).

Prompt loss (Crowson's VQGAN-CLIP notebook): for a prompt of weight w and stop s, with d the
distances of every cutout embedding to the target embedding(s), the term is
|w| * mean(sign(w) * d), and its gradient is cut once sign(w) * d falls below s (the term's value
is still reported). Negative weights push the image away from the prompt. With several
perceptors the total is sum_p weight_p * sum_prompts term_p.

Paths: "fast" encodes all cutouts in one batched perceptor call (channels_last input and bf16
autocast on CUDA; on CPU fp32), optionally through `torch.compile` (`compile_mode`);
"reference" encodes cutouts one at a time in fp32 with autocast off, like the classic notebooks.
On CPU both give the same loss to float rounding (tested to a relative 1e-5).

Memory traces (engines/frames/memory.py): a Guide may live on the "meta" device (shapes, no data); its
device generator is then a CPU one, and a perceptor whose weights are bf16 (memory's stand-in
for CUDA autocast) gets its input cast to bf16.

Shared speed helpers for the engines: `autocast(device, fast)` (bf16 autocast on CUDA for the
fast path, else a no-op), `compiled(fn, mode)` (`torch.compile` of a plain function, built once
per function and mode), `COMPILE_MODES`, `param_dtype(module)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError, PromptreelError
from engines.guidance.cutouts import DEFAULT_AUGMENTS, Cutouts

PATHS = ("fast", "reference")
COMPILE_MODES = ("none", "default", "reduce-overhead", "max-autotune")  # torch.compile modes
_COMPILED: dict[tuple[Any, str], Any] = {}


def autocast(device: Any, fast: bool) -> Any:
    """The precision context of a path: fast = bf16 autocast on CUDA and the caller's context
    elsewhere (on this project's CPUs bf16 is emulated and hundreds of times slower than fp32);
    reference = autocast off (fp32) wherever torch has autocast."""
    import contextlib

    import torch

    kind = torch.device(device).type
    if fast and kind == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if not fast and kind in ("cuda", "cpu"):
        return torch.autocast(kind, enabled=False)
    return contextlib.nullcontext()


def compiled(fn: Any, mode: str) -> Any:
    """`fn` (a plain function whose first argument is the module) through torch.compile with
    `mode`, built once per (fn, mode); mode "none" returns `fn`. Modules are arguments, not
    captured, so a cached compiled function never keeps a model alive."""
    if mode == "none":
        return fn
    if mode not in COMPILE_MODES:
        raise ConfigError("engine.compile", mode, ", ".join(COMPILE_MODES))
    key = (fn, mode)
    if key not in _COMPILED:
        import torch

        _COMPILED[key] = torch.compile(fn, mode=None if mode == "default" else mode)
    return _COMPILED[key]


def param_dtype(module: Any) -> Any:
    """The dtype of a module's first parameter (float32 for a module without any)."""
    import torch

    return next((p.dtype for p in module.parameters()), torch.float32)


def encode_views(model: Any, x: Any, path: str, device: Any, encode_image: Any) -> Any:
    """CLIP image embeddings (float32) of normalised views `x` [N,3,S,S]: one at a time in fp32
    on the reference path (as the notebooks do), else batched under autocast, channels_last on
    CUDA (`encode_image`: the engine's possibly compiled encoder)."""
    import torch

    if path == "reference":
        with autocast(device, False):
            return torch.cat([model.encode_image(x[i:i + 1]).float() for i in range(x.shape[0])])
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    elif device.type == "meta":  # a memory trace: bf16 weights stand in for autocast
        x = x.to(param_dtype(model))
    with autocast(device, True):
        return encode_image(model, x).float()


def _encode_image(model: Any, x: Any) -> Any:
    return model.encode_image(x)


@lru_cache(maxsize=1)
def _replace_fn() -> Any:
    import torch

    class ReplaceGrad(torch.autograd.Function):
        """Forward: exactly `fake`; backward: the gradient goes to `real` (summed to its shape)."""

        @staticmethod
        def forward(ctx: Any, fake: Any, real: Any) -> Any:
            ctx.shape = real.shape
            return fake.clone()

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            return None, grad.sum_to_size(ctx.shape)

    return ReplaceGrad


def replace_grad(fake: Any, real: Any) -> Any:
    """Forward value of `fake` (exactly), gradient of `real` (a straight-through estimator)."""
    return _replace_fn().apply(fake, real)


@lru_cache(maxsize=1)
def _clamp_fn() -> Any:
    import torch

    class ClampWithGrad(torch.autograd.Function):
        """Clamp whose gradient still flows where it would move the value back inside."""

        @staticmethod
        def forward(ctx: Any, x: Any, lo: float, hi: float) -> Any:
            ctx.lo, ctx.hi = lo, hi
            ctx.save_for_backward(x)
            return x.clamp(lo, hi)

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (x,) = ctx.saved_tensors
            return grad * (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0), None, None

    return ClampWithGrad


def clamp_with_grad(x: Any, lo: float, hi: float) -> Any:
    """x clamped to [lo, hi]; gradients pass except where they would push further outside."""
    return _clamp_fn().apply(x, lo, hi)


def spherical_dist_loss(x: Any, y: Any) -> Any:
    """2 * arcsin(|x^ - y^| / 2) ** 2 over the last dim (x^, y^ normalised); broadcasts."""
    import torch.nn.functional as F

    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)


def load_image(path: str | Path, size: tuple[int, int] | None = None, device: Any = "cpu") -> Any:
    """An image file as float [1, 3, H, W] in 0..1; resized (Lanczos) to (width, height)."""
    import numpy as np
    import torch
    from PIL import Image

    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            if size is not None and im.size != tuple(size):
                im = im.resize(tuple(size), Image.Resampling.LANCZOS)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, ValueError) as exc:
        raise PromptreelError(f"cannot read image {str(path)!r}: {exc}; give the path of a PNG "
                              "or JPEG file that exists") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).unsqueeze(0).to(device)


def area_fit(image_size: tuple[int, int], frame_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with the image's aspect ratio and the area min(image, frame): the
    VQGAN+CLIP notebook's `resize_image(image, (sideX, sideY))` for image prompts."""
    w, h = image_size
    ratio = w / h
    area = min(w * h, frame_size[0] * frame_size[1])
    return max(1, round(math.sqrt(area * ratio))), max(1, round(math.sqrt(area / ratio)))


def image_size_of(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file, from its header."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, ValueError) as exc:
        raise PromptreelError(f"cannot read image {str(path)!r}: {exc}; give the path of a PNG "
                              "or JPEG file that exists") from None


def _device(perceptor: Any) -> Any:
    return next(perceptor.model.parameters()).device


def _norm_stats(perceptor: Any, device: Any) -> tuple[Any, Any]:
    import torch

    mean = torch.as_tensor(perceptor.mean, dtype=torch.float32).reshape(1, 3, 1, 1).to(device)
    std = torch.as_tensor(perceptor.std, dtype=torch.float32).reshape(1, 3, 1, 1).to(device)
    return mean, std


def embed_texts(perceptor: Any, texts: Sequence[str]) -> Any:
    """Raw CLIP text embeddings, float32 [len(texts), d], no grad."""
    import torch

    with torch.no_grad():
        tokens = perceptor.tokenizer(list(texts)).to(_device(perceptor))
        return perceptor.model.encode_text(tokens).float()


def _clip_preprocess(perceptor: Any, images: Any) -> Any:
    """CLIP's own view of a whole image: shorter side to image_size, centre crop, normalised."""
    import torch.nn.functional as F

    size = perceptor.image_size
    h, w = images.shape[-2:]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    x = F.interpolate(images.float(), (nh, nw), mode="bilinear", antialias=True,
                      align_corners=False)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean, std = _norm_stats(perceptor, x.device)
    return (x - mean) / std


def embed_images(perceptor: Any, images: Any) -> Any:
    """Raw CLIP image embeddings of whole images [n, 3, H, W] (0..1), float32 [n, d], no grad."""
    import torch

    with torch.no_grad():
        x = _clip_preprocess(perceptor, images.to(_device(perceptor)))
        return perceptor.model.encode_image(x).float()


def clip_similarity(perceptor: Any, image: Any, texts: Sequence[str]) -> list[float]:
    """Cosine similarity (-1..1) of the whole image [1, 3, H, W] to each text."""
    import torch.nn.functional as F

    if not texts:
        return []
    img = F.normalize(embed_images(perceptor, image[:1]), dim=-1)
    txt = F.normalize(embed_texts(perceptor, texts), dim=-1)
    return [float(v) for v in (txt @ img[0]).cpu()]


def _noise_embedding(perceptor: Any, seed: int) -> Any:
    """Crowson's noise prompt: a standard normal embedding [1, d] from its own seed."""
    import torch

    dim = getattr(perceptor, "embed_dim", None) or embed_texts(perceptor, [""]).shape[-1]
    return torch.empty(1, dim).normal_(generator=torch.Generator().manual_seed(seed))


class Guide:
    """CLIP loss of an image against weighted prompts (module docstring for the details)."""

    def __init__(self, perceptors: Sequence[tuple[Any, float]], cutn: int = 32,
                 cut_pow: float = 1.0, augments: Sequence[str] = DEFAULT_AUGMENTS,
                 generator: Any = None, path: str = "fast", device: Any = "cpu", *,
                 noise_fac: float = 0.1, alternate: bool = False, compile_mode: str = "none",
                 frame_size: tuple[int, int] | None = None, cut_method: str = "random"):
        import torch

        if not perceptors:
            raise ValueError("Guide needs at least one perceptor")
        if path not in PATHS:
            raise ConfigError("path", path, " | ".join(PATHS))
        if generator is None:
            raise ValueError("Guide needs a torch.Generator (CPU) derived from the shot seed")
        self.entries = [(p, float(w)) for p, w in perceptors]
        self.cutouts = [Cutouts(p.image_size, cutn, cut_pow, augments, noise_fac, cut_method)
                        for p, _ in self.entries]
        self.path, self.device, self.alternate = path, torch.device(device), alternate
        self.encode_image = compiled(_encode_image, compile_mode if path == "fast" else "none")
        self.generator = generator
        seed = int(torch.randint(0, 2 ** 62, (), generator=generator))
        gen_device = "cpu" if self.device.type == "meta" else self.device
        self.device_generator = torch.Generator(device=gen_device).manual_seed(seed)
        self._image_seed = (seed + 1) % 2 ** 62  # image-prompt cutouts: a stream of their own
        self._gen_device = gen_device
        self.frame_size = frame_size
        self._stats = [_norm_stats(p, self.device) for p, _ in self.entries]
        self._cache: dict[tuple[int, str, str], Any] = {}
        self._targets: list[list[tuple[str, Any, float, float]]] = [[] for _ in self.entries]
        self._last: Any = None

    # ------------------------------------------------------------------ state
    def rng_state(self) -> dict[str, Any]:
        """Both random states as uint8 CPU tensors."""
        return {"rng_host": self.generator.get_state(),
                "rng_device": self.device_generator.get_state()}

    def set_rng_state(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["rng_host"].cpu())
        self.device_generator.set_state(state["rng_device"].cpu())

    # ---------------------------------------------------------------- prompts
    def _embedding(self, pi: int, kind: str, ident: str, make: Any) -> Any:
        """Cached target embedding; `make(perceptor)` computes it on a miss."""
        key = (pi, kind, ident)
        if key not in self._cache:
            self._cache[key] = make(self.entries[pi][0]).to(self.device)
        return self._cache[key]

    def image_embedding(self, pi: int, src: Any) -> Any:
        """[cutn, d] embeddings of an image prompt's cutouts (module docstring); `src` a path or
        an image tensor [1, 3, H, W] in 0..1."""
        import torch
        import torch.nn.functional as F

        if isinstance(src, str | Path):
            size = image_size_of(src)
            img = load_image(src, area_fit(size, self.frame_size or size))
        else:
            img = src
            h, w = img.shape[-2:]
            fit = area_fit((w, h), self.frame_size or (w, h))
            if fit != (w, h):
                img = F.interpolate(img.float(), (fit[1], fit[0]), mode="bicubic",
                                    antialias=True, align_corners=False).clamp(0, 1)
        generator = torch.Generator().manual_seed(self._image_seed)
        device_generator = torch.Generator(device=self._gen_device).manual_seed(self._image_seed)
        with torch.no_grad():
            cuts = self.cutouts[pi](img.to(self.device, torch.float32), generator,
                                    device_generator)
            return self._encode(pi, cuts).float()

    def prepare(self, texts: Sequence[str] = (), image_prompts: Sequence[tuple] = (),
                noise_prompts: Sequence[tuple[int, float]] = ()) -> None:
        """Embed every target a render will use before its loop starts, so that `set_prompts`
        never copies to the device (a host synchronisation on CUDA) mid-loop."""
        from engines.planning.prompts import Prompt

        for text in dict.fromkeys(texts):
            self._targets_for([Prompt(text)], (), ())
        self._targets_for((), image_prompts, noise_prompts)

    def set_prompts(self, prompts: Sequence[Any], image_prompts: Sequence[tuple] = (),
                    noise_prompts: Sequence[tuple[int, float]] = ()) -> None:
        """Targets: `prompts` (Prompt: text, weight, stop), `image_prompts` ((path or image
        tensor [1,3,H,W], weight, stop)), `noise_prompts` ((seed, weight): a random embedding,
        Crowson's noise prompt)."""
        sig = (tuple(prompts), tuple((p if isinstance(p, str) else id(p), w, s)
                                     for p, w, s in image_prompts), tuple(noise_prompts))
        if sig == self._last:
            return
        self._last = sig
        self._targets = self._targets_for(prompts, image_prompts, noise_prompts)

    def _targets_for(self, prompts: Sequence[Any], image_prompts: Sequence[tuple],
                     noise_prompts: Sequence[tuple[int, float]]) -> list:
        import torch

        out = []
        for pi in range(len(self.entries)):
            targets = []
            for p in prompts:
                emb = self._embedding(pi, "text", p.text,
                                      lambda perc, t=p.text: embed_texts(perc, [t]))
                targets.append((p.text, emb, float(p.weight), float(p.stop)))
            for src, weight, stop in image_prompts:
                ident = str(src) if isinstance(src, str | Path) else f"tensor{id(src)}"
                emb = self._embedding(pi, "image", ident,
                                      lambda _perc, s=src, i=pi: self.image_embedding(i, s))
                targets.append((f"image:{ident}", emb, float(weight), float(stop)))
            for seed, weight in noise_prompts:
                emb = self._embedding(pi, "noise", str(int(seed)),
                                      lambda perc, s=int(seed): _noise_embedding(perc, s))
                targets.append((f"noise:{seed}", emb, float(weight), -math.inf))
            out.append([(k, torch.nn.functional.normalize(e, dim=-1), w, s)
                        for k, e, w, s in targets])
        return out

    # ------------------------------------------------------------------- loss
    def _encode(self, pi: int, batch: Any) -> Any:

        perc = self.entries[pi][0]
        mean, std = self._stats[pi]
        return encode_views(perc.model, (batch - mean) / std, self.path, self.device,
                            self.encode_image)

    def loss(self, image: Any, iteration: int) -> tuple[Any, dict[str, Any]]:
        """(total loss, {prompt key: its weighted share, detached}) for an image [1,3,H,W]."""
        import torch
        import torch.nn.functional as F

        total = image.new_zeros(())
        per: dict[str, Any] = {}
        n = len(self.entries)
        for pi, (_, pweight) in enumerate(self.entries):
            if self.alternate and iteration % n != pi:
                continue
            cuts = self.cutouts[pi](image, self.generator, self.device_generator)
            emb = F.normalize(self._encode(pi, cuts), dim=-1).unsqueeze(1)  # [cutn, 1, d]
            for key, target, weight, stop in self._targets[pi]:
                dists = spherical_dist_loss(emb, target.unsqueeze(0))  # [cutn, targets' rows]
                dists = dists if weight >= 0 else -dists
                if stop != -math.inf:
                    dists = replace_grad(dists, torch.clamp(dists, min=stop))
                term = pweight * abs(weight) * dists.mean()
                total = total + term
                per[key] = per[key] + term.detach() if key in per else term.detach()
        return total, per
