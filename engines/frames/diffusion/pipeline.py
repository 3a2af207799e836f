"""Loading a diffusers pipeline from a prepared folder, the way the settings ask: the pipeline
class (text-to-video, or image-conditioned), the dtype (the model's on CUDA, float32 on a CPU;
the VAE in float32 where the model needs it), the scheduler, offload, VAE tiling, and the speed
levers (step caches, compiled repeated blocks, PyTorch's SDPA attention, which diffusers uses
by default). One pipeline is kept per process (a sweep over seeds loads it once).
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("promptreel")
DTYPES = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}
_KEPT: dict[str, Any] = {}  # {"key": ..., "pipes": {class name: pipeline}}: the last loaded


def dtype_of(settings: Any, rules: Any, device: Any) -> Any:
    import torch

    name = settings.dtype if settings.dtype != "auto" else (
        rules.dtype if str(device).startswith("cuda") else "float32")
    return getattr(torch, DTYPES[name])


def load(source: Any, settings: Any, device: Any, *, image: bool = False) -> Any:
    """The pipeline of `source` (engines/models/diffusers.py PipelineSource) ready on `device`:
    its image pipeline (`rules.image_pipeline`) when `image`, else its text pipeline. The two
    share one set of loaded components (`from_pipe`): a long shot switching between them loads
    the weights once."""
    import diffusers
    import torch

    rules = source.rules
    cls_name = rules.image_pipeline if image else rules.pipeline
    dtype = dtype_of(settings, rules, device)
    key = repr((str(source.folder), str(dtype), str(device), settings.scheduler,
                settings.offload, settings.cache, settings.cache_threshold, settings.compile,
                settings.vae_tiling))
    if _KEPT.get("key") == key:
        pipes = _KEPT["pipes"]
        if cls_name not in pipes:
            pipe = getattr(diffusers, cls_name).from_pipe(next(iter(pipes.values())))
            pipe.set_progress_bar_config(disable=True)
            if settings.offload == "model" and torch.device(device).type == "cuda":
                place(pipe, settings.offload, device)  # model offload hooks are per pipeline
            pipes[cls_name] = pipe
        return pipes[cls_name]
    _KEPT.clear()
    quiet()
    check_weights(source)
    cls = getattr(diffusers, cls_name)
    pipe = cls.from_pretrained(str(source.folder), dtype=dtype, use_safetensors=True,
                               local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if settings.scheduler and type(pipe.scheduler).__name__ != settings.scheduler:
        pipe.scheduler = getattr(diffusers, settings.scheduler).from_config(pipe.scheduler.config)
    if rules.vae_fp32:
        pipe.vae.to(torch.float32)
    place(pipe, settings.offload, device)
    if settings.vae_tiling == "on" and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    levers(pipe, settings)
    _KEPT.update(key=key, pipes={cls_name: pipe})
    return pipe


def check_weights(source: Any) -> None:
    """Every model component of the folder (a subfolder with a `config.json`) has safetensors
    weights: a repository that publishes some component only as a pickle (`*.bin`) is refused
    here with what to do, rather than by a loader error naming none of it."""
    from engines.core.errors import MissingWeightsError, UnsafeCheckpointError

    folder = source.folder
    if not (folder / "model_index.json").is_file():
        raise MissingWeightsError(
            f"{source.name}: {folder} holds no diffusers pipeline (no model_index.json): the "
            f"pinned revision of its repo may predate the repo's diffusers layout; pin a commit "
            f"that has it (`revision:` in conf/diffusers/{source.name}.yaml), delete the folder "
            f"and fetch again")
    bare = sorted(p.parent.name for p in folder.glob("*/config.json")
                  if not any(p.parent.glob("*.safetensors")))
    if bare:
        raise UnsafeCheckpointError(
            f"{source.name}: {', '.join(bare)} in {folder} has no safetensors weights; "
            "promptreel loads only safetensors (a pickle can run code when loaded). Convert the "
            "pipeline once on a trusted machine (`pipe.save_pretrained(dir, "
            "safe_serialization=True)`) and use it with engine.model_path=<dir>")


def quiet() -> None:
    """No per-component loading bars from diffusers and transformers: progress is the render's."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()


def place(pipe: Any, offload: str, device: Any) -> None:
    """Put the pipeline on `device`: whole (none), one component at a time on the device
    (model), groups of layers streamed from CPU memory (group), or layer by layer
    (sequential). On a CPU nothing is offloaded."""
    import torch

    device = torch.device(device)
    if device.type != "cuda" or offload in ("none", "auto"):
        pipe.to(device)
    elif offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif offload == "group":
        pipe.enable_group_offload(onload_device=device, offload_device=torch.device("cpu"),
                                  offload_type="leaf_level", use_stream=True)
    else:
        pipe.enable_sequential_cpu_offload(device=device)


def transformers_of(pipe: Any) -> list[Any]:
    return [m for m in (getattr(pipe, "transformer", None), getattr(pipe, "transformer_2", None),
                        getattr(pipe, "unet", None)) if m is not None]


def levers(pipe: Any, settings: Any) -> None:
    """Step caches (they change the frames: off by default, part of the key as settings) and
    torch.compile of the repeated blocks."""
    if settings.cache != "none":
        from diffusers import (
            FasterCacheConfig,
            FirstBlockCacheConfig,
            PyramidAttentionBroadcastConfig,
        )

        config = {"first_block": lambda: FirstBlockCacheConfig(threshold=settings.cache_threshold),
                  "faster": lambda: FasterCacheConfig(
                      spatial_attention_block_skip_range=2,
                      spatial_attention_timestep_skip_range=(-1, 681),
                      current_timestep_callback=lambda: pipe.current_timestep),
                  "pab": lambda: PyramidAttentionBroadcastConfig(
                      spatial_attention_block_skip_range=2,
                      spatial_attention_timestep_skip_range=(100, 800),
                      current_timestep_callback=lambda: pipe.current_timestep)}[settings.cache]
        for model in transformers_of(pipe):
            model.enable_cache(config())
    if settings.compile == "repeated_blocks":
        for model in transformers_of(pipe):
            model.compile_repeated_blocks(fullgraph=True)


def forget() -> None:
    """Drop the kept pipeline (frees its memory once nothing else holds it)."""
    _KEPT.clear()
