"""Render a shot with one SD animation engine on tiny generated models, in this process, the way
the generate_frames task does (memory preflight, render, DirectorySink), with settings and a plan
given on the command line: `python tests/engines/sd_run.py <engine> <work> <models> <json>`,
json = {"settings": {...}, "frames": n, "prompts": {frame: text}, "motion": {...},
"input_frames": folder or null, "width": w, "height": h}. The crash-test hook is armed by
$PROMPTREEL_TEST_KILL_AT, as in engine_run.py (which runs every engine with its smoke settings).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def plan_of(spec: dict):
    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    n = int(spec.get("frames", 2))
    keys = {int(k): v for k, v in (spec.get("prompts") or {"0": "a garden"}).items()}
    motion = spec.get("motion") or {}
    frames = []
    text = keys[0]
    for i in range(n):
        text = keys.get(i, text)
        frames.append(FramePlan((Prompt(text, 1.0),), **motion))  # zoom, angle, translation_x..
    return ShotPlan("sd_test", int(spec.get("width", 64)), int(spec.get("height", 48)), 8.0,
                    int(spec.get("seed", 11)), tuple(frames), init_image=spec.get("init_image"),
                    input_video=spec.get("input_frames"), input_frames=spec.get("input_frames"))


def run(name: str, work: Path, models_dir: Path, spec: dict) -> int:
    from engines.core.crash import CURRENT_TASK
    from engines.frames.registry import ENGINES
    from engines.models import loaded
    from engines.models.weights import prepare
    from tasks.frame_sink import DirectorySink
    from tasks.generate_frames import render_shot
    from tests.engines.engine_run import film_models

    engine = ENGINES[name]
    settings = engine.Settings.model_validate({**spec.get("settings", {}), "name": name})
    shot = plan_of(spec)
    if hasattr(engine, "check"):
        engine.check(settings, shot, "film.shots.0")
    models = {kind: tuple(loaded.load(e, prepare(e, models_dir, download=False), "cpu")
                          for e in entries)
              for kind, entries in engine.models(settings, film_models()).items()}
    CURRENT_TASK.set("generate_frames")
    render_shot(engine, settings, shot, models, DirectorySink(work), "cpu")
    done, _ = DirectorySink(work).resume()
    return 0 if done == shot.n_frames else 1


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)
    sys.exit(run(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])))
