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
    fps: float = Field(16, gt=0)  # the frame rate it was trained at
    clip_frames: int = Field(81, ge=1)  # frames of one generation by default
    width: int = Field(832, ge=1)  # its native size (pixels)
    height: int = Field(480, ge=1)
    steps: int = Field(50, ge=1)  # default denoising steps
    guidance: float = Field(5.0, ge=0)  # default classifier-free guidance scale
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
    builders = {"wan": _tiny_wan}
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
