"""Pre-production: plan every length and schedule before anything renders.

Writes `timeline.json` (frames per shot before and after speed modulation, cross-fade overlaps,
the film's total frames and duration) and `schedules.csv` (from the shot plans pre-production made) (per shot and frame: prompts and
camera motion), the table `make show` prints and the run report links.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import task

from engines.core.crash import kill_point
from engines.core.files import atomic_path, write_json
from engines.planning.film import Film
from engines.planning.plan import MOTION_3D, ShotPlan
from engines.planning.speed import SpeedSettings
from engines.planning.timeline import timeline
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.runtime import Runtime

NAME = "plan_timeline"
CODE_VERSION = "1"


def plan_3d(plan: ShotPlan) -> bool:
    """Whether a shot moves its camera in 3D (its tables then carry the 3D columns too)."""
    return any(fp.moves_3d for fp in plan.frames)


def schedule_table(plans: Sequence[ShotPlan]) -> pd.DataFrame:
    rows = []
    for plan in plans:
        for f, fp in enumerate(plan.frames):
            phrases = fp.story or (fp.prompts,)
            rows.append({"shot": plan.name, "frame": f,
                         "prompts": " ^ ".join(" | ".join(f"{p.text}:{p.weight:.3f}" for p in ph)
                                               for ph in phrases),
                         "zoom": fp.zoom, "angle": fp.angle,
                         "translation_x": fp.translation_x, "translation_y": fp.translation_y,
                         **({k: getattr(fp, k) for k in MOTION_3D} if plan_3d(plan) else {})})
    return pd.DataFrame(rows)


@task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
def plan_timeline(*, film: Film, plans: tuple[ShotPlan, ...], speeds: tuple[SpeedSettings, ...],
                  runtime: Runtime) -> Artefact:
    """`plans`: every shot's plan, made once in pre-production (flows/pre_production.py)."""
    def build(work: Path) -> dict[str, Any]:
        tl = timeline(list(zip(film.shots, speeds, strict=True)), film.fps, film.fit_fps)
        write_json(work / "timeline.json", tl.as_dict())
        kill_point("timeline")  # crash-test hook: timeline.json written, schedules.csv not
        with atomic_path(work / "schedules.csv") as tmp:
            schedule_table(plans).to_csv(tmp, index=False)
        return tl.as_dict()

    return run_cached(NAME, CODE_VERSION, locals(), build)
