"""Loading SD pipelines from prepared component folders (engines/models/sd.py `SdSource`).

The checkpoint's text-to-image pipeline (StableDiffusionPipeline or StableDiffusionXLPipeline,
or InstructPix2Pix) is loaded once per process in the dtype the settings ask for; the pipelines
an engine runs (img2img, ControlNet, AnimateDiff, Text2Video-Zero...) are derived from its
components with diffusers' `from_pipe`, which shares the weights instead of loading them again.
Extra components (a MotionAdapter, a ControlNet) are loaded from their own folders and kept with
it. A pickled weight file is never read (`use_safetensors=True`, and the folders were checked
when prepared).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("promptreel")
_KEPT: dict[str, Any] = {}  # {"key": ..., "base": pipeline, "extras": {...}, "derived": {...}}
BASE_CLASSES = {("pipeline", "sd15"): "StableDiffusionPipeline",
                ("pipeline", "sdxl"): "StableDiffusionXLPipeline",
                ("pix2pix", "sd15"): "StableDiffusionInstructPix2PixPipeline",
                ("pix2pix", "sdxl"): "StableDiffusionXLInstructPix2PixPipeline"}


def dtype_of(settings: Any, rules: Any, device: Any) -> Any:
    from engines.frames.diffusion.pipeline import dtype_of as diffusion_dtype

    return diffusion_dtype(settings, rules, device)


def _extra(source: Any, cls_name: str, dtype: Any) -> Any:
    import diffusers

    cls = getattr(diffusers, cls_name)
    kw = {"variant": source.rules.variant} if source.rules.variant else {}
    return cls.from_pretrained(str(source.folder), dtype=dtype, use_safetensors=True,
                               local_files_only=True, **kw)


def base(source: Any, settings: Any, device: Any, extras: dict[str, Any] | None = None) -> Any:
    """The checkpoint's own pipeline on `device`, with `extras` ({name: SdSource} of a
    motion adapter / ControlNet, loaded and kept for `derive`)."""
    import diffusers

    from engines.frames.diffusion.pipeline import quiet

    rules = source.rules
    dtype = dtype_of(settings, rules, device)
    extras = extras or {}
    key = repr((str(source.folder), str(dtype), str(device), settings.offload, settings.vae_tiling,
                sorted((k, str(v.folder)) for k, v in extras.items())))
    if _KEPT.get("key") == key:
        return _KEPT["base"]
    _KEPT.clear()
    quiet()
    cls = getattr(diffusers, BASE_CLASSES[(rules.role, rules.base)])
    kw: dict[str, Any] = {"variant": rules.variant} if rules.variant else {}
    if rules.base == "sd15":
        kw.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe = cls.from_pretrained(str(source.folder), dtype=dtype, use_safetensors=True,
                               local_files_only=True, **kw)
    pipe.set_progress_bar_config(disable=True)
    loaded = {}
    for name, src in extras.items():
        cls_name = {"motion_adapter": "MotionAdapter", "controlnet": "ControlNetModel"}[
            src.rules.role]
        loaded[name] = _extra(src, cls_name, dtype)
    _KEPT.update(key=key, base=pipe, extras=loaded, derived={})
    return pipe


def extra(name: str) -> Any:
    """An extra component loaded by `base`."""
    return _KEPT["extras"][name]


def derive(cls_name: str, settings: Any, device: Any, tag: str = "", setup: Any = None,
           **components: Any) -> Any:
    """A pipeline of class `cls_name` sharing the base pipeline's components (plus
    `components`), placed on `device` with the settings' offload; kept per (class, tag).
    `setup(pipe)` runs once, when it is made (e.g. fusing LoRAs into its own UNet)."""
    import diffusers

    from engines.frames.diffusion.pipeline import place

    key = (cls_name, tag)
    if key in _KEPT["derived"]:
        return _KEPT["derived"][key]
    base_pipe = _KEPT["base"]
    cls = getattr(diffusers, cls_name)
    if cls_name == type(base_pipe).__name__ and not components:
        pipe = base_pipe
    else:
        pipe = cls.from_pipe(base_pipe, **components)
    pipe.set_progress_bar_config(disable=True)
    if setup is not None:
        setup(pipe)
    place(pipe, "none" if settings.offload == "auto" else settings.offload, device)
    if settings.vae_tiling == "on" and hasattr(pipe, "vae") and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    _KEPT["derived"][key] = pipe
    return pipe


def scheduler(pipe: Any, name: str | None, default: str | None = None, **config: Any) -> Any:
    """A fresh scheduler of class `name` (or `default`, or the checkpoint's own) built from the
    pipeline's scheduler config, with `config` overrides."""
    import diffusers

    cls_name = name or default or type(pipe.scheduler).__name__
    return getattr(diffusers, cls_name).from_config(pipe.scheduler.config, **config)


def forget() -> None:
    _KEPT.clear()
