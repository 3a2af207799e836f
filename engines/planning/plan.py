"""What an engine receives to render one shot, and the sink it commits frames to.

Pure data (no torch at import). `plan_timeline` builds a `ShotPlan`; `generate_frames` passes it
with a `FrameSink` (implemented in `tasks/artefacts.py`) to the engine's `render` function.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from engines.planning.prompts import Prompt


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
    border: str = "reflect"  # how camera motion fills what comes into view (motion.BORDERS)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_frames(self) -> int:
        return len(self.frames)

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


class FrameSink(Protocol):
    """Where an engine commits frames. Each `commit` is durable before it returns.

    `resume()` returns the number of frames already committed and the state saved with the last
    one (tensors by name), or (0, None) for a fresh shot. An engine that is resumed at frame k
    must produce exactly the frames k, k+1, ... that an uninterrupted run would have produced.
    """

    def resume(self) -> tuple[int, dict[str, Any] | None]: ...

    def commit(
        self,
        index: int,
        image: Any,  # numpy uint8 array, H x W x 3, RGB
        state: dict[str, Any],  # torch tensors (CPU) needed to continue from this frame
        record: dict[str, float | int | str],  # per-frame metrics for the shot's table
    ) -> None: ...
