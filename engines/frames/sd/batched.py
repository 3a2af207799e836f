"""The render loop of the engines that redraw an input video in batches of frames with
cross-frame attention (controlnet, pix2pix): Text2Video-Zero's recipe for consistent frames
(Khachatryan et al. 2023, arXiv:2303.13439, Sect. 3.3-3.4, the ControlNet and Video
Instruct-Pix2Pix variants): every frame starts from the same noise, and in every self-attention
layer each frame attends to the keys and values of the first frame (diffusers'
CrossFrameAttnProcessor2_0). A shot longer than `batch_frames` is made of batches that all repeat
the shot's frame 0 first, as the anchor every frame attends to (its copy is discarded), so
appearance holds across batches.

Each batch is denoised with durable checkpoints (engines/frames/sd/denoise.py) and committed
frame by frame; a kill resumes mid-batch (where the scheduler allows it exactly, else the batch
starts over) or at the next batch.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any


def prompts(settings: Any, plan: Any, idx: list[int]) -> dict[str, Any]:
    """The batch's prompt arguments: each frame's prompt, and its negative prompt after the
    engine's own (`negative_prompt`)."""
    from engines.frames.diffusion.render import prompt_text

    texts = [prompt_text(plan.frames[i]) for i in idx]
    return {"prompt": [p for p, _ in texts],
            "negative_prompt": [", ".join(t for t in (settings.negative_prompt, neg) if t)
                                for _, neg in texts]}


def renderer(module: str) -> Any:
    """`render(settings, plan, models, sink, device, progress)` of batch engine module
    `module` (its name; looked up when called): this module's loop."""
    import sys

    def render_shot(settings: Any, plan: Any, models_: dict[str, tuple], sink: Any,
                    device: Any, progress: Any = None) -> None:
        render(sys.modules[module], settings, plan, models_, sink, device, progress)

    return render_shot

def batches(n: int, size: int) -> list[list[int]]:
    """Frame indices of each batch: [0..size-1], then [0] + the next size-1 frames, ..."""
    out = [list(range(min(size, n)))]
    start = len(out[0])
    while start < n:
        out.append([0, *range(start, min(n, start + size - 1))])
        start = out[-1][-1] + 1
    return out


@contextlib.contextmanager
def cross_frame(unet: Any, rows: int) -> Iterator[None]:
    """Cross-frame attention in `unet` while inside (`rows`: the guidance passes batched
    together: 2 for text guidance, 3 for InstructPix2Pix); its own processors after."""
    from diffusers.pipelines.deprecated.text_to_video_synthesis.pipeline_text_to_video_zero import (
        CrossFrameAttnProcessor2_0,
    )

    saved = unet.attn_processors
    unet.set_attn_processor(CrossFrameAttnProcessor2_0(batch_size=rows))
    try:
        yield
    finally:
        unet.set_attn_processor(saved)


def decode(pipe: Any, latents: Any) -> Any:
    """uint8 frames (B x H x W x 3) from SD latents."""
    import numpy as np
    import torch

    vae = pipe.vae
    dtype = vae.dtype
    if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
        vae.to(torch.float32)
        dtype = torch.float32
    with torch.no_grad():
        images = [vae.decode(latents[i:i + 1].to(vae.device, dtype) / vae.config.scaling_factor,
                             return_dict=False)[0] for i in range(latents.shape[0])]
    out = pipe.image_processor.postprocess(torch.cat(images), output_type="np")
    return np.clip(np.rint(np.asarray(out, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def render(engine: Any, settings: Any, plan: Any, models_: dict[str, tuple], sink: Any,
           device: Any, progress: Any = None) -> None:
    """Render `plan` with batch engine module `engine` (its `pipeline`, `call_kwargs`, `ROWS`)."""
    import numpy as np
    import torch

    from engines.frames.diffusion import resume
    from engines.frames.sd import inputs
    from engines.frames.sd.denoise import denoise, seed_of

    n = plan.n_frames
    committed, state = sink.resume()
    if committed >= n:
        return
    pipe, rules = engine.pipeline(settings, plan, models_, device)
    steps = settings.steps or rules.steps
    sched = resume.fresh(pipe.scheduler)
    video = inputs.load_frames(plan)
    if hasattr(engine, "input_maps"):  # controlnet: each frame's conditioning map
        video = engine.input_maps(settings, models_, video)
    groups = batches(n, settings.batch_frames)
    state = dict(state or {"chunk": 0, "step": 0})
    g = torch.Generator("cpu").manual_seed(seed_of(plan.seed, 0))
    noise = torch.randn((1, 4, plan.height // 8, plan.width // 8), generator=g)
    for b in range(int(state["chunk"]), len(groups)):
        idx = groups[b]
        started = time.perf_counter()
        here = state if int(state["chunk"]) == b else {"chunk": b, "step": 0}
        kwargs = engine.call_kwargs(settings, plan, idx, rules, [video[i] for i in idx])
        with cross_frame(pipe.unet, engine.ROWS):
            latents = denoise(pipe, sched, kwargs, steps, here, {}, sink, plan.seed,
                              settings.checkpoint_every,
                              initial=noise.repeat(len(idx), 1, 1, 1).to(pipe.unet.dtype))
        frames = decode(pipe, latents)
        keep = [(j, i) for j, i in enumerate(idx) if not (b and i == 0)]
        seconds = (time.perf_counter() - started) / max(1, len(keep))
        for k, (j, i) in enumerate(keep):
            if i < committed:
                continue
            last = k == len(keep) - 1
            record = {"batch": b, "steps": steps, "seconds": round(seconds, 4),
                      "prompts": kwargs["prompt"][j] if isinstance(kwargs["prompt"], list)
                      else kwargs["prompt"]}
            nxt = {"chunk": torch.tensor(b + 1), "step": torch.tensor(0)} if last else None
            sink.commit(i, np.ascontiguousarray(frames[j]), nxt, record)
            if progress is not None:
                progress({"frame": i, "n_frames": n, **record})
        committed = max(committed, idx[-1] + 1)
        state = {"chunk": b + 1, "step": 0}
