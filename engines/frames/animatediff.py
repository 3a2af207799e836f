"""AnimateDiff (Guo et al. 2023, arXiv:2307.04725): a motion module (MotionAdapter) inserted
into a Stable Diffusion 1.5 checkpoint turns it into a text-to-video model, through diffusers'
AnimateDiff pipelines:

- text to video: `AnimateDiffPipeline`;
- with a control video (the shot's `input_video`, `input_use: control`):
  `AnimateDiffControlNetPipeline`, following maps made from each frame (`control: canny`, OpenCV)
  or the frames themselves (`control: maps`, e.g. OpenPose skeletons the user drew);
- with a video to restyle (`input_use: restyle`): `AnimateDiffVideoToVideoPipeline` at
  `strength`.

Prompt keyframes become prompt travel: the text embeddings of the keyframes are interpolated
frame by frame (diffusers' FreeNoise prompt interpolation). The motion module was trained on 16
frames; a longer shot (or one with prompt travel) is denoised with FreeNoise (Qiu et al. 2023,
arXiv:2310.15169): overlapping context windows of `context_frames` frames every
`context_stride` frames, noise re-used across windows. MotionLoRAs (camera zoom, pan) listed in
`motion_loras` are fused into the motion module at `motion_lora_scale`.

The whole shot is one generation: its latents are checkpointed every `checkpoint_every`
denoising steps (engines/frames/sd/denoise.py) and kept when denoising ends, so a kill
anywhere resumes to the frames an uninterrupted render gives.
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import Field

from engines.core.errors import ConfigError
from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "animatediff"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd",)
MEMORY_UNIT = ("context_frames", "frames per motion window")


class Settings(SdSettings):
    """AnimateDiff settings (conf/engine/animatediff.yaml documents each key)."""

    name: Literal["animatediff"] = NAME
    motion_adapter: str = "animatediff_v1_5_2"  # registry entry in conf/sd/ (a motion adapter)
    motion_loras: tuple[str, ...] = ()  # MotionLoRAs in conf/sd/ to fuse (motion_lora_zoom_in, ...)
    motion_lora_scale: float = 1.0  # weight of the fused MotionLoRAs
    context_frames: int = Field(16, ge=2)  # FreeNoise window, frames (the motion module's 16)
    context_stride: int = Field(4, ge=1)  # FreeNoise: frames between window starts
    input_use: Literal["control", "restyle"] = "control"  # what the shot's input_video is for
    controlnet: str | None = None  # input_use control: registry entry in conf/sd/ (a ControlNet)
    control: Literal["canny", "maps"] = "maps"  # control maps: canny edges of the video, or its frames as they are
    canny_low: int = Field(100, ge=0, le=255)  # control canny: lower hysteresis threshold
    canny_high: int = Field(200, ge=0, le=255)  # control canny: upper hysteresis threshold
    controlnet_scale: float = Field(1.0, ge=0)  # how strongly the maps steer
    strength: float = Field(0.6, ge=0, le=1)  # input_use restyle: how much of the video is redrawn
    checkpoint_every: int = Field(5, gt=0)  # denoising steps between durable checkpoints


def input_video(settings: Settings) -> str:
    return "optional"


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import base_of, entry

    model = entry(settings.model, "pipeline", "engine.model")
    base = base_of(model)
    adapter = entry(settings.motion_adapter, "motion_adapter", "engine.motion_adapter", base)
    out = [model, adapter]
    out += [entry(n, "motion_lora", f"engine.motion_loras.{i}", base)
            for i, n in enumerate(settings.motion_loras)]
    if settings.controlnet is not None:
        out.append(entry(settings.controlnet, "controlnet", "engine.controlnet", base))
    return {"sd": tuple(out)}


def check(settings: Settings, plan: Any, key: str) -> None:
    from engines.frames.sd.models import check_size
    from engines.models.sd import rules_of

    wanted = models(settings, {})["sd"]
    if rules_of(wanted[0]).base != "sd15":
        raise ConfigError("engine.model", settings.model, "an SD 1.5 checkpoint (sd15)",
                          "the AnimateDiff pipelines run SD 1.5 motion modules")
    check_size(plan, rules_of(wanted[0]), wanted[0].name)
    if not plan.input_video or settings.input_use != "control":
        return
    if settings.controlnet is None:
        raise ConfigError("engine.controlnet", None, "a ControlNet of conf/sd/ to follow the "
                          "input video with (e.g. controlnet_sd15_openpose)",
                          "input_use: control needs one; input_use: restyle needs none")
    cn = rules_of(wanted[-1])
    if settings.control == "canny" and cn.control != "canny":
        raise ConfigError("engine.controlnet", settings.controlnet,
                          "a Canny ControlNet with control: canny",
                          f"{settings.controlnet} follows {cn.control} maps")


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    loaded = models_["sd"]
    out = {"model": loaded[0], "motion_adapter": loaded[1]}
    return {**out, "controlnet": loaded[-1]} if settings.controlnet else out


def unet_frames(settings: Settings) -> int:
    return settings.context_frames


def prompt_schedule(plan: Any) -> tuple[dict[int, str] | str, str]:
    """(the prompt: one text, or {frame: text} at every frame where it changes; negative
    additions of frame 0)."""
    from engines.frames.diffusion.render import prompt_text

    texts = [prompt_text(f) for f in plan.frames]
    keys = {0: texts[0][0]}
    for i in range(1, len(texts)):
        if texts[i][0] != texts[i - 1][0]:
            keys[i] = texts[i][0]
    return (keys if len(keys) > 1 else texts[0][0]), texts[0][1]


def _pipeline(settings: Settings, plan: Any, loaded: dict[str, Any], device: Any) -> tuple:
    """(pipeline, kind) for the shot: t2v, control or restyle."""
    from engines.frames.sd import pipes
    from engines.models.sd import LORA_FILE, fuse_motion_lora

    kind = settings.input_use if plan.input_frames else "t2v"
    extras = {"motion_adapter": loaded["motion_adapter"]}
    if kind == "control":
        extras["controlnet"] = loaded["controlnet"]
    pipes.base(loaded["model"], settings, device, extras)
    cls = {"t2v": "AnimateDiffPipeline", "control": "AnimateDiffControlNetPipeline",
           "restyle": "AnimateDiffVideoToVideoPipeline"}[kind]
    comps = {"motion_adapter": pipes.extra("motion_adapter")}
    if kind == "control":
        comps["controlnet"] = pipes.extra("controlnet")
    def fuse(pipe: Any) -> None:  # into this pipeline's own motion UNet, once
        for i, lora in enumerate(loaded["loras"]):
            fuse_motion_lora(pipe.unet, lora.folder / LORA_FILE, settings.motion_lora_scale,
                             f"engine.motion_loras.{i}")

    tag = repr((settings.motion_loras, settings.motion_lora_scale))
    return pipes.derive(cls, settings, device, tag=tag, setup=fuse, **comps), kind


def call_kwargs(settings: Settings, plan: Any, kind: str, pipe: Any, rules: Any) -> dict:
    from PIL import Image

    from engines.frames.sd import inputs

    prompt, negative = prompt_schedule(plan)
    negative = ", ".join(t for t in (settings.negative_prompt, negative) if t)
    kw: dict[str, Any] = {
        "prompt": prompt, "negative_prompt": negative or None,
        "guidance_scale": settings.guidance if settings.guidance is not None else rules.guidance}
    if kind == "t2v" or kind == "control":
        kw.update(num_frames=plan.n_frames, height=plan.height, width=plan.width)
    if kind == "control":
        frames = inputs.load_frames(plan)
        maps = inputs.control_maps(frames, settings.control, settings.canny_low,
                                   settings.canny_high)
        kw.update(conditioning_frames=[Image.fromarray(m) for m in maps],
                  controlnet_conditioning_scale=settings.controlnet_scale)
    if kind == "restyle":
        kw.update(video=[Image.fromarray(f) for f in inputs.load_frames(plan)],
                  strength=settings.strength, height=plan.height, width=plan.width)
    return kw


def render(settings: Settings, plan: Any, models_: dict[str, tuple], sink: Any, device: Any,
           progress: Any = None) -> None:
    import numpy as np
    import torch

    from engines.frames.diffusion import resume
    from engines.frames.sd import pipes
    from engines.frames.sd.denoise import denoise

    n = plan.n_frames
    committed, state = sink.resume()
    if committed >= n:
        return
    loaded = models_["sd"]
    k = len(settings.motion_loras)
    parts = {"model": loaded[0], "motion_adapter": loaded[1], "loras": loaded[2:2 + k],
             "controlnet": loaded[2 + k] if settings.controlnet else None}
    rules = parts["model"].rules
    started = time.perf_counter()
    pipe, kind = _pipeline(settings, plan, parts, device)
    travel = not isinstance(prompt_schedule(plan)[0], str)
    if n > settings.context_frames or travel:
        window = min(settings.context_frames, n)
        pipe.enable_free_noise(context_length=window, context_stride=min(settings.context_stride,
                                                                         window))
    elif getattr(pipe, "free_noise_enabled", False):
        pipe.disable_free_noise()
    steps = settings.steps or rules.steps
    base_scheduler = pipes.scheduler(pipe, settings.scheduler, "DDIMScheduler",
                                     **({} if settings.scheduler else
                                        {"beta_schedule": "linear", "clip_sample": False,
                                         "timestep_spacing": "linspace", "steps_offset": 1}))
    here = dict(state or {"chunk": 0, "step": 0})
    kwargs = call_kwargs(settings, plan, kind, pipe, rules)
    latents = denoise(pipe, resume.fresh(base_scheduler), kwargs, steps, here, {}, sink,
                      plan.seed, settings.checkpoint_every,
                      scale_supplied=kind != "restyle")
    with torch.no_grad():
        video = pipe.decode_latents(latents.to(pipe.vae.device, pipe.vae.dtype), 8)
        frames = pipe.video_processor.postprocess_video(video=video, output_type="np")[0]
    frames = np.clip(np.rint(np.asarray(frames, dtype=np.float64) * 255), 0, 255).astype(np.uint8)
    seconds = (time.perf_counter() - started) / max(1, n - committed)
    prompt = kwargs["prompt"] if isinstance(kwargs["prompt"], str) else " -> ".join(
        kwargs["prompt"].values())
    for idx in range(committed, n):
        record = {"steps": steps, "seconds": round(seconds, 4), "kind": kind,
                  "prompts": prompt[:200]}
        sink.commit(idx, np.ascontiguousarray(frames[idx]), None, record)
        if progress is not None:
            progress({"frame": idx, "n_frames": n, **record})


meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
