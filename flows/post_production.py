"""Stage 3, post-production: post-processing, speed modulation, shot blending, final output."""

from __future__ import annotations

from prefect import flow

from engines.models.registry import Prepared
from flows.config import RenderConfig
from flows.production import file_hashes
from tasks.artefacts import Artefact
from tasks.blend_shots import blend_shots
from tasks.export_video import export_video
from tasks.modulate_speed import modulate_speed
from tasks.refine_frames import refine_frames


def all_prompts(cfg: RenderConfig) -> str:
    return " || ".join(s.prompts if isinstance(s.prompts, str) else " / ".join(s.prompts.values())
                       for s in cfg.film.shots)


@flow(name="post_production")
def post_production(cfg: RenderConfig, timeline: Artefact, shots: list[Artefact],
                    soundtrack: Artefact | None, models: dict[str, Prepared]) -> Artefact:
    """`timeline`: production's (re-planned when an open-ended shot was stopped)."""
    plan = {s["name"]: s for s in timeline.meta["shots"]}
    cyclegan = models[cfg.cyclegan.name] if cfg.cyclegan else None
    sped = []
    for shot, frames in zip(cfg.film.shots, shots, strict=True):
        refined = refine_frames(frames=frames, settings=cfg.refine.used(), model=cyclegan,
                                checkpoint_sha256=file_hashes([cfg.refine.checkpoint]),
                                runtime=cfg.runtime)
        sped.append(modulate_speed(frames=refined, settings=cfg.shot_speed(shot),
                                   planned=plan[shot.name]["after_speed"], runtime=cfg.runtime))
    joins = tuple((s["join_kind"], s["join_frames"]) for s in timeline.meta["shots"][:-1])
    fps = timeline.meta["fps"]  # the playback rate (film.fps, or fitted: film.fit_fps)
    film = blend_shots(shots=tuple(sped), joins=joins, fps=fps,
                       planned=timeline.meta["total_frames"], runtime=cfg.runtime)
    return export_video(film=film, soundtrack=soundtrack, settings=cfg.export, fps=fps,
                        width=cfg.export.width or cfg.resolution.width,
                        height=cfg.export.height or cfg.resolution.height,
                        film_name=cfg.film.name, prompts=all_prompts(cfg),
                        planned=timeline.meta["total_frames"], runtime=cfg.runtime)
