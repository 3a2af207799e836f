"""Render a short shot with one registered engine on tiny generated models, the way the
generate_frames task does (memory preflight, the engine's render, a DirectorySink), in this
process: `python tests/engines/engine_run.py <engine> <work dir> <models dir> <frames>`.

The engine's settings are its smoke settings (`engines.<name>` in conf/debug/smoke.yaml, with an
optional fifth argument, a JSON object of settings over them) and its
models the debug=smoke choices, so any engine in the registry runs here without code of its own.
The crash-test hook is armed by $PROMPTREEL_TEST_KILL_AT (`generate_frames:<point>`), as in a
real render. tests/engines/test_engines.py runs it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # run as a script: the project's packages, not installed copies
WIDTH, HEIGHT = 64, 48  # pixels: a multiple of 16 (VQGAN f16) and of 8; rounded up to an
# engine's `size_multiple(settings)` where it declares one (LTX-Video: 32)


def smoke_settings(name: str) -> dict:
    """The engine's settings under debug=smoke (conf/debug/smoke.yaml `engines.<name>`)."""
    smoke = yaml.safe_load((ROOT / "conf" / "debug" / "smoke.yaml").read_text())
    return dict((smoke.get("engines") or {}).get(name) or {})


def film_models() -> dict:
    """debug=smoke's film-wide models, by kind."""
    from engines.models.registry import load_entry

    conf = ROOT / "conf"
    return {"vqgan": (load_entry("vqgan", "generated_vqgan_f16_tiny", conf),),
            "clip": (load_entry("clip", "generated_clip_tiny", conf),)}


def size(engine, settings) -> tuple[int, int]:
    """WIDTH x HEIGHT, each rounded up to the engine's size multiple (if it has one)."""
    m = engine.size_multiple(settings) if hasattr(engine, "size_multiple") else 1
    return -(-WIDTH // m) * m, -(-HEIGHT // m) * m


def plan(frames: int, width: int = WIDTH, height: int = HEIGHT):
    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    prompts = (Prompt("a garden of flowers", 1.0),)
    moves = tuple(FramePlan(prompts, zoom=1.02, angle=0.5 * i, translation_x=1.0)
                  for i in range(frames))
    return ShotPlan("engine_test", width, height, 8.0, 11, moves)


def with_input_video(shot, work: Path):
    """The plan with a generated input video (a moving square), for engines that need one."""
    import dataclasses

    from tests.engines.sd_helpers import moving_square, write_frames

    folder = write_frames(moving_square(shot.n_frames, shot.width, shot.height),
                          work.parent / f"{work.name}-input")
    return dataclasses.replace(shot, input_video=str(folder), input_frames=str(folder))


def main(argv: list[str]) -> int:
    from engines.core.crash import CURRENT_TASK
    from engines.frames.registry import ENGINES
    from engines.models import loaded
    from engines.models.weights import prepare
    from tasks.frame_sink import DirectorySink
    from tasks.generate_frames import render_shot

    name, work, models_dir, frames = argv[0], Path(argv[1]), Path(argv[2]), int(argv[3])
    extra = json.loads(argv[4]) if len(argv) > 4 else {}  # settings over the smoke ones
    engine = ENGINES[name]
    settings = engine.Settings.model_validate({**smoke_settings(name), **extra, "name": name})
    shot = plan(frames, *size(engine, settings))
    if getattr(engine, "input_video", lambda s: None)(settings) == "required":
        shot = with_input_video(shot, work)
    if hasattr(engine, "check"):
        engine.check(settings, shot, "film.shots.0")
    models = {kind: tuple(loaded.load(e, prepare(e, models_dir, download=False), "cpu")
                          for e in entries)
              for kind, entries in engine.models(settings, film_models()).items()}
    CURRENT_TASK.set("generate_frames")  # so the crash-test hook can fire, as in the task
    render_shot(engine, settings, shot, models, DirectorySink(work), "cpu")
    done, _ = DirectorySink(work).resume()
    print(f"{name}: {done} frames")
    return 0 if done == frames else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
