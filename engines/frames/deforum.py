"""Deforum-style 2D animation with Stable Diffusion (SD 1.5 or SDXL) through diffusers'
img2img pipelines: every frame moves the previous one with the shot's camera schedules (zoom,
angle, translation x/y; engines/planning/motion.py, Deforum's 2D warp) and denoises it again
under a strength schedule. Built from the idea of Deforum's animation mode (nothing of its code).

The loop, frame by frame (`cadence` N diffuses every Nth frame):
- frame 0: text-to-image, or img2img from the shot's init image at the first strength;
- a diffused frame b, N frames after the last one a: frame a moved by the camera moves of
  frames a+1..b (composed into one warp: one resample), its colours matched to frame 0's in LAB
  (`colour_coherence`, Reinhard's transfer), Gaussian noise of the noise schedule's amount
  added, then img2img at strength s(b) with `steps` in the full schedule (diffusers runs
  int(steps x s) of them; none: the frame is the moved image as it is, so strength 0 with a still
  camera repeats the frame);
- the frames between a and b: frame a moved forward to them and frame b moved back to them (the
  inverse of the moves after them), cross-faded linearly by position;
- `seed_behaviour`: `iter` (the shot's seed + the frame's index) or `fixed` (the shot's seed on
  every diffused frame).

Durable loop state (committed with every frame, engines/frames/base.py): the last diffused
frame a, the next one b once made (so the in-betweens resume without re-diffusing it), frame 0's
colour statistics and where the loop is. Frames are kept as the uint8 images committed, so a
resumed render computes from exactly what an uninterrupted one does; a kill loses at most the
frame being diffused (a few seconds on a GPU).

3D mode (`animation_mode: 3D`): the moves are those of a camera in 3D (the shot's translation_x,
translation_y, translation_z and rotation_3d_x/y/z schedules; zoom and angle must stay still:
translation_z and rotation_3d_z do their work), applied to the frame lifted by a depth model's
estimate (`depth_model`, transformers' AutoModelForDepthEstimation: Depth Anything V2 or DPT;
engines/frames/sd/camera3d.py). Frame a is moved forward with its own depth, frame b back with
its own; the depth of a committed frame is computed again on resume (a function of its bytes),
so nothing about it needs saving.
"""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from engines.core.errors import ConfigError
from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "deforum"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd", "depth")
DEPTH_MODEL = "depth_anything_v2_small"
MEMORY_UNIT = ("cadence", "frames per diffused frame")
PIPES = {"sd15": ("StableDiffusionPipeline", "StableDiffusionImg2ImgPipeline"),
         "sdxl": ("StableDiffusionXLPipeline", "StableDiffusionXLImg2ImgPipeline")}


class Settings(SdSettings):
    """Deforum settings (conf/engine/deforum.yaml documents each key)."""

    name: Literal["deforum"] = NAME
    strength_schedule: str = "0:(0.65)"  # img2img strength per frame, 0..1 (0 keeps the moved frame)
    noise_schedule: str = "0:(0.02)"  # std of Gaussian noise added to the moved frame, 0..1 pixel units
    cadence: int = Field(1, ge=1)  # diffuse every Nth frame; the frames between are cross-faded
    colour_coherence: bool = True  # match each moved frame's LAB mean and std to frame 0's
    seed_behaviour: Literal["iter", "fixed"] = "iter"  # iter: seed + frame index; fixed: the shot's seed
    # 3D mode; each key is left out of the settings' identity at its default, so 2D renders keep
    # the cache keys they had before 3D mode existed
    animation_mode: Literal["2D", "3D"] = Field("2D", exclude_if=lambda v: v == "2D")  # 2D: zoom/angle/translation warps; 3D: a camera over a depth estimate
    depth_model: str = Field(DEPTH_MODEL, exclude_if=lambda v: v == DEPTH_MODEL)  # 3D: registry entry in conf/depth/
    fov: float = Field(40.0, gt=0, lt=180, exclude_if=lambda v: v == 40.0)  # 3D: the camera's horizontal field of view, degrees
    depth_near: float = Field(1.0, gt=0, exclude_if=lambda v: v == 1.0)  # 3D: depth units of the nearest pixel
    depth_far: float = Field(10.0, gt=0, exclude_if=lambda v: v == 10.0)  # 3D: depth units of the farthest pixel

    @field_validator("depth_far")
    @classmethod
    def _depth_range(cls, v: float, info: ValidationInfo) -> float:
        near = info.data.get("depth_near")
        if near is not None and v <= near:
            raise ValueError(f"a depth larger than depth_near ({near:g})")
        return v


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import CONF, entry
    from engines.models.registry import load_entry

    out = {"sd": (entry(settings.model, "pipeline", "engine.model"),)}
    if settings.animation_mode == "3D":
        out["depth"] = (load_entry("depth", settings.depth_model, CONF),)
    return out


