"""Pixel-level CLIP frame engine: the seed 001 paper ("Towards Real-Time Text2Video via
CLIP-Guided, Pixel-Level Optimization"), written from its text and from the settings its
authors publish in their code (github.com/pschaldenbrand/Text2Video, GPL-3.0: read for its
numbers, none of its code is used here).

The optimised tensor is the frame itself: float RGB, [1, 3, H, W] at exactly the plan's
width x height (any size, any aspect ratio). Frame 0 starts from uniform noise U(0, 1) (or the
plan's init image); frame t > 0 starts from frame t-1 (moved by the FramePlan's camera motion,
engines/planning/motion.py, which is the identity unless the shot has motion) plus noise. Each
frame gets a fresh Adam optimiser.

Two profiles (`Settings.profile`; every setting left `null` takes the profile's value, see
`PROFILES`; a value given overrides it):

| setting | `paper` (the default) | `promptreel` |
|---|---|---|
| `lr` (Adam) | 0.17: the authors' fast mode (0.1 slow) | 0.03 (our choice; the paper's text gives none) |
| `iterations_per_frame` | 10: fast mode (25 slow); the paper's text: "10 iterations a frame" | 10 |
| `first_frame_iterations` | 50 (the authors' wrapper) | `iterations_per_frame` |
| `temperature_scale` | 0.5: fast mode halves the temperature before the mapping below | 1 |
| `noise` | `squish`: next start = previous / squish + N(0, `noise_scale`) | `add`: previous + N(0, `noise_scale` x squish), clamped |
| `noise_scale` | 1.0 (the authors' noise_std) | 0.025 pixel units per unit of squish |
| `views` | `sum`: the text loss (and the stability loss) summed over the augmented views | `mean` over the views |
| `stability_every` | 4: the L1 stability loss on every 4th iteration of a frame | 1 (every iteration) |
| `carry_over_iteration` | 9: the next frame starts from the frame after iteration 9 (of 10) | the last iteration |
| `clamp` | false: pixels are not clamped while optimised (committed frames are clipped to 0..1) | true: clamped to 0..1 after each step |
| `augment` | `perspective_crop`: the authors' torchvision chain, shorter side resized to CLIP's input, random perspective (distortion 0.5, white fill), random resized crop (area 0.7-0.999, aspect 3/4-4/3) | `crop_keystone`: random resized crop (area 0.7-0.999, aspect relative to the frame's), resized, then a random keystone |
| `perspective` | 0.5 (torchvision's distortion_scale) | 0.2 (largest keystone) |
| `frames_per_prompt` cross-fade | over 2F frames per prompt (the authors' code) | over F frames |

The paper's text gives the temperature mapping and the structure (stability loss, noise, linear
prompt cross-fade, 4 augmentations, CycleGAN post-process); the numbers in the `paper` column
(learning rate, 50 first-frame iterations, fast-mode halving, squish noise std 1, summed views,
every 4th iteration, carry-over at 9) are the authors' code's. The film `koala_piano` runs the
paper's two steps: this engine with the `paper` profile, alternating ViT-B/16 and ViT-B/32 (B/16
first, as their iteration 0), then CycleGAN (refine=cyclegan with `input_range: "0..1"`, the
range their inference feeds the generator).

Loss of one iteration (paper Eq. 3 = Eq. 1 + Eq. 2):
- Eq. 1, text: sum over the frame's prompts of w_n * (1 - cos(E(aug_k(frame)), E(prompt_n))),
  summed (`views: sum`) or averaged (`mean`) over the `n_augments` augmentations k (the paper's
  "cosine distance"; the authors' code minimises -cos, the same gradient). The weights w_n come
  from the FramePlan (the planner's `interpolate` transition is the paper's linear cross-fade),
  or, with `frames_per_prompt` set, from `engines.planning.prompts.paper_prompt_weights` (see
  `frame_prompts`). Image prompts of the plan add w * (1 - cos) to the mean embedding of the
  image's own augmented views (the image resized to the frame's area, its aspect kept); `stop`
  is ignored.
- Eq. 2, stability: w_c * mean |frame_t - frame_{t-1}| (mean over pixels and channels, 0..1
  units, so the weight does not depend on the resolution); frame_{t-1} is the previous committed
  frame (moved by the camera). Added on every `stability_every`-th iteration of a frame, once per
  view with `views: sum` (as the authors' code adds it inside its loop over views). Absent for
  frame 0.

Temperature T (0..100, App. A: "controls the weight of the video stability loss and the standard
deviation of the noise added"). With T' = T * temperature_scale: stability weight
w_c = 4 - 4T'/100 and the noise "squish" factor 2 + 4T'/100 (the authors' mapping). `squish`
noise divides the previous frame by the factor and adds N(0, noise_scale): the authors' code.
`add` noise adds N(0, noise_scale * squish) to it (promptreel's earlier reading of App. A:
0.05 at T=0, 0.08 at 30, 0.15 at 100). Golden values: `temperature_mapping`.

Augmentations, resized to the perceptor's input side S: `crop_keystone` (`augment`): for each
of the n augmentations a window of area fraction s ~ U(crop_scale) and aspect r ~ logU(3/4,
4/3) relative to the frame's own aspect (w = W sqrt(s r), h = H sqrt(s / r); a side clipped to
the frame lengthens the other to keep the area) at a uniform position, resized (antialiased
bilinear) to S x S; then a random keystone homography [[1,0,0],[0,1,0],[gx,gy,1]] with gx, gy ~
U(-perspective, perspective) in one batched `kornia` homography warp. `perspective_crop`: the
frame's shorter side resized to S; each view's four corners move inward by U(0, perspective)
of the half side (torchvision's RandomPerspective, always applied, white fill), one batched
homography solved on the device and applied with `grid_sample`; then a window as torchvision's
RandomResizedCrop draws it (area fraction U(crop_scale), aspect logU(3/4, 4/3) absolute, up to
10 tries, else the centre crop) resized to S x S. Window positions come from the CPU generator
(Python numbers, no device round trip), keystones, corners and noise from a device generator
seeded from it; both states are committed with every frame.

Perceptors: with `alternate_perceptors` (the paper's code alternates ViT-B/32 and ViT-B/16)
iteration i uses perceptor i % P only; otherwise the text loss is the mean over all P.
Paths: "fast" encodes the augmentations in one batched call (channels_last and bf16 autocast on
CUDA; `compile` passes the perceptor through `torch.compile`); "reference" encodes them one at a
time in fp32. On CUDA nothing in the iteration loop waits for the GPU: losses are read when a
frame is committed. `auto_fit` lets tasks/generate_frames.py lower `n_augments` (via
engines/frames/memory.py) when the memory estimate does not fit the GPU; `memory_step` runs one
iteration for that estimate.

Resume: each commit saves the frame as float (`prev`), the frame the next one starts from
(`carry`), the iteration count and both generator states; a render resumed at frame k makes
the same frames k, k+1, ... (byte-identical on CPU). Per-frame record: iterations, loss,
loss:text, loss:stability, clip:<text> (cosine similarity of the committed frame to each prompt,
first perceptor), noise_std, stability_weight, seconds, prompts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import Field, field_validator

from engines.core.errors import ConfigError
from engines.frames.base import EngineSettings
from engines.guidance.clip_guide import COMPILE_MODES

NAME = "pixel_clip"
CODE_VERSION = "2"  # bump when the frames for the same settings would change (2: Deforum motion order, profiles with paper the default, image prompts through views)
log = logging.getLogger("promptreel")


MODELS = ("clip",)  # model kinds: the film's clip + extra_clip perceptors
MEMORY_UNIT = ("n_augments", "augmentations")  # what auto_fit lowers, and what advice counts


# The two profiles' values of every setting left null (module docstring has the table).
PROFILES: dict[str, dict[str, Any]] = {
    "paper": {"lr": 0.17, "first_frame_iterations": 50, "temperature_scale": 0.5,
              "noise": "squish", "noise_scale": 1.0, "views": "sum", "stability_every": 4,
              "carry_over_iteration": 9, "clamp": False, "augment": "perspective_crop",
              "perspective": 0.5, "fade": 2},
    "promptreel": {"lr": 0.03, "first_frame_iterations": None, "temperature_scale": 1.0,
                   "noise": "add", "noise_scale": 0.025, "views": "mean", "stability_every": 1,
                   "carry_over_iteration": None, "clamp": True, "augment": "crop_keystone",
                   "perspective": 0.2, "fade": 1},
}


class Settings(EngineSettings):
    """Pixel-level CLIP settings (conf/engine/pixel_clip.yaml documents each key); null = the
    profile's value (PROFILES)."""

    name: Literal["pixel_clip"] = NAME
    profile: Literal["paper", "promptreel"] = "paper"  # the values of every null setting below
    iterations_per_frame: int = Field(10, gt=0)  # optimiser steps per frame (paper's fast mode: 10)
    first_frame_iterations: int | None = Field(None, gt=0)  # steps for frame 0 (paper 50)
    lr: float | None = Field(None, gt=0)  # Adam learning rate, pixel units per step
    temperature: float = Field(30.0, ge=0, le=100)  # 0..100: stability weight and noise (module doc)
    temperature_scale: float | None = Field(None, gt=0, le=1)  # T used = temperature x this
    noise: Literal["squish", "add"] | None = None  # how the previous frame gets its noise
    noise_scale: float | None = Field(None, ge=0)  # squish: noise std; add: std per unit of squish
    views: Literal["sum", "mean"] | None = None  # losses summed or averaged over the views
    stability_every: int | None = Field(None, gt=0)  # stability loss on every N-th iteration
    carry_over_iteration: int | None = Field(None, gt=0)  # next frame starts after this iteration
    clamp: bool | None = None  # clamp pixels to 0..1 after each step
    frames_per_prompt: int | None = Field(None, gt=0)  # paper schedule: frames per prompt; None = the plan's weights
    n_augments: int = Field(4, gt=0)  # augmented views per perceptor per step
    augment: Literal["perspective_crop", "crop_keystone"] | None = None  # the augmentation chain
    crop_scale: tuple[float, float] = (0.7, 0.999)  # area fraction range of the random crop
    perspective: float | None = Field(None, ge=0, lt=1)  # corner distortion / largest keystone
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

    def resolved(self) -> Settings:
        """These settings with every null taken from the profile (first_frame_iterations of
        `promptreel` and its carry-over follow iterations_per_frame)."""
        values = PROFILES[self.profile]
        update = {k: v for k, v in values.items()
                  if k in type(self).model_fields and getattr(self, k) is None}
        if update.get("first_frame_iterations", 0) is None:
            update["first_frame_iterations"] = self.iterations_per_frame
        return self.model_copy(update=update)

    @property
    def fade(self) -> int:
        """frames_per_prompt cross-fade length, in units of frames_per_prompt (paper: 2)."""
        return PROFILES[self.profile]["fade"]


