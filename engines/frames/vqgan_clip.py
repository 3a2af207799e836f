"""VQGAN-CLIP frame engine: the seed paper's (000_*) method, plus 2D animation.

A VQGAN latent z is optimised so that CLIP (one or more perceptors, `engines.guidance.clip_guide.Guide`)
finds the decoded image close to the prompts. Each iteration: z is snapped to its nearest
codebook entries with a straight-through estimator (`z_q = z + (quantise(z) - z).detach()`; a
GumbelVQ model's codebook `quantize.embed` is used the same way), decoded, mapped from -1..1 to
0..1 and clamped with a straight-through clamp, scored by the Guide, and z takes one optimiser
step, then is clamped to the codebook's per-channel range (Crowson's notebook).

Modes (`Settings.mode`):
- `evolve` (the paper's): one image evolves from the start latent under one optimiser for the
  whole shot; frame i is the image after (i + 1) * images_interval iterations (so frame 0 is
  after the first interval, not the start noise). The prompts of FramePlan i are in force during
  the iterations that lead to frame i. Camera motion in the plan is ignored (logged).
- `animate_2d`: frame 0 is optimised from the start latent (`first_frame_steps` iterations);
  every later frame warps the previous frame's image (`engines.planning.motion.warp`: the FramePlan's
  zoom, angle, translation), re-encodes it to a latent and optimises `steps_per_frame`
  iterations from there with a fresh optimiser.

Start latent: random codebook entries (one-hot of uniformly drawn codes, the Crowson way, from
the shot seed) or the encoded `plan.init_image` (stretched to the frame with a Lanczos resize;
a GumbelVQ init is encoded with the argmax code, not a Gumbel sample, so it is deterministic).

Sizes: the model works on multiples of its downsampling factor (16 for f16, 8 for f8). The
internal canvas is plan.width x plan.height (times `canvas_scale`) rounded UP to that factor;
every committed frame is resized back to exactly plan.width x plan.height with an antialiased
bilinear resize (a 640x360 shot is optimised at 640x368). Translations are given in output pixels and scaled to the canvas.

init_weight (`init_mode`): "anchor" (default, Crowson's original): + init_weight/2 *
mse(z, z_start), z_start = the start latent (evolve) or this frame's warped latent (animate_2d);
"zero" (nerdyrodent's): + init_weight/2 * mse(z, 0) / (2 i + 1) at iteration i (its decay kept
for compatibility); "decay": the anchor term with weight falling linearly from init_weight at the
first iteration of the shot to 0 at the last.

Story phrases (a prompt line "a | b ^ c", FramePlan.story): with `story_every` N, iteration i
uses phrase i // N (then holds the last, or with `story_after_last: loop` starts over, as
nerdyrodent's -cpe). Cutouts (`cut_method`, `augments`): engines.guidance.clip_guide, Crowson's
random cutouts or the notebook's pooled ones, promptreel's augmentation names or nerdyrodent's
codes. Image prompts are embedded through the same cutouts of the image (clip_guide).
`max_iterations: -1` makes the shot open-ended (tasks/stop.py): it renders until the user stops
it; every frame depends only on the plan and the frames before it (`depends_on_length`), which
is also what lets a longer render of a shot go on from a shorter one.

Colour coherence: the first frame's LAB mean/std is kept; every later frame is matched to it
(`engines.planning.motion.match_colour`) before it is committed and, in animate_2d, before it is warped
into the next frame.

Resume: each commit saves exactly what continues the shot (evolve: z, z_start, optimiser state;
animate_2d: the previous frame's float image; both: iteration count, both RNG states, colour
reference). A render resumed at frame k produces the same frames k, k+1, ... as an uninterrupted
run (byte-identical on CPU). On CUDA the iteration loop never waits for the GPU: losses are
read (synchronised) only when a frame is committed.

Speed and memory (`Settings.path`, measured in docs/benchmarks.md): the fast path decodes in
channels_last memory format (4-15% faster on the project's CPU; cuDNN's NHWC kernels on CUDA)
and, on CUDA, under bf16 autocast (the codebook snap stays fp32, so the codes do not depend on
it); the perceptor side is clip_guide's fast path. `compile` passes the decoder and the
perceptor through `torch.compile`. `decoder_checkpointing` recomputes each decoder block's
activations in the backward pass instead of keeping them: the same values, one more decoder
forward (+17% FLOPs per iteration at 640x360 with 32 cutouts) for about a third of the memory
(6.2 -> 1.9 GB at 640x360, 21 -> 7.1 GB at 1280x720, fp32): the option for large frames. `canvas_scale` < 1 optimises a smaller canvas and resizes
each frame up to the plan size. `auto_fit` lets tasks/generate_frames.py lower these (via
engines/frames/memory.py) when the estimate does not fit the GPU. The reference path is the classic
notebooks': contiguous fp32, eager, cutouts encoded one at a time.

Per-frame record: iterations (total so far), loss (total of the last iteration), `loss:<key>`
(each prompt's signed weighted share, keys as in clip_guide), `clip:<text>` (cosine similarity
of the committed frame to each text prompt, first perceptor), seconds (wall time of the frame),
prompts (the prompt line in force).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator

from engines.core.errors import ConfigError
from engines.frames.base import EngineSettings
from engines.guidance.clip_guide import COMPILE_MODES
from engines.guidance.cutouts import AUGMENTS, CUT_METHODS, DEFAULT_AUGMENTS, NERDY_AUGMENTS
from engines.guidance.vq_latent import VQ, prepare_model

NAME = "vqgan_clip"
CODE_VERSION = "3"  # bump when the frames for the same settings would change (2: channels_last; 3: Deforum motion order, story phrases, image prompts through cutouts)
log = logging.getLogger("promptreel")


MODELS = ("vqgan", "clip")  # model kinds: the film's vqgan, its clip + extra_clip perceptors
MEMORY_UNIT = ("cutn", "cutouts")  # what auto_fit lowers, and what the memory advice counts
MIN_CUTN = 8  # auto_fit never lowers cutn below this (fewer: a noisy loss)


class Settings(EngineSettings):
    """VQGAN-CLIP settings (conf/engine/vqgan_clip.yaml documents each key)."""

    name: Literal["vqgan_clip"] = NAME
    mode: Literal["evolve", "animate_2d"] = "evolve"  # see the module docstring
    images_interval: int = Field(50, gt=0)  # evolve: iterations between frames
    steps_per_frame: int = Field(10, gt=0)  # animate_2d: iterations per frame after the first
    first_frame_steps: int | None = Field(None, gt=0)  # animate_2d: iterations of frame 0; null = steps_per_frame
    lr: float = Field(0.1, gt=0)  # optimiser learning rate, latent units per step
    optimiser: Literal["adam", "adamw", "sgd"] = "adam"  # sgd: momentum 0.9 (needs a larger lr)
    cutn: int = Field(32, gt=0)  # cutouts per perceptor per iteration
    cut_pow: float = Field(1.0, gt=0)  # cutout size exponent (>1: smaller cutouts)
    cut_method: Literal[CUT_METHODS] = "random"  # random crops (Crowson) or pooled whole image (notebook)
    augments: tuple[Literal[AUGMENTS + NERDY_AUGMENTS], ...] = DEFAULT_AUGMENTS  # cutout augmentations
    init_weight: float = Field(0.0, ge=0)  # weight of the latent regulariser (0 = off)
    init_mode: Literal["anchor", "zero", "decay"] = "anchor"  # what init_weight pulls toward
    noise_prompts: tuple[str, ...] = ()  # "seed[:weight]" random-embedding prompts
    story_every: int | None = Field(None, gt=0)  # iterations per story phrase ("a ^ b"); null = off
    story_after_last: Literal["hold", "loop"] = "hold"  # after the last phrase: hold it, or start over
    colour_coherence: bool = False  # match every frame's colour statistics to frame 0
    path: Literal["fast", "reference"] = "fast"  # perceptor path (clip_guide docstring)
    clip_weights: tuple[float, ...] = ()  # one weight per perceptor; () = 1/n each
    decoder_checkpointing: bool = False  # recompute decoder activations in backward (less memory)
    compile: Literal[COMPILE_MODES] = "none"  # torch.compile mode of decoder and perceptor
    canvas_scale: float = Field(1.0, gt=0, le=1)  # internal canvas / output size (frames resized up)
    auto_fit: bool = False  # on CUDA, lower the above (engines/frames/memory.py) when it would not fit
    max_iterations: int | None = None  # null: the shot's length; -1: open-ended (until Ctrl-C / make stop)

    @field_validator("max_iterations")
    @classmethod
    def _max_iterations(cls, v: int | None) -> int | None:
        if v is not None and v != -1:
            raise ValueError("null (the shot's frames or seconds set its length) or -1 (render "
                             "until stopped); for N iterations give the shot N / images_interval "
                             "frames (evolve)")
        return v

    @field_validator("augments")
    @classmethod
    def _augments(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(n in AUGMENTS for n in v) and any(n in NERDY_AUGMENTS for n in v):
            raise ValueError("promptreel's names or nerdyrodent's codes, not both (nerdyrodent's "
                             "apply in the order given, promptreel's as one warp)")
        return v

    @field_validator("noise_prompts")
    @classmethod
    def _noise(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for item in v:
            parse_noise_prompt(item)
        return v

    def noise_prompt_pairs(self) -> tuple[tuple[int, float], ...]:
        """(seed, weight) of each noise prompt."""
        return tuple(parse_noise_prompt(item) for item in self.noise_prompts)


def parse_noise_prompt(item: str) -> tuple[int, float]:
    """'seed[:weight]' -> (seed, weight); ValueError saying the accepted form."""
    parts = str(item).split(":")
    try:
        if len(parts) > 2:
            raise ValueError
        seed = int(parts[0])
        weight = float(parts[1]) if len(parts) == 2 else 1.0
        if seed < 0 or not math.isfinite(weight):
            raise ValueError
    except ValueError:
        raise ValueError(f"{item!r} is not 'seed[:weight]' (seed a whole number >= 0, "
                         "weight a decimal number), e.g. '7:0.5'") from None
    return seed, weight


def _optimiser(name: str, z: Any, lr: float) -> Any:
    import torch

    if name == "adam":
        return torch.optim.Adam([z], lr=lr)
    if name == "adamw":
        return torch.optim.AdamW([z], lr=lr)
    return torch.optim.SGD([z], lr=lr, momentum=0.9)


def _opt_state(opt: Any, z: Any) -> dict[str, Any]:
    return {f"opt.{k}": v.detach().cpu().clone() for k, v in opt.state[z].items()}


def _load_opt_state(opt: Any, z: Any, state: dict[str, Any]) -> None:
    opt.state[z] = {k[4:]: (v.clone() if k == "opt.step" else v.to(z.device))
                    for k, v in state.items() if k.startswith("opt.")}


def _active_prompts(frame: Any, iteration: int, every: int | None, loop: bool = False) -> tuple:
    """The frame's prompts at this iteration: with story phrases (`frame.story`, from a line
    `"a | b ^ c"`) and `every` set, the phrase story_index picks; else `frame.prompts`."""
    if every is None or not frame.story:
        return frame.prompts
    from engines.planning.prompts import story_index

    return frame.story[story_index(iteration, every, len(frame.story), loop=loop)]


def _all_texts(plan: Any) -> list[str]:
    """Every text the shot's prompts can resolve to (story phrases included), once each."""
    texts: dict[str, None] = {}
    for frame in plan.frames:
        for phrase in (frame.story or (frame.prompts,)):
            texts.update(dict.fromkeys(p.text for p in phrase))
    return list(texts)