def motion_3d(settings: Settings) -> bool:
    """Whether the shot's 3D camera schedules drive this engine (flows/checks.py)."""
    return settings.animation_mode == "3D"


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    """What the memory estimate counts: the checkpoint, and in 3D mode the depth model's
    weights (it stays on the device)."""
    out = {"model": models_["sd"][0]}
    if "depth" in models_:
        out["depth"] = models_["depth"][0]
    return out


def schedules(settings: Settings, n: int, fps: float) -> tuple[list[float], list[float]]:
    """(strength per frame, noise per frame); ConfigError if a value leaves its range."""
    from engines.planning.keyframes import schedule_values

    strength = schedule_values(settings.strength_schedule, n, key="engine.strength_schedule",
                               fps=fps)
    noise = schedule_values(settings.noise_schedule, n, key="engine.noise_schedule", fps=fps)
    for key, values, ok, accepted in (
            ("strength_schedule", strength, lambda v: 0.0 <= v <= 1.0, "a strength from 0 to 1 at every frame"),
            ("noise_schedule", noise, lambda v: 0.0 <= v <= 1.0, "a noise amount from 0 to 1 at every frame")):
        bad = next((i for i, v in enumerate(values) if not ok(v)), None)
        if bad is not None:
            raise ConfigError(f"engine.{key}", getattr(settings, key), accepted,
                              f"frame {bad} gives {values[bad]:g}")
    return strength, noise


def check(settings: Settings, plan: Any, key: str) -> None:
    from engines.frames.sd.models import check_size
    from engines.models.sd import rules_of

    e = models(settings, {})["sd"][0]
    schedules(settings, plan.n_frames, plan.fps)
    if settings.animation_mode == "3D":
        for name, still in (("zoom", 1.0), ("angle", 0.0)):
            bad = next((i for i, f in enumerate(plan.frames) if getattr(f, name) != still), None)
            if bad is not None:
                raise ConfigError(f"{key}.motion.{name}", getattr(plan.frames[bad], name),
                                  f"{still:g} at every frame with engine.animation_mode 3D",
                                  f"frame {bad}; in 3D the camera moves with translation_z "
                                  "(closer) and rotation_3d_z (roll)")
    check_size(plan, rules_of(e), e.name)


def depends_on_length(settings: Settings) -> str | None:
    if settings.cadence > 1:
        return "with cadence > 1 the last frames of a shot are cross-faded toward its last frame"
    return None


def unet_frames(settings: Settings) -> int:
    return 1


def keyframes(n: int, cadence: int) -> list[int]:
    """The diffused frames: 0, N, 2N, ... and the shot's last frame."""
    keys = list(range(0, n, cadence))
    if keys[-1] != n - 1:
        keys.append(n - 1)
    return keys


def frame_seed(settings: Settings, seed: int, frame: int) -> int:
    return int(seed) + frame if settings.seed_behaviour == "iter" else int(seed)


