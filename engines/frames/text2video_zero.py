"""Text2Video-Zero (Khachatryan et al. 2023, arXiv:2303.13439): text to video with a plain
Stable Diffusion 1.5 checkpoint and no training, through diffusers' TextToVideoZeroPipeline. The
first frame's latent is denoised to step t0 of the schedule (counted from the end, as diffusers'
`t0`, `t1`), copied to every frame and moved there by a motion field (dx, dy), re-noised to t1,
and all frames are denoised together with cross-frame attention to the first frame.

The motion field is the shot's camera translation: frame k's latent is moved by the sum of the
shot's `motion.translation_x/y` over frames 1..k (pixels, the same sign as the deforum engine's
warp: positive x moves the picture right). diffusers' pipeline takes one strength per axis times
the frame index (a constant speed); here its motion field function is replaced, while a batch
runs, by one that reads each frame's offset from the schedule (`motion_field` below).
Zoom and angle are not used (the paper's motion field is a translation).

A shot longer than `batch_frames` is made in batches that all start again from the same seed and
repeat frame 0 (the chunked inference of diffusers' Text2Video-Zero guide), so every batch shares
the first frame's appearance. The pipeline runs its whole schedule in one call: a kill redoes the
batch it stopped in (the same seed gives the same frames); committed frames are kept.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field

from engines.core.errors import ConfigError
from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "text2video_zero"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd",)
MEMORY_UNIT = ("batch_frames", "frames per batch")
PIPE = "TextToVideoZeroPipeline"
FIELD = 512  # diffusers builds the motion field on a 512x512 grid, in units of that grid


class Settings(SdSettings):
    """Text2Video-Zero settings (conf/engine/text2video_zero.yaml documents each key)."""

    name: Literal["text2video_zero"] = NAME
    t0: int | None = Field(None, ge=0)  # steps from the end where the first latent is moved; null = 88 % of steps (paper: 44 of 50)
    t1: int | None = Field(None, ge=1)  # steps from the end the moved latents are re-noised to; null = 94 % (paper: 47 of 50)
    batch_frames: int = Field(8, ge=2)  # frames denoised together (frame 0 repeats in every batch)


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import entry

    return {"sd": (entry(settings.model, "pipeline", "engine.model", "sd15"),)}


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    return {"model": models_["sd"][0]}


def steps_of(settings: Settings, rules: Any) -> int:
    return settings.steps or rules.steps


def ts_of(settings: Settings, steps: int) -> tuple[int, int]:
    """(t0, t1): as set, else the paper's 44 and 47 of 50 steps scaled to `steps`."""
    t1 = settings.t1 if settings.t1 is not None else min(steps - 1, round(0.94 * steps))
    t0 = settings.t0 if settings.t0 is not None else max(0, min(t1 - 1, round(0.88 * steps)))
    return t0, t1


def check(settings: Settings, plan: Any, key: str) -> None:
    from engines.frames.diffusion.render import prompt_text
    from engines.frames.sd.models import check_size
    from engines.models.sd import rules_of

    e = models(settings, {})["sd"][0]
    rules = rules_of(e)
    check_size(plan, rules, e.name)
    steps = steps_of(settings, rules)
    t0, t1 = ts_of(settings, steps)
    if not t0 < t1 < steps:
        raise ConfigError("engine.t1", t1, f"a value with t0 < t1 < steps (t0 {t0}, "
                          f"steps {steps})", "both count steps from the end of the schedule")
    texts = {prompt_text(f) for f in plan.frames}
    if len(texts) > 1:
        raise ConfigError(f"{key}.prompts", sorted(texts)[0], "one prompt for the whole shot",
                          "Text2Video-Zero draws every frame from one text; use a shot per prompt")


def unet_frames(settings: Settings) -> int:
    return settings.batch_frames


def motion_field(plan: Any) -> list[tuple[float, float]]:
    """Each frame's offset in diffusers' motion-field units: minus the summed translation since
    frame 0 (the field says where each pixel is sampled from), scaled to the 512 grid."""
    dx = dy = 0.0
    out = [(0.0, 0.0)]
    for f in plan.frames[1:]:
        dx += f.translation_x
        dy += f.translation_y
        out.append((-dx * FIELD / plan.width, -dy * FIELD / plan.height))
    return out


@contextlib.contextmanager
def schedule_motion(offsets: list[tuple[float, float]]) -> Iterator[None]:
    """diffusers' create_motion_field, while inside, gives frame i the offset `offsets[i]`."""
    import torch
    from diffusers.pipelines.deprecated.text_to_video_synthesis import (
        pipeline_text_to_video_zero as t2vz,
    )

    def create_motion_field(motion_field_strength_x: float, motion_field_strength_y: float,
                            frame_ids: list[int], device: Any, dtype: Any) -> Any:
        flow = torch.zeros((len(frame_ids), 2, FIELD, FIELD), device=device, dtype=dtype)
        for i, frame in enumerate(frame_ids):
            flow[i, 0], flow[i, 1] = offsets[frame]
        return flow

    saved = t2vz.create_motion_field
    t2vz.create_motion_field = create_motion_field
    try:
        yield
    finally:
        t2vz.create_motion_field = saved


def pipeline(settings: Settings, plan: Any, models_: dict[str, tuple], device: Any) -> tuple:
    from engines.frames.sd import pipes

    model = models_["sd"][0]
    pipes.base(model, settings, device)
    pipe = pipes.derive(PIPE, settings, device)
    # DDIM as the paper (deterministic steps: the same seed redoes a batch exactly)
    pipe.scheduler = pipes.scheduler(pipe, settings.scheduler, "DDIMScheduler")
    return pipe, model.rules


def render(settings: Settings, plan: Any, models_: dict[str, tuple], sink: Any, device: Any,
           progress: Any = None) -> None:
    import numpy as np
    import torch

    from engines.frames.diffusion.render import prompt_text
    from engines.frames.sd.batched import batches
    from engines.frames.sd.denoise import seed_of

    n = plan.n_frames
    committed, _ = sink.resume()
    if committed >= n:
        return
    pipe, rules = pipeline(settings, plan, models_, device)
    steps = steps_of(settings, rules)
    t0, t1 = ts_of(settings, steps)
    prompt, neg = prompt_text(plan.frames[0])
    negative = ", ".join(t for t in (settings.negative_prompt, neg) if t)
    offsets = motion_field(plan)
    for b, idx in enumerate(batches(n, settings.batch_frames)):
        if idx[-1] < committed:
            continue
        started = time.perf_counter()
        generator = torch.Generator("cpu").manual_seed(seed_of(plan.seed, 0))
        with schedule_motion(offsets), torch.no_grad():
            out = pipe(prompt=prompt, negative_prompt=negative or None, video_length=len(idx),
                       frame_ids=idx, height=plan.height, width=plan.width,
                       num_inference_steps=steps, t0=t0, t1=t1,
                       guidance_scale=settings.guidance if settings.guidance is not None
                       else rules.guidance, generator=generator, output_type="np").images
        frames = np.clip(np.rint(np.asarray(out, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
        keep = [(j, i) for j, i in enumerate(idx) if not (b and i == 0) and i >= committed]
        seconds = round((time.perf_counter() - started) / max(1, len(keep)), 4)
        for j, i in keep:
            record = {"batch": b, "steps": steps, "seconds": seconds, "offset": offsets[i]}
            sink.commit(i, np.ascontiguousarray(frames[j]), {"next": torch.tensor(i + 1)}, record)
            if progress is not None:
                progress({"frame": i, "n_frames": n, **record})
        committed = max(committed, idx[-1] + 1)


meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
