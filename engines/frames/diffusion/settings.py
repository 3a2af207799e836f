"""Settings every diffusion video engine has (conf/engine/<name>.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engines.frames.base import EngineSettings

SCHEDULERS = ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler", "DDIMScheduler",
              "DPMSolverMultistepScheduler", "EulerDiscreteScheduler",
              "EulerAncestralDiscreteScheduler", "CogVideoXDDIMScheduler",
              "CogVideoXDPMScheduler", "PNDMScheduler")


class DiffusionSettings(EngineSettings):
    model: str  # registry entry under conf/diffusers/
    model_path: str | None = None  # a diffusers pipeline folder used instead of `model`
    steps: int | None = Field(None, gt=0)  # denoising steps per chunk; null = the model's default
    guidance: float | None = Field(None, ge=0)  # classifier-free guidance; null = the model's
    negative_prompt: str = ""  # what to steer away from (added to negative-weight prompts)
    scheduler: Literal[SCHEDULERS] | None = None  # type: ignore[valid-type]  # null = the model's own
    clip_frames: int | None = Field(None, gt=0)  # frames per generation; null = the model's clip
    overlap: int = Field(8, ge=0)  # frames shared by consecutive chunks of a long shot (cross-faded)
    checkpoint_every: int = Field(5, gt=0)  # denoising steps between durable checkpoints
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: the model's on CUDA, fp32 on CPU
    offload: Literal["auto", "none", "model", "group", "sequential"] = "auto"  # auto: the least that fits
    vae_tiling: Literal["auto", "on", "off"] = "auto"  # auto: on when decoding would not fit, and after an OOM
    cache: Literal["none", "first_block", "faster", "pab"] = "none"  # step caches: faster, change the frames
    cache_threshold: float = Field(0.1, gt=0)  # first_block: relative change under which a step reuses
    compile: Literal["none", "repeated_blocks"] = "none"  # torch.compile of the repeated transformer blocks
    cfg_batch: bool = False  # run the two guidance passes as one batch where the pipeline runs them apart
    auto_fit: bool = True  # on CUDA, pick offload and VAE tiling that fit (false: stop and say what fits)
