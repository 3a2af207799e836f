"""LTX-Video (Lightricks' real-time video DiT, arXiv:2501.00103) through diffusers' `LTXPipeline`;
image-conditioned chunks (a shot's init image, `continue: previous`, the next chunk of a long
shot) through `LTXImageToVideoPipeline`, built from the same loaded weights: the first latent
frame is the image's and stays clean while the others are denoised.

Frame counts 8k+1 (the VAE compresses time 8x and space 32x); sizes multiples of 32; 24 fps.
LTX conditions its rotary positions on the frame rate, so each chunk is told the film's fps.
Models from 0.9.1 on decode with a little noise at a small timestep (`decode_timestep`,
`decode_noise_scale`): that noise comes from the chunk's own seed, so a resumed chunk decodes to
the same frames. The shared machinery is engines/frames/diffusion/.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engines.frames.diffusion import render as diffusion_render
from engines.frames.diffusion import seam
from engines.frames.diffusion.settings import DiffusionSettings

NAME = "ltx"
FAMILY = "ltx"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("diffusers",)
MEMORY_UNIT = ("clip_frames", "frames per chunk")
CFG_BATCHED = True  # LTXPipeline runs the two guidance passes as one batch
DECODE_SEED = 0x5EED  # offsets the chunk seed for the decoder's noise


class Settings(DiffusionSettings):
    """LTX-Video settings (conf/engine/ltx.yaml documents each key)."""

    name: Literal["ltx"] = NAME
    model: str = "ltx_video_2b"  # registry entry under conf/diffusers/
    decode_timestep: float = Field(0.03, ge=0, le=1)  # VAEs with timestep conditioning (0.9.1+)
    decode_noise_scale: float | None = Field(0.025, ge=0, le=1)  # null: = decode_timestep


models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
    seam.hooks(__name__, FAMILY))  # engines/frames/diffusion/seam.py


def call_kwargs(settings: Settings, rules: Any, frames: int, width: int, height: int,
                prompt: str, negative: str, cond: Any, fps: float = 24) -> dict[str, Any]:
    """LTXPipeline's (or LTXImageToVideoPipeline's, with `cond`) arguments for one chunk."""
    kw: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative or None,
                          "height": height, "width": width, "num_frames": frames,
                          "frame_rate": int(round(fps)),
                          "guidance_scale": settings.guidance if settings.guidance is not None
                          else rules.guidance}
    if rules.max_sequence_length:
        kw["max_sequence_length"] = rules.max_sequence_length
    if cond is not None:
        from PIL import Image

        kw["image"] = Image.fromarray(cond.numpy())
    return kw


def decode(pipe: Any, latents: Any, *, settings: Settings, frames: int, height: int, width: int,
           seed: int, **_: Any) -> Any:
    """Frames (uint8, F x H x W x 3) from LTX's final latents, as LTXPipeline decodes them: the
    token sequence unpacked to (C, F, H, W), the VAE's latent statistics undone, and, for a VAE
    with timestep conditioning, the latents mixed with `decode_noise_scale` of noise and decoded
    at `decode_timestep`."""
    import torch
    from diffusers.utils.torch_utils import randn_tensor

    vae = pipe.vae
    device = next(vae.parameters()).device
    lat = pipe._unpack_latents(latents.to(device), (frames - 1) // pipe.vae_temporal_compression_ratio
                               + 1, height // pipe.vae_spatial_compression_ratio,
                               width // pipe.vae_spatial_compression_ratio,
                               pipe.transformer_spatial_patch_size,
                               pipe.transformer_temporal_patch_size)
    lat = pipe._denormalize_latents(lat, vae.latents_mean, vae.latents_std,
                                    vae.config.scaling_factor).to(vae.dtype)
    timestep = None
    if vae.config.timestep_conditioning:
        generator = torch.Generator("cpu").manual_seed((seed + DECODE_SEED) % (2 ** 63))
        noise = randn_tensor(lat.shape, generator=generator, device=device, dtype=lat.dtype)
        scale = (settings.decode_noise_scale if settings.decode_noise_scale is not None
                 else settings.decode_timestep)
        timestep = torch.tensor([settings.decode_timestep], device=device, dtype=lat.dtype)
        lat = (1 - scale) * lat + scale * noise
    with torch.no_grad():
        video = vae.decode(lat, timestep, return_dict=False)[0]
    return diffusion_render.to_frames(pipe, video)


def transformer_inputs(transformer: Any, latents: Any, text_len: int, device: Any) -> dict:
    """Keyword arguments of one LTXVideoTransformer3DModel forward (memory estimate): the
    latents as the token sequence the pipeline packs them into."""
    import torch

    cfg = transformer.config
    b, c, f, h, w = latents.shape
    p, pt = cfg.patch_size, cfg.patch_size_t
    tokens = (f // pt) * (h // p) * (w // p)
    return {"hidden_states": torch.empty(b, tokens, c * p * p * pt, device=device,
                                         dtype=latents.dtype),
            "encoder_hidden_states": torch.empty(b, text_len, cfg.caption_channels,
                                                 device=device, dtype=latents.dtype),
            "timestep": torch.zeros(b, device=device, dtype=latents.dtype),
            "encoder_attention_mask": torch.ones(b, text_len, device=device),
            "num_frames": f // pt, "height": h // p, "width": w // p,
            "rope_interpolation_scale": (1.0, 32.0, 32.0), "return_dict": False}


def meta_decode(vae: Any, z: Any) -> None:
    """The VAE decode of the memory estimate (with its timestep where the VAE takes one)."""
    import torch

    temb = (torch.zeros(z.shape[0], device=z.device, dtype=z.dtype)
            if vae.config.timestep_conditioning else None)
    vae.decode(z, temb, return_dict=False)
