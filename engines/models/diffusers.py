"""diffusers' file format: a pipeline folder (`model_index.json`, one subfolder per component with
its config and safetensors weights, tokenizer files), as published on the Hugging Face hub and as
written by `save_pretrained`.

- Registry entries (`conf/diffusers/<name>.yaml`, kind `diffusers`) are `source: hub` (repo,
  pinned revision, the files needed; fetched by engines/models/weights.py) or `source: generated`
  (a tiny random-weight pipeline of the same family, built here offline in the same layout, so
  tests and `debug=smoke` load through exactly the code real weights go through).
- `rules` of an entry (`Rules`): how the model is used: its family and pipeline classes, the frame
  counts and sizes it accepts, its native fps and clip length, default steps, guidance and
  scheduler. They are checked when the config is read (engines/frames/diffusion/rules.py).
- `load(entry, folder, device)` returns a `PipelineSource` (folder + rules), not weights: the
  engine estimates memory from the configs first, then loads the pipeline with the dtype and
  offload that fit (engines/frames/diffusion/pipeline.py).
- Only safetensors are loaded: a folder holding pickled weights (`*.bin`, `*.pt`, `*.pth`,
  `*.ckpt`) is refused (`check_folder`), and `from_pretrained` runs with `use_safetensors=True`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from engines.core.errors import ConfigError, UnsafeCheckpointError

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
FAMILIES = ("wan", "ltx", "cogvideox", "hunyuan", "mochi", "zeroscope")


class FrameRule(BaseModel):
    """Frame counts a model accepts: `step * k + offset` for k >= 0, from `min` to `max`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    step: int = Field(1, ge=1)  # e.g. 4 for Wan (4k+1), 8 for LTX-Video (8k+1)
    offset: int = Field(0, ge=0)
    min: int = Field(1, ge=1)
    max: int = Field(1000, ge=1)

    def ok(self, n: int) -> bool:
        return self.min <= n <= self.max and (n - self.offset) % self.step == 0

    def allowed(self) -> list[int]:
        return [k for k in range(self.min, self.max + 1) if self.ok(k)]

    def nearest(self, n: int) -> int:
        """The allowed count closest to `n` (the larger one on a tie)."""
        return min(self.allowed(), key=lambda k: (abs(k - n), -k))

    def at_least(self, n: int) -> int | None:
        """The smallest allowed count >= n, or None above `max`."""
        k = n
        while k <= self.max:
            if self.ok(k):
                return k
            k += 1
        return None


