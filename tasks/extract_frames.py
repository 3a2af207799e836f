"""Production: extraction to image files and video files (the paper's Stage 2).

From a shot's rendered frames: the image sequence (hard links, no copies), a production-cut video
(H.264, for review) and a contact sheet (PNG grid of every n-th frame).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines.core.files import link_or_copy
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "extract_frames"
CODE_VERSION = "1"


def link_frames(src: Path, dst: Path) -> int:
    """Hard-link (or copy across devices) every frame of `src` into `dst`; return the count."""
    dst.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in src.glob("*.png"))
    for name in names:
        link_or_copy(src / name, dst / name)
    return len(names)


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def extract_frames(*, frames: Artefact, contact_columns: int, runtime: Runtime) -> Artefact:
    def build(work: Path) -> dict[str, Any]:
        from engines.media import editing

        n = link_frames(frames.file("frames"), work / "frames")
        fps = frames.meta["fps"]
        editing.encode_preview(work / "frames", fps, work / "production_cut.mp4")
        editing.contact_sheet(work / "frames", work / "contact_sheet.png",
                              columns=contact_columns, thumb_width=160)
        return {**frames.meta, "n_frames": n}

    return run_cached(NAME, CODE_VERSION, locals(), build)
