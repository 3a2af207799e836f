"""Post-production: final output extraction (the paper's Stage 3).

Encodes the blended film with the export preset (H.264 MP4 by default; H.265, VP9 WebM, ProRes
MOV, GIF), muxes the soundtrack when there is one, writes container metadata (film name, prompts,
the render's config key) and a poster frame. The file is written under a temporary name and
renamed, so a killed export never leaves a playable-looking partial file under the final name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines.media.editing import ExportSettings
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "export_video"
CODE_VERSION = "1"


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def export_video(*, film: Artefact, soundtrack: Artefact | None, settings: ExportSettings, fps: float,
                 width: int, height: int, film_name: str, prompts: str, planned: int,
                 runtime: Runtime) -> Artefact:
    def build(work: Path) -> dict[str, Any]:
        from engines.media import editing

        out = work / f"{film_name}.{settings.container}"
        metadata = {"title": film_name, "comment": prompts, "promptreel_key": film.key}
        info = editing.export(film.file("film.mkv"),
                              soundtrack.file("soundtrack.wav") if soundtrack else None, out,
                              settings, fps=fps, size=(width, height), metadata=metadata,
                              poster_path=work / "poster.png")
        if info.frames != planned:
            raise RuntimeError(f"export has {info.frames} frames, the plan says {planned}")
        return {"video": out.name, "frames": info.frames, "duration_s": info.duration,
                "codec": info.codec, "has_audio": info.audio is not None}

    return run_cached(NAME, CODE_VERSION, locals(), build)