class Rules(BaseModel):
    """How a diffusion video model is used (a registry entry's `rules:`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    family: Literal[FAMILIES]  # type: ignore[valid-type]  # the engine that runs it
    pipeline: str  # diffusers pipeline class for text-to-video, e.g. WanPipeline
    image_pipeline: str | None = None  # class for image-conditioned generation, if the model has it
    frames: FrameRule = FrameRule()  # frame counts one generation accepts
    size_multiple: int = Field(16, ge=1)  # width and height must be multiples of this (pixels)
    sizes: tuple[tuple[int, int], ...] = ()  # the only (width, height) it takes; empty: any
    fps: float = Field(16, gt=0)  # the frame rate it was trained at
    clip_frames: int = Field(81, ge=1)  # frames of one generation by default
    width: int = Field(832, ge=1)  # its native size (pixels)
    height: int = Field(480, ge=1)
    steps: int = Field(50, ge=1)  # default denoising steps
    guidance: float = Field(5.0, ge=0)  # default classifier-free guidance scale
    guidance_2: float | None = Field(None, ge=0)  # two-expert models: the low-noise expert's
    scheduler: str = "UniPCMultistepScheduler"  # the scheduler class it ships with
    schedulers: tuple[str, ...] = ()  # others it runs with (engine.scheduler); () = its own only
    max_sequence_length: int | None = None  # text tokens (pipelines that take it)
    dtype: Literal["bfloat16", "float16", "float32"] = "bfloat16"  # on CUDA
    vae_fp32: bool = False  # keep the VAE in float32 (Wan's VAE: bf16 loses detail)
    vram_gib: float | None = None  # published peak memory of one clip, GiB (README table)
    seconds_per_clip: float | None = None  # published time of one clip at default settings
    published: str = ""  # where those two figures come from


@dataclass(frozen=True)
class PipelineSource:
    """A prepared diffusers pipeline folder and its rules: what `load` returns. The engine
    builds meta copies from its configs and loads the weights itself."""

    name: str  # registry entry (or the folder's name for engine.model_path)
    folder: Path
    rules: Rules


def rules_of(entry: Any) -> Rules:
    try:
        return Rules.model_validate(entry.rules)
    except Exception as exc:  # noqa: BLE001 - a registry file's mistake, said plainly
        raise ConfigError(f"conf/diffusers/{entry.name}.yaml:rules", entry.rules,
                          "rules as engines/models/diffusers.py Rules describes them",
                          str(exc).splitlines()[0]) from None


def tensor_sizes(folder: Path) -> tuple[int, int]:
    """(parameters, parameters of the largest tensor) in the safetensors files directly in
    `folder`, from their headers (no weights read)."""
    from safetensors import safe_open

    total = big = 0
    for f in sorted(Path(folder).glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            for key in st.keys():
                n = 1
                for d in st.get_slice(key).get_shape():
                    n *= d
                total += n
                big = max(big, n)
    return total, big


def pickles_in(folder: Path) -> list[Path]:
    return sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES
                  and p.is_file())


def check_folder(folder: Path, classes: tuple[str, ...], key: str) -> str:
    """A diffusers pipeline folder whose `model_index.json` names one of `classes` and which
    holds no pickled weights; returns the pipeline class name. ConfigError / UnsafeCheckpointError
    name the key, the folder and what is accepted."""
    folder = Path(folder).expanduser()
    index = folder / "model_index.json"
    if not index.is_file():
        raise ConfigError(key, str(folder), "a diffusers pipeline folder (with model_index.json, "
                          "as save_pretrained writes it or the hub publishes it)",
                          f"no model_index.json in {folder}")
    try:
        cls = json.loads(index.read_text())["_class_name"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(key, str(folder), "a readable model_index.json with _class_name",
                          str(exc)) from None
    if cls not in classes:
        raise ConfigError(key, str(folder), f"a pipeline of class {', '.join(classes)}",
                          f"its model_index.json names {cls}")
    bad = pickles_in(folder)
    if bad:
        raise UnsafeCheckpointError(
            f"{key}: {bad[0]} is a pickled file; promptreel loads only safetensors (a pickle "
            f"can run code when loaded). Convert it once on a trusted machine "
            f"(`pipe.save_pretrained(dir, safe_serialization=True)`) or delete it"
            + (f" ({len(bad)} such files)" if len(bad) > 1 else ""))
    return cls


def after_fetch(entry: Any, files: dict[str, Path], *, download: bool = False) -> None:
    """A fetched or generated folder holds safetensors only (nothing pickled gets loaded)."""
    if files:
        folder = Path(next(iter(files.values()))).parent
        while folder.name and not (folder / "model_index.json").exists():
            folder = folder.parent
        bad = pickles_in(folder) if (folder / "model_index.json").exists() else []
        if bad:
            raise UnsafeCheckpointError(f"{entry.name}: {bad[0]} is a pickled file; only "
                                        "safetensors are loaded (list only *.safetensors, *.json "
                                        "and tokenizer files in allow_patterns)")


def load(entry: Any, folder: Path, device: Any = "cpu") -> PipelineSource:
    """The prepared pipeline folder of `entry` with its rules (no weights are read here)."""
    if entry.kind != "diffusers":
        raise ConfigError("engine.model", entry.name, "a diffusers registry entry",
                          f"it is a {entry.kind}")
    return PipelineSource(entry.name, Path(folder), rules_of(entry))


# ------------------------------------------------------------------ generated tiny twins
def _tiny_vocab() -> list[tuple[str, float]]:
    """A sentencepiece-style unigram vocabulary of single characters (T5 tokenizers)."""
    pieces = ["<pad>", "</s>", "<unk>", "▁"] + [chr(c) for c in range(97, 123)]
    return [(p, 0.0 if i < 3 else -1.0) for i, p in enumerate(pieces)]


def build_generated(entry: Any, out_dir: Path) -> None:
    """Write a tiny random-weight pipeline of `entry.arch["family"]` into `out_dir` with
    `save_pretrained(safe_serialization=True)`: model_index.json, component configs,
    safetensors, tokenizer files. Deterministic from entry.seed; built offline (tokenizers from
    in-memory vocabularies, no download)."""
    import torch

    family = (entry.arch or {}).get("family")
    builders = {"wan": _tiny_wan, "wan_ti2v": _tiny_wan_ti2v, "wan_i2v": _tiny_wan_i2v,
                "ltx": _tiny_ltx, "cogvideox": _tiny_cogvideox,
                "cogvideox_i2v": _tiny_cogvideox_i2v, "hunyuan": _tiny_hunyuan,
                "mochi": _tiny_mochi, "zeroscope": _tiny_zeroscope}
    if family not in builders:
        raise ConfigError(f"conf/diffusers/{entry.name}.yaml:arch.family", family,
                          ", ".join(sorted(builders)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        pipe = builders[family](dict(entry.arch))
    pipe.save_pretrained(str(out_dir), safe_serialization=True)


def _tiny_wan(arch: dict[str, Any]) -> Any:
    """WanPipeline with component sizes like diffusers' own fast tests (Wan 2.1 layout; with
    `two_experts` the 2.2 A14B layout: transformer_2 and a boundary ratio)."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    vocab = _tiny_vocab()
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    text_encoder = UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=32, d_kv=8,
                                               d_ff=37, num_layers=2, num_heads=4,
                                               relative_attention_num_buckets=8))
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])

    def transformer() -> Any:
        return WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2,
                                     attention_head_dim=12, in_channels=16, out_channels=16,
                                     text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                                     cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                     rope_max_seq_len=32)

    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                        flow_shift=3.0)
    two = bool(arch.get("two_experts"))
    return WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer(),
                       vae=vae, scheduler=scheduler,
                       transformer_2=transformer() if two else None,
                       boundary_ratio=arch.get("boundary_ratio") if two else None)


