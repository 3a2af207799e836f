"""Pre-production: model selection. Registry entry -> fetch -> verify -> safe load format.

Runs before any frame renders, so a missing or unsafe model fails the render in seconds. Downloads
(first use on a connected box) and generated models land in `runtime.models_dir`; Lightning
checkpoints are converted once to safetensors without running pickled code. Its result, one
`Prepared` (entry + folder) per entry, is what generate_frames, compose_soundtrack and
refine_frames load their models from. Not cached as an artefact: the models directory is the
truth, and checking it is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines.models import weights
from engines.models.registry import ModelEntry, Prepared
from tasks.runtime import Runtime

NAME = "select_models"


def prepare(entry: ModelEntry, models_dir: Any, *, download: bool = True) -> Prepared:
    """Make one entry's files present (download or generate), safely converted."""
    return Prepared(entry, str(weights.prepare(entry, Path(models_dir), download=download)))


@task(name=NAME)
def select_models(*, entries: tuple[ModelEntry, ...], runtime: Runtime) -> dict[str, Prepared]:
    """Make every entry's files present and safe; {entry name: Prepared}."""
    return {e.name: prepare(e, runtime.models_dir, download=runtime.download) for e in entries}
