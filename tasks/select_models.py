"""Pre-production: model selection. Registry entry -> fetch -> verify -> safe load format.

Runs before any frame renders, so a missing or unsafe model fails the render in seconds. Downloads
(first use on a connected box) and generated models land in `runtime.models_dir`; Lightning
checkpoints are converted once to safetensors without running pickled code. Not cached as an
artefact: the models directory is the truth, and checking it is cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from engines import weights
from tasks.artefacts import CURRENT_TASK, kill_point

NAME = "select_models"


def prepare(entry: Any, models_dir: Any, *, download: bool = True) -> Path:
    """Make one entry's files present (download or generate), safely converted; its directory."""
    return weights.prepare(entry, Path(models_dir), download=download)


@task(name=NAME)
def select_models(*, entries: tuple[Any, ...], runtime: Any) -> dict[str, str]:
    """Make every entry's files present and safe; return {entry name: local directory}."""
    out = {}
    token = CURRENT_TASK.set(NAME)  # for the crash-test hook (artefacts.kill_point)
    try:
        for i, entry in enumerate(entries):
            out[entry.name] = str(prepare(entry, runtime.models_dir, download=runtime.download))
            kill_point(f"entry:{i}")  # crash-test hook: entries 0..i ready, the next ones not
    finally:
        CURRENT_TASK.reset(token)
    return out
