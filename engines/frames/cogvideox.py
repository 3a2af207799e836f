"""CogVideoX (THUDM/Zhipu's expert-transformer video model, arXiv:2408.06072) through diffusers'
`CogVideoXPipeline`: 2B and 5B text-to-video; CogVideoX-5B-I2V, which makes video only from an
image, through `CogVideoXImageToVideoPipeline` (the image's latents are concatenated to the
noise along the channels).

Frame counts 4k+1 up to 49 (6 s at 8 fps; the I2V model only 49); sizes multiples of 16, and
the I2V model only at 720x480 (its learned positions). 2B ships CogVideoXDDIMScheduler (a killed
chunk resumes mid-denoise exactly); 5B ships CogVideoXDPMScheduler, part of whose state lives
in the pipeline's loop, so a killed chunk restarts (committed chunks are kept). The I2V pipeline
samples the image's latent with the chunk's generator, which a resume cannot replay: its killed
chunks restart too. The shared machinery is engines/frames/diffusion/.
"""

from __future__ import annotations

from typing import Any, Literal

from engines.frames.diffusion import render as diffusion_render
from engines.frames.diffusion import seam
from engines.frames.diffusion.settings import DiffusionSettings

NAME = "cogvideox"
FAMILY = "cogvideox"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("diffusers",)
MEMORY_UNIT = ("clip_frames", "frames per chunk")
CFG_BATCHED = True  # CogVideoXPipeline runs the two guidance passes as one batch


class Settings(DiffusionSettings):
    """CogVideoX settings (conf/engine/cogvideox.yaml documents each key)."""

    name: Literal["cogvideox"] = NAME
    model: str = "cogvideox_2b"  # registry entry under conf/diffusers/
    dynamic_cfg: bool | None = None  # guidance rising over the steps; null: on with the DPM scheduler


models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
    seam.hooks(__name__, FAMILY))  # engines/frames/diffusion/seam.py


def call_kwargs(settings: Settings, rules: Any, frames: int, width: int, height: int,
                prompt: str, negative: str, cond: Any, fps: float = 8) -> dict[str, Any]:
    """CogVideoXPipeline's (or CogVideoXImageToVideoPipeline's, with `cond`) arguments."""
    scheduler = settings.scheduler or rules.scheduler
    dynamic = (settings.dynamic_cfg if settings.dynamic_cfg is not None
               else scheduler == "CogVideoXDPMScheduler")
    kw: dict[str, Any] = {"prompt": prompt, "negative_prompt": negative or None,
                          "height": height, "width": width, "num_frames": frames,
                          "use_dynamic_cfg": dynamic,
                          "guidance_scale": settings.guidance if settings.guidance is not None
                          else rules.guidance}
    if rules.max_sequence_length:
        kw["max_sequence_length"] = rules.max_sequence_length
    if cond is not None:
        from PIL import Image

        kw["image"] = Image.fromarray(cond.numpy())
    return kw


def resumable(kwargs: dict[str, Any]) -> bool:
    """A mid-chunk checkpoint continues exactly unless the chunk is image-conditioned (the I2V
    pipeline samples the image's latent with the generator, whose first state is gone)."""
    return "image" not in kwargs


def decode(pipe: Any, latents: Any, **_: Any) -> Any:
    """Frames (uint8, F x H x W x 3) from CogVideoX's final latents (B, F, C, H, W), as the
    pipeline decodes them: channels first, divided by the VAE's scaling factor, decoded."""
    import torch

    vae = pipe.vae
    device = next(vae.parameters()).device
    lat = latents.to(device, vae.dtype).permute(0, 2, 1, 3, 4) / vae.config.scaling_factor
    with torch.no_grad():
        video = vae.decode(lat).sample
    return diffusion_render.to_frames(pipe, video)


def latent_factors(vae: Any) -> tuple[int, int, int]:
    """(temporal, spatial compression, latent channels) of a CogVideoX VAE."""
    cfg = vae.config
    return cfg.temporal_compression_ratio, 2 ** (len(cfg.block_out_channels) - 1), cfg.latent_channels


def transformer_inputs(transformer: Any, latents: Any, text_len: int, device: Any) -> dict:
    """Keyword arguments of one CogVideoXTransformer3DModel forward (memory estimate): frames
    before channels, the text at the model's own length."""
    import torch

    cfg = transformer.config
    b = latents.shape[0]
    hidden = latents.permute(0, 2, 1, 3, 4)
    if cfg.in_channels != hidden.shape[2]:  # I2V: the image latents ride along the channels
        hidden = torch.empty(*hidden.shape[:2], cfg.in_channels, *hidden.shape[3:],
                             device=device, dtype=latents.dtype)
    return {"hidden_states": hidden,
            "encoder_hidden_states": torch.empty(b, cfg.max_text_seq_length, cfg.text_embed_dim,
                                                 device=device, dtype=latents.dtype),
            "timestep": torch.zeros(b, dtype=torch.long, device=device), "return_dict": False}
