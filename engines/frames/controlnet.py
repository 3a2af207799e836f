"""ControlNet video (Zhang et al. 2023, arXiv:2302.05543): every frame of the shot is drawn by
Stable Diffusion (SD 1.5 or SDXL) following a map made from the matching frame of the shot's
input video: its pose (`control: pose`: the keypoints a ViTPose model finds in each frame,
drawn as OpenPose skeletons, engines/frames/sd/pose_maps.py; or `control: maps` with pose maps the
user supplies, one per frame; with an OpenPose ControlNet) or its structure (`control: canny`:
edges found by OpenCV's Canny; with a Canny ControlNet). The frames are made
consistent as Text2Video-Zero does for ControlNet video: the same starting noise for every frame
and cross-frame attention to the first frame (engines/frames/sd/batched.py).

Pipelines: diffusers' StableDiffusionControlNetPipeline / StableDiffusionXLControlNetPipeline.
The pose detector is top-down on the whole frame (one person filling most of it); for several
people, draw the maps with another tool and give them as the input video (`control: maps`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engines.core.errors import ConfigError
from engines.frames.sd import batched as sd_batched
from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "controlnet"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd", "pose")
POSE_MODEL = "vitpose_base_simple"
FOLLOWS = {"canny": "Canny", "pose": "pose (OpenPose)"}  # the ControlNet each found map needs
MEMORY_UNIT = ("batch_frames", "frames per batch")
ROWS = 2  # guidance passes batched together (unconditional, text)
PIPES = {"sd15": "StableDiffusionControlNetPipeline",
         "sdxl": "StableDiffusionXLControlNetPipeline"}


class Settings(SdSettings):
    """ControlNet video settings (conf/engine/controlnet.yaml documents each key)."""

    name: Literal["controlnet"] = NAME
    controlnet: str = "controlnet_sd15_openpose"  # registry entry in conf/sd/ (a ControlNet of the model's base)
    control: Literal["canny", "maps", "pose"] = "maps"  # canny: edges of the input video (OpenCV) | pose: skeletons of its person (ViTPose) | maps: its frames as they are
    # control pose; left out of the settings' identity at their defaults (keys made before stay)
    pose_model: str = Field(POSE_MODEL, exclude_if=lambda v: v == POSE_MODEL)  # control pose: registry entry in conf/pose/
    pose_threshold: float = Field(0.3, ge=0, le=1, exclude_if=lambda v: v == 0.3)  # control pose: keypoints scored lower are not drawn
    canny_low: int = Field(100, ge=0, le=255)  # control canny: lower hysteresis threshold
    canny_high: int = Field(200, ge=0, le=255)  # control canny: upper hysteresis threshold
    controlnet_scale: float = Field(1.0, ge=0)  # how strongly the maps steer
    batch_frames: int = Field(8, ge=1)  # frames denoised together (frame 0 is repeated in every batch)
    checkpoint_every: int = Field(5, gt=0)  # denoising steps between durable checkpoints


def input_video(settings: Settings) -> str:
    return "required"


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import CONF, base_of, entry
    from engines.models.registry import load_entry

    model = entry(settings.model, "pipeline", "engine.model")
    out = {"sd": (model, entry(settings.controlnet, "controlnet", "engine.controlnet",
                               base_of(model)))}
    if settings.control == "pose":
        out["pose"] = (load_entry("pose", settings.pose_model, CONF),)
    return out


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    """What the memory estimate counts (the pose model, when used, stays on the device)."""
    out = {"model": models_["sd"][0], "controlnet": models_["sd"][1]}
    if "pose" in models_:
        out["pose"] = models_["pose"][0]
    return out


def check(settings: Settings, plan: Any, key: str) -> None:
    from engines.frames.sd.models import check_size
    from engines.models.sd import rules_of

    model, net = models(settings, {})["sd"]
    check_size(plan, rules_of(model), model.name)
    follows = rules_of(net).control
    if settings.control in ("canny", "pose") and follows != settings.control:
        raise ConfigError("engine.control", settings.control, "maps for this ControlNet "
                          f"(it follows {follows} maps: give them as the input video, "
                          f"control: maps), or a {FOLLOWS[settings.control]} ControlNet")


def unet_frames(settings: Settings) -> int:
    return settings.batch_frames


def pipeline(settings: Settings, plan: Any, models_: dict[str, tuple], device: Any) -> tuple:
    from engines.frames.sd import pipes

    model, net = models_["sd"]
    pipes.base(model, settings, device, {"controlnet": net})
    pipe = pipes.derive(PIPES[model.rules.base], settings, device,
                        controlnet=pipes.extra("controlnet"))
    pipe.scheduler = pipes.scheduler(pipe, settings.scheduler)
    return pipe, model.rules


def input_maps(settings: Settings, models_: dict[str, tuple], frames: list) -> list:
    """The conditioning map of every input frame (batched.render calls it once per render)."""
    from engines.frames.sd import inputs

    pose = models_["pose"][0] if "pose" in models_ else None
    return inputs.control_maps(frames, settings.control, settings.canny_low, settings.canny_high,
                               pose=pose, pose_threshold=settings.pose_threshold)


def call_kwargs(settings: Settings, plan: Any, idx: list[int], rules: Any, maps: list) -> dict:
    from PIL import Image

    return {**sd_batched.prompts(settings, plan, idx),
            "image": [Image.fromarray(m) for m in maps], "height": plan.height,
            "width": plan.width, "controlnet_conditioning_scale": settings.controlnet_scale,
            "guidance_scale": settings.guidance if settings.guidance is not None
            else rules.guidance}


render = sd_batched.renderer(__name__)  # engines/frames/sd/batched.py
meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
