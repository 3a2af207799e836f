"""Helpers shared by tests: run the real command line in a subprocess, read a run's record."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, cache: Path, models: Path, run_dir: Path | None = None,
            timeout: float = 600, check: bool = True, extra_env: dict | None = None,
            ) -> subprocess.CompletedProcess:
    """Run `python -m flows.render <args>` as a user would, with its own cache and models dir."""
    cmd = [sys.executable, "-m", "flows.render", *args, f"runtime.cache_dir={cache}",
           f"runtime.models_dir={models}"]
    if run_dir is not None:
        cmd.append(f"hydra.run.dir={run_dir}")
    env = {**os.environ, **(extra_env or {})}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                             f"{proc.stderr[-4000:]}")
    return proc


def read_run(run_dir: Path) -> dict:
    return json.loads((run_dir / "run.json").read_text())


def shot_params_of(cfg) -> list[dict]:
    """Every shot's generate_frames parameters, as production builds them (models unprepared:
    a model's folder is not part of any key)."""
    from engines.models.registry import Prepared
    from flows.pre_production import model_entries
    from flows.production import shot_params

    models = {e.name: Prepared(e, "(not prepared)") for e in model_entries(cfg)}
    plans = cfg.shot_plans()
    return [shot_params(cfg, plans, models, i) for i in range(len(cfg.film.shots))]
