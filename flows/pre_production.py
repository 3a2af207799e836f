"""Stage 1, pre-production: objective, imagery strategy, model selection (the paper's Table 1).

Makes every shot's plan once (`RenderConfig.shot_plans`: prompts and camera motion per frame),
writes the timeline from them, and prepares every model the film uses. Production and
post-production take these on; nothing later plans or fetches again.
"""

from __future__ import annotations

from prefect import flow

from engines.models.registry import ModelEntry, Prepared
from engines.planning.plan import ShotPlan
from flows.config import RenderConfig
from tasks.artefacts import Artefact
from tasks.extract_video import with_input_frames
from tasks.plan_timeline import plan_timeline
from tasks.select_models import select_models


def model_entries(cfg: RenderConfig) -> tuple[ModelEntry, ...]:
    """Every registry entry this render uses (each shot engine's models, music, refinement),
    once each, in a stable order."""
    entries: dict[str, ModelEntry] = {}
    for shot in cfg.film.shots:
        for group in cfg.shot_models(shot).values():
            entries.update({f"{e.kind}/{e.name}": e for e in group})
    for e in (cfg.music_model, cfg.cyclegan):
        if e is not None:
            entries[f"{e.kind}/{e.name}"] = e
    return tuple(entries.values())


@flow(name="pre_production")
def pre_production(cfg: RenderConfig) -> tuple[Artefact, tuple[ShotPlan, ...],
                                               dict[str, Prepared]]:
    """(the timeline artefact, every shot's plan, {entry name: prepared model})."""
    plans = with_input_frames(cfg.shot_plans(), cfg.runtime)  # input videos -> frames
    timeline = plan_timeline(film=cfg.film, plans=plans,
                             speeds=tuple(cfg.shot_speed(s) for s in cfg.film.shots),
                             runtime=cfg.runtime)
    models = select_models(entries=model_entries(cfg), runtime=cfg.runtime)
    return timeline, plans, models