class _Loop:
    """The engine's pipelines and per-shot constants."""

    def __init__(self, settings: Settings, plan: Any, source: Any, device: Any):
        from engines.frames.sd import pipes

        self.settings, self.plan, self.device = settings, plan, device
        self.rules = source.rules
        self.steps = settings.steps or self.rules.steps
        self.guidance = settings.guidance if settings.guidance is not None else self.rules.guidance
        self.strength, self.noise = schedules(settings, plan.n_frames, plan.fps)
        pipes.base(source, settings, device)
        t2i, i2i = PIPES[self.rules.base]
        self.t2i = pipes.derive(t2i, settings, device)
        self.i2i = pipes.derive(i2i, settings, device)
        self.sched = pipes.scheduler(self.t2i, settings.scheduler)

    def _prompts(self, frame: int) -> dict[str, Any]:
        from engines.frames.diffusion.render import prompt_text

        prompt, negative = prompt_text(self.plan.frames[frame])
        negative = ", ".join(t for t in (self.settings.negative_prompt, negative) if t)
        return {"prompt": prompt, "negative_prompt": negative or None,
                "guidance_scale": self.guidance}

    def _run(self, pipe: Any, seed: int, **kw: Any) -> Any:
        import torch

        from engines.frames.diffusion import resume

        pipe.scheduler = resume.fresh(self.sched)
        generator = torch.Generator("cpu").manual_seed(seed)
        out = pipe(**kw, num_inference_steps=self.steps, generator=generator, output_type="np")
        from engines.frames.sd.camera import to_uint8

        return to_uint8(out.images[0])

    def first(self, seed: int) -> Any:
        """Frame 0: text-to-image, or img2img from the init image."""
        if self.plan.init_image:
            from engines.frames.diffusion.render import _image

            init = _image(self.plan.init_image, self.plan.width, self.plan.height).numpy()
            return self.diffuse(init, 0, seed, noise=False)
        return self._run(self.t2i, seed, height=self.plan.height, width=self.plan.width,
                         **self._prompts(0))

    def diffuse(self, image: Any, frame: int, seed: int, noise: bool = True) -> Any:
        """img2img of a uint8 frame at the frame's strength (and noise)."""
        import torch

        from engines.frames.sd.camera import to_uint8

        x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 255.0
        amount = self.noise[frame] if noise else 0.0
        if amount > 0:
            g = torch.Generator("cpu").manual_seed((seed * 7919 + 17) % 2 ** 63)
            x = (x + amount * torch.randn(x.shape, generator=g)).clamp(0, 1)
        strength = self.strength[frame]
        if int(self.steps * strength) < 1:  # no denoising step: the frame is the moved image
            return to_uint8(x)
        return self._run(self.i2i, seed, image=x, strength=strength, **self._prompts(frame))


class _Camera:
    """The camera moves of a shot: `forward(x_a, a, j)` is frame a (uint8) as the camera sees it
    at frame j > a, `back(x_b, j, b)` frame b as seen at frame j < b; float 0..1 [1, 3, H, W].
    2D: the composed similarity (engines/frames/sd/camera.py); 3D: the composed rigid move over
    the frame's depth estimate (engines/frames/sd/camera3d.py)."""

    def __init__(self, settings: Settings, plan: Any, depth_model: Any):
        from engines.frames.sd import camera, camera3d

        self.settings, self.plan, self.depth_model = settings, plan, depth_model
        self.three_d = settings.animation_mode == "3D"
        self.moves = [(camera3d if self.three_d else camera).frame_move(f) for f in plan.frames]
        self._depths: dict[bytes, Any] = {}

    def depth(self, image: Any) -> Any:
        """Depth units of a uint8 frame (the last two computed are kept)."""
        import hashlib

        from engines.frames.sd import camera3d

        key = hashlib.sha256(image.tobytes()).digest()
        if key not in self._depths:
            if len(self._depths) >= 2:
                self._depths.pop(next(iter(self._depths)))
            self._depths[key] = camera3d.depth_units(self.depth_model(image),
                                                     self.settings.depth_near,
                                                     self.settings.depth_far)
        return self._depths[key]

    def _move(self, image: Any, moves: list, back: bool) -> Any:
        from engines.frames.sd import camera, camera3d

        p = self.plan
        if not self.three_d:
            move = (camera.inverse if back else camera.compose)(p.width, p.height, moves)
            return camera.warp_uint8(image, move, p.border)
        x = camera.warp_uint8(image, camera.IDENTITY, p.border)
        if not any(m != camera3d.STILL for m in moves):
            return x
        m = (camera3d.inverse if back else camera3d.compose)(moves)
        return camera3d.warp(x.double(), self.depth(image), m, self.settings.fov,
                             p.border).float()

    def forward(self, image: Any, a: int, j: int) -> Any:
        return self._move(image, self.moves[a + 1:j + 1], back=False)

    def back(self, image: Any, j: int, b: int) -> Any:
        return self._move(image, self.moves[j + 1:b + 1], back=True)


