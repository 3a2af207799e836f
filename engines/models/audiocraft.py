"""audiocraft's MusicGen file format: load, generate tiny twins, fetch the text encoder.

Weights load from a model directory in audiocraft's published layout (`state_dict.bin` and
`compression_state_dict.bin`, each `{'xp.cfg': yaml, 'best_state': state_dict}`), always with
`torch.load(weights_only=True)`; `load` mirrors audiocraft's `MusicGen.get_pretrained(<dir>)`.
`build_generated` writes a tiny random-weight model in that same layout (a `lut` text conditioner
with the `noop` tokenizer, so no T5 download), which tests and the smoke preset load through
exactly the same code as the real ones. `after_fetch` makes a real model's T5 text encoder
available in the Hugging Face cache.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError, MissingWeightsError, UnsafeCheckpointError

FILES = ("state_dict.bin", "compression_state_dict.bin")


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


def after_fetch(entry: Any, files: dict[str, Path], *, download: bool = False) -> None:
    """A real MusicGen conditions on a T5 text encoder that transformers loads from the Hugging
    Face cache: fetch it now (pre-production), not in the middle of a render."""
    text_encoder = (entry.arch or {}).get("text_encoder")
    if text_encoder and entry.source != "generated":
        ensure_text_encoder(text_encoder, download=download)


def load(entry: Any, folder: Path, device: Any = "cpu") -> Any:
    """The MusicGen whose files are in `folder`, on `device` (engines/models/loaded.py caches
    it). Mirrors audiocraft's `MusicGen.get_pretrained(<dir>)`, loading weights only."""
    return _load(Path(folder).resolve(), str(device))


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
