"""Mochi 1 (Genmo's 10B asymmetric diffusion transformer) through diffusers' `MochiPipeline`,
text to video.

Frame counts 6k+1 (its VAE compresses time 6x and space 8x; 163 frames = 5.4 s at 30 fps); sizes
multiples of 16. It takes no image, so the chunks of a long shot are cross-faded, not
conditioned. The shared machinery is engines/frames/diffusion/.
"""

from __future__ import annotations

from typing import Any, Literal

from engines.frames.diffusion import render as diffusion_render
from engines.frames.diffusion import seam
from engines.frames.diffusion.settings import DiffusionSettings

NAME = "mochi"
FAMILY = "mochi"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("diffusers",)
MEMORY_UNIT = ("clip_frames", "frames per chunk")
CFG_BATCHED = True  # MochiPipeline runs the two guidance passes as one batch


class Settings(DiffusionSettings):
    """Mochi settings (conf/engine/mochi.yaml documents each key)."""

    name: Literal["mochi"] = NAME
    model: str = "mochi_1_preview"  # registry entry under conf/diffusers/


models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
    seam.hooks(__name__, FAMILY))  # engines/frames/diffusion/seam.py


def call_kwargs(settings: Settings, rules: Any, frames: int, width: int, height: int,
                prompt: str, negative: str, cond: Any, fps: float = 30) -> dict[str, Any]:
    """MochiPipeline's arguments for one chunk."""
    kw: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative or None,
                          "height": height, "width": width, "num_frames": frames,
                          "guidance_scale": settings.guidance if settings.guidance is not None
                          else rules.guidance}
    if rules.max_sequence_length:
        kw["max_sequence_length"] = rules.max_sequence_length
    return kw


def decode(pipe: Any, latents: Any, **_: Any) -> Any:
    """Frames (uint8, F x H x W x 3) from Mochi's final latents, as MochiPipeline decodes them:
    the VAE's per-channel latent mean and std undone (where its config has them) with its
    scaling factor, then its decoder."""
    import torch

    vae = pipe.vae
    device = next(vae.parameters()).device
    lat = latents.to(device, vae.dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        c = lat.shape[1]
        mean = torch.tensor(mean).view(1, c, 1, 1, 1).to(device, lat.dtype)
        std = torch.tensor(std).view(1, c, 1, 1, 1).to(device, lat.dtype)
        lat = lat * std / vae.config.scaling_factor + mean
    else:
        lat = lat / vae.config.scaling_factor
    with torch.no_grad():
        video = vae.decode(lat, return_dict=False)[0]
    return diffusion_render.to_frames(pipe, video)


def latent_factors(vae: Any) -> tuple[int, int, int]:
    """(temporal, spatial compression, latent channels) of Mochi's VAE, from its expansions."""
    import math

    cfg = vae.config
    return (math.prod(cfg.temporal_expansions), math.prod(cfg.spatial_expansions),
            cfg.latent_channels)


def transformer_inputs(transformer: Any, latents: Any, text_len: int, device: Any) -> dict:
    """Keyword arguments of one MochiTransformer3DModel forward (memory estimate)."""
    import torch

    cfg = transformer.config
    b = latents.shape[0]
    return {"hidden_states": latents,
            "encoder_hidden_states": torch.empty(b, text_len, cfg.text_embed_dim, device=device,
                                                 dtype=latents.dtype),
            "timestep": torch.zeros(b, dtype=torch.long, device=device),
            "encoder_attention_mask": torch.ones(b, text_len, device=device, dtype=torch.bool),
            "return_dict": False}
