"""Pixel-level CLIP frame engine: the seed 001 paper ("Towards Real-Time Text2Video via
CLIP-Guided, Pixel-Level Optimization"), written from its text.

The optimised tensor is the frame itself: float RGB in 0..1, [1, 3, H, W] at exactly the plan's
width x height (any size, any aspect ratio). Frame 0 starts from uniform noise U(0, 1) (or the
plan's init image); frame t > 0 starts from frame t-1 (moved by the FramePlan's camera motion,
which is the identity unless the shot has motion) plus Gaussian noise. Each frame gets a fresh
Adam optimiser and `iterations_per_frame` steps; after each step the pixels are clamped to 0..1.
The paper names neither optimiser nor learning rate: Adam at lr 0.03 is our choice (not tuned
against real CLIP weights, which cannot be fetched here).

Loss of one iteration (paper Eq. 3 = Eq. 1 + Eq. 2):
- Eq. 1, text: sum over the frame's prompts of w_n * (1 - cos(E(aug_k(frame)), E(prompt_n))),
  averaged over the `n_augments` augmentations k (the paper's "cosine distance"; Eq. 1 prints
  cos, but it is minimised, so it must be the distance). The weights w_n come from the
  FramePlan (the planner's `interpolate` transition is the paper's linear cross-fade), or, with
  `frames_per_prompt` set, from `engines.planning.prompts.paper_prompt_weights` (see `frame_prompts`).
  Image prompts of the plan add w * (1 - cos) to the embedding of that image. `stop` is ignored.
- Eq. 2, stability: w_c * mean |frame_t - frame_{t-1}| (mean over pixels and channels, 0..1
  units, so the weight does not depend on the resolution); frame_{t-1} is the moved previous
  frame the iteration started from. Absent for frame 0.

Temperature T (0..100, App. A: "controls the weight of the video stability loss and the standard
deviation of the noise added"). REFERENCE.md records the authors' hand-written mapping:
stability weight w_c = 4 - 4T/100 and a noise "squish" factor 2 + 4T/100. The paper says only
that T sets the noise's standard deviation and that high T makes the scene change completely, so
the noise must grow with T. Our reading: the noise std is proportional to the squish factor,
sigma = noise_scale * (2 + 4T/100), with noise_scale (default 0.025) in pixel units (0..1) per
unit of squish. Hence sigma = 0.05 at T=0, 0.08 at T=30 (default), 0.15 at T=100: a 3x range, the
same 2 -> 6 ratio as the squish factor. Golden values: `temperature_mapping`.

Augmentations (paper: perspective + random resized crop 0.7-0.999, 4 per step, resized to the
perceptor's input): for each of the n augmentations a window of area fraction s ~ U(crop_scale)
and aspect r ~ logU(3/4, 4/3) relative to the frame's own aspect (w = W sqrt(s r), h =
H sqrt(s / r); a side clipped to the frame lengthens the other to keep the area) at a uniform
position, resized (antialiased bilinear, so every pixel gets gradient) to S x S (S = the
perceptor's input side; a wide frame is squeezed, as "cropped and resized" in App. B); then a
random keystone homography [[1,0,0],[0,1,0],[gx,gy,1]] with gx, gy ~ U(-perspective,
perspective), applied in one batched `kornia` homography warp (destination-to-source, so no
matrix inverse). Window positions come from the CPU generator
(Python numbers, no device round trip), keystones and noise from a device generator seeded from
it; both states are committed with every frame.

Perceptors: with `alternate_perceptors` (the paper's code alternates ViT-B/32 and ViT-B/16)
iteration i uses perceptor i % P only; otherwise the text loss is the mean over all P.
Paths: "fast" encodes the augmentations in one batched call (channels_last and bf16 autocast on
CUDA; `compile` passes the perceptor through `torch.compile`); "reference" encodes them one at a
time in fp32. On CUDA nothing in the iteration loop waits for the GPU: losses are read when a
frame is committed. `auto_fit` lets tasks/generate_frames.py lower `n_augments` (via
engines/frames/memory.py) when the memory estimate does not fit the GPU; `memory_step` runs one iteration for
that estimate.

Resume: each commit saves the frame as float (`prev`), the iteration count and both generator
states; a render resumed at frame k makes the same frames k, k+1, ... (byte-identical on CPU).
Per-frame record: iterations, loss, loss:text, loss:stability, clip:<text> (cosine similarity of
the committed frame to each prompt, first perceptor), noise_std, stability_weight, seconds,
prompts.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from engines.core.errors import ConfigError
from engines.frames.base import EngineSettings
from engines.guidance.clip_guide import COMPILE_MODES

NAME = "pixel_clip"
CODE_VERSION = "2"  # bump when the frames for the same settings would change (2: Deforum motion order)
log = logging.getLogger("promptreel")


MODELS = ("clip",)  # model kinds: the film's clip + extra_clip perceptors
MEMORY_UNIT = ("n_augments", "augmentations")  # what auto_fit lowers, and what advice counts


class Settings(EngineSettings):
    """Pixel-level CLIP settings (conf/engine/pixel_clip.yaml documents each key)."""

    name: Literal["pixel_clip"] = NAME
    iterations_per_frame: int = Field(10, gt=0)  # optimiser steps per frame (paper's fast mode: 10)
    first_frame_iterations: int | None = Field(None, gt=0)  # steps for frame 0; None = iterations_per_frame
    lr: float = Field(0.03, gt=0)  # Adam learning rate, pixel units (0..1) per step
    temperature: float = Field(30.0, ge=0, le=100)  # 0..100: stability weight and noise (module doc)
    noise_scale: float = Field(0.025, ge=0)  # noise std per unit of squish, pixel units (0..1)
    frames_per_prompt: int | None = Field(None, gt=0)  # paper schedule: frames per prompt; None = the plan's weights
    n_augments: int = Field(4, gt=0)  # augmented views per perceptor per step
    crop_scale: tuple[float, float] = (0.7, 0.999)  # area fraction range of the random crop
    perspective: float = Field(0.2, ge=0, lt=1)  # max keystone of the perspective warp (normalised)
    alternate_perceptors: bool = True  # iteration i uses perceptor i % P (the paper's code)
    path: Literal["fast", "reference"] = "fast"  # perceptor path (module doc)
    compile: Literal[COMPILE_MODES] = "none"  # torch.compile mode of the perceptor (fast path)
    auto_fit: bool = False  # on CUDA, fewer augmentations (engines/frames/memory.py) when it would not fit

    @field_validator("crop_scale")
    @classmethod
    def _scale(cls, v: tuple[float, float]) -> tuple[float, float]:
        lo, hi = v
        if not 0 < lo <= hi <= 1:
            raise ValueError("two area fractions [low, high] with 0 < low <= high <= 1")
        return v


def stability_weight(temperature: float) -> float:
    """w_c of paper Eq. 2: 4 - 4T/100 (4 at T=0, 0 at T=100)."""
    return 4.0 - 4.0 * temperature / 100.0


def noise_squish(temperature: float) -> float:
    """The authors' noise factor: 2 + 4T/100 (2 at T=0, 6 at T=100)."""
    return 2.0 + 4.0 * temperature / 100.0


