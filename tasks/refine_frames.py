"""Post-production: video post-processing of each shot's frames (denoise / learned refinement).

`method: none` passes the frames through (hard links); `cyclegan` runs the 001 paper's learned
denoiser (a CycleGAN ResNet generator) and `nlmeans` / `bilateral` are classical OpenCV denoisers.
Changing the method re-runs only this step and what follows.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines.models.registry import Prepared
from engines.post import refine
from engines.post.refine import RefineSettings
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.extract_frames import link_frames
from tasks.runtime import Runtime

NAME = "refine_frames"
CODE_VERSION = "1+" + refine.CODE_VERSION  # this task and the engine it runs


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def refine_frames(*, frames: Artefact, settings: RefineSettings, model: Prepared | None, runtime: Runtime,
                  checkpoint_sha256: tuple[str, ...] = ()) -> Artefact:
    """`checkpoint_sha256`: content hash of `settings.checkpoint`, if any (keyed only)."""
    def build(work: Path) -> dict[str, Any]:
        if settings.method == "none":
            n = link_frames(frames.file("frames"), work / "frames")
        else:
            from engines.core.device import pick_device

            n = refine.refine_dir(frames.file("frames"), work / "frames", settings, model=model,
                                  device=pick_device(runtime.device))
        return {**frames.meta, "n_frames": n, "refine": settings.method}

    return run_cached(NAME, CODE_VERSION, locals(), build)
