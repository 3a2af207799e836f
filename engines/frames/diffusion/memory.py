"""The memory estimate of a diffusion chunk, made before any weight is loaded.

`meta_models` builds the pipeline's transformer(s) and VAE on the meta device from their
`config.json` (shapes only: nothing is read but the configs and the safetensors headers) and
counts the weights of every component in the dtype the render will use (the VAE in float32
where the rules say `vae_fp32`). `memory_step` (run by engines/frames/memory.py under its
allocation tracer) goes through a chunk's phases, each with the weights the settings' offload
keeps on the device then (`resident`: all of them; the running component with model offload;
the layers in flight with group or sequential offload): the text encoder, one transformer
forward at the chunk's latent shape (two rows when the guidance passes run batched), the VAE
decode of the chunk (tiled when `vae_tiling: on`). `fit` picks the least offload that fits,
then VAE tiling, then shorter chunks; `memory_tips` says what would fit.

Checked on a real-size Wan 2.1 1.3B without weights (bench/hollow.py): with group offload and
an untiled decode the estimate of an 81-frame 832x480 chunk is 7.6 GiB (8.2 GB), where the Wan
2.1 README publishes 8.19 GB on an RTX 4090 with offloading. Not yet measured on a GPU.
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


def component_numel(folder: Path, largest: dict[str, int] | None = None) -> dict[str, int]:
    """Parameters of each component, from its safetensors headers (no weights read); the
    numel of each component's largest tensor goes into `largest` when given."""
    from engines.models.diffusers import tensor_sizes

    out: dict[str, int] = {}
    for name in COMPONENTS:
        total, big = tensor_sizes(folder / name) if (folder / name).is_dir() else (0, 0)
        if total:
            out[name] = total
            if largest is not None:
                largest[name] = big
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
    big: dict[str, int] = {}
    numel = component_numel(source.folder, big)

    def nbytes(name: str, n: int) -> int:
        return n * (4 if name == "vae" and source.rules.vae_fp32 else size)

    per = {k: nbytes(k, v) for k, v in numel.items()}
    meta = {"engine": engine, "source": source, "bytes": per, "dtype": dtype,
            "largest": {k: nbytes(k, v) for k, v in big.items()},
            # estimate hooks every diffusion engine shares (engines/frames/memory.py `hook`)
            "memory_count": memory_count, "memory_counts": memory_counts,
            "memory_size_multiple": size_multiple,
            "transformer": _build_meta(source.folder, getattr(engine, "DENOISER",
                                                               "transformer")).to(dtype),
            "vae": _build_meta(source.folder, "vae").to(
                torch.float32 if source.rules.vae_fp32 else dtype)}
    return meta, sum(per.values()), 0


def resident(per: dict[str, int], offload: str, phase: str = "transformer",
             largest: dict[str, int] | None = None) -> int:
    """Weight bytes on the device while `phase` (a component: text_encoder, transformer, vae)
    runs, for an offload mode: every component (none); the running one, and both experts of
    a two-expert Wan, one at a time (model: diffusers moves whole components in turn); the
    layers being streamed, two of its largest tensors (group: one layer in use, the next being
    prefetched; sequential: one)."""
    if offload in ("none", "auto"):
        return sum(per.values())
    names = [k for k in per if k == phase or (phase == "transformer" and k == "transformer_2")]
    if offload == "model":
        return max((per[k] for k in names), default=0)
    big = max(((largest or {}).get(k, 0) for k in names), default=0)
    return big * (2 if offload == "group" else 1)