def noise_std(temperature: float, noise_scale: float = 0.025) -> float:
    """Std (pixel units 0..1) of the Gaussian noise added to the previous frame: our reading,
    noise_scale * squish (module docstring)."""
    return noise_scale * noise_squish(temperature)


def temperature_mapping(temperature: float, noise_scale: float = 0.025) -> dict[str, float]:
    """{stability_weight, squish, noise_std} for a temperature in 0..100."""
    if not 0 <= temperature <= 100:
        raise ConfigError("engine.temperature", temperature, "a number from 0 to 100")
    return {"stability_weight": stability_weight(temperature),
            "squish": noise_squish(temperature),
            "noise_std": noise_std(temperature, noise_scale)}


def frame_prompts(plan: Any, frames_per_prompt: int | None) -> list[tuple]:
    """Prompts of each frame: the plan's, or with `frames_per_prompt` the paper's schedule over
    the shot's distinct prompt texts in order of first appearance (weights of
    `paper_prompt_weights`, the planned weights' magnitudes ignored; zero weights dropped)."""
    if frames_per_prompt is None:
        return [f.prompts for f in plan.frames]
    from engines.planning.prompts import Prompt, paper_prompt_weights

    texts = list(dict.fromkeys(p.text for f in plan.frames for p in f.prompts if p.weight > 0))
    if not texts:
        return [() for _ in plan.frames]
    out = []
    for i in range(plan.n_frames):
        w = paper_prompt_weights(len(texts), frames_per_prompt, i)
        out.append(tuple(Prompt(t, wi) for t, wi in zip(texts, w, strict=True) if wi > 0))
    return out


