"""Post-production: join the shots (hard cuts or ffmpeg xfade cross-fades: the paper's "image
amalgamation"). The length is the planned total: sum of shots minus the cross-fade overlaps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "blend_shots"
CODE_VERSION = "1"


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def blend_shots(*, shots: tuple[Artefact, ...], joins: tuple[tuple[str, int], ...], fps: float,
                planned: int, runtime: Runtime) -> Artefact:
    def build(work: Path) -> dict[str, Any]:
        from engines.media import editing
        from engines.planning.joins import Transition

        transitions = [Transition(kind=k, frames=n) for k, n in joins]
        n_out = editing.blend_shots([s.file("shot.mkv") for s in shots], fps, transitions,
                                    work / "film.mkv")
        if n_out != planned:
            raise RuntimeError(f"blend_shots made {n_out} frames, the plan says {planned}")
        return {"n_frames": n_out, "fps": fps}

    return run_cached(NAME, CODE_VERSION, locals(), build)