def memory_step(settings: Any, width: int, height: int, meta: dict, device: Any) -> None:
    """One chunk on meta tensors, phase by phase, each with the weights its offload keeps on the
    device: the text encoder's weights (its activations are a few MB), one transformer forward
    at the chunk's latent shape (both guidance rows when they run batched), then the VAE decode
    of the chunk (tiled when `vae_tiling: on`, see `_decode`)."""
    import torch

    from engines.frames.diffusion import cfg_batch

    rules = meta["source"].rules
    clip = settings.clip_frames or rules.clip_frames
    vae, transformer, dtype = meta["vae"], meta["transformer"], meta["dtype"]
    engine = meta["engine"]
    t_factor, s_factor, channels = (engine.latent_factors(vae) if hasattr(engine, "latent_factors")
                                    else latent_factors(vae))
    latent = (1, channels, (clip - 1) // t_factor + 1, height // s_factor, width // s_factor)

    def weights(phase: str) -> Any:
        return torch.empty(resident(meta["bytes"], settings.offload, phase, meta.get("largest")),
                           dtype=torch.uint8, device="meta")

    held = weights("text_encoder")
    del held
    held = weights("transformer")
    batch = 2 if cfg_batch.batched(meta["engine"], settings) else 1
    x = torch.empty((batch, *latent[1:]), dtype=dtype, device="meta")
    text_len = rules.max_sequence_length or TEXT_LEN
    with torch.no_grad():
        transformer(**meta["engine"].transformer_inputs(transformer, x, text_len, "meta"))
        del x, held
        held = weights("vae")
        z = torch.empty(latent, dtype=next(vae.parameters()).dtype, device="meta")
        if hasattr(engine, "meta_decode"):  # a VAE decoded its own way (the engine says how)
            if settings.vae_tiling == "on" and hasattr(vae, "enable_tiling"):
                vae.enable_tiling()
            engine.meta_decode(vae, z)
        else:
            _decode(vae, z, tiled=settings.vae_tiling == "on", t_factor=t_factor,
                    s_factor=s_factor)
    del held


def _decode(vae: Any, z: Any, *, tiled: bool, t_factor: int, s_factor: int) -> None:
    """The VAE decode of latents `z` on meta. Tiled, where the VAE tiles spatially as diffusers'
    do (`tile_sample_min_*`, `tile_sample_stride_*`): one tile's decode is traced, with the
    outputs of the other tiles held meanwhile, then all tiles plus the blended rows and the
    final video (diffusers' tiled_decode keeps every tile until it blends them). Tracing every
    tile would take minutes for an 81-frame 832x480 chunk; the memory is the same."""
    import math

    import torch

    if hasattr(vae, "disable_tiling"):
        vae.disable_tiling()  # the meta VAE is shared between estimates
    sizes = [getattr(vae, f"tile_sample_{k}", None) for k in (
        "min_height", "min_width", "stride_height", "stride_width")]
    if not tiled or not hasattr(vae, "enable_tiling"):
        vae.decode(z, return_dict=False)
        return
    if not all(sizes):  # a VAE that tiles another way: trace its own tiled decode
        vae.enable_tiling()
        vae.decode(z, return_dict=False)
        return
    th, tw, sh, sw = (int(v) for v in sizes)
    _, _, f, h, w = z.shape
    height, width = h * s_factor, w * s_factor
    if height <= th and width <= tw:  # one tile: diffusers decodes it untiled
        vae.decode(z, return_dict=False)
        return
    frames = (f - 1) * t_factor + 1
    out = int(getattr(vae.config, "out_channels", 3)) * frames * z.element_size()
    tiles = math.ceil(height / sh) * math.ceil(width / sw)
    others = torch.empty((tiles - 1) * out * th * tw, dtype=torch.uint8, device="meta")
    vae.decode(z[..., : th // s_factor, : tw // s_factor], return_dict=False)
    del others
    blended = torch.empty(tiles * out * th * tw + 2 * out * height * width, dtype=torch.uint8,
                          device="meta")
    del blended


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
    """Settings that fit in `free` bytes, changing only what is left to `auto` (and the chunk
    length, auto_fit's unit), cheapest first: offload none, then model (components moved once
    per chunk), each without then with VAE tiling; then group offload (weights streamed every
    step: slower), without then with tiling; then, with both, the longest allowed chunk that
    fits (found by bisection: each try is a traced step). What changed is listed."""
    from engines.frames.memory import fits

    rules = tracer.meta["source"].rules

    def ok(s: Any) -> bool:
        return fits(tracer.working(s, width, height), free)

    offloads = ("none", "model", "group") if settings.offload == "auto" else (settings.offload,)
    tilings = (settings.vae_tiling, "on") if settings.vae_tiling == "auto" else (
        settings.vae_tiling,)
    tried = [settings.model_copy(update={"offload": o, "vae_tiling": t})
             for o in offloads for t in tilings]
    for cand in tried:
        if ok(cand):
            return cand, _changes(settings, cand)
    s = tried[-1]
    clip = s.clip_frames or rules.clip_frames
    counts = sorted(k for k in rules.frames.allowed() if s.overlap < k < clip)
    lo, hi, best = 0, len(counts) - 1, None
    while lo <= hi:  # fewer frames never need more memory
        mid = (lo + hi) // 2
        cand = s.model_copy(update={"clip_frames": counts[mid]})
        if ok(cand):
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    return best or s, _changes(settings, best or s)


def _changes(old: Any, new: Any) -> list[str]:
    return [f"{k}={getattr(new, k)}" for k in ("offload", "vae_tiling", "clip_frames")
            if getattr(new, k) != getattr(old, k) and getattr(new, k) not in ("auto", "none")]


def memory_count(tracer: Any, settings: Any) -> int:
    """Frames per chunk (auto_fit's unit): the setting, or the model's clip length."""
    return settings.clip_frames or tracer.meta["source"].rules.clip_frames


def memory_counts(tracer: Any, settings: Any) -> list[int]:
    """The chunk lengths the model accepts below the current one (ascending), longer than the
    overlap: what a suggestion may name."""
    rules = tracer.meta["source"].rules
    return [k for k in rules.frames.allowed()
            if settings.overlap < k < memory_count(tracer, settings)]


def size_multiple(tracer: Any) -> int:
    """Frame sizes a suggestion may name are multiples of this (the model's rule)."""
    return tracer.meta["source"].rules.size_multiple


def memory_tips(tracer: Any, settings: Any, width: int, height: int, free: int) -> list[str]:
    """Each offload mode and VAE tiling on their own, and what auto_fit would choose with the
    offload and the tiling left to it."""
    from engines.frames.memory import GIB, fits

    tips = []
    options = [{"offload": o} for o in ("model", "group", "sequential") if settings.offload != o]
    if settings.vae_tiling != "on":
        options.append({"vae_tiling": "on"})
    for update in options:
        need = tracer.working(settings.model_copy(update=update), width, height)
        key = ", ".join(f"engine.{k}={v}" for k, v in update.items())
        tips.append(f"{key} needs about {need / GIB:.1f} GiB"
                    f" ({'fits' if fits(need, free) else 'still too much'})")
    fitted, changes = fit(tracer, settings.model_copy(update={"offload": "auto",
                          "vae_tiling": "auto"}), width, height, free)
    if changes and fits(tracer.working(fitted, width, height), free):
        tips.append("auto_fit (engine.offload and engine.vae_tiling at auto) would pick "
                    + ", ".join(f"engine.{c}" for c in changes))
    return tips