# ------------------------------------------------------------------------ augmentation
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
    """n augmented views [n, 3, size, size] of `image` [1, 3, H, W] (module docstring)."""
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


# --------------------------------------------------------------------------- rendering
def _encode_image(model: Any, x: Any) -> Any:
    return model.encode_image(x)


class _Run:
    def __init__(self, s: Settings, plan: Any, perceptors: list, sink: Any, device: Any,
                 progress: Callable[[dict], None] | None):
        import torch

        from engines.guidance.clip_guide import compiled

        if not perceptors:
            raise ConfigError("clip", "[]", "at least one CLIP perceptor")
        self.s, self.plan, self.perceptors, self.sink = s, plan, list(perceptors), sink
        self.progress, self.device = progress, torch.device(device)
        self.generator = torch.Generator().manual_seed(int(plan.seed))
        seed = int(torch.randint(0, 2 ** 62, (), generator=self.generator))
        gen_device = "cpu" if self.device.type == "meta" else self.device  # meta: memory trace
        self.device_generator = torch.Generator(device=gen_device).manual_seed(seed)
        self.encode_image = compiled(_encode_image, s.compile if s.path == "fast" else "none")
        self.prompts = frame_prompts(plan, s.frames_per_prompt)
        self.w_c = stability_weight(s.temperature)
        self.sigma = noise_std(s.temperature, s.noise_scale)
        self.iteration, self.tick = 0, time.perf_counter()
        self._embed_targets()

    def _embed_targets(self) -> None:
        """Unit text (and image-prompt) embeddings of every target, per perceptor, on device."""
        import torch.nn.functional as F

        from engines.guidance.clip_guide import embed_images, embed_texts, load_image

        texts = list(dict.fromkeys(p.text for ps in self.prompts for p in ps))
        self.text_emb, self.image_emb = [], []
        for perc in self.perceptors:
            emb = F.normalize(embed_texts(perc, texts), dim=-1) if texts else None
            self.text_emb.append({t: emb[i].to(self.device) for i, t in enumerate(texts)})
            self.image_emb.append([
                (F.normalize(embed_images(perc, load_image(path)), dim=-1)[0].to(self.device),
                 float(weight)) for path, weight, _stop in self.plan.image_prompts])

    def frame_targets(self, prompts: Sequence[Any]) -> list[tuple[Any, Any] | None]:
        """Per perceptor: (targets [k, d], weights [k]) of the frame, or None (no targets).
        Built once per frame, so the iteration loop copies nothing to the device."""
        import torch

        out = []
        for pi in range(len(self.perceptors)):
            pairs = [(self.text_emb[pi][p.text], float(p.weight)) for p in prompts if p.weight]
            pairs += [(e, w) for e, w in self.image_emb[pi] if w]
            if not pairs:
                out.append(None)
                continue
            out.append((torch.stack([e for e, _ in pairs]),
                        torch.tensor([w for _, w in pairs], device=self.device)))
        return out

    def _encode(self, pi: int, views: Any) -> Any:
        import torch

        from engines.guidance.clip_guide import autocast, param_dtype

        perc = self.perceptors[pi]
        x = (views - perc.mean) / perc.std
        if self.s.path == "reference":
            with autocast(self.device, False):
                return torch.cat([perc.model.encode_image(x[i:i + 1]).float()
                                  for i in range(x.shape[0])])
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        elif self.device.type == "meta":  # a memory trace: bf16 weights stand in for autocast
            x = x.to(param_dtype(perc.model))
        with autocast(self.device, True):
            return self.encode_image(perc.model, x).float()

    def text_loss(self, frame: Any, targets: list) -> Any:
        """Paper Eq. 1 for this iteration's perceptor(s); a 0-dim tensor (0 with no targets)."""
        import torch.nn.functional as F

        n = len(self.perceptors)
        used = [self.iteration % n] if self.s.alternate_perceptors else list(range(n))
        total = frame.new_zeros(())
        for pi in used:
            if targets[pi] is None:
                continue
            emb, weights = targets[pi]
            views = augment(frame, self.perceptors[pi].image_size, self.s.n_augments,
                            self.s.crop_scale, self.s.perspective, self.generator,
                            self.device_generator)
            feats = F.normalize(self._encode(pi, views), dim=-1)  # [n_aug, d]
            dist = 1 - feats @ emb.T  # [n_aug, k] cosine distances
            total = total + (dist.mean(0) * weights).sum() / len(used)
        return total

    def optimise(self, start: Any, reference: Any | None, targets: list,
                 steps: int) -> tuple[Any, Any, Any]:
        """`steps` Adam iterations from `start` toward `targets` (`frame_targets`); returns
        (frame, text loss, stability loss). Never synchronises with a CUDA device."""
        import torch

        frame = start.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([frame], lr=self.s.lr)
        text = stable = frame.new_zeros(())
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            text = self.text_loss(frame, targets)
            loss = text
            if reference is not None and self.w_c > 0:
                stable = (frame - reference).abs().mean() * self.w_c
                loss = loss + stable
            if loss.requires_grad:
                loss.backward()
                opt.step()
            with torch.no_grad():
                frame.clamp_(0.0, 1.0)
            self.iteration += 1
        return frame.detach(), text.detach(), stable.detach()

    def commit(self, frame: Any, index: int, prompts: Sequence[Any], text: Any,
               stable: Any) -> None:
        import torch

        from engines.guidance.clip_guide import clip_similarity

        image = (frame[0] * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        record: dict[str, Any] = {"iterations": self.iteration,
                                  "loss": float(text + stable), "loss:text": float(text),
                                  "loss:stability": float(stable)}
        texts = list(dict.fromkeys(p.text for p in prompts))
        record.update({f"clip:{t}": v for t, v in zip(
            texts, clip_similarity(self.perceptors[0], frame, texts), strict=True)})
        record.update({"noise_std": self.sigma if index else 0.0,
                       "stability_weight": self.w_c if index else 0.0})
        now = time.perf_counter()
        record["seconds"] = round(now - self.tick, 4)
        record["prompts"] = " | ".join(f"{p.text}:{p.weight:g}" for p in prompts)
        self.tick = now
        state = {"prev": frame.cpu().clone(), "iteration": torch.tensor(self.iteration),
                 "rng_host": self.generator.get_state(),
                 "rng_device": self.device_generator.get_state()}
        self.sink.commit(index, image, state, record)
        if self.progress is not None:
            self.progress({"frame": index, "n_frames": self.plan.n_frames, **record})

    def restore(self, state: dict[str, Any]) -> Any:
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["rng_host"].cpu())
        self.device_generator.set_state(state["rng_device"].cpu())
        return state["prev"].to(self.device)

    def first(self) -> Any:
        import torch

        p = self.plan
        if p.init_image:
            from engines.guidance.clip_guide import load_image

            return load_image(p.init_image, (p.width, p.height), self.device)
        return torch.rand(1, 3, p.height, p.width, generator=self.device_generator,
                          device=self.device)

    def next_start(self, prev: Any, fp: Any) -> tuple[Any, Any]:
        """(start, stability reference) of a later frame: moved previous frame plus noise."""
        import torch

        base = prev
        if (fp.zoom, fp.angle, fp.translation_x, fp.translation_y) != (1, 0, 0, 0):
            from engines.planning.motion import warp

            base = warp(prev, fp.zoom, fp.angle, fp.translation_x, fp.translation_y,
                        border=self.plan.border)
        noise = torch.randn(base.shape, generator=self.device_generator, device=self.device,
                            dtype=base.dtype)
        return (base + noise * self.sigma).clamp(0.0, 1.0), base


