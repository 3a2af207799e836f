"""Soundtrack engine: MusicGen (audiocraft) music that fits the cut to the sample.

`compose` writes nothing; it returns float32 audio of shape (channels, samples) with exactly
round(duration_s * sample_rate) samples. Up to `window_s` seconds come from one generation;
longer tracks are continued window by window: each new window is prompted with the last
`overlap_s` seconds of the audio so far (audiocraft's `generate_continuation`, or its chroma
equivalent for melody models) and the two renderings of the overlap are joined by an
equal-power cross-fade (see `engines.audio.crossfade`), so a seam is never an audible restart.

Weights load from a model directory in audiocraft's published layout (`state_dict.bin` and
`compression_state_dict.bin`, each `{'xp.cfg': yaml, 'best_state': state_dict}`), always with
`torch.load(weights_only=True)`. `build_generated` writes a tiny random-weight model in that same
layout (a `lut` text conditioner with the `noop` tokenizer, so no T5 download), which tests and
the smoke preset load through exactly the same code as the real ones.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from engines.errors import ConfigError, MissingWeightsError, UnsafeCheckpointError

NAME = "musicgen"
CODE_VERSION = "1"  # bump when compose's output for the same inputs would change
FILES = ("state_dict.bin", "compression_state_dict.bin")
log = logging.getLogger(__name__)


class SoundtrackSettings(BaseModel):
    """The `soundtrack:` config group (conf/soundtrack/*.yaml). Times in seconds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"  # the preset's name (= its file name); informational
    source: Literal["musicgen", "musicgen_melody", "file", "none"] = "none"
    model: str = "musicgen_small"  # registry name under conf/soundtrack/models/
    prompt: str | None = None  # music description; None = derived from the film's prompts
    mood: str | None = None  # leading words of a derived prompt, e.g. "calm"; None = "cinematic"
    melody: str | None = None  # audio file whose melody (chroma) guides musicgen_melody
    file: str | None = None  # the user's own track, for source: file
    fade_in_s: float = Field(1.0, ge=0)
    fade_out_s: float = Field(2.0, ge=0)
    target_lufs: float = Field(-16.0, ge=-70, le=0)  # integrated loudness, LUFS
    true_peak_db: float = Field(-1.0, le=0)  # true-peak ceiling, dBTP
    window_s: float = Field(30.0, gt=1, le=30)  # one generation (MusicGen's limit is 30 s)
    overlap_s: float = Field(10.0, gt=0)  # context carried into the next window
    loop_crossfade_s: float = Field(0.5, ge=0)  # cross-fade at each loop point of a short file
    seed: int | None = Field(None, ge=0)  # None = the film's seed
    temperature: float = Field(1.0, gt=0)  # sampling temperature
    top_k: int = Field(250, ge=0)  # sample from the k likeliest tokens (0 = all)
    cfg_coef: float = Field(3.0, ge=0)  # classifier-free guidance strength

    @model_validator(mode="after")
    def _consistent(self) -> SoundtrackSettings:
        if self.overlap_s >= self.window_s:
            raise ValueError(f"overlap_s ({self.overlap_s}) must be shorter than window_s "
                             f"({self.window_s})")
        if self.source == "file" and not self.file:
            raise ValueError("source: file needs `file:` (path to an audio file)")
        if self.source == "musicgen_melody" and not self.melody:
            raise ValueError("source: musicgen_melody needs `melody:` (path to an audio file)")
        return self


# --- prompts -------------------------------------------------------------------------------

_VISUAL_ONLY = re.compile(
    r"\b(trending on artstation|artstation|unreal engine|octane render|highly detailed|"
    r"ultra detailed|photorealistic|hyperrealistic|[48]k|hd|hdr|wallpaper|sharp focus|"
    r"depth of field|bokeh)\b", re.I)


def derive_prompt(visual_prompts: list[str], mood: str | None = None, max_chars: int = 300) -> str:
    """A music prompt from the film's visual prompts (deterministic).

    Each prompt loses any `:weight[:stop]` suffix and the render-quality tags that say nothing
    about music (artstation, unreal engine, 4k...); duplicates (case-insensitive) and empties go;
    the rest, in order, are joined with "; " after "<mood> instrumental film score evoking: "
    (mood defaults to "cinematic") and cut at a whole phrase to `max_chars`. Pass only the
    prompts with positive weight: a negative prompt ("blurry") would be evoked too.
    """
    head = f"{(mood or 'cinematic').strip()} instrumental film score"
    seen, parts = set(), []
    for text in visual_prompts:
        t = re.sub(r"(:-?\d+(\.\d*)?)+\s*$", "", text.strip())
        t = _VISUAL_ONLY.sub("", t)
        t = re.sub(r"\s*,(\s*,)+", ",", re.sub(r"\s+", " ", t)).strip(" ,;|")
        if t and t.lower() not in seen:
            seen.add(t.lower())
            parts.append(t)
    if not parts:
        return head
    out = f"{head} evoking: {parts[0]}"[:max_chars]
    for p in parts[1:]:
        if len(out) + 2 + len(p) > max_chars:
            break
        out += f"; {p}"
    return out


# --- generated tiny models -----------------------------------------------------------------

_TINY = {  # defaults of a generated model; the registry entry's `arch` overrides any of them
    "sample_rate": 32000, "channels": 1, "ratios": [8, 5, 4, 4], "n_filters": 4,
    "codec_dim": 16, "lstm": 2, "n_q": 4, "card": 64, "dim": 32, "num_heads": 2,
    "num_layers": 2, "text_bins": 64, "segment_duration": 30.0,
}


def generated_cfg(arch: dict[str, Any]) -> dict[str, Any]:
    """The audiocraft `xp.cfg` of a generated MusicGen (same keys as the published ones)."""
    a = {**_TINY, **(arch or {})}
    unknown = set(a) - set(_TINY) - {"melody"}
    if unknown:
        raise ConfigError("arch", sorted(unknown), f"keys among {sorted(_TINY)}")
    if a.get("melody"):
        raise ConfigError("arch.melody", True, "false",
                          "a melody model needs audiocraft's chroma_stem conditioner, which "
                          "downloads demucs' htdemucs weights: it cannot be generated offline")
    return {
        "device": "cpu", "dtype": "float32", "sample_rate": a["sample_rate"],
        "channels": a["channels"], "compression_model": "encodec", "lm_model": "transformer_lm",
        "dataset": {"segment_duration": float(a["segment_duration"])},
        "encodec": {"autoencoder": "seanet", "quantizer": "rvq", "sample_rate": a["sample_rate"],
                    "channels": a["channels"], "causal": False, "renormalize": False},
        "seanet": {"dimension": a["codec_dim"], "channels": a["channels"], "causal": False,
                   "n_filters": a["n_filters"], "n_residual_layers": 1, "ratios": a["ratios"],
                   "activation": "ELU", "activation_params": {"alpha": 1.0},
                   "norm": "weight_norm", "norm_params": {}, "kernel_size": 7,
                   "residual_kernel_size": 3, "last_kernel_size": 7, "dilation_base": 2,
                   "pad_mode": "constant", "true_skip": True, "compress": 2, "lstm": a["lstm"],
                   "disable_norm_outer_blocks": 0,
                   "decoder": {"trim_right_ratio": 1.0, "final_activation": None,
                               "final_activation_params": None},
                   "encoder": {}},
        "rvq": {"n_q": a["n_q"], "q_dropout": False, "bins": a["card"], "decay": 0.99,
                "kmeans_init": False, "kmeans_iters": 50, "threshold_ema_dead_code": 2,
                "orthogonal_reg_weight": 0.0, "orthogonal_reg_active_codes_only": False},
        "codebooks_pattern": {"modeling": "delay",
                              "delay": {"delays": list(range(a["n_q"])), "flatten_first": 0,
                                        "empty_initial": 0}},
        "transformer_lm": {"dim": a["dim"], "num_heads": a["num_heads"],
                           "num_layers": a["num_layers"], "hidden_scale": 4, "n_q": a["n_q"],
                           "card": a["card"], "dropout": 0.0, "emb_lr": None,
                           "activation": "gelu", "norm_first": True, "bias_ff": False,
                           "bias_attn": False, "bias_proj": False, "past_context": None,
                           "causal": True, "custom": False, "memory_efficient": True,
                           "attention_as_float32": False, "layer_scale": None,
                           "positional_embedding": "sin", "xpos": False, "checkpointing": "none",
                           "weight_init": "gaussian", "depthwise_init": "current",
                           "zero_bias_init": True, "norm": "layer_norm",
                           "cross_attention": False, "qk_layer_norm": False,
                           "qk_layer_norm_cross": False, "attention_dropout": None,
                           "kv_repeat": 1, "two_step_cfg": False},
        "classifier_free_guidance": {"training_dropout": 0.3, "inference_coef": 3.0},
        "attribute_dropout": {},
        "fuser": {"cross_attention_pos_emb": False, "cross_attention_pos_emb_scale": 1,
                  "sum": [], "prepend": [], "cross": ["description"], "input_interpolate": []},
        "conditioners": {"description": {"model": "lut", "lut": {
            "n_bins": a["text_bins"], "dim": a["dim"], "tokenizer": "noop"}}},
    }


def _audiocraft() -> Any:
    """Import audiocraft, muting xformers' import-time warning that its C++ extension does not
    load (MusicGen does not use it: only `unbind` and `LowerTriangularMask`)."""
    import logging

    log = logging.getLogger("xformers")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import audiocraft.models
    finally:
        log.setLevel(level)
    return audiocraft.models


def build_generated(entry: Any, out_dir: Path) -> None:
    """Write a random-weight MusicGen for registry `entry` (arch, seed) into `out_dir` in the
    published layout. Deterministic: the same entry gives byte-identical files."""
    import torch
    from omegaconf import OmegaConf

    builders = _audiocraft().builders

    cfg = OmegaConf.create(generated_cfg(dict(entry.arch or {})))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(entry.seed))
        codec = builders.get_compression_model(cfg)
        lm = builders.get_lm_model(cfg)
    yaml = OmegaConf.to_yaml(cfg)
    for name, model in (("compression_state_dict.bin", codec), ("state_dict.bin", lm)):
        tmp = out_dir / f".{name}.tmp"
        torch.save({"xp.cfg": yaml, "best_state": model.state_dict()}, tmp)
        tmp.replace(out_dir / name)


# --- loading -------------------------------------------------------------------------------

TEXT_ENCODER_FILES = ["config.json", "spiece.model", "tokenizer.json", "model.safetensors"]


def ensure_text_encoder(name: str, *, download: bool) -> None:
    """Make the T5 text encoder a real MusicGen conditions on (`name`, e.g. t5-base) available in
    the Hugging Face cache, where transformers loads it from. Renders run with the hub offline
    (HF_HUB_OFFLINE=1, flows/render.py); this is the one place that goes online for it, and only
    when `download` (runtime.download) allows. MissingWeightsError names what to copy."""
    import contextlib

    from huggingface_hub import constants, snapshot_download

    try:
        snapshot_download(name, allow_patterns=TEXT_ENCODER_FILES, local_files_only=True)
        return
    except Exception as exc:  # noqa: BLE001 - not in the cache (huggingface_hub raises several)
        missing = exc
    if not download:
        raise MissingWeightsError(
            f"MusicGen's text encoder {name} is not in the Hugging Face cache "
            f"({constants.HF_HUB_CACHE}) and runtime.download is false: run `make fetch-models "
            f"conf=<preset>` on a connected machine and copy that folder here "
            f"({type(missing).__name__})")
    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        snapshot_download(name, allow_patterns=TEXT_ENCODER_FILES)
    except Exception as exc:  # noqa: BLE001 - network, hub or disk errors
        raise MissingWeightsError(
            f"MusicGen's text encoder {name} could not be downloaded from the Hugging Face hub "
            f"into {constants.HF_HUB_CACHE}: {type(exc).__name__}: {str(exc)[:300]}") from None
    finally:
        with contextlib.suppress(Exception):
            constants.HF_HUB_OFFLINE = offline


_CACHE: dict[tuple[Any, ...], Any] = {}
_CACHE_SIZE = 2  # models kept per process (a sweep reuses them; real ones are GBs)


def _read_pkg(path: Path) -> dict[str, Any]:
    import pickle

    import torch

    try:
        pkg = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        why = [ln for ln in str(exc).splitlines() if "WeightsUnpickler" in ln] or [str(exc)[:300]]
        raise UnsafeCheckpointError(f"{path}: refused, it holds more than tensors and plain "
                                    f"data ({why[0].strip()[:300]})") from None
    if not isinstance(pkg, dict) or not ({"xp.cfg", "best_state"} <= set(pkg) or "pretrained" in pkg):
        raise UnsafeCheckpointError(f"{path}: not an audiocraft checkpoint (keys "
                                    f"{sorted(pkg)[:8] if isinstance(pkg, dict) else type(pkg)})")
    return pkg


def load(model_dir: Path, device: str = "cpu") -> Any:
    """The MusicGen in `model_dir` on `device`, cached per process (by directory, device and
    file times). Mirrors audiocraft's `MusicGen.get_pretrained(<dir>)`, loading weights only."""
    model_dir = Path(model_dir).resolve()
    stamp = tuple((model_dir / f).stat().st_mtime_ns for f in FILES if (model_dir / f).exists())
    key = (str(model_dir), str(device), stamp)
    if key in _CACHE:
        return _CACHE[key]
    model = _load(model_dir, str(device))
    while len(_CACHE) >= _CACHE_SIZE:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = model
    return model


def _load(model_dir: Path, device: str) -> Any:
    from omegaconf import OmegaConf

    models = _audiocraft()
    builders, MusicGen, CompressionModel = models.builders, models.MusicGen, models.CompressionModel

    missing = [f for f in FILES if not (model_dir / f).is_file()]
    if missing:
        raise MissingWeightsError(
            f"MusicGen files missing in {model_dir}: {', '.join(missing)}. Run `make fetch-models"
            f" conf=<preset>` on a connected machine and copy that folder here.")
    lm_pkg = _read_pkg(model_dir / "state_dict.bin")
    codec_pkg = _read_pkg(model_dir / "compression_state_dict.bin")
    cfg = OmegaConf.create(lm_pkg["xp.cfg"])
    cfg.device = device
    cfg.dtype = "float32" if device == "cpu" else "float16"
    for dotted in ("conditioners.self_wav.chroma_stem.cache_path",
                   "conditioners.args.merge_text_conditions_p", "conditioners.args.drop_desc_p"):
        parent, _, leaf = dotted.rpartition(".")
        node = OmegaConf.select(cfg, parent)
        if node is not None and leaf in node:
            OmegaConf.set_struct(node, False)
            del node[leaf]
    try:
        lm = builders.get_lm_model(cfg)
    except (OSError, ImportError) as exc:  # T5 / demucs weights fetched by their own libraries
        raise MissingWeightsError(
            f"MusicGen in {model_dir} needs more weights than its two files: {exc}. Its text "
            "encoder (t5-base, via transformers) and, for melody models, demucs' htdemucs are "
            "downloaded into their caches on first use: load it once on a connected machine "
            "(make fetch-models) and copy ~/.cache/huggingface and ~/.cache/torch") from None
    lm.load_state_dict(lm_pkg["best_state"])
    lm.eval()
    lm.cfg = cfg
    if "pretrained" in codec_pkg:
        codec = CompressionModel.get_pretrained(codec_pkg["pretrained"], device=device)
    else:
        ccfg = OmegaConf.create(codec_pkg["xp.cfg"])
        ccfg.device = device
        codec = builders.get_compression_model(ccfg)
        codec.load_state_dict(codec_pkg["best_state"])
        codec.eval()
    if "self_wav" in lm.condition_provider.conditioners:
        lm.condition_provider.conditioners["self_wav"].match_len_on_eval = True
        lm.condition_provider.conditioners["self_wav"]._use_masking = False
    return MusicGen(model_dir.name, codec, lm)


# --- composing -----------------------------------------------------------------------------

def _set_length(model: Any, tokens: int, **params: Any) -> None:
    """Ask audiocraft for exactly `tokens` frames (it computes int(duration * frame_rate))."""
    fr = model.frame_rate
    duration = tokens / fr
    while int(duration * fr) < tokens:
        duration = math.nextafter(duration, math.inf)
    model.set_generation_params(duration=duration, extend_stride=model.max_duration / 2,
                                **params)


def _generate(model: Any, text: str | None, prompt: Any, melody: Any) -> Any:
    """One window: (channels, samples) tensor. prompt/melody: (channels, samples) or None."""
    sr = model.sample_rate
    if melody is None:
        if prompt is None:
            return model.generate([text])[0]
        return model.generate_continuation(prompt[None], sr, [text])[0]
    if prompt is None:
        return model.generate_with_chroma([text], melody[None], sr)[0]
    # audiocraft has no public "continuation + chroma" call; this is what its generate_* do
    attrs, tokens = model._prepare_tokens_and_attributes([text], prompt[None], [melody])
    return model.generate_audio(model._generate_tokens(attrs, tokens))[0]


def _melody_window(melody: Any, start: int, length: int) -> Any:
    """`length` samples of the melody from `start`, repeating it if it is shorter (as
    audiocraft does for long generations)."""
    import torch

    idx = torch.arange(start, start + length) % melody.shape[-1]
    return melody[..., idx]


def compose(model_dir: Path, *, prompt: str, duration_s: float, seed: int,
            melody: Path | None = None, window_s: float = 30.0, overlap_s: float = 10.0,
            device: str = "cpu", temperature: float = 1.0, top_k: int = 250,
            cfg_coef: float = 3.0) -> tuple[np.ndarray, int]:
    """Music for `prompt`, exactly round(duration_s * sr) samples long.

    Returns (float32 array of shape (channels, samples), sample rate in Hz). Every random draw
    comes from torch's generator seeded with `seed` (the caller's RNG state is restored after),
    so the same inputs give the same samples on the same device (byte-identical on CPU).
    The result is DC-free (`engines.audio.remove_dc`, 10 Hz high-pass); fades and loudness are
    left to `engines.audio.fade` / `normalise`.
    """
    import torch

    from engines import audio

    if not duration_s > 0:
        raise ConfigError("duration_s", duration_s, "a positive duration in seconds")
    model = load(model_dir, device)
    sr, fr = model.sample_rate, model.frame_rate
    if window_s > model.max_duration:
        raise ConfigError("soundtrack.window_s", window_s,
                          f"at most {model.max_duration} s (this model's longest generation)")
    if not 0 < overlap_s < window_s:
        raise ConfigError("soundtrack.overlap_s", overlap_s, f"0 < overlap_s < window_s "
                          f"({window_s})")
    melody_t = None
    if melody is not None:
        if "self_wav" not in model.lm.condition_provider.conditioners:
            raise ConfigError("soundtrack.model", Path(model_dir).name,
                              "a melody model (musicgen_melody) when a melody is given")
        wav, _ = audio.read_audio(melody, sr, key="soundtrack.melody")
        melody_t = torch.from_numpy(wav.mean(axis=0, keepdims=True)).to(model.device)
    n = round(duration_s * sr)
    hop = sr // fr
    need_tok = -(-n // hop)
    win_tok = int(window_s * fr)
    ovl_tok = max(1, round(overlap_s * fr))
    if ovl_tok >= win_tok:
        raise ConfigError("soundtrack.overlap_s", overlap_s, f"shorter than window_s ({window_s})")
    windows = 1 + max(0, -(-(need_tok - win_tok) // (win_tok - ovl_tok)))
    text = prompt.strip() or None
    params = {"temperature": temperature, "top_k": min(top_k, model.lm.card), "cfg_coef": cfg_coef}
    cuda = [torch.device(device).index or 0] if str(device).startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda), torch.no_grad():
        torch.manual_seed(int(seed))
        first = min(need_tok, win_tok)
        _set_length(model, first, **params)
        melody_w = None if melody_t is None else _melody_window(melody_t, 0, first * hop)
        log.info("soundtrack: window 1/%d (%.1f s)", windows, first / fr)
        out = _generate(model, text, None, melody_w).float().cpu().numpy()
        index = 1
        while out.shape[-1] < n:
            index += 1
            new_tok = min(win_tok - ovl_tok, -(-(n - out.shape[-1]) // hop))
            start = out.shape[-1] - ovl_tok * hop
            _set_length(model, ovl_tok + new_tok, **params)
            prompt_t = torch.from_numpy(out[:, start:]).to(model.device)
            melody_w = (None if melody_t is None
                        else _melody_window(melody_t, start, (ovl_tok + new_tok) * hop))
            log.info("soundtrack: window %d/%d (%.1f s after %.1f s of context)", index, windows,
                     new_tok / fr, ovl_tok / fr)
            nxt = _generate(model, text, prompt_t, melody_w).float().cpu().numpy()
            if nxt.shape[-1] <= ovl_tok * hop:
                raise RuntimeError(f"MusicGen returned {nxt.shape[-1]} samples for "
                                   f"{ovl_tok + new_tok} frames")
            seam = audio.crossfade(out[:, start:], nxt[:, : ovl_tok * hop])
            out = np.concatenate([out[:, :start], seam, nxt[:, ovl_tok * hop:]], axis=1)
    if out.shape[-1] < n:  # a decoder that returns fewer samples than frames * hop
        out = np.pad(out, ((0, 0), (0, n - out.shape[-1])))
    return np.ascontiguousarray(audio.remove_dc(out[:, :n], sr), dtype=np.float32), int(sr)
