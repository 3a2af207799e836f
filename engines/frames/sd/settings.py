"""Settings every SD animation engine has (conf/engine/<name>.yaml documents each key)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from engines.frames.base import EngineSettings

SCHEDULERS = ("DDIMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
              "DPMSolverMultistepScheduler", "UniPCMultistepScheduler", "PNDMScheduler",
              "LMSDiscreteScheduler")


class SdSettings(EngineSettings):
    model: str = "sd15"  # registry entry under conf/sd/ (a pipeline: sd15, sdxl_base, ...)
    steps: int | None = Field(None, gt=0)  # denoising steps; null = the model's default
    guidance: float | None = Field(None, ge=0)  # classifier-free guidance; null = the model's
    negative_prompt: str = ""  # what to steer away from (added to negative-weight prompts)
    scheduler: Literal[SCHEDULERS] | None = None  # type: ignore[valid-type]  # null = the engine's default
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"  # auto: the model's on CUDA, fp32 on CPU
    offload: Literal["auto", "none", "model", "sequential"] = "auto"  # auto: none (auto_fit picks one that fits)
    vae_tiling: Literal["auto", "on", "off"] = "auto"  # auto: off; on decodes in tiles (less memory)
    auto_fit: bool = True  # on CUDA, pick offload and VAE tiling that fit (false: stop and say what fits)