def depends_on_length(settings: Settings) -> str | None:
    """Why a frame depends on more than the plan up to it and the frames before it, or None."""
    if settings.frames_per_prompt is not None:
        return "frames_per_prompt spreads the shot's prompt texts over its whole length"
    return None


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    """The film's CLIP perceptors (clip, then extra_clip)."""
    return {"clip": film_models["clip"]}


def meta_models(models: dict[str, tuple], settings: Settings, device: Any) -> tuple:
    """Meta copies of the perceptors for engines/frames/memory.py (bf16 on the CUDA fast path)."""
    import torch

    from engines.frames.memory import meta_perceptors

    bf16 = torch.device(device).type == "cuda" and settings.path == "fast"
    perceptors, weights, cast = meta_perceptors(list(models["clip"]), bf16)
    return {"clip": perceptors}, weights, cast


def memory_step(settings: Settings, width: int, height: int, meta: dict, device: Any) -> None:
    """One iteration of a later frame (start frame, stability reference, loss, backward, Adam
    step; one per perceptor when they alternate) at width x height, nothing committed:
    engines/frames/memory.py runs it on meta copies of the perceptors."""
    import torch

    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    perceptors = meta["clip"]
    plan = ShotPlan("memory", width, height, 1.0, 0, (FramePlan((Prompt("memory"),)),) * 2)
    run = _Run(settings, plan, perceptors, None, device, None)
    with torch.enable_grad():
        start, reference = run.next_start(run.first(), plan.frames[1])
        steps = len(perceptors) if settings.alternate_perceptors else 1  # each perceptor once
        run.optimise(start, reference, run.frame_targets(plan.frames[1].prompts), steps)


def render(settings: Settings, plan: Any, models: dict[str, tuple], sink: Any, device: Any,
           progress: Callable[[dict], None] | None = None) -> None:
    """Render `plan` (engines.planning.plan.ShotPlan) into `sink`, resuming where it left off.

    models: {"clip": (Perceptor, ...)} (engines/models/clip.py; the first also scores the
    frames); progress: called after each commit with the frame's record plus frame and n_frames.
    """
    import torch

    perceptors = list(models["clip"])
    start, state = sink.resume()
    if start >= plan.n_frames:
        return
    run = _Run(settings, plan, perceptors, sink, device, progress)
    prev = run.restore(state) if state is not None else None
    first_steps = settings.first_frame_iterations or settings.iterations_per_frame
    with torch.enable_grad():
        for index in range(start, plan.n_frames):
            prompts = run.prompts[index]
            if index == 0:
                init, reference, steps = run.first(), None, first_steps
            else:
                init, reference = run.next_start(prev, plan.frames[index])
                steps = settings.iterations_per_frame
            targets = run.frame_targets(prompts)
            prev, text, stable = run.optimise(init, reference, targets, steps)
            run.commit(prev, index, prompts, text, stable)
