"""Where and how a render runs: devices, folders, downloads, threads, logging. Handed to every
task as `runtime` and never part of any artefact key (tasks/cache.py)."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Runtime(BaseModel):
    """Where and how to run: never part of any cache key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    cache_dir: Path  # artefact cache (absolute)
    models_dir: Path  # downloaded and generated weights
    run_dir: Path  # this run's Hydra output dir (report, final video link)
    download: bool = True  # fetch missing weights on first use
    threads: int | None = Field(default=None, ge=1)  # CPU threads for torch (None = torch default)
    log_every: int = Field(default=1, ge=1)  # log a progress line every N frames

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", v):
            raise ValueError("accepted: auto, cpu, cuda or cuda:N")
        return v