def stability_weight(temperature: float) -> float:
    """w_c of paper Eq. 2: 4 - 4T/100 (4 at T=0, 0 at T=100)."""
    return 4.0 - 4.0 * temperature / 100.0


def noise_squish(temperature: float) -> float:
    """The authors' noise factor: 2 + 4T/100 (2 at T=0, 6 at T=100)."""
    return 2.0 + 4.0 * temperature / 100.0


def noise_std(temperature: float, noise_scale: float = 0.025) -> float:
    """Std (pixel units 0..1) of the Gaussian noise `add` gives the previous frame:
    noise_scale * squish (module docstring)."""
    return noise_scale * noise_squish(temperature)


def temperature_mapping(temperature: float, noise_scale: float = 0.025) -> dict[str, float]:
    """{stability_weight, squish, noise_std} for a temperature in 0..100."""
    if not 0 <= temperature <= 100:
        raise ConfigError("engine.temperature", temperature, "a number from 0 to 100")
    return {"stability_weight": stability_weight(temperature),
            "squish": noise_squish(temperature),
            "noise_std": noise_std(temperature, noise_scale)}


def frame_prompts(plan: Any, frames_per_prompt: int | None, fade: int = 1) -> list[tuple]:
    """Prompts of each frame: the plan's, or with `frames_per_prompt` the paper's schedule over
    the shot's distinct prompt texts in order of first appearance (weights of
    `paper_prompt_weights` with cross-fades of `fade` x frames_per_prompt frames, the planned
    weights' magnitudes ignored; zero weights dropped)."""
    if frames_per_prompt is None:
        return [f.prompts for f in plan.frames]
    from engines.planning.prompts import Prompt, paper_prompt_weights

    texts = list(dict.fromkeys(p.text for f in plan.frames for p in f.prompts if p.weight > 0))
    if not texts:
        return [() for _ in plan.frames]
    out = []
    for i in range(plan.n_frames):
        w = paper_prompt_weights(len(texts), frames_per_prompt, i, fade=fade * frames_per_prompt)
        out.append(tuple(Prompt(t, wi) for t, wi in zip(texts, w, strict=True) if wi > 0))
    return out


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
        s = s.resolved()
        self.s, self.plan, self.perceptors, self.sink = s, plan, list(perceptors), sink
        self.progress, self.device = progress, torch.device(device)
        self.generator = torch.Generator().manual_seed(int(plan.seed))
        seed = int(torch.randint(0, 2 ** 62, (), generator=self.generator))
        self.gen_device = "cpu" if self.device.type == "meta" else self.device  # meta: memory trace
        self.device_generator = torch.Generator(device=self.gen_device).manual_seed(seed)
        self._image_seed = (seed + 1) % 2 ** 62  # image-prompt views: a stream of their own
        self.encode_image = compiled(_encode_image, s.compile if s.path == "fast" else "none")
        self.prompts = frame_prompts(plan, s.frames_per_prompt, s.fade)
        t = s.temperature * s.temperature_scale
        self.w_c = stability_weight(t)
        self.squish = noise_squish(t)
        self.sigma = s.noise_scale if s.noise == "squish" else s.noise_scale * self.squish
        self.iteration, self.tick = 0, time.perf_counter()
        self.carry: Any = None  # the frame the next one starts from (after carry_over_iteration)
        self._embed_targets()

    def views(self, image: Any, pi: int, generator: Any = None,
              device_generator: Any = None) -> Any:
        """The augmented views of `image` for perceptor `pi` (the settings' `augment`)."""
        from engines.guidance import pixel_views

        fn = (pixel_views.perspective_crop if self.s.augment == "perspective_crop"
              else pixel_views.augment)
        return fn(image, self.perceptors[pi].image_size, self.s.n_augments, self.s.crop_scale,
                  self.s.perspective, generator or self.generator,
                  device_generator or self.device_generator)

    def _embed_targets(self) -> None:
        """Unit text embeddings of every target, per perceptor, on device; an image prompt's
        target is the mean unit embedding of its own augmented views (the image resized to the
        frame's area, its aspect kept), from a generator of its own."""
        import torch
        import torch.nn.functional as F

        from engines.guidance.clip_guide import area_fit, embed_texts, image_size_of, load_image

        texts = list(dict.fromkeys(p.text for ps in self.prompts for p in ps))
        self.text_emb, self.image_emb = [], []
        frame = (self.plan.width, self.plan.height)
        for pi, perc in enumerate(self.perceptors):
            emb = F.normalize(embed_texts(perc, texts), dim=-1) if texts else None
            self.text_emb.append({t: emb[i].to(self.device) for i, t in enumerate(texts)})
            targets = []
            for path, weight, _stop in self.plan.image_prompts:
                img = load_image(path, area_fit(image_size_of(path), frame), self.device)
                gen = torch.Generator().manual_seed(self._image_seed)
                dgen = torch.Generator(device=self.gen_device).manual_seed(self._image_seed)
                with torch.no_grad():
                    feats = F.normalize(self._encode(pi, self.views(img, pi, gen, dgen)), dim=-1)
                targets.append((feats.mean(0), float(weight)))
            self.image_emb.append(targets)

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
        from engines.guidance.clip_guide import encode_views

        perc = self.perceptors[pi]
        return encode_views(perc.model, (views - perc.mean) / perc.std, self.s.path, self.device,
                            self.encode_image)

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
            feats = F.normalize(self._encode(pi, self.views(frame, pi)), dim=-1)  # [n_aug, d]
            dist = 1 - feats @ emb.T  # [n_aug, k] cosine distances
            per_view = dist.sum(0) if self.s.views == "sum" else dist.mean(0)
            total = total + (per_view * weights).sum() / len(used)
        return total

    def optimise(self, start: Any, reference: Any | None, targets: list,
                 steps: int) -> tuple[Any, Any, Any]:
        """`steps` Adam iterations from `start` toward `targets` (`frame_targets`); returns
        (frame, text loss, stability loss) and keeps the frame after carry_over_iteration as
        `self.carry` (the start of the next frame). Never synchronises with a CUDA device."""
        import torch

        s = self.s
        frame = start.detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([frame], lr=s.lr)
        text = stable = frame.new_zeros(())
        carry_at = min(s.carry_over_iteration or steps, steps)
        views = s.n_augments if s.views == "sum" else 1
        self.carry = None
        for t in range(steps):
            opt.zero_grad(set_to_none=True)
            text = self.text_loss(frame, targets)
            loss = text
            if reference is not None and self.w_c > 0 and t % s.stability_every == 0:
                stable = (frame - reference).abs().mean() * self.w_c * views
                loss = loss + stable
            if loss.requires_grad:
                loss.backward()
                opt.step()
            if s.clamp:
                with torch.no_grad():
                    frame.clamp_(0.0, 1.0)
            self.iteration += 1
            if t + 1 == carry_at:
                self.carry = frame.detach().clone()
        return frame.detach(), text.detach(), stable.detach()

    def commit(self, frame: Any, index: int, prompts: Sequence[Any], text: Any,
               stable: Any) -> None:
        import torch

        from engines.guidance.clip_guide import clip_similarity

        shown = frame.clamp(0.0, 1.0)
        image = (shown[0] * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        record: dict[str, Any] = {"iterations": self.iteration,
                                  "loss": float(text + stable), "loss:text": float(text),
                                  "loss:stability": float(stable)}
        texts = list(dict.fromkeys(p.text for p in prompts))
        record.update({f"clip:{t}": v for t, v in zip(
            texts, clip_similarity(self.perceptors[0], shown, texts), strict=True)})
        record.update({"noise_std": self.sigma if index else 0.0,
                       "stability_weight": self.w_c if index else 0.0})
        now = time.perf_counter()
        record["seconds"] = round(now - self.tick, 4)
        record["prompts"] = " | ".join(f"{p.text}:{p.weight:g}" for p in prompts)
        self.tick = now
        state = {"prev": frame.cpu().clone(), "iteration": torch.tensor(self.iteration),
                 "rng_host": self.generator.get_state(),
                 "rng_device": self.device_generator.get_state()}
        if self.carry is not None and self.carry is not frame:
            state["carry"] = self.carry.cpu().clone()
        self.sink.commit(index, image, state, record)
        if self.progress is not None:
            self.progress({"frame": index, "n_frames": self.plan.n_frames, **record})

    def restore(self, state: dict[str, Any]) -> Any:
        self.iteration = int(state["iteration"])
        self.generator.set_state(state["rng_host"].cpu())
        self.device_generator.set_state(state["rng_device"].cpu())
        self.carry = state["carry"].to(self.device) if "carry" in state else None
        return state["prev"].to(self.device)

    def first(self) -> Any:
        import torch

        p = self.plan
        if p.init_image:
            from engines.guidance.clip_guide import load_image

            return load_image(p.init_image, (p.width, p.height), self.device)
        return torch.rand(1, 3, p.height, p.width, generator=self.device_generator,
                          device=self.device)

    def next_start(self, prev: Any, fp: Any, carry: Any = None) -> tuple[Any, Any]:
        """(start, stability reference) of a later frame: the carried-over frame (`carry`, else
        `prev`), moved, with noise; the reference is the previous frame `prev`, moved."""
        import torch

        moving = (fp.zoom, fp.angle, fp.translation_x, fp.translation_y) != (1, 0, 0, 0)

        def moved(x: Any) -> Any:
            if not moving:
                return x
            from engines.planning.motion import warp

            return warp(x, fp.zoom, fp.angle, fp.translation_x, fp.translation_y,
                        border=self.plan.border)

        reference = moved(prev)
        base = reference if carry is None or carry is prev else moved(carry)
        noise = torch.randn(base.shape, generator=self.device_generator, device=self.device,
                            dtype=base.dtype)
        if self.s.noise == "squish":
            start = base / self.squish + noise * self.sigma
        else:
            start = base + noise * self.sigma
        return (start.clamp(0.0, 1.0) if self.s.clamp else start), reference


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
    s = run.s
    prev = run.restore(state) if state is not None else None
    with torch.enable_grad():
        for index in range(start, plan.n_frames):
            prompts = run.prompts[index]
            if index == 0:
                init, reference, steps = run.first(), None, s.first_frame_iterations
            else:
                init, reference = run.next_start(prev, plan.frames[index], run.carry)
                steps = s.iterations_per_frame
            targets = run.frame_targets(prompts)
            prev, text, stable = run.optimise(init, reference, targets, steps)
            run.commit(prev, index, prompts, text, stable)