# Offline tokenizers for the tiny twins (no download): vocabularies built in memory, saved with
# the pipeline by save_pretrained like any published tokenizer.
def _tiny_t5() -> tuple[Any, Any]:
    """A T5 tokenizer over single characters and a 2-layer T5 encoder (d_model 32), as the
    text encoder of LTX-Video, CogVideoX and Mochi (T5-XXL in the real models)."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    vocab = _tiny_vocab()
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    encoder = T5EncoderModel(T5Config(vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37,
                                      num_layers=2, num_heads=4,
                                      relative_attention_num_buckets=8))
    return tokenizer, encoder


def _tiny_clip_tokenizer() -> Any:
    """A byte-level CLIP tokenizer without merges (every byte one token), 77 tokens long."""
    from transformers import CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    units = list(bytes_to_unicode().values())
    pieces = units + [u + "</w>" for u in units] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={p: i for i, p in enumerate(pieces)}, merges=[],
                         model_max_length=77)


def _tiny_clip_text(hidden: int, projection: int = 32) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(bos_token_id=512, eos_token_id=513, pad_token_id=513,
                                        hidden_size=hidden, intermediate_size=37,
                                        num_attention_heads=2, num_hidden_layers=2,
                                        vocab_size=514, projection_dim=projection,
                                        hidden_act="gelu"))


def _tiny_wan_ti2v(arch: dict[str, Any]) -> Any:
    """Wan 2.2 TI2V-5B's layout at test size: its VAE (48 latent channels, 2x2 patches, 16x
    spatial compression) and `expand_timesteps` (the first latent frame is the image's, with its
    own timestep), one transformer; WanPipeline for text, WanImageToVideoPipeline for an image
    (same folder)."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanPipeline,
        WanTransformer3DModel,
    )
    from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

    vocab = _tiny_vocab()
    vae = AutoencoderKLWan(base_dim=3, z_dim=48, in_channels=12, out_channels=12,
                           is_residual=True, patch_size=2, latents_mean=[0.0] * 48,
                           latents_std=[1.0] * 48, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           scale_factor_spatial=16, scale_factor_temporal=4,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2,
                                        attention_head_dim=12, in_channels=48, out_channels=48,
                                        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                                        cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    return WanPipeline(tokenizer=T5Tokenizer(vocab=vocab, extra_ids=0),
                       text_encoder=UMT5EncoderModel(UMT5Config(
                           vocab_size=len(vocab), d_model=32, d_kv=8, d_ff=37, num_layers=2,
                           num_heads=4, relative_attention_num_buckets=8)),
                       transformer=transformer, vae=vae,
                       scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                         use_flow_sigmas=True, flow_shift=5.0),
                       expand_timesteps=True)


