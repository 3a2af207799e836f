"""The render loop every diffusion video engine runs: a shot as chained chunks, each denoised
with durable checkpoints, decoded as its own durable step, cross-faded into the previous one and
committed frame by frame.

The engine's state in the sink (tensors and numbers, engines/frames/base.py):
- `chunk`: the chunk in progress; `step`: denoising steps done in it; `latents`: its latents
  after that step (absent before the first checkpoint); `scheduler`: the scheduler's running
  state; `generator`: the random generator's state;
- `tail`: the previous chunk's last `overlap` frames, not yet committed (they are cross-faded
  with the start of this chunk); `cond`: the image this chunk is conditioned on, if any.
A chunk with a `cond` image runs the model's image pipeline (its `image_pipeline`, built from the
same loaded components), one without runs its text pipeline. The chunk's final latents are what
the pipeline returns (`output_type="latent"`: for Wan 2.2 TI2V, with the image's latent frame
put back), made durable before decoding; the engine's `decode` then does the pipeline's own
post-loop decoding.

What an engine module gives this loop: `call_kwargs(settings, rules, frames, width, height,
prompt, negative, cond, fps)` (the pipeline's arguments for one chunk), `decode(pipe, latents,
settings=, frames=, height=, width=, seed=)` (uint8 frames from final latents, as the
pipeline's own post-loop decoding makes them; `seed` is the chunk's, for decoders that add
noise), and optionally `step_callback(on_step)` (the keyword arguments that
make the pipeline call `on_step(pipe, i, t, {"latents": ...})` after each step: pipelines with
only the legacy `callback`) and `resumable(kwargs) -> bool` (False when a chunk cannot continue
bit for bit from a mid-chunk checkpoint with these arguments: it then starts over).
Every checkpoint, the final latents of a chunk (before decoding: an out-of-memory error in the
VAE never throws away the denoising) and the last committed frame of a chunk carry it whole, so
a kill anywhere resumes from the last durable point and gives the frames an uninterrupted render
gives (see engines/frames/diffusion/resume.py for the schedulers where mid-chunk resume is exact;
for the others a chunk in progress starts over).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from engines.frames.diffusion import chunks as chunking
from engines.frames.diffusion import resume

log = logging.getLogger("promptreel")


def prompt_text(frame: Any) -> tuple[str, str]:
    """(prompt, negative additions) of a frame's weighted prompts: positive texts in order of
    weight, joined with ", "; texts with a negative weight go to the negative prompt."""
    pos = sorted((p for p in frame.prompts if p.weight > 0), key=lambda p: -p.weight)
    neg = [p.text for p in frame.prompts if p.weight < 0]
    return ", ".join(p.text for p in pos), ", ".join(neg)


def chunk_seed(seed: int, index: int) -> int:
    """Each chunk's own seed, derived from the shot's."""
    return (int(seed) * 1_000_003 + 7919 * index) % (2 ** 63)


def render(engine: Any, settings: Any, plan: Any, models: dict[str, tuple], sink: Any,
           device: Any, progress: Any = None) -> None:
    """Render `plan` with diffusion engine module `engine` (its `call_kwargs`, `decode`)."""
    import numpy as np
    import torch

    from engines.frames.diffusion import pipeline as loader

    source = models["diffusers"][0]
    rules = source.rules
    clip = settings.clip_frames or rules.clip_frames
    steps = settings.steps or rules.steps
    plan_chunks = chunking.plan_chunks(plan.n_frames, clip, settings.overlap, rules.frames)
    committed, state = sink.resume()
    if committed >= plan.n_frames:
        return
    state = dict(state or {"chunk": 0, "step": 0})
    image = rules.image_pipeline is not None  # chunks after the first start from an image
    weights = chunking.blend_weights(settings.overlap)
    first = int(state["chunk"])
    for ch in plan_chunks[first:]:
        started = time.perf_counter()
        here = state if int(state["chunk"]) == ch.index else {"chunk": ch.index, "step": 0}
        carry = {k: state[k] for k in ("tail", "cond") if k in state}
        if ch.index == 0 and "cond" not in carry and plan.init_image and image:
            carry["cond"] = _image(plan.init_image, plan.width, plan.height)
        pipe = loader.load(source, settings, device, image="cond" in carry, engine=engine)
        base_scheduler = resume.fresh(pipe.scheduler)
        prompt, negative = prompt_text(plan.frames[ch.start])
        negative = ", ".join(t for t in (settings.negative_prompt, negative) if t)
        kwargs = engine.call_kwargs(settings, rules, ch.length, plan.width, plan.height, prompt,
                                    negative, carry.get("cond"), plan.fps)
        latents = _denoise(engine, pipe, base_scheduler, kwargs, steps, here, carry, ch,
                           settings, sink, plan.seed)
        frames = _decode(engine, pipe, latents, settings, frames=ch.length, height=plan.height,
                         width=plan.width,
                         seed=chunk_seed(plan.seed, ch.index))[: ch.length]  # uint8 (F, H, W, 3)
        if "tail" in carry:  # cross-fade the previous chunk's tail into this chunk's start
            tail = carry["tail"].numpy().astype(np.float32)
            for j, w in enumerate(weights):
                frames[j] = np.rint((1 - w) * tail[j] + w * frames[j].astype(np.float32))
        last = ch.index == len(plan_chunks) - 1
        end = ch.start + (ch.keep if last else ch.length - settings.overlap)
        nxt: dict[str, Any] = {"chunk": torch.tensor(ch.index + 1), "step": torch.tensor(0)}
        if not last and settings.overlap:
            nxt["tail"] = torch.from_numpy(frames[ch.length - settings.overlap:].copy())
        if not last and image:
            # the frame the next chunk starts on (the first of the overlap), or the last one
            nxt["cond"] = torch.from_numpy(frames[ch.length - settings.overlap
                                                  if settings.overlap else ch.length - 1].copy())
        seconds = (time.perf_counter() - started) / max(1, end - ch.start)
        for idx in range(max(committed, ch.start), end):
            record = {"chunk": ch.index, "steps": steps, "seconds": round(seconds, 4),
                      "prompts": prompt}
            sink.commit(idx, np.ascontiguousarray(frames[idx - ch.start]),
                        nxt if idx == end - 1 else None, record)
            if progress is not None:
                progress({"frame": idx, "n_frames": plan.n_frames, **record})
        committed = max(committed, end)
        state = nxt


def _image(path: str, width: int, height: int) -> Any:
    import numpy as np
    import torch
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB").resize((width, height), Image.LANCZOS))
    return torch.from_numpy(arr.copy())


def _denoise(engine: Any, pipe: Any, base_scheduler: Any, kwargs: dict, steps: int,
             here: dict, carry: dict, ch: Any, settings: Any, sink: Any, seed: int) -> Any:
    """The chunk's final latents (what the pipeline returns with `output_type="latent"`):
    denoised from its last checkpoint (or from noise), with a durable checkpoint every
    `checkpoint_every` steps and one of the final latents."""
    import torch

    done = int(here.get("step", 0))
    if done >= steps and "latents" in here:  # whatever the scheduler: the denoising is done
        log.info("chunk %d: denoised before (its final latents are saved): decoding", ch.index)
        return here["latents"]
    exact = (type(base_scheduler).__name__ in resume.MID_CHUNK_EXACT
             and settings.cache == "none"
             and getattr(engine, "resumable", lambda kw: True)(kwargs))
    if done and not exact and not (done >= steps and "latents" in here):
        # this scheduler, cache or conditioning cannot continue bit for bit: start over
        log.info("chunk %d: restarting its denoising (mid-chunk resume is not exact with %s%s)",
                 ch.index, type(base_scheduler).__name__,
                 f" and cache={settings.cache}" if settings.cache != "none" else "")
        done = 0
    log.info("chunk %d: denoising steps %d-%d of %d%s", ch.index, done + 1, steps, steps,
             " (resumed)" if done else "")
    for component in pipe.components.values():  # step caches start empty, as in a new process
        if hasattr(component, "_reset_stateful_cache"):
            component._reset_stateful_cache()
    generator = torch.Generator("cpu").manual_seed(chunk_seed(seed, ch.index))
    latents = None
    if done:
        generator.set_state(here["generator"])
        latents = here["latents"]
        pipe.scheduler = resume.resumed(base_scheduler, done, here.get("scheduler"))
    else:
        pipe.scheduler = resume.fresh(base_scheduler)

    def save(step: int, lat: Any) -> None:
        sink.save_state({**carry, "chunk": torch.tensor(ch.index), "step": torch.tensor(step),
                         "latents": lat.detach().to("cpu").clone(),
                         "scheduler": resume.scheduler_state(pipe.scheduler),
                         "generator": generator.get_state()})

    def on_step(p: Any, i: int, t: Any, tensors: dict) -> dict:
        step = done + i + 1
        if step % settings.checkpoint_every == 0 and step < steps:
            save(step, tensors["latents"])
        return {}

    hook = (engine.step_callback(on_step) if hasattr(engine, "step_callback")
            else {"callback_on_step_end": on_step})
    try:
        out = pipe(**kwargs, num_inference_steps=steps, generator=generator, latents=latents,
                   output_type="latent", return_dict=False, **hook)[0]
    finally:  # the kept pipeline gets a plain scheduler back (the next chunk or shot starts clean)
        pipe.scheduler = resume.fresh(base_scheduler)
    final = out.detach().to("cpu").clone()
    save(steps, final)
    return final


def _decode(engine: Any, pipe: Any, latents: Any, settings: Any, **chunk: Any) -> Any:
    """The chunk's frames (uint8, F x H x W x 3) from its final latents. An out-of-memory error
    in the VAE is retried once with VAE tiling (the latents are already durable)."""
    import torch

    try:
        return engine.decode(pipe, latents, settings=settings, **chunk)
    except torch.cuda.OutOfMemoryError:
        pass  # leave the handler first: its traceback holds the tensors
    if settings.vae_tiling == "off" or not hasattr(pipe.vae, "enable_tiling"):
        raise torch.cuda.OutOfMemoryError("VAE decode ran out of memory and vae_tiling=off")
    log.warning("VAE decode ran out of memory: retrying with VAE tiling")
    torch.cuda.empty_cache()
    pipe.vae.enable_tiling()
    return engine.decode(pipe, latents, settings=settings, **chunk)


def to_frames(pipe: Any, video: Any) -> Any:
    """uint8 frames (F x H x W x 3) of a decoded video tensor (B, C, F, H, W in [-1, 1]), through
    the pipeline's own video processor as its `output_type="np"` would."""
    import numpy as np

    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)
