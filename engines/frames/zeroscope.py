"""ModelScope text-to-video (DAMO's 1.7B 3D UNet, arXiv:2308.06571) and its finetune zeroscope v2
576w through diffusers' `TextToVideoSDPipeline` (in diffusers' deprecated pipelines: it still
loads and runs, and gets no new features).

That pipeline has only the legacy `callback(step, timestep, latents)`, called after every step
with `callback_steps=1`: `step_callback` turns it into the step hook the shared render loop uses
for its durable checkpoints, so a killed chunk resumes mid-denoise like the others (DDIM: exact
from the latents). Any frame count (no temporal compression; the models were trained on 16 or 24
frames); sizes multiples of 8; text only (long shots cross-fade their chunks). The shared
machinery is engines/frames/diffusion/.
"""

from __future__ import annotations

from typing import Any, Literal

from engines.frames.diffusion import render as diffusion_render
from engines.frames.diffusion import seam
from engines.frames.diffusion.settings import DiffusionSettings

NAME = "zeroscope"
FAMILY = "zeroscope"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("diffusers",)
MEMORY_UNIT = ("clip_frames", "frames per chunk")
CFG_BATCHED = True  # TextToVideoSDPipeline runs the two guidance passes as one batch
DENOISER = "unet"  # the component the memory estimate runs (a UNet, not a transformer)
TEXT_TOKENS = 77  # CLIP's text length


class Settings(DiffusionSettings):
    """ModelScope / zeroscope settings (conf/engine/zeroscope.yaml documents each key)."""

    name: Literal["zeroscope"] = NAME
    model: str = "zeroscope_v2_576w"  # registry entry under conf/diffusers/


models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
    seam.hooks(__name__, FAMILY))  # engines/frames/diffusion/seam.py


def call_kwargs(settings: Settings, rules: Any, frames: int, width: int, height: int,
                prompt: str, negative: str, cond: Any, fps: float = 8) -> dict[str, Any]:
    """TextToVideoSDPipeline's arguments for one chunk."""
    return {"prompt": prompt, "negative_prompt": negative or None, "height": height,
            "width": width, "num_frames": frames,
            "guidance_scale": settings.guidance if settings.guidance is not None
            else rules.guidance}


def step_callback(on_step: Any) -> dict[str, Any]:
    """The legacy per-step callback, calling the loop's `on_step(pipe, i, t, {"latents": ...})`
    after every step (diffusers unpatched)."""
    return {"callback": lambda i, t, latents: on_step(None, i, t, {"latents": latents}),
            "callback_steps": 1}


def decode(pipe: Any, latents: Any, **_: Any) -> Any:
    """Frames (uint8, F x H x W x 3) from the final latents, by the pipeline's own
    `decode_latents` (frame by frame through the image VAE)."""
    import torch

    device = next(pipe.vae.parameters()).device
    with torch.no_grad():
        video = pipe.decode_latents(latents.to(device, pipe.vae.dtype))
    return diffusion_render.to_frames(pipe, video)


def latent_factors(vae: Any) -> tuple[int, int, int]:
    """(temporal, spatial compression, latent channels): an image VAE, one latent per frame."""
    cfg = vae.config
    return 1, 2 ** (len(cfg.block_out_channels) - 1), cfg.latent_channels


def transformer_inputs(unet: Any, latents: Any, text_len: int, device: Any) -> dict:
    """Keyword arguments of one UNet3DConditionModel forward (memory estimate)."""
    import torch

    b = latents.shape[0]
    return {"sample": latents, "timestep": torch.zeros(b, dtype=torch.long, device=device),
            "encoder_hidden_states": torch.empty(b, TEXT_TOKENS, unet.config.cross_attention_dim,
                                                 device=device, dtype=latents.dtype),
            "return_dict": False}


def meta_decode(vae: Any, z: Any) -> None:
    """The memory estimate's decode: frame by frame through the image VAE, as the pipeline."""
    b, c, f, h, w = z.shape
    vae.decode(z.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), return_dict=False)