def render(settings: Settings, plan: Any, models_: dict[str, tuple], sink: Any, device: Any,
           progress: Any = None) -> None:
    import torch

    from engines.frames.sd import camera
    from engines.planning.motion import colour_stats, match_colour

    n = plan.n_frames
    committed, state = sink.resume()
    if committed >= n:
        return
    loop = _Loop(settings, plan, models_["sd"][0], device)
    border = plan.border
    cam = _Camera(settings, plan, models_["depth"][0] if "depth" in models_ else None)

    def commit(index: int, image: Any, st: dict[str, Any], record: dict[str, Any],
               started: float) -> None:
        record = {**record, "seconds": round(time.perf_counter() - started, 4),
                  "prompts": loop._prompts(index)["prompt"]}
        sink.commit(index, image, st, record)
        if progress is not None:
            progress({"frame": index, "n_frames": n, **record})

    started = time.perf_counter()
    if committed == 0:
        seed = frame_seed(settings, plan.seed, 0)
        x0 = loop.first(seed)
        ref = colour_stats(camera.warp_uint8(x0, camera.IDENTITY, border))
        state = {"a": torch.tensor(0), "x_a": torch.from_numpy(x0), "ref": ref}
        commit(0, x0, state, {"kind": "diffused", "strength": loop.strength[0], "seed": seed},
               started)
        committed = 1
    keys = keyframes(n, settings.cadence)
    for a, b in pairwise(keys):
        if b < committed:
            continue
        if int(state["a"]) != a:
            raise RuntimeError(f"deforum: resumed state is at frame {int(state['a'])}, not {a}")
        x_a, ref = state["x_a"].numpy(), state["ref"]
        started = time.perf_counter()
        seed = frame_seed(settings, plan.seed, b)
        if "x_b" in state:
            x_b = state["x_b"].numpy()
        else:
            moved = cam.forward(x_a, a, b)
            if settings.colour_coherence:
                moved = match_colour(moved, ref)
            x_b = loop.diffuse(camera.to_uint8(moved), b, seed)
        for j in range(max(committed, a + 1), b):
            t = (j - a) / (b - a)
            fa, fb = cam.forward(x_a, a, j), cam.back(x_b, j, b)
            frame = camera.to_uint8((1 - t) * fa + t * fb)
            st = {"a": torch.tensor(a), "x_a": torch.from_numpy(x_a), "ref": ref,
                  "x_b": torch.from_numpy(x_b)}
            commit(j, frame, st, {"kind": "in-between", "strength": 0.0, "seed": -1}, started)
        state = {"a": torch.tensor(b), "x_a": torch.from_numpy(x_b), "ref": ref}
        commit(b, x_b, state, {"kind": "diffused", "strength": loop.strength[b], "seed": seed},
               started)
        committed = b + 1


meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
