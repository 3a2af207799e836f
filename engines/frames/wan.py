"""Wan (Wan 2.1 and 2.2, the Wan Team's open video models) through diffusers' `WanPipeline`:
2.1 T2V 1.3B and 14B, 2.2 TI2V-5B (text and image to video in one model) and 2.2 T2V A14B (two
experts: `transformer` for the high-noise steps, `transformer_2` for the low-noise ones, switched
at the model's boundary ratio). Image-conditioned chunks (a shot's init image, `continue:
previous`, the next chunk of a long shot) use `WanImageToVideoPipeline` where the model has it.

Frame counts 4k+1 (the VAE compresses time 4x); sizes multiples of 16 (32 for 2.2 TI2V-5B,
whose VAE compresses 16x and patchifies); 16 fps (24 for TI2V-5B). The 2.1 I2V models make
video only from an image (a shot's init image or `continue: previous`). The shared machinery (chunks, resume, memory, loading) is engines/frames/diffusion/.
"""

from __future__ import annotations

from typing import Any, Literal

from engines.frames.diffusion import seam
from engines.frames.diffusion.settings import DiffusionSettings

NAME = "wan"
FAMILY = "wan"
CODE_VERSION = "2"  # bump when the frames for the same settings would change (2: flow shift kept)
MODELS = ("diffusers",)
MEMORY_UNIT = ("clip_frames", "frames per chunk")


class Settings(DiffusionSettings):
    """Wan settings (conf/engine/wan.yaml documents each key)."""

    name: Literal["wan"] = NAME
    model: str = "wan2_1_t2v_1_3b"  # registry entry under conf/diffusers/
    guidance_2: float | None = None  # 2.2 A14B: guidance of the low-noise expert; null = guidance


models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
    seam.hooks(__name__, FAMILY))  # engines/frames/diffusion/seam.py


def call_kwargs(settings: Settings, rules: Any, frames: int, width: int, height: int,
                prompt: str, negative: str, cond: Any, fps: float = 16) -> dict[str, Any]:
    """WanPipeline's (or WanImageToVideoPipeline's, with `cond`) arguments for one chunk."""
    kw: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative or None,
                          "height": height, "width": width, "num_frames": frames,
                          "guidance_scale": settings.guidance if settings.guidance is not None
                          else rules.guidance}
    guidance_2 = settings.guidance_2 if settings.guidance_2 is not None else rules.guidance_2
    if guidance_2 is not None:
        kw["guidance_scale_2"] = guidance_2
    if rules.max_sequence_length:
        kw["max_sequence_length"] = rules.max_sequence_length
    if cond is not None and rules.image_pipeline:
        from PIL import Image

        kw["image"] = Image.fromarray(cond.numpy())
    return kw


def cfg_embeds(encoded: Any) -> tuple[Any, Any]:
    """(conditional, unconditional) text embeddings from WanPipeline.encode_prompt's result
    (cfg_batch, engines/frames/diffusion/cfg_batch.py)."""
    return encoded[0], encoded[1]


def decode(pipe: Any, latents: Any, **chunk: Any) -> Any:
    """Frames (uint8, F x H x W x 3) from Wan's final latents, as WanPipeline decodes them
    (the VAE's latent mean and std undone, then its decoder; Wan 2.2's VAE unpatchifies
    inside its decoder)."""
    import numpy as np
    import torch

    vae = pipe.vae
    device = next(vae.parameters()).device
    latents = latents.to(device, vae.dtype)
    z = vae.config.z_dim
    mean = torch.tensor(vae.config.latents_mean).view(1, z, 1, 1, 1).to(device, latents.dtype)
    inv_std = 1.0 / torch.tensor(vae.config.latents_std).view(1, z, 1, 1, 1).to(device,
                                                                                 latents.dtype)
    with torch.no_grad():
        video = vae.decode(latents / inv_std + mean, return_dict=False)[0]
    frames = pipe.video_processor.postprocess_video(video, output_type="np")[0]
    return np.clip(np.rint(frames * 255), 0, 255).astype(np.uint8)


def transformer_inputs(transformer: Any, latents: Any, text_len: int, device: Any) -> dict:
    """Keyword arguments of one WanTransformer3DModel forward (memory estimate)."""
    import torch

    cfg = transformer.config
    b = latents.shape[0]
    return {"hidden_states": latents,
            "timestep": torch.zeros(b, dtype=torch.long, device=device),
            "encoder_hidden_states": torch.empty(b, text_len, cfg.text_dim, device=device,
                                                 dtype=latents.dtype),
            "return_dict": False}
