"""Video editing by instruction with InstructPix2Pix (Brooks et al. 2023, arXiv:2211.09800):
every frame of the shot's input video is edited as the shot's prompt says ("make it look like a
watercolour", "make it sunset"), through diffusers' StableDiffusionInstructPix2PixPipeline. The
frames are kept consistent as Text2Video-Zero's Video Instruct-Pix2Pix does: the same starting
noise for every frame and cross-frame attention to the first frame (engines/frames/sd/batched.py).
`image_guidance` says how closely the result keeps to the input frame (1.5 as published), the
text guidance how strongly the instruction acts. The default scheduler is Euler (the checkpoint
ships ancestral Euler, whose fresh noise at every step differs from frame to frame).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from engines.frames.sd import batched as sd_batched
from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "pix2pix"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd",)
MEMORY_UNIT = ("batch_frames", "frames per batch")
ROWS = 3  # guidance passes batched together (text + image, image only, none)


class Settings(SdSettings):
    """InstructPix2Pix video settings (conf/engine/pix2pix.yaml documents each key)."""

    name: Literal["pix2pix"] = NAME
    model: str = "instruct_pix2pix"  # registry entry in conf/sd/ (an InstructPix2Pix pipeline)
    image_guidance: float = Field(1.5, ge=1)  # how closely frames keep to the input video (1 = off)
    batch_frames: int = Field(8, ge=1)  # frames edited together (frame 0 is repeated in every batch)
    checkpoint_every: int = Field(5, gt=0)  # denoising steps between durable checkpoints


def input_video(settings: Settings) -> str:
    return "required"


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import entry

    return {"sd": (entry(settings.model, "pix2pix", "engine.model"),)}


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    return {"model": models_["sd"][0]}


def check(settings: Settings, plan: Any, key: str) -> None:
    from engines.frames.sd.models import check_size
    from engines.models.sd import rules_of

    e = models(settings, {})["sd"][0]
    check_size(plan, rules_of(e), e.name)


def unet_frames(settings: Settings) -> int:
    return settings.batch_frames * 3 // 2  # three guidance rows, not two


def pipeline(settings: Settings, plan: Any, models_: dict[str, tuple], device: Any) -> tuple:
    from engines.frames.sd import pipes

    model = models_["sd"][0]
    pipes.base(model, settings, device)
    pipe = pipes.derive(pipes.BASE_CLASSES[("pix2pix", model.rules.base)], settings, device)
    # Euler, not the checkpoint's ancestral Euler: ancestral steps add fresh noise to every frame
    # (different frames would drift apart), and Euler resumes exactly mid-batch
    pipe.scheduler = pipes.scheduler(pipe, settings.scheduler, "EulerDiscreteScheduler")
    return pipe, model.rules


def call_kwargs(settings: Settings, plan: Any, idx: list[int], rules: Any, frames: list) -> dict:
    from engines.frames.sd import inputs

    return {**sd_batched.prompts(settings, plan, idx),
            "image": inputs.as_tensor(frames), "image_guidance_scale": settings.image_guidance,
            "guidance_scale": settings.guidance if settings.guidance is not None
            else rules.guidance}


render = sd_batched.renderer(__name__)  # engines/frames/sd/batched.py
meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
