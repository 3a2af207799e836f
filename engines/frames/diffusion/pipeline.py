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


def load(source: Any, settings: Any, device: Any, *, image: bool = False,
         engine: Any = None) -> Any:
    """The pipeline of `source` (engines/models/diffusers.py PipelineSource) ready on `device`:
    its image pipeline (`rules.image_pipeline`) when `image`, else its text pipeline. The two
    share one set of loaded components (`from_pipe`): a long shot switching between them loads
    the weights once. `engine`: the engine module (its `cfg_embeds` for cfg_batch)."""
    import diffusers
    import torch

    rules = source.rules
    cls_name = rules.image_pipeline if image else rules.pipeline
    dtype = dtype_of(settings, rules, device)
    key = repr((str(source.folder), str(dtype), str(device), settings.scheduler,
                settings.offload, settings.cache, settings.cache_threshold, settings.compile,
                settings.vae_tiling, settings.cfg_batch, getattr(engine, "NAME", None)))
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
    # the VAE read in float32 where the rules say so (cast up after a bf16 load, its weights
    # would have lost their low bits); diffusers takes a dtype per component
    dtypes = {"default": dtype, "vae": torch.float32} if rules.vae_fp32 else dtype
    pipe = cls.from_pretrained(str(source.folder), dtype=dtypes, use_safetensors=True,
                               local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    if settings.scheduler and type(pipe.scheduler).__name__ != settings.scheduler:
        pipe.scheduler = scheduler_like(settings.scheduler, pipe.scheduler)
    place(pipe, settings.offload, device)
    if settings.vae_tiling == "on" and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    levers(pipe, settings, engine, settings.guidance if settings.guidance is not None
           else rules.guidance)
    _KEPT.update(key=key, pipes={cls_name: pipe})
    return pipe


def scheduler_like(name: str, scheduler: Any) -> Any:
    """Scheduler class `name` built from another scheduler's config. The flow-matching shift
    carries over under its other name (UniPC and DPM++ call it `flow_shift`, FlowMatchEuler
    `shift`): Wan's shift 3.0 would otherwise fall back to FlowMatchEuler's 1.0."""
    import inspect

    import diffusers

    cls = getattr(diffusers, name)
    config = dict(scheduler.config)
    takes = inspect.signature(cls.__init__).parameters
    if "shift" in takes and "flow_shift" in config:
        config["shift"] = config["flow_shift"]
    elif "flow_shift" in takes and "shift" in config:
        config.update(flow_shift=config["shift"], use_flow_sigmas=True,
                      prediction_type="flow_prediction")
    return cls.from_config(config)


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


def levers(pipe: Any, settings: Any, engine: Any = None, guidance: float = 5.0) -> None:
    """The speed levers the settings name, each part of the key as a setting: step caches
    (they change the frames: off by default), batched guidance passes (engines/frames/
    diffusion/cfg_batch.py) and torch.compile of the repeated blocks (same frames up to
    floating-point reassociation). Caches are installed first: the guidance batching wraps
    them, so FasterCache sees both rows of a step in one call."""
    from engines.frames.diffusion import cfg_batch

    guided = guidance > 1.0  # pipelines run the unconditional pass only above 1
    if settings.cache != "none":
        from diffusers import (
            FasterCacheConfig,
            FirstBlockCacheConfig,
            PyramidAttentionBroadcastConfig,
        )

        def step() -> Any:
            return pipe.current_timestep

        config = {"first_block": lambda: FirstBlockCacheConfig(threshold=settings.cache_threshold),
                  # FasterCache (arXiv 2410.19355) as diffusers documents it for CogVideoX:
                  # attention reused every other step below timestep 681, the unconditional
                  # pass approximated from the conditional one in frequency space
                  "faster": lambda: FasterCacheConfig(
                      spatial_attention_block_skip_range=2,
                      spatial_attention_timestep_skip_range=(-1, 681),
                      low_frequency_weight_update_timestep_range=(99, 641),
                      high_frequency_weight_update_timestep_range=(-1, 301),
                      attention_weight_callback=lambda _: 0.3,
                      is_guidance_distilled=not guided,
                      current_timestep_callback=step),
                  "pab": lambda: PyramidAttentionBroadcastConfig(
                      spatial_attention_block_skip_range=2,
                      spatial_attention_timestep_skip_range=(100, 800),
                      current_timestep_callback=step)}[settings.cache]
        for model in transformers_of(pipe):
            model.enable_cache(config())
    if engine is not None and guided and cfg_batch.needed(engine, settings):
        cfg_batch.install(pipe, transformers_of(pipe), engine)
    if settings.compile == "repeated_blocks":
        for model in transformers_of(pipe):
            model.compile_repeated_blocks(fullgraph=True)


def forget() -> None:
    """Drop the kept pipeline (frees its memory once nothing else holds it)."""
    _KEPT.clear()
