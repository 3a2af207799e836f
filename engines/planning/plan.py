"""What an engine receives to render one shot, and the sink it commits frames to.

Pure data (no torch at import). `plan_timeline` builds a `ShotPlan`; `generate_frames` passes it
with a `FrameSink` (implemented in `tasks/artefacts.py`) to the engine's `render` function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engines.planning.prompts import Prompt

MOTION_3D = ("translation_z", "rotation_3d_x", "rotation_3d_y", "rotation_3d_z")  # Motion's 3D keys


@dataclass(frozen=True)
class FramePlan:
    """One output frame: the weighted prompts in force and the camera motion into it.

    zoom: scale factor applied to the previous frame (1.0 = none); angle: degrees,
    counter-clockwise; translation_x / translation_y: pixels of the output frame.
    `story`: when the frame's prompt line has story phrases (`"a | b ^ c"`), every phrase's
    prompts, in order (an engine with a story mode switches between them by iteration); `prompts`
    is then the first phrase. Empty for a plain line.
    """

    prompts: tuple[Prompt, ...]
    story: tuple[tuple[Prompt, ...], ...] = ()
    zoom: float = 1.0
    angle: float = 0.0
    translation_x: float = 0.0
    translation_y: float = 0.0
    translation_z: float = 0.0  # 3D camera (deforum's 3D mode): depth units / 200, forward
    rotation_3d_x: float = 0.0  # degrees about the camera's x axis (content moves down)
    rotation_3d_y: float = 0.0  # degrees about its y axis (content moves right)
    rotation_3d_z: float = 0.0  # degrees about its z axis (content turns counter-clockwise)

    @property
    def moves_3d(self) -> bool:
        return any(getattr(self, f) != 0 for f in MOTION_3D)

    def cache_identity(self) -> dict[str, Any]:
        """Every field; the 3D ones only when one is not 0, so a 2D frame hashes as it did
        before they existed (caches made then stay valid)."""
        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if not self.moves_3d:
            for f in MOTION_3D:
                del out[f]
        return out


@dataclass(frozen=True)
class ShotPlan:
    """Everything about a shot that is decided before any model loads."""

    name: str
    width: int  # output pixels
    height: int
    fps: float  # frames per second of the shot as rendered
    seed: int  # every random source of the shot derives from it
    frames: tuple[FramePlan, ...]
    image_prompts: tuple[tuple[str, float, float], ...] = ()  # (path, weight, stop)
    init_image: str | None = None
    continues: bool = False  # starts from the previous shot's last frame (set as init_image
    # by production once that frame exists)
    border: str = "reflect"  # how camera motion fills what comes into view (motion.BORDERS)
    extra: dict[str, Any] = field(default_factory=dict)
    input_video: str | None = None  # the shot's input video as the user gave it (never hashed)
    input_frames: str | None = None  # its frames as pre-production extracted them (a folder
    # named by the extraction's content key, tasks/extract_video.py)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

    def cache_identity(self) -> dict[str, Any]:
        """What an artefact key hashes of a plan: every field, the start image and the image
        prompts by their file names only (their content is hashed with the shot's inputs; a
        previous shot's last frame lives in the cache, wherever the cache is mounted)."""
        from pathlib import PurePath

        out = {f: getattr(self, f) for f in self.__dataclass_fields__}
        if self.init_image is not None:
            out["init_image"] = PurePath(self.init_image).name
        # image prompts likewise by file name (their content is hashed with the shot's inputs),
        # so a relative path resolved from another directory keys the same frames
        out["image_prompts"] = tuple((PurePath(p).name, w, s) for p, w, s in self.image_prompts)
        del out["input_video"]  # its content is hashed through input_frames
        if self.input_frames is None:
            del out["input_frames"]
        else:  # <cache>/extract_video/<content key>/frames: the key names the content
            out["input_frames"] = PurePath(self.input_frames).parent.name
        return out

    def head(self, n: int) -> ShotPlan:
        """This plan cut to its first `n` frames (everything else the same)."""
        from dataclasses import replace

        return replace(self, frames=self.frames[:n])


class ShotPlans:
    """Every shot's plan, as pre-production hands them to production (a flow parameter).
    Prefect records a flow run's parameters on its server, at most 512 KB of JSON per run, and
    a few thousand frames of plans are more than that: this holder has no JSON form, so Prefect
    records `<ShotPlans>` (and the plans themselves stay in this process)."""

    __slots__ = ("plans",)

    def __init__(self, plans: Any):
        self.plans = tuple(plans)

    def __getitem__(self, i: int) -> ShotPlan:
        return self.plans[i]

    def __len__(self) -> int:
        return len(self.plans)

    def __repr__(self) -> str:
        return f"ShotPlans({', '.join(f'{p.name}: {p.n_frames} frames' for p in self.plans)})"
