"""The film a user describes: its shots, their prompts, length, camera motion, engine choice,
speed and joins, as typed, frozen models (pydantic, unknown keys refused). flows/config.py
composes them into the render's config; planning (engines/planning/timeline.py) turns a shot
into the `ShotPlan` its engine renders. Nothing here imports torch.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MAX_FRAMES = 100_000
NO_MOVE = "0:(0)"  # a still schedule
OPEN_HORIZON = 10_000  # frames planned for an open-ended shot that gives no length (at most)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def slug(v: str) -> str:
    """A film or shot name: it becomes part of paths, so no '/', no leading '.', no spaces."""
    if not SLUG.match(v):
        raise ValueError("accepted: a name of letters, digits, '_', '-', '.' (not first), "
                         "at most 64 characters")
    return v


class Motion(Frozen):
    """Camera motion per frame (animate_2d), each a Deforum-style schedule string of `t`."""

    zoom: str = "0:(1.0)"  # scale per frame (1.02 = 2% closer each frame)
    angle: str = "0:(0)"  # degrees per frame, counter-clockwise
    translation_x: str = "0:(0)"  # pixels per frame, right positive
    translation_y: str = "0:(0)"  # pixels per frame, down positive
    # 3D camera (engines with a 3D mode: deforum, engine.animation_mode 3D); left out of the
    # shot's identity while "0:(0)", so 2D films hash as before these keys existed
    translation_z: str = Field("0:(0)", exclude_if=lambda v: v == NO_MOVE)  # forward, 1/200 depth unit per frame
    rotation_3d_x: str = Field("0:(0)", exclude_if=lambda v: v == NO_MOVE)  # degrees per frame; content moves down
    rotation_3d_y: str = Field("0:(0)", exclude_if=lambda v: v == NO_MOVE)  # degrees per frame; content moves right
    rotation_3d_z: str = Field("0:(0)", exclude_if=lambda v: v == NO_MOVE)  # degrees per frame; content turns counter-clockwise
    interpolation: Literal["linear", "quadratic", "cubic", "pchip"] = "linear"  # between keys (engines/planning/keyframes.py)
    border: Literal["reflect", "replicate", "wrap"] = "reflect"  # what comes into view (engines/planning/motion.py)


class PromptTransition(Frozen):
    kind: Literal["cut", "crossfade", "interpolate"] = "cut"  # between prompt keyframes (engines/planning/timeline.py)
    frames: int = Field(default=0, ge=0)  # crossfade length in frames, starting at the key


class ShotJoin(Frozen):
    """How this shot joins the next one (post-production blend_shots)."""

    kind: str = "cut"  # cut, or an ffmpeg xfade transition: fade, dissolve, wipeleft, ...
    seconds: float = Field(default=0.0, ge=0)  # overlap length of a cross-fade

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        from engines.planning.joins import TRANSITIONS

        if v != "cut" and v not in TRANSITIONS:
            raise ValueError(f"accepted: cut, {', '.join(sorted(TRANSITIONS))}")
        return v


class Shot(Frozen):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str
    prompts: str | dict[str, str]  # one prompt line, or keyframes {"0": ..., "30": ...} / {"2.5s": ...}
    frames: int | None = Field(default=None, gt=0, le=MAX_FRAMES)  # length in frames ...
    seconds: float | None = Field(default=None, gt=0)  # ... or in seconds (one of the two; an
    # open-ended shot, engine max_iterations -1, may give neither: it plans OPEN_HORIZON frames)
    transition: PromptTransition = PromptTransition()
    engine: str | None = None  # None: the film's engine
    engine_overrides: dict[str, Any] = {}  # fields of the engine's settings for this shot only
    motion: Motion = Motion()
    image_prompts: tuple[str, ...] = ()  # "path:weight[:stop]"
    init_image: str | None = None
    input_video: str | None = Field(None, exclude_if=lambda v: v is None)  # a video the shot
    # follows (ControlNet maps, restyling, editing): extracted at the film's fps (tasks/extract_video.py)
    continues: Literal["previous"] | None = Field(None, alias="continue")  # `continue: previous`:
    # start from the last frame of the shot before (engines that take an image)
    seed: int | None = Field(default=None, ge=0, le=2**32 - 1)  # None: the film seed + the shot's index
    speed: dict[str, Any] | None = None  # this shot's speed settings (None: the film's)
    join: ShotJoin = ShotJoin()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return slug(v)

    @field_validator("prompts", mode="before")
    @classmethod
    def _keys(cls, v: Any) -> Any:
        """Keyframe keys as text: YAML `{0: a, 30: b}` and Hydra's `+...prompts={0: a}` give ints."""
        if isinstance(v, dict):
            return {k if isinstance(k, str) or isinstance(k, bool) else str(k): x
                    for k, x in v.items()}
        return v

    @model_validator(mode="after")
    def _length(self) -> Shot:
        if self.frames is not None and self.seconds is not None:
            raise ValueError("give exactly one of frames or seconds")
        return self  # neither: only for open-ended shots (flows/checks.py)


class FitFps(Frozen):
    """Playback frame rate fitted to the frames rendered, as nerdyrodent's generate.py does for
    its video (fps = clip(frames / seconds, min_fps, max_fps)); for one-frame-per-iteration
    renders (`images_interval: 1`) and open-ended ones."""

    seconds: float = Field(default=10.0, gt=0)  # the video's wished length (nerdyrodent -vl, 10)
    min_fps: float = Field(default=10.0, gt=0, le=240)  # slowest playback (nerdyrodent: 10)
    max_fps: float = Field(default=60.0, gt=0, le=240)  # fastest playback (nerdyrodent: 60)

    @model_validator(mode="after")
    def _order(self) -> FitFps:
        if self.min_fps > self.max_fps:
            raise ValueError("min_fps must be at most max_fps")
        return self

    def fps(self, frames: int) -> float:
        """clip(frames / seconds, min_fps, max_fps)."""
        return min(max(frames / self.seconds, self.min_fps), self.max_fps)


class Film(Frozen):
    name: str  # names the run directory (outputs/runs/<name>/...): a slug, no '/' or '..'
    fps: float = Field(gt=0, le=240)  # frames per second of the rendered shots and the export
    shots: tuple[Shot, ...] = Field(min_length=1)
    fit_fps: FitFps | None = None  # playback fps fitted to the frame count (None: fps)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return slug(v)

    @model_validator(mode="after")
    def _unique(self) -> Film:
        names = [s.name for s in self.shots]
        if len(set(names)) != len(names):
            raise ValueError(f"shot names must be unique, got {names}")
        return self
