"""The memory estimate of a diffusion chunk, made before any weight is loaded.

`meta_models` builds the pipeline's transformer(s) and VAE on the meta device from their
`config.json` (shapes only: nothing is read but the configs and the safetensors headers) and
counts the weights of every component in the dtype the render will use. `memory_step` (run by
engines/frames/memory.py under its allocation tracer) holds the weights that stay on the device
for the settings' offload (all of them; the largest component with model offload; next to none
with group or sequential offload), runs one transformer forward at the chunk's latent shape
(two rows when the pipeline batches the guidance passes) and then the VAE decode of the chunk
(tiled when `vae_tiling: on`). `fit` picks the least offload that fits, then VAE tiling, then
shorter chunks; `memory_tips` says what would fit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

TEXT_LEN = 226  # text tokens assumed in the estimate (pipelines pad to at most this or their max)
COMPONENTS = ("transformer", "transformer_2", "unet", "vae", "text_encoder", "text_encoder_2",
              "image_encoder")


def _dtype_bytes(dtype: Any) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def component_numel(folder: Path) -> dict[str, int]:
    """Parameters of each component, from its safetensors headers (no weights read)."""
    from safetensors import safe_open

    out: dict[str, int] = {}
    for name in COMPONENTS:
        files = sorted((folder / name).glob("*.safetensors")) if (folder / name).is_dir() else []
        total = 0
        for f in files:
            with safe_open(str(f), framework="pt") as st:
                for key in st.keys():
                    n = 1
                    for d in st.get_slice(key).get_shape():
                        n *= d
                    total += n
        if total:
            out[name] = total
    return out


def _build_meta(folder: Path, name: str) -> Any:
    import diffusers
    from accelerate import init_empty_weights

    config = json.loads((folder / name / "config.json").read_text())
    cls = getattr(diffusers, config["_class_name"])
    with init_empty_weights():
        model = cls.from_config(config)
    return model.to("meta")


def meta_models(engine: Any, models: dict[str, tuple], settings: Any, device: Any) -> tuple:
    """({"engine", "source", "transformer", "vae", "bytes"}, weight bytes, 0)."""
    import torch

    from engines.frames.diffusion.pipeline import dtype_of

    source = models["diffusers"][0]
    dtype = dtype_of(settings, source.rules, device)
    size = _dtype_bytes(dtype)
    numel = component_numel(source.folder)
    per = {k: v * (4 if k == "vae" and source.rules.vae_fp32 else size) for k, v in numel.items()}
    meta = {"engine": engine, "source": source, "bytes": per, "dtype": dtype,
            "transformer": _build_meta(source.folder, getattr(engine, "DENOISER",
                                                              "transformer")).to(dtype),
            "vae": _build_meta(source.folder, "vae").to(
                torch.float32 if source.rules.vae_fp32 else dtype)}
    return meta, sum(per.values()), 0


def resident(per: dict[str, int], offload: str) -> int:
    """Weight bytes on the device during a step, for an offload mode."""
    if offload in ("none", "auto"):
        return sum(per.values())
    if offload == "model":  # one component at a time (the transformers are the largest)
        return max(per.values()) if per else 0
    return 0  # group / sequential: layers streamed in as they run (a few MB)


def memory_step(settings: Any, width: int, height: int, meta: dict, device: Any) -> None:
    import torch

    rules = meta["source"].rules
    clip = settings.clip_frames or rules.clip_frames
    vae, transformer, dtype = meta["vae"], meta["transformer"], meta["dtype"]
    engine = meta["engine"]
    t_factor, s_factor, channels = (engine.latent_factors(vae) if hasattr(engine, "latent_factors")
                                    else latent_factors(vae))
    latent = (1, channels, (clip - 1) // t_factor + 1, height // s_factor, width // s_factor)
    weights = torch.empty(resident(meta["bytes"], settings.offload), dtype=torch.uint8,
                          device="meta")
    batch = 2 if getattr(meta["engine"], "CFG_BATCHED", False) or settings.cfg_batch else 1
    x = torch.empty((batch, *latent[1:]), dtype=dtype, device="meta")
    with torch.no_grad():
        transformer(**meta["engine"].transformer_inputs(transformer, x, TEXT_LEN, "meta"))
        del x
        z = torch.empty(latent, dtype=next(vae.parameters()).dtype, device="meta")
        if settings.vae_tiling == "on" and hasattr(vae, "enable_tiling"):
            vae.enable_tiling()
        if hasattr(engine, "meta_decode"):
            engine.meta_decode(vae, z)
        else:
            vae.decode(z, return_dict=False)
    del weights


def latent_factors(vae: Any) -> tuple[int, int, int]:
    """(temporal compression, spatial compression, latent channels) of a video VAE, from its
    config or attributes (engines whose VAE says none of it give their own `latent_factors`)."""
    t_factor = int(getattr(vae.config, "scale_factor_temporal", 0)
                   or getattr(vae.config, "temporal_compression_ratio", 0)
                   or getattr(vae, "temporal_compression_ratio", 0) or 4)
    s_factor = int(getattr(vae.config, "scale_factor_spatial", 0)
                   or getattr(vae.config, "spatial_compression_ratio", 0)
                   or getattr(vae, "spatial_compression_ratio", 0) or 8)
    channels = int(getattr(vae.config, "z_dim", 0) or getattr(vae.config, "latent_channels", 16))
    return t_factor, s_factor, channels


def fit(tracer: Any, settings: Any, width: int, height: int, free: int) -> tuple[Any, list[str]]:
    """The least offload that fits; then VAE tiling; then shorter chunks (allowed counts)."""
    from engines.frames.memory import fits

    rule = tracer.meta["source"].rules.frames

    def ok(s: Any) -> bool:
        return fits(tracer.working(s, width, height), free)

    s, changes = settings, []
    for offload in ("none", "model", "group"):
        cand = s.model_copy(update={"offload": offload})
        if ok(cand):
            return cand, changes + ([f"offload={offload}"] if offload != "none" else [])
    s = s.model_copy(update={"offload": "group"})
    changes.append("offload=group")
    if settings.vae_tiling != "off":
        s = s.model_copy(update={"vae_tiling": "on"})
        changes.append("vae_tiling=on")
        if ok(s):
            return s, changes
    clip = s.clip_frames or tracer.meta["source"].rules.clip_frames
    for n in sorted((k for k in rule.allowed() if k < clip and k > s.overlap), reverse=True):
        cand = s.model_copy(update={"clip_frames": n})
        if ok(cand):
            return cand, changes + [f"clip_frames={n}"]
    return s, changes


def memory_tips(tracer: Any, settings: Any, width: int, height: int, free: int) -> list[str]:
    from engines.frames.memory import GIB, fits

    tips = []
    for offload in ("model", "group", "sequential"):
        if settings.offload == offload:
            continue
        need = tracer.working(settings.model_copy(update={"offload": offload}), width, height)
        tips.append(f"engine.offload={offload} needs about {need / GIB:.1f} GiB"
                    f" ({'fits' if fits(need, free) else 'still too much'})")
    return tips
