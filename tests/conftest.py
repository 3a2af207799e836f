"""Shared fixtures: generated tiny models in the published formats, built once per test session,
and a helper to run the real command line (`python -m flows.render ...`) in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_MODELS = [("vqgan", "generated_vqgan_f16_tiny"), ("clip", "generated_clip_tiny"),
               ("musicgen", "generated_musicgen_tiny"), ("cyclegan", "generated_cyclegan_tiny")]


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny generated models (random weights, real file formats), materialised once."""
    from engines import weights

    out = tmp_path_factory.mktemp("models")
    for kind, name in TINY_MODELS:
        weights.materialise_generated(weights.load_entry(kind, name, ROOT / "conf"), out)
    return out


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
