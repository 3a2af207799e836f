"""HunyuanVideo (Tencent's 13B video model, arXiv:2412.03603) through diffusers'
`HunyuanVideoPipeline`, text to video. Its transformer is guidance-distilled: `guidance` is
embedded in the model and each step runs once; a negative prompt only acts with `true_cfg` above
1 (a second, unconditional pass per step, twice the time).

Frame counts 4k+1 (129 = 5.4 s at 24 fps); sizes multiples of 16. It takes no image here, so the
chunks of a long shot are cross-faded, not conditioned. The shared machinery is
engines/frames/diffusion/.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engines.frames.diffusion import render as diffusion_render
from engines.frames.diffusion import seam
from engines.frames.diffusion.settings import DiffusionSettings

NAME = "hunyuan"
FAMILY = "hunyuan"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("diffusers",)
MEMORY_UNIT = ("clip_frames", "frames per chunk")
CFG_BATCHED = False  # one pass per step (embedded guidance); true_cfg adds a second, apart


class Settings(DiffusionSettings):
    """HunyuanVideo settings (conf/engine/hunyuan.yaml documents each key)."""

    name: Literal["hunyuan"] = NAME
    model: str = "hunyuan_video"  # registry entry under conf/diffusers/
    true_cfg: float = Field(1.0, ge=1)  # real classifier-free guidance (uses negative_prompt) above 1


models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
    seam.hooks(__name__, FAMILY))  # engines/frames/diffusion/seam.py


def call_kwargs(settings: Settings, rules: Any, frames: int, width: int, height: int,
                prompt: str, negative: str, cond: Any, fps: float = 24) -> dict[str, Any]:
    """HunyuanVideoPipeline's arguments for one chunk."""
    kw: dict[str, Any] = {"prompt": prompt, "height": height, "width": width,
                          "num_frames": frames, "true_cfg_scale": settings.true_cfg,
                          "guidance_scale": settings.guidance if settings.guidance is not None
                          else rules.guidance}
    if negative and settings.true_cfg > 1:
        kw["negative_prompt"] = negative
    if rules.max_sequence_length:
        kw["max_sequence_length"] = rules.max_sequence_length
    return kw


def decode(pipe: Any, latents: Any, **_: Any) -> Any:
    """Frames (uint8, F x H x W x 3) from HunyuanVideo's final latents, as the pipeline decodes
    them: divided by the VAE's scaling factor, decoded."""
    import torch

    vae = pipe.vae
    device = next(vae.parameters()).device
    with torch.no_grad():
        video = vae.decode(latents.to(device, vae.dtype) / vae.config.scaling_factor,
                           return_dict=False)[0]
    return diffusion_render.to_frames(pipe, video)


def transformer_inputs(transformer: Any, latents: Any, text_len: int, device: Any) -> dict:
    """Keyword arguments of one HunyuanVideoTransformer3DModel forward (memory estimate)."""
    import torch

    cfg = transformer.config
    b = latents.shape[0]
    return {"hidden_states": latents,
            "timestep": torch.zeros(b, dtype=torch.long, device=device),
            "encoder_hidden_states": torch.empty(b, text_len, cfg.text_embed_dim, device=device,
                                                 dtype=latents.dtype),
            "encoder_attention_mask": torch.ones(b, text_len, device=device),
            "pooled_projections": torch.empty(b, cfg.pooled_projection_dim, device=device,
                                              dtype=latents.dtype),
            "guidance": torch.zeros(b, device=device, dtype=latents.dtype), "return_dict": False}
