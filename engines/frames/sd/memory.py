"""The memory estimate of an SD animation engine, made before any weight is loaded.

`meta_models` builds the checkpoint's UNet and VAE (and a ControlNet, when the engine uses one)
on the meta device from their `config.json` and counts the weights of every component from the
safetensors headers, in the dtype the render will use. `memory_step` (run by
engines/frames/memory.py under its allocation tracer) holds the weights that stay on the device
for the offload mode, runs one UNet forward over the frames one step denoises together (the
engine's `unet_frames(settings)`, times two for the guidance passes, which diffusers batches;
AnimateDiff's motion modules add a temporal attention over the same tokens, not counted), then
the VAE decode of one frame (engines decode frame by frame). `fit` picks the least offload that
fits, then VAE tiling.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDERS = ("unet", "vae", "text_encoder", "text_encoder_2")


def numel(folder: Path) -> int:
    """Parameters in the safetensors files directly in `folder` (headers only)."""
    from engines.models.diffusers import tensor_sizes

    return tensor_sizes(folder)[0]




def component_bytes(sources: dict[str, Any], size: int) -> dict[str, int]:
    """Weight bytes of each component of the checkpoint and of each extra source."""
    out: dict[str, int] = {}
    base = sources["model"]
    for name in FOLDERS:
        if (base.folder / name).is_dir():
            out[name] = numel(base.folder / name) * size
    for key, src in sources.items():
        if key != "model":
            out[key] = numel(src.folder) * size
    return out


def _meta(folder: Path, cls_name: str | None = None) -> Any:
    import diffusers
    from accelerate import init_empty_weights

    config = json.loads((folder / "config.json").read_text())
    cls = getattr(diffusers, cls_name or config["_class_name"])
    with init_empty_weights():
        model = cls.from_config(config)
    return model.to("meta")


def meta_models(engine: Any, models: dict[str, tuple], settings: Any, device: Any) -> tuple:
    """({"engine", "unet", "vae", "controlnet"?, "bytes", "dtype"}, weight bytes, 0)."""
    import torch

    from engines.frames.sd.pipes import dtype_of

    sources = engine.sources(models, settings)
    base = sources["model"]
    dtype = dtype_of(settings, base.rules, device)
    size = torch.empty((), dtype=dtype).element_size()
    per = component_bytes(sources, size)
    meta = {"engine": engine, "bytes": per, "dtype": dtype,
            "unet": _meta(base.folder / "unet").to(dtype),
            "vae": _meta(base.folder / "vae").to(dtype)}
    if "controlnet" in sources:
        meta["controlnet"] = _meta(sources["controlnet"].folder).to(dtype)
    return meta, sum(per.values()), 0


def resident(per: dict[str, int], offload: str) -> int:
    if offload in ("none", "auto"):
        return sum(per.values())
    if offload == "model":  # one component at a time (the UNet is the largest)
        return max(per.values()) if per else 0
    return 0  # sequential: layers streamed in as they run


def _unet_kwargs(unet: Any, x: Any, dtype: Any) -> dict[str, Any]:
    import torch

    cfg = unet.config
    b = x.shape[0]
    kw: dict[str, Any] = {"encoder_hidden_states": torch.empty(b, 77, cfg.cross_attention_dim,
                                                               device="meta", dtype=dtype)}
    if cfg.addition_embed_type == "text_time":
        time_dim = 6 * cfg.addition_time_embed_dim
        kw["added_cond_kwargs"] = {
            "text_embeds": torch.empty(b, cfg.projection_class_embeddings_input_dim - time_dim,
                                       device="meta", dtype=dtype),
            "time_ids": torch.empty(b, 6, device="meta", dtype=dtype)}
    return kw


def memory_step(settings: Any, width: int, height: int, meta: dict, device: Any) -> None:
    import torch

    dtype, unet, vae = meta["dtype"], meta["unet"], meta["vae"]
    frames = int(meta["engine"].unet_frames(settings))
    channels = unet.config.in_channels
    x = torch.empty((2 * frames, channels, height // 8, width // 8), dtype=dtype, device="meta")
    weights = torch.empty(resident(meta["bytes"], settings.offload), dtype=torch.uint8,
                          device="meta")
    t = torch.zeros(x.shape[0], dtype=torch.long, device="meta")
    with torch.no_grad():
        if "controlnet" in meta:
            cn = meta["controlnet"]
            cond = torch.empty((x.shape[0], 3, height, width), dtype=dtype, device="meta")
            kw = _unet_kwargs(cn, x, dtype)
            kw.pop("encoder_hidden_states")
            cn(x[:, :4], t, encoder_hidden_states=_unet_kwargs(unet, x, dtype)[
                "encoder_hidden_states"], controlnet_cond=cond, return_dict=False, **kw)
        unet(x, t, return_dict=False, **_unet_kwargs(unet, x, dtype))
        del x
        z = torch.empty((1, vae.config.latent_channels, height // 8, width // 8),
                        dtype=next(vae.parameters()).dtype, device="meta")
        if settings.vae_tiling == "on":
            vae.enable_tiling()
        vae.decode(z, return_dict=False)
    del weights


def fit(tracer: Any, settings: Any, width: int, height: int, free: int) -> tuple[Any, list[str]]:
    """The least offload that fits, then VAE tiling."""
    from engines.frames.memory import fits

    def ok(s: Any) -> bool:
        return fits(tracer.working(s, width, height), free)

    for offload in ("none", "model", "sequential"):
        cand = settings.model_copy(update={"offload": offload})
        if ok(cand):
            return cand, ([f"offload={offload}"] if offload != "none" else [])
    s = settings.model_copy(update={"offload": "sequential", "vae_tiling": "on"})
    return s, ["offload=sequential", "vae_tiling=on"]


def memory_tips(tracer: Any, settings: Any, width: int, height: int, free: int) -> list[str]:
    from engines.frames.memory import GIB, fits

    tips = []
    for offload in ("model", "sequential"):
        if settings.offload == offload:
            continue
        need = tracer.working(settings.model_copy(update={"offload": offload}), width, height)
        tips.append(f"engine.offload={offload} needs about {need / GIB:.1f} GiB"
                    f" ({'fits' if fits(need, free) else 'still too much'})")
    return tips


def hooks(module: str) -> tuple:
    """(meta_models, memory_step, fit, memory_tips) of Stable Diffusion engine module `module`
    (its name; looked up when called), the estimate every SD engine shares."""
    import sys

    def engine_meta_models(models: dict[str, tuple], settings: Any, device: Any) -> tuple:
        return meta_models(sys.modules[module], models, settings, device)

    return engine_meta_models, memory_step, fit, memory_tips