def _tiny_wan_i2v(arch: dict[str, Any]) -> Any:
    """Wan 2.1 I2V's layout at test size: a CLIP vision encoder whose image embedding the
    transformer attends to, and the image latents concatenated to the noise (36 input
    channels); WanImageToVideoPipeline only (it needs an image)."""
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanImageToVideoPipeline,
        WanTransformer3DModel,
    )
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        CLIPVisionModel,
        T5Tokenizer,
        UMT5Config,
        UMT5EncoderModel,
    )

    vocab = _tiny_vocab()
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2,
                                        attention_head_dim=12, in_channels=36, out_channels=16,
                                        text_dim=32, freq_dim=256, ffn_dim=32, num_layers=2,
                                        cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32, image_dim=4)
    image_encoder = CLIPVisionModel(CLIPVisionConfig(
        hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2,
        image_size=32, intermediate_size=16, patch_size=8))
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(
        tokenizer=T5Tokenizer(vocab=vocab, extra_ids=0),
        text_encoder=UMT5EncoderModel(UMT5Config(vocab_size=len(vocab), d_model=32, d_kv=8,
                                                 d_ff=37, num_layers=2, num_heads=4,
                                                 relative_attention_num_buckets=8)),
        transformer=transformer, vae=vae,
        scheduler=UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True,
                                          flow_shift=3.0),
        image_encoder=image_encoder, image_processor=image_processor)