def canvas(width: int, height: int, factor: int, scale: float = 1.0) -> tuple[int, int]:
    """(width, height) of the internal canvas: the output size times `scale`, rounded up to
    multiples of the model's downsampling factor."""
    return (-(-round(width * scale) // factor) * factor,
            -(-round(height * scale) // factor) * factor)


# --------------------------------------------------------------------- rendering
class _Run:
    """One shot's render: shared pieces of both modes."""

    def __init__(self, s: Settings, plan: Any, vqgan: Any, perceptors: list, sink: Any,
                 device: str, progress: Callable[[dict], None] | None):
        import torch

        from engines.guidance.clip_guide import Guide

        if not perceptors:
            raise ConfigError("clip", "[]", "at least one CLIP perceptor")
        weights = s.clip_weights or (1.0 / len(perceptors),) * len(perceptors)
        if len(weights) != len(perceptors):
            raise ConfigError("engine.clip_weights", list(s.clip_weights),
                              f"one weight per perceptor ({len(perceptors)}) or [] for equal")
        self.s, self.plan, self.sink, self.progress = s, plan, sink, progress
        self.device = torch.device(device)
        self.vq = VQ(prepare_model(vqgan, s), fast=s.path == "fast",
                     checkpointing=s.decoder_checkpointing, compile_mode=s.compile)
        self.cw, self.ch = canvas(plan.width, plan.height, self.vq.factor, s.canvas_scale)
        self.perceptor = perceptors[0]
        self.generator = torch.Generator().manual_seed(int(plan.seed))
        self.guide = Guide(list(zip(perceptors, weights, strict=True)), s.cutn, s.cut_pow,
                           s.augments, self.generator, s.path, self.device,
                           compile_mode=s.compile, frame_size=(self.cw, self.ch),
                           cut_method=s.cut_method)
        self.noise = s.noise_prompt_pairs()
        self.guide.prepare(_all_texts(plan), plan.image_prompts, self.noise)
        steps = (s.first_frame_steps or s.steps_per_frame) + (plan.n_frames - 1) * s.steps_per_frame
        self.total_iters = plan.n_frames * s.images_interval if s.mode == "evolve" else steps
        self.iteration, self.colour_ref, self.last = 0, None, None
        self.tick = time.perf_counter()

    def start_latent(self) -> Any:
        if self.plan.init_image:
            from engines.guidance.clip_guide import load_image

            img = load_image(self.plan.init_image, (self.cw, self.ch), self.device)
            return self.vq.encode(img)
        return self.vq.random(self.ch, self.cw, self.generator, self.device)

    def step(self, z: Any, opt: Any, frame: Any, anchor: Any) -> None:
        """One iteration toward the prompts of `frame` (a FramePlan); the losses stay on the
        device until `commit` reads them."""
        import torch
        import torch.nn.functional as F

        s, it = self.s, self.iteration
        active = _active_prompts(frame, it, s.story_every, s.story_after_last == "loop")
        self.guide.set_prompts(active, self.plan.image_prompts, self.noise)
        opt.zero_grad(set_to_none=True)
        loss, per = self.guide.loss(self.vq.synth(z), it)
        if s.init_weight:
            if s.init_mode == "zero":
                reg = F.mse_loss(z, torch.zeros_like(z)) * (s.init_weight / 2 / (2 * it + 1))
            else:
                w = s.init_weight / 2
                if s.init_mode == "decay":
                    w *= 1 - it / max(1, self.total_iters - 1)
                reg = F.mse_loss(z, anchor) * w
            per = {**per, "init": reg.detach()}
            loss = loss + reg
        if loss.requires_grad:  # False for a frame with no prompts at all: nothing to optimise
            loss.backward()
            opt.step()
        with torch.no_grad():
            z.copy_(torch.maximum(torch.minimum(z, self.vq.zmax), self.vq.zmin))
        self.iteration += 1
        self.last = (loss.detach(), per, active)

    def colour(self, image: Any) -> Any:
        """Colour coherence on the internal canvas: frame 0 sets the reference, later frames
        are matched to it."""
        from engines.planning import motion

        if not self.s.colour_coherence:
            return image
        if self.colour_ref is None:
            self.colour_ref = motion.colour_stats(image)
            return image
        return motion.match_colour(image, self.colour_ref)

    def commit(self, image: Any, index: int, state: dict[str, Any]) -> None:
        """Resize to the plan size, score, commit the frame with `state` plus the shared state."""
        import torch
        import torch.nn.functional as F

        from engines.guidance.clip_guide import clip_similarity

        out = image
        if (self.ch, self.cw) != (self.plan.height, self.plan.width):
            out = F.interpolate(image, (self.plan.height, self.plan.width), mode="bilinear",
                                antialias=True, align_corners=False)
        frame = (out[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        loss, per, active = self.last
        record: dict[str, Any] = {"iterations": self.iteration, "loss": float(loss)}
        record.update({f"loss:{k}": float(v) for k, v in per.items()})
        texts = list(dict.fromkeys(p.text for p in active))
        record.update({f"clip:{t}": v for t, v in
                       zip(texts, clip_similarity(self.perceptor, out, texts), strict=True)})
        now = time.perf_counter()
        record["seconds"] = round(now - self.tick, 4)
        record["prompts"] = " | ".join(f"{p.text}:{p.weight:g}" for p in active)
        self.tick = now
        state = {**state, "iteration": torch.tensor(self.iteration), **self.guide.rng_state()}
        if self.colour_ref is not None:
            state["colour_ref"] = self.colour_ref.detach().cpu()
        self.sink.commit(index, frame, state, record)
        if self.progress is not None:
            self.progress({"frame": index, "n_frames": self.plan.n_frames, **record})

    def restore(self, state: dict[str, Any]) -> None:
        self.iteration = int(state["iteration"])
        self.guide.set_rng_state(state)
        if "colour_ref" in state:
            self.colour_ref = state["colour_ref"].to(self.device)


def _evolve(run: _Run, start: int, state: dict[str, Any] | None) -> None:
    import torch

    s, plan = run.s, run.plan
    if any((f.zoom, f.angle, f.translation_x, f.translation_y) != (1, 0, 0, 0)
           for f in plan.frames):
        log.warning("%s: mode evolve ignores camera motion; use mode animate_2d", plan.name)
    if state is None:
        anchor = run.start_latent()
        z = anchor.clone().requires_grad_(True)
        opt = _optimiser(s.optimiser, z, s.lr)
    else:
        run.restore(state)
        anchor = state["anchor"].to(run.device)
        z = state["z"].to(run.device).requires_grad_(True)
        opt = _optimiser(s.optimiser, z, s.lr)
        _load_opt_state(opt, z, state)
    for index in range(start, plan.n_frames):
        for _ in range(s.images_interval):
            run.step(z, opt, plan.frames[index], anchor)
        with torch.no_grad():
            image = run.colour(run.vq.synth(z))
        run.commit(image, index, {"z": z.detach().cpu().clone(),
                                  "anchor": anchor.detach().cpu().clone(), **_opt_state(opt, z)})


def _animate(run: _Run, start: int, state: dict[str, Any] | None) -> None:
    import torch

    from engines.planning.motion import warp

    s, plan = run.s, run.plan
    prev = None
    if state is not None:
        run.restore(state)
        prev = state["prev"].to(run.device)
    for index in range(start, plan.n_frames):
        fp = plan.frames[index]
        if index == 0:
            anchor, steps = run.start_latent(), s.first_frame_steps or s.steps_per_frame
        else:
            moved = warp(prev, fp.zoom, fp.angle, fp.translation_x * run.cw / plan.width,
                         fp.translation_y * run.ch / plan.height, border=plan.border)
            anchor, steps = run.vq.encode(moved), s.steps_per_frame
        z = anchor.clone().requires_grad_(True)
        opt = _optimiser(s.optimiser, z, s.lr)
        for _ in range(steps):
            run.step(z, opt, fp, anchor)
        with torch.no_grad():
            prev = run.colour(run.vq.synth(z))
        run.commit(prev, index, {"prev": prev.detach().cpu().clone()})


def depends_on_length(settings: Settings) -> str | None:
    """Why a frame depends on more than the plan up to it and the frames before it (then a
    longer render of the shot cannot go on from a shorter one), or None."""
    if settings.init_weight and settings.init_mode == "decay":
        return "init_mode decay spreads init_weight over the whole shot"
    return None


def check(settings: Settings, plan: Any, key: str) -> None:
    """Rules checked when the config is read: an open-ended shot has no known length."""
    if settings.max_iterations == -1 and settings.init_weight and settings.init_mode == "decay":
        raise ConfigError("engine.init_mode", "decay", "anchor or zero with max_iterations -1",
                          f"{key} is open-ended; decay spreads init_weight over the shot's "
                          "length, which an open-ended shot does not have")


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    """The film's VQGAN and its CLIP perceptors (clip, then extra_clip)."""
    return {"vqgan": film_models["vqgan"], "clip": film_models["clip"]}


# ------------------------------------------------------------------------- memory
def meta_models(models: dict[str, tuple], settings: Settings, device: Any) -> tuple:
    """Meta copies for engines/frames/memory.py: ({"vqgan": ..., "clip": [...]}, weight bytes,
    bytes of the bf16 copies autocast keeps on the CUDA fast path)."""
    import torch

    from engines.frames.memory import meta_clone, meta_perceptors, nbytes

    bf16 = torch.device(device).type == "cuda" and settings.path == "fast"
    perceptors, weights, cast = meta_perceptors(list(models["clip"]), bf16)
    vqgan = models["vqgan"][0]
    meta = prepare_model(meta_clone(vqgan), settings)  # not part of an iteration
    if bf16:
        meta.decoder.to(torch.bfloat16)
        meta.post_quant_conv.to(torch.bfloat16)
        cast += (nbytes(vqgan.decoder) + nbytes(vqgan.post_quant_conv)) // 2
    return {"vqgan": meta, "clip": perceptors}, weights + nbytes(vqgan), cast


def memory_step(settings: Settings, width: int, height: int, meta: dict, device: Any) -> None:
    """One iteration of a one-frame shot of width x height (start latent, optimiser, loss,
    backward, step), nothing committed: engines/frames/memory.py runs it on meta copies of the
    models to measure an iteration's memory."""
    import torch

    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    plan = ShotPlan("memory", width, height, 1.0, 0, (FramePlan((Prompt("memory"),)),))
    run = _Run(settings, plan, meta["vqgan"], meta["clip"], None, device, None)
    with torch.enable_grad():
        anchor = run.start_latent()
        z = anchor.clone().requires_grad_(True)
        opt = _optimiser(settings.optimiser, z, settings.lr)
        run.step(z, opt, plan.frames[0], anchor)


def fit(tracer: Any, settings: Settings, width: int, height: int,
        free: int) -> tuple[Settings, list[str]]:
    """auto_fit: decoder_checkpointing; then the most cutouts (not below MIN_CUTN) that fit, if
    any do; else the largest canvas_scale that fits (at large sizes the checkpointed decoder's
    recomputation sets the peak, and fewer cutouts would not help)."""
    from engines.frames.memory import _largest, fits, largest_count

    s, changes = settings, []

    def ok(candidate: Settings) -> bool:
        return fits(tracer.working(candidate, width, height), free)

    if not s.decoder_checkpointing:
        s = s.model_copy(update={"decoder_checkpointing": True})
        changes.append("decoder_checkpointing=true")
    if not ok(s) and s.cutn > MIN_CUTN:  # fewer cutouts, if that alone makes it fit
        n = largest_count(tracer, s, width, height, free, lowest=MIN_CUTN)
        if n is not None:
            s = s.model_copy(update={"cutn": n})
            changes.append(f"cutn={n}")
    if not ok(s):  # a smaller canvas (with checkpointing the decoder sets the peak)
        units = round(width * s.canvas_scale) // 16
        u = _largest(1, units - 1, lambda k: ok(s.model_copy(
            update={"canvas_scale": k * 16 / width})))
        if u is not None:
            s = s.model_copy(update={"canvas_scale": u * 16 / width})
            changes.append(f"canvas_scale={s.canvas_scale:.3f}")
    return s, changes


def memory_tips(tracer: Any, settings: Settings, width: int, height: int, free: int) -> list[str]:
    """Advice beyond size and cutouts: decoder checkpointing, when it is off."""
    from engines.frames.memory import GIB, fits

    if settings.decoder_checkpointing:
        return []
    need = tracer.working(settings.model_copy(update={"decoder_checkpointing": True}),
                          width, height)
    return [f"engine.decoder_checkpointing=true needs about {need / GIB:.1f} GiB"
            f" ({'fits' if fits(need, free) else 'still too much'})"]


# ------------------------------------------------------------------------- render
def render(settings: Settings, plan: Any, models: dict[str, tuple], sink: Any, device: Any,
           progress: Callable[[dict], None] | None = None) -> None:
    """Render `plan` (an engines.planning.plan.ShotPlan) into `sink`, resuming where it left off.

    models: {"vqgan": (a taming VQModel or GumbelVQ in eval mode,), "clip": (Perceptor, ...)}
    (the first perceptor also scores the frames); progress: called after each commit with the
    frame's record plus frame and n_frames.
    """
    import torch

    start, state = sink.resume()
    if start >= plan.n_frames:
        return
    run = _Run(settings, plan, models["vqgan"][0], list(models["clip"]), sink, device, progress)
    with torch.enable_grad():
        (_evolve if settings.mode == "evolve" else _animate)(run, start, state)
