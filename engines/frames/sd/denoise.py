"""Resumable denoising of a batch of frames through an unpatched diffusers pipeline (AnimateDiff
and its ControlNet and video-to-video variants, StableDiffusion ControlNet): a
`callback_on_step_end` stores the latents after step k every `checkpoint_every` steps with the
scheduler's running state and the generator's state (`sink.save_state`); on resume the pipeline is
called with `latents=` and a copy of the scheduler whose schedule starts after k steps
(engines/frames/diffusion/resume.py). Bit-exact on the CPU for DDIM, Euler, PNDM, DPM++ and UniPC.
An img2img-style pipeline (`strength` < 1) skips the first steps of its schedule itself; the
resumed scheduler drops the steps already done on top of those, so the two compose.
"""

from __future__ import annotations

import logging
from typing import Any

from engines.frames.diffusion import resume

log = logging.getLogger("promptreel")


def seed_of(seed: int, index: int) -> int:
    """Each batch's own seed, derived from the shot's."""
    return (int(seed) * 1_000_003 + 7919 * index) % (2 ** 63)


def denoise(pipe: Any, base_scheduler: Any, kwargs: dict, steps: int, here: dict, carry: dict,
            sink: Any, seed: int, checkpoint_every: int, scale_supplied: bool = True,
            initial: Any = None) -> Any:
    """The batch's final latents (CPU), denoised from its last checkpoint in `here` (keys
    chunk, step, latents, scheduler, generator) or from the start. `carry`: what else every
    checkpoint must hold (the engine's state between batches). `scale_supplied`: the pipeline
    multiplies supplied latents by the scheduler's init_noise_sigma (text-to-image pipelines
    do; video-to-video ones do not). `initial`: the starting noise (unscaled), when the engine
    draws it itself (e.g. the same noise for every frame); None: the pipeline draws it."""
    import torch

    index = int(here.get("chunk", 0))
    done = int(here.get("step", 0))
    if done and "latents" in here and bool(here.get("final", False)):
        return here["latents"]
    if done and type(base_scheduler).__name__ not in resume.MID_CHUNK_EXACT:
        log.info("batch %d: restarting its denoising (mid-batch resume is not exact with %s)",
                 index, type(base_scheduler).__name__)
        done = 0
    generator = torch.Generator("cpu").manual_seed(seed_of(seed, index))
    latents = initial
    if done:
        generator.set_state(here["generator"])
        latents = here["latents"]
        pipe.scheduler = resume.resumed(base_scheduler, done, here.get("scheduler"))
        sigma = float(getattr(pipe.scheduler, "init_noise_sigma", 1.0))
        if sigma != 1.0 and scale_supplied:  # undo the pipeline's scaling of supplied latents
            latents = latents / sigma
    else:
        pipe.scheduler = resume.fresh(base_scheduler)
    final: dict[str, Any] = {}

    def save(step: int, lat: Any, last: bool) -> None:
        sink.save_state({**carry, "chunk": torch.tensor(index), "step": torch.tensor(step),
                         "final": torch.tensor(last), "latents": lat.detach().to("cpu").clone(),
                         "scheduler": resume.scheduler_state(pipe.scheduler),
                         "generator": generator.get_state()})

    def on_step(p: Any, i: int, t: Any, tensors: dict) -> dict:
        step = done + i + 1
        total = getattr(p, "_num_timesteps", None) or len(p.scheduler.timesteps)
        last = i == total - 1
        if last:
            final["latents"] = tensors["latents"]
        if step % checkpoint_every == 0 or last:
            save(step, tensors["latents"], last)
        return {}

    pipe(**kwargs, num_inference_steps=steps, generator=generator, latents=latents,
         output_type="latent", callback_on_step_end=on_step)
    return final["latents"].detach().to("cpu").clone()
