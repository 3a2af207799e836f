"""Stage 1, pre-production: objective, imagery strategy, model selection (the paper's Table 1)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.artefacts import Artefact
from tasks.plan_timeline import plan_timeline
from tasks.select_models import select_models


def model_entries(cfg: Any) -> tuple[Any, ...]:
    """Every registry entry this render uses (the engines' perceptors and generators, music...)."""
    engines = {cfg.shot_engine(s).name for s in cfg.film.shots}
    entries = [cfg.clip, *cfg.extra_clip]
    if "vqgan_clip" in engines:
        entries.append(cfg.vqgan)
    entries += [e for e in (cfg.music_model, cfg.cyclegan) if e is not None]
    return tuple(entries)


@flow(name="pre_production")
def pre_production(cfg: Any) -> tuple[Artefact, dict[str, str]]:
    timeline = plan_timeline(
        film=cfg.film, speeds=tuple(cfg.shot_speed(s) for s in cfg.film.shots),
        width=cfg.resolution.width, height=cfg.resolution.height,
        seeds=tuple(cfg.shot_seed(i) for i in range(len(cfg.film.shots))), runtime=cfg.runtime)
    models = select_models(entries=model_entries(cfg), runtime=cfg.runtime)
    return timeline, models
