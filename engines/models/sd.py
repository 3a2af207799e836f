"""Stable Diffusion 1.5 / SDXL components in diffusers' file format: the models the SD animation
engines (deforum, animatediff, text2video_zero, controlnet, pix2pix, flow_restyle) compose.

A registry entry of kind `sd` (`conf/sd/<name>.yaml`) is one component, with `rules` (`SdRules`)
saying which:
- `pipeline`: a text-to-image pipeline folder (`model_index.json`, unet, vae, text encoder(s),
  tokenizer(s), scheduler) of base `sd15` (StableDiffusionPipeline) or `sdxl`
  (StableDiffusionXLPipeline); the engines build img2img, ControlNet, AnimateDiff and
  Text2Video-Zero pipelines from its components;
- `pix2pix`: an InstructPix2Pix pipeline folder (its UNet takes 8 input channels: the noisy
  latents and the latents of the image to edit);
- `motion_adapter`: an AnimateDiff MotionAdapter folder (`config.json` + safetensors);
- `motion_lora`: an AnimateDiff MotionLoRA (one safetensors file of LoRA weights for the motion
  modules' attention projections), fused into the motion UNet by `fuse_motion_lora`;
- `controlnet`: a ControlNetModel folder, with the kind of map it follows (`control`).

`source: hub` entries are fetched at a pinned revision (engines/models/weights.py); `source:
generated` twins are built here offline with component sizes like diffusers' own fast tests
(tiny UNets of two blocks, a four-block VAE of few channels (latents 1/8 of the frame), a 5-layer CLIP text encoder, a CLIP tokenizer from an
in-memory byte vocabulary), deterministic from the entry's seed, and load through exactly the
code real weights go through. Only safetensors are loaded; a folder holding pickled weights is
refused.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.core.errors import ConfigError, UnsafeCheckpointError

ROLES = ("pipeline", "pix2pix", "motion_adapter", "motion_lora", "controlnet")
BASES = ("sd15", "sdxl")
CONTROLS = ("canny", "pose", "depth", "lineart", "softedge", "scribble")
LORA_FILE = "diffusion_pytorch_model.safetensors"


class SdRules(BaseModel):
    """How an SD component is used (a `conf/sd/<name>.yaml` entry's `rules:`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Literal[ROLES]  # type: ignore[valid-type]  # which component (module docstring)
    base: Literal[BASES]  # type: ignore[valid-type]  # the base model family it belongs to
    control: Literal[CONTROLS] | None = None  # type: ignore[valid-type]  # controlnet: map it follows
    variant: str | None = None  # weight file variant to load (fp16: *.fp16.safetensors)
    width: int = Field(512, ge=8)  # native size of the base model, pixels
    height: int = Field(512, ge=8)
    size_multiple: int = Field(8, ge=1)  # frame sides must be multiples of this (VAE factor 8)
    steps: int = Field(25, ge=1)  # default denoising steps
    guidance: float = Field(7.5, ge=0)  # default classifier-free guidance scale
    context_frames: int = Field(16, ge=1)  # motion_adapter: frames its motion module was trained on
    dtype: Literal["bfloat16", "float16", "float32"] = "float16"  # on CUDA
    vram_gib: float | None = None  # published peak memory, GiB
    published: str = ""  # where that figure comes from


@dataclass(frozen=True)
class SdSource:
    """A prepared SD component folder and its rules: what `load` returns (weights are read by
    the engine, once it knows the dtype and device)."""

    name: str
    folder: Path
    rules: SdRules


def rules_of(entry: Any) -> SdRules:
    try:
        return SdRules.model_validate(entry.rules)
    except Exception as exc:  # noqa: BLE001 - a registry file's mistake, said plainly
        raise ConfigError(f"conf/sd/{entry.name}.yaml:rules", entry.rules,
                          "rules as engines/models/sd.py SdRules describes them",
                          str(exc).splitlines()[0]) from None


def after_fetch(entry: Any, files: dict[str, Path], *, download: bool = False) -> None:
    """A fetched or generated SD component holds safetensors only."""
    from engines.models.diffusers import pickles_in

    if not files:
        return
    folder = Path(next(iter(files.values()))).parent
    while folder.name and not (folder / "model_index.json").exists() and \
            not (folder / "config.json").exists():
        folder = folder.parent
    bad = pickles_in(folder) if folder.name else []
    if bad:
        raise UnsafeCheckpointError(f"{entry.name}: {bad[0]} is a pickled file; only safetensors "
                                    "are loaded (list only *.safetensors, *.json and tokenizer "
                                    "files in allow_patterns)")


def load(entry: Any, folder: Path, device: Any = "cpu") -> SdSource:
    """The prepared folder of `entry` with its rules (no weights read here)."""
    if entry.kind != "sd":
        raise ConfigError("engine.model", entry.name, "an sd registry entry",
                          f"it is a {entry.kind}")
    return SdSource(entry.name, Path(folder), rules_of(entry))


# ------------------------------------------------------------------ motion LoRAs
_LORA_KEY = re.compile(
    r"^(?:unet\.)?(?P<module>.+?)\.(?:processor\.)?(?P<proj>to_q|to_k|to_v|to_out(?:\.0)?)"
    r"(?:_lora\.|\.lora\.|\.lora_)(?P<part>down|up|A|B)\.weight$")


def lora_pairs(state: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{linear layer name in the UNet: (down, up)} from a MotionLoRA state dict, in any of the
    layouts diffusers reads (`...attn1.processor.to_q_lora.down.weight`, `...to_q.lora.down.`,
    peft's `...to_q.lora_A.weight`)."""
    parts: dict[str, dict[str, Any]] = {}
    for key, tensor in state.items():
        m = _LORA_KEY.match(key)
        if m is None:
            continue
        proj = "to_out.0" if m["proj"].startswith("to_out") else m["proj"]
        side = "down" if m["part"] in ("down", "A") else "up"
        parts.setdefault(f"{m['module']}.{proj}", {})[side] = tensor
    return {k: (v["down"], v["up"]) for k, v in parts.items() if {"down", "up"} <= set(v)}


def fuse_motion_lora(unet: Any, path: Path, scale: float, key: str) -> int:
    """Add `scale * up @ down` of every LoRA pair in `path` to the motion UNet's weights (the
    LoRA fused, as diffusers' `fuse_lora` leaves it); returns the layers changed. A file whose
    layers the UNet lacks (a LoRA of another motion module) is a ConfigError naming `key`."""
    import torch
    from safetensors.torch import load_file

    pairs = lora_pairs(load_file(str(path)))
    modules = dict(unet.named_modules())
    missing = [name for name in pairs if name not in modules]
    if not pairs or missing:
        raise ConfigError(key, str(path), "a MotionLoRA for this motion adapter",
                          f"{len(missing)} of its {len(pairs)} layers are not in the motion UNet"
                          if pairs else "no LoRA weights found in it")
    with torch.no_grad():
        for name, (down, up) in pairs.items():
            weight = modules[name].weight
            delta = up.to(torch.float32) @ down.to(torch.float32)
            weight.add_((scale * delta).to(weight.dtype))
    return len(pairs)


# ------------------------------------------------------------------ generated tiny twins
def tiny_tokenizer() -> Any:
    """A CLIP tokenizer of single bytes (no merges), built offline."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def _text_encoder(tokenizer: Any, projection: bool = False, hidden: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(bos_token_id=tokenizer.bos_token_id,
                            eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, hidden_size=hidden,
                            intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4,
                            num_hidden_layers=5, vocab_size=len(tokenizer) + 2,
                            projection_dim=32, hidden_act="gelu")
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def _vae() -> Any:
    from diffusers import AutoencoderKL

    # four blocks, as the real VAE: latents 1/8 of the frame (a two-block VAE would make them
    # 1/2, and attention over them slow); few channels
    return AutoencoderKL(block_out_channels=[8, 16, 16, 16], in_channels=3, out_channels=3,
                         down_block_types=["DownEncoderBlock2D"] * 4,
                         up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=1,
                         latent_channels=4, norm_num_groups=2)


def _unet(base: str, in_channels: int = 4) -> Any:
    from diffusers import UNet2DConditionModel

    if base == "sdxl":
        return UNet2DConditionModel(
            block_out_channels=(32, 64), layers_per_block=2, sample_size=32,
            in_channels=in_channels, out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=2)
    return UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=2, sample_size=32, in_channels=in_channels,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
        norm_num_groups=2)


def _tiny_pipeline(arch: dict[str, Any]) -> Any:
    """StableDiffusionPipeline (sd15) or StableDiffusionXLPipeline (sdxl) in their layouts."""
    from diffusers import (
        DDIMScheduler,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        StableDiffusionXLPipeline,
    )

    tokenizer = tiny_tokenizer()
    if arch.get("base") == "sdxl":
        scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, steps_offset=1,
                                           beta_schedule="scaled_linear",
                                           timestep_spacing="leading")
        return StableDiffusionXLPipeline(
            vae=_vae(), text_encoder=_text_encoder(tokenizer), tokenizer=tokenizer,
            text_encoder_2=_text_encoder(tokenizer, projection=True), tokenizer_2=tiny_tokenizer(),
            unet=_unet("sdxl"), scheduler=scheduler)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    return StableDiffusionPipeline(vae=_vae(), text_encoder=_text_encoder(tokenizer),
                                   tokenizer=tokenizer, unet=_unet("sd15"), scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _tiny_pix2pix(arch: dict[str, Any]) -> Any:
    """StableDiffusionInstructPix2PixPipeline: an SD 1.5 layout whose UNet has 8 input channels."""
    from diffusers import EulerAncestralDiscreteScheduler, StableDiffusionInstructPix2PixPipeline

    tokenizer = tiny_tokenizer()
    scheduler = EulerAncestralDiscreteScheduler(beta_start=0.00085, beta_end=0.012,
                                                beta_schedule="scaled_linear")
    return StableDiffusionInstructPix2PixPipeline(
        vae=_vae(), text_encoder=_text_encoder(tokenizer), tokenizer=tokenizer,
        unet=_unet("sd15", in_channels=8), scheduler=scheduler, safety_checker=None,
        feature_extractor=None, requires_safety_checker=False)


def _tiny_motion_adapter(arch: dict[str, Any]) -> Any:
    from diffusers import MotionAdapter

    return MotionAdapter(block_out_channels=(32, 64), motion_layers_per_block=2,
                         motion_norm_num_groups=2, motion_num_attention_heads=4,
                         motion_max_seq_length=32)


def _tiny_controlnet(arch: dict[str, Any]) -> Any:
    """A ControlNetModel whose zero convolutions are not zero (a fresh ControlNet's are, so its
    maps would have no effect at all: a twin that ignores its maps would test nothing)."""
    import torch

    net = _controlnet_layout(arch)
    with torch.no_grad():
        for p in net.parameters():
            if not torch.any(p):
                p.normal_(0.0, 0.1)
    return net


def _controlnet_layout(arch: dict[str, Any]) -> Any:
    from diffusers import ControlNetModel

    if arch.get("base") == "sdxl":
        return ControlNetModel(
            block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            conditioning_embedding_out_channels=(8, 8, 8, 16), attention_head_dim=(2, 4),
            use_linear_projection=True, addition_embed_type="text_time",
            addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
            projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=2)
    return ControlNetModel(block_out_channels=(32, 64), layers_per_block=2, in_channels=4,
                           down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                           cross_attention_dim=32, conditioning_embedding_out_channels=(8, 8, 8, 16),
                           norm_num_groups=2)


def _tiny_motion_lora(arch: dict[str, Any], out_dir: Path) -> None:
    """A MotionLoRA for the tiny motion adapter: rank-2 pairs on every motion attention
    projection, in the layout diffusers' conversion script writes (`unet.<module>.processor.
    to_q_lora.down.weight`)."""
    import torch
    from diffusers import UNetMotionModel
    from safetensors.torch import save_file

    unet = UNetMotionModel.from_unet2d(_unet("sd15"), _tiny_motion_adapter(arch))
    state: dict[str, Any] = {}
    rank = int(arch.get("rank", 2))
    for name, module in unet.named_modules():
        if ".motion_modules." not in f".{name}" or not isinstance(module, torch.nn.Linear):
            continue
        head, _, proj = name.rpartition(".")
        if proj == "0" and head.endswith("to_out"):
            head, proj = head[: -len(".to_out")], "to_out"
        if proj not in ("to_q", "to_k", "to_v", "to_out"):
            continue
        state[f"unet.{head}.processor.{proj}_lora.down.weight"] = \
            torch.randn(rank, module.in_features) * 0.1
        state[f"unet.{head}.processor.{proj}_lora.up.weight"] = \
            torch.randn(module.out_features, rank) * 0.1
    save_file(state, str(out_dir / LORA_FILE))


def build_generated(entry: Any, out_dir: Path) -> None:
    """Write a tiny random-weight component of `entry.arch["role"]` into `out_dir` in diffusers'
    layout (save_pretrained, safetensors), deterministically from entry.seed, offline."""
    import torch

    arch = dict(entry.arch or {})
    role = arch.get("role")
    builders = {"pipeline": _tiny_pipeline, "pix2pix": _tiny_pix2pix,
                "motion_adapter": _tiny_motion_adapter, "controlnet": _tiny_controlnet}
    if role not in (*builders, "motion_lora"):
        raise ConfigError(f"conf/sd/{entry.name}.yaml:arch.role", role, ", ".join(ROLES))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        if role == "motion_lora":
            _tiny_motion_lora(arch, Path(out_dir))
            return
        model = builders[role](arch)
    model.save_pretrained(str(out_dir), safe_serialization=True)


def folder_config(folder: Path, name: str = "") -> dict[str, Any]:
    """A component's config.json (`name`: its subfolder in a pipeline folder)."""
    return json.loads((Path(folder) / name / "config.json").read_text())
