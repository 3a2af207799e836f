"""Flow-guided video restyling with Stable Diffusion img2img, in the manner of Warp Fusion
(built from the idea and the papers below; nothing of its code): the shot's input video is
redrawn frame by frame as the prompt says, and each restyled frame is carried along the video's
motion into the next, so the style sticks to what moves instead of flickering.

For input frame i (the video extracted at the film's fps, engines/media/video.py):
1. optical flow between input frames i and i-1, both ways, by RAFT (Teed and Deng 2020,
   torchvision's weights, registry kind `flow`); pixels where the two disagree are occluded
   (forward-backward consistency, Sundaram et al. 2010; Ruder et al. 2016 use the same test to
   keep stylised video consistent), engines/frames/sd/flow.py;
2. the previous restyled frame warped along the flow into frame i; where it is occluded, the
   input frame itself; mixed with the input frame by `video_mix`;
3. img2img of that at `strength` with the same seed on every frame (SD 1.5 or SDXL);
4. pixels that are visible in both frames and whose input colour did not change along the flow
   (mean absolute difference under `keep_threshold`) keep the warped restyled value: the result
   there is the previous frame's, moved. So a still video gives a still result, and only what
   changes is redrawn.
Frame 0 is img2img of the first input frame at `first_strength`.

Durable state: the last restyled frame (committed with it); a kill loses at most the frame in
progress.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "flow_restyle"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd", "flow")
MEMORY_UNIT = ("flow_iterations", "RAFT iterations")
PIPES = {"sd15": "StableDiffusionImg2ImgPipeline", "sdxl": "StableDiffusionXLImg2ImgPipeline"}


class Settings(SdSettings):
    """Flow-guided restyling settings (conf/engine/flow_restyle.yaml documents each key)."""

    name: Literal["flow_restyle"] = NAME
    flow_model: str = "raft_large"  # registry entry in conf/flow/ (RAFT weights)
    flow_iterations: int = Field(12, ge=1)  # RAFT's refinement iterations (12 as trained)
    strength: float = Field(0.5, ge=0, le=1)  # img2img strength of frames 1.. (0: carried frame as is)
    first_strength: float = Field(0.75, ge=0, le=1)  # img2img strength of frame 0 (the input frame)
    video_mix: float = Field(0.2, ge=0, le=1)  # share of the input frame mixed into the warped restyled frame
    keep_threshold: float = Field(0.02, ge=0, le=1)  # input change (0..1) under which a visible pixel keeps its restyled value
    seed_behaviour: Literal["fixed", "iter"] = "fixed"  # fixed: one seed for every frame (less flicker); iter: seed + frame


def input_video(settings: Settings) -> str:
    return "required"


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import CONF, entry
    from engines.models.registry import load_entry

    return {"sd": (entry(settings.model, "pipeline", "engine.model"),),
            "flow": (load_entry("flow", settings.flow_model, CONF),)}


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    return {"model": models_["sd"][0]}


def check(settings: Settings, plan: Any, key: str) -> None:
    from engines.frames.sd.models import check_size
    from engines.models.sd import rules_of

    e = models(settings, {})["sd"][0]
    check_size(plan, rules_of(e), e.name)


def unet_frames(settings: Settings) -> int:
    return 1


def _tensor(frame: Any) -> Any:
    import torch

    return torch.from_numpy(frame).permute(2, 0, 1)[None].to(torch.float32) / 255.0


def carry(raft: Any, prev_in: Any, cur_in: Any, prev_out: Any, settings: Settings) -> tuple:
    """(init for img2img, keep mask, warped previous output) for the current frame; all float
    [1, C, H, W]. Inputs are uint8 frames."""
    from engines.frames.sd import flow as of

    a, b, r = _tensor(cur_in), _tensor(prev_in), _tensor(prev_out)
    back = of.flow(raft, a, b, settings.flow_iterations)  # current -> previous
    fwd = of.flow(raft, b, a, settings.flow_iterations)  # previous -> current
    visible = of.consistent(back, fwd)
    warped = of.warp(r, back)
    moved_in = of.warp(b, back)
    unchanged = ((a - moved_in).abs().mean(1, keepdim=True) <= settings.keep_threshold)
    keep = visible * unchanged.to(visible.dtype)
    init = visible * warped + (1 - visible) * a
    init = (1 - settings.video_mix) * init + settings.video_mix * a
    return init.clamp(0, 1), keep, warped


def render(settings: Settings, plan: Any, models_: dict[str, tuple], sink: Any, device: Any,
           progress: Any = None) -> None:
    import torch

    from engines.frames.diffusion import resume
    from engines.frames.diffusion.render import prompt_text
    from engines.frames.sd import inputs, pipes
    from engines.frames.sd.camera import to_uint8

    n = plan.n_frames
    committed, state = sink.resume()
    if committed >= n:
        return
    source, raft = models_["sd"][0], models_["flow"][0]
    rules = source.rules
    steps = settings.steps or rules.steps
    guidance = settings.guidance if settings.guidance is not None else rules.guidance
    pipes.base(source, settings, device)
    pipe = pipes.derive(PIPES[rules.base], settings, device)
    sched = pipes.scheduler(pipe, settings.scheduler)
    video = inputs.load_frames(plan)

    def img2img(x: Any, strength: float, frame: int) -> Any:
        if int(steps * strength) < 1:
            return to_uint8(x)
        prompt, negative = prompt_text(plan.frames[frame])
        negative = ", ".join(t for t in (settings.negative_prompt, negative) if t)
        seed = plan.seed + (frame if settings.seed_behaviour == "iter" else 0)
        pipe.scheduler = resume.fresh(sched)
        out = pipe(prompt=prompt, negative_prompt=negative or None, image=x, strength=strength,
                   guidance_scale=guidance, num_inference_steps=steps,
                   generator=torch.Generator("cpu").manual_seed(seed), output_type="np")
        return to_uint8(out.images[0])

    prev = state["prev"].numpy() if state else None
    for i in range(committed, n):
        started = time.perf_counter()
        if i == 0:
            out = img2img(_tensor(video[0]), settings.first_strength, 0)
            kept = 0.0
        else:
            init, keep, warped = carry(raft, video[i - 1], video[i], prev, settings)
            kept = float(keep.mean())
            if kept == 1.0:  # nothing changed anywhere: the previous frame, moved
                out = to_uint8(warped)
            else:
                new = _tensor(img2img(init, settings.strength, i))
                out = to_uint8(keep * warped + (1 - keep) * new)
        record = {"seconds": round(time.perf_counter() - started, 4), "kept": round(kept, 4),
                  "prompts": prompt_text(plan.frames[i])[0]}
        sink.commit(i, out, {"prev": torch.from_numpy(out)}, record)
        if progress is not None:
            progress({"frame": i, "n_frames": n, **record})
        prev = out


meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
