"""Post-production: speed modulation of one shot (constant factor, keyframed curve or target
duration; methods hold, blend, interpolate). The output has exactly the planned frame count.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines.planning.speed import SpeedSettings
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "modulate_speed"
CODE_VERSION = "1"


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def modulate_speed(*, frames: Artefact, settings: SpeedSettings, planned: int, runtime: Runtime) -> Artefact:
    def build(work: Path) -> dict[str, Any]:
        from engines.media import editing

        fps = frames.meta["fps"]
        n_out = editing.modulate_speed(frames.file("frames"), frames.meta["n_frames"], fps,
                                       settings, work / "shot.mkv")
        if n_out != planned:
            raise RuntimeError(f"modulate_speed made {n_out} frames, the plan says {planned}")
        return {"shot": frames.meta["shot"], "n_frames": n_out, "fps": fps}

    return run_cached(NAME, CODE_VERSION, locals(), build)