def _tiny_ltx(arch: dict[str, Any]) -> Any:
    """LTXPipeline (and, from the same folder, LTXImageToVideoPipeline) at test size: the
    video VAE compressing 8x in time and space like LTX-Video's (8k+1 frames), with timestep
    conditioning in its decoder (LTX-Video 0.9.1 on), a one-layer transformer."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXPipeline,
        LTXVideoTransformer3DModel,
    )

    tokenizer, text_encoder = _tiny_t5()
    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1,
                                             patch_size_t=1, num_attention_heads=4,
                                             attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8),
                                spatio_temporal_scaling=(True, True, True, False),
                                decoder_spatio_temporal_scaling=(True, True, True, False),
                                decoder_inject_noise=(False,) * 5,
                                layers_per_block=(1, 1, 1, 1, 1),
                                decoder_layers_per_block=(1, 1, 1, 1, 1),
                                patch_size=1, patch_size_t=1, encoder_causal=True,
                                decoder_causal=False,
                                timestep_conditioning=bool(arch.get("timestep_conditioning",
                                                                    True)))
    scheduler = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True, base_shift=0.95,
                                                max_shift=2.05, base_image_seq_len=1024,
                                                max_image_seq_len=4096, shift_terminal=0.1)
    return LTXPipeline(scheduler=scheduler, vae=vae, text_encoder=text_encoder,
                       tokenizer=tokenizer, transformer=transformer)


def _tiny_cogvideox(arch: dict[str, Any]) -> Any:
    """CogVideoXPipeline at test size, in CogVideoX-2B's layout (sinusoidal 3D positions,
    CogVideoXDDIMScheduler); attention heads x head dim equal the T5 width (32)."""
    from diffusers import (
        AutoencoderKLCogVideoX,
        CogVideoXDDIMScheduler,
        CogVideoXPipeline,
        CogVideoXTransformer3DModel,
    )

    tokenizer, text_encoder = _tiny_t5()
    transformer = CogVideoXTransformer3DModel(num_attention_heads=4, attention_head_dim=8,
                                              in_channels=4, out_channels=4, time_embed_dim=2,
                                              text_embed_dim=32, num_layers=1, sample_width=8,
                                              sample_height=6, sample_frames=9, patch_size=2,
                                              temporal_compression_ratio=4,
                                              max_text_seq_length=16)
    vae = AutoencoderKLCogVideoX(in_channels=3, out_channels=3,
                                 down_block_types=("CogVideoXDownBlock3D",) * 4,
                                 up_block_types=("CogVideoXUpBlock3D",) * 4,
                                 block_out_channels=(8, 8, 8, 8), latent_channels=4,
                                 layers_per_block=1, norm_num_groups=2,
                                 temporal_compression_ratio=4)
    scheduler = CogVideoXDDIMScheduler(beta_schedule="scaled_linear", clip_sample=False,
                                       prediction_type="v_prediction", rescale_betas_zero_snr=True,
                                       set_alpha_to_one=True, timestep_spacing="trailing",
                                       snr_shift_scale=3.0)
    return CogVideoXPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae,
                             transformer=transformer, scheduler=scheduler)


def _tiny_cogvideox_i2v(arch: dict[str, Any]) -> Any:
    """CogVideoXImageToVideoPipeline at test size, in CogVideoX-5B-I2V's layout: the image's
    latents are concatenated on the channels (transformer in_channels = 2 x latent channels),
    rotary plus learned positions (as its transformer config), so it takes one size only
    (64x48, 9 frames: its sample size)."""
    from diffusers import CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel

    base = _tiny_cogvideox(arch)
    # head dim 16: the rotary embedding splits it 4 (time) + 6 + 6 (height, width), each even
    transformer = CogVideoXTransformer3DModel(num_attention_heads=2, attention_head_dim=16,
                                              in_channels=8, out_channels=4, time_embed_dim=2,
                                              text_embed_dim=32, num_layers=1, sample_width=8,
                                              sample_height=6, sample_frames=9, patch_size=2,
                                              temporal_compression_ratio=4,
                                              max_text_seq_length=16,
                                              use_rotary_positional_embeddings=True,
                                              use_learned_positional_embeddings=True)
    return CogVideoXImageToVideoPipeline(tokenizer=base.tokenizer, text_encoder=base.text_encoder,
                                         vae=base.vae, transformer=transformer,
                                         scheduler=base.scheduler)


def _tiny_hunyuan(arch: dict[str, Any]) -> Any:
    """HunyuanVideoPipeline at test size: a Llama text encoder (pad token set, as the pipeline
    pads to length) and a CLIP text encoder for the pooled embedding, the guidance-distilled
    transformer (guidance embedded, one pass per step)."""
    from diffusers import (
        AutoencoderKLHunyuanVideo,
        FlowMatchEulerDiscreteScheduler,
        HunyuanVideoPipeline,
        HunyuanVideoTransformer3DModel,
    )
    from transformers import LlamaConfig, LlamaModel, LlamaTokenizer

    pieces = ["<unk>", "<s>", "</s>", "<pad>", "▁"] + [chr(c) for c in range(97, 123)]
    pieces += [chr(c) for c in range(33, 127) if not chr(c).islower()] + [" "]
    llama_tok = LlamaTokenizer(vocab={p: i for i, p in enumerate(dict.fromkeys(pieces))},
                               merges=[], pad_token="<pad>")
    llama = LlamaModel(LlamaConfig(bos_token_id=1, eos_token_id=2, pad_token_id=3,
                                   hidden_size=16, intermediate_size=37, num_attention_heads=4,
                                   num_hidden_layers=2, vocab_size=len(llama_tok),
                                   hidden_act="gelu"))
    transformer = HunyuanVideoTransformer3DModel(in_channels=4, out_channels=4,
                                                 num_attention_heads=2, attention_head_dim=10,
                                                 num_layers=1, num_single_layers=1,
                                                 num_refiner_layers=1, patch_size=1,
                                                 patch_size_t=1, guidance_embeds=True,
                                                 text_embed_dim=16, pooled_projection_dim=8,
                                                 rope_axes_dim=(2, 4, 4))
    vae = AutoencoderKLHunyuanVideo(in_channels=3, out_channels=3, latent_channels=4,
                                    down_block_types=("HunyuanVideoDownBlock3D",) * 4,
                                    up_block_types=("HunyuanVideoUpBlock3D",) * 4,
                                    block_out_channels=(8, 8, 8, 8), layers_per_block=1,
                                    act_fn="silu", norm_num_groups=4, scaling_factor=0.476986,
                                    spatial_compression_ratio=8, temporal_compression_ratio=4,
                                    mid_block_add_attention=True)
    return HunyuanVideoPipeline(text_encoder=llama, tokenizer=llama_tok, transformer=transformer,
                                vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0),
                                text_encoder_2=_tiny_clip_text(8),
                                tokenizer_2=_tiny_clip_tokenizer())


def _tiny_mochi(arch: dict[str, Any]) -> Any:
    """MochiPipeline at test size: Mochi's asymmetric VAE (6x in time, 8x in space: 6k+1
    frames, 12 latent channels) and a two-layer transformer."""
    import torch
    from diffusers import (
        AutoencoderKLMochi,
        FlowMatchEulerDiscreteScheduler,
        MochiPipeline,
        MochiTransformer3DModel,
    )

    tokenizer, text_encoder = _tiny_t5()
    transformer = MochiTransformer3DModel(patch_size=2, num_attention_heads=2,
                                          attention_head_dim=8, num_layers=2,
                                          pooled_projection_dim=16, in_channels=12,
                                          out_channels=None, qk_norm="rms_norm",
                                          text_embed_dim=32, time_embed_dim=4,
                                          activation_fn="swiglu", max_sequence_length=16)
    with torch.no_grad():  # random rotary frequencies blow up; diffusers' tests zero them too
        transformer.pos_frequencies.zero_()
    vae = AutoencoderKLMochi(latent_channels=12, out_channels=3,
                             encoder_block_out_channels=(32, 32, 32, 32),
                             decoder_block_out_channels=(32, 32, 32, 32),
                             layers_per_block=(1, 1, 1, 1, 1))
    return MochiPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
                         text_encoder=text_encoder, tokenizer=tokenizer, transformer=transformer)


def _tiny_zeroscope(arch: dict[str, Any]) -> Any:
    """TextToVideoSDPipeline (ModelScope text-to-video, zeroscope) at test size: a two-level
    3D UNet, a 2D VAE with 4x compression, a CLIP text encoder, DDIM."""
    from diffusers import AutoencoderKL, DDIMScheduler, TextToVideoSDPipeline, UNet3DConditionModel

    unet = UNet3DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=32,
                                in_channels=4, out_channels=4,
                                down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                                up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"),
                                cross_attention_dim=8, attention_head_dim=4, norm_num_groups=2)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8), in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 3,
                        up_block_types=["UpDecoderBlock2D"] * 3, latent_channels=4,
                        sample_size=32, norm_num_groups=2)
    scheduler = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, set_alpha_to_one=False)
    return TextToVideoSDPipeline(vae=vae, text_encoder=_tiny_clip_text(8),
                                 tokenizer=_tiny_clip_tokenizer(), unet=unet, scheduler=scheduler)
