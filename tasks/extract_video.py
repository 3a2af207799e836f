"""Pre-production: a shot's input video extracted to frames (`film.shots.N.input_video`).

The video is read with ffmpeg at the film's fps and scaled to the render's size
(engines/media/video.py), into `frames/000000.png ...`. The artefact is keyed by the video's
content (its sha256), the fps and the size, never its path: the same video under another name is
not extracted again, and an edited video is. The shot's plan then carries the frames folder
(`ShotPlan.input_frames`), which its engine reads (pose or edge maps for ControlNet, the frames
to restyle or edit).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task

from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "extract_video"
CODE_VERSION = "1"


@dataclass(frozen=True)
class VideoInput:
    """A user's video: where it is (not hashed) and what it holds (hashed)."""

    path: str
    sha256: str

    def cache_identity(self) -> dict[str, str]:
        return {"sha256": self.sha256}


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def extract_video(*, video: VideoInput, fps: float, width: int, height: int,
                  runtime: Runtime) -> Artefact:
    def build(work: Path) -> dict[str, Any]:
        from engines.media.ffmpeg import run_argv
        from engines.media.video import extract_argv

        out = work / "frames"
        out.mkdir(parents=True, exist_ok=True)
        run_argv(extract_argv(video.path, fps, width, height, out),
                 what=f"extracting the frames of {video.path}")
        n = len(list(out.glob("*.png")))
        return {"n_frames": n, "fps": fps, "width": width, "height": height,
                "video_sha256": video.sha256}

    return run_cached(NAME, CODE_VERSION, locals(), build)


def with_input_frames(plans: tuple, runtime: Runtime) -> tuple:
    """The plans, each shot with an input video carrying its extracted frames folder."""
    from engines.core.files import sha256_file

    out = []
    for plan in plans:
        if plan.input_video:
            path = str(Path(plan.input_video).expanduser().resolve())
            art = extract_video(video=VideoInput(path, sha256_file(Path(path))), fps=plan.fps,
                                width=plan.width, height=plan.height, runtime=runtime)
            plan = dataclasses.replace(plan, input_frames=str(art.file("frames")))
        out.append(plan)
    return tuple(out)
