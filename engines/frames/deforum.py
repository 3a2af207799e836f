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
frame being diffused (a few seconds on a GPU). 3D mode (depth-based warps) is not implemented.
"""

from __future__ import annotations

import time
from itertools import pairwise
from typing import Any, Literal

from pydantic import Field

from engines.core.errors import ConfigError
from engines.frames.sd import memory as sd_memory
from engines.frames.sd.settings import SdSettings

NAME = "deforum"
CODE_VERSION = "1"  # bump when the frames for the same settings would change
MODELS = ("sd",)
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


def models(settings: Settings, film_models: dict[str, tuple]) -> dict[str, tuple]:
    from engines.frames.sd.models import entry

    return {"sd": (entry(settings.model, "pipeline", "engine.model"),)}


def sources(models_: dict[str, tuple], settings: Settings) -> dict[str, Any]:
    return {"model": models_["sd"][0]}


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
    w, h, border = plan.width, plan.height, plan.border
    moves = [camera.frame_move(f) for f in plan.frames]

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
            moved = camera.warp_uint8(x_a, camera.compose(w, h, moves[a + 1:b + 1]), border)
            if settings.colour_coherence:
                moved = match_colour(moved, ref)
            x_b = loop.diffuse(camera.to_uint8(moved), b, seed)
        for j in range(max(committed, a + 1), b):
            t = (j - a) / (b - a)
            fa = camera.warp_uint8(x_a, camera.compose(w, h, moves[a + 1:j + 1]), border)
            fb = camera.warp_uint8(x_b, camera.inverse(w, h, moves[j + 1:b + 1]), border)
            frame = camera.to_uint8((1 - t) * fa + t * fb)
            st = {"a": torch.tensor(a), "x_a": torch.from_numpy(x_a), "ref": ref,
                  "x_b": torch.from_numpy(x_b)}
            commit(j, frame, st, {"kind": "in-between", "strength": 0.0, "seed": -1}, started)
        state = {"a": torch.tensor(b), "x_a": torch.from_numpy(x_b), "ref": ref}
        commit(b, x_b, state, {"kind": "diffused", "strength": loop.strength[b], "seed": seed},
               started)
        committed = b + 1


meta_models, memory_step, fit, memory_tips = sd_memory.hooks(__name__)  # engines/frames/sd/memory.py
