"""In-process renders of the diffusion video engines on their tiny generated twins, for the
family tests (tests/engines/test_ltx.py, test_wan.py, test_video_models.py): a plan, the
engine's render into a DirectorySink, and a simulated kill (an exception right after the n-th
durable state, which is what a SIGKILL there leaves on disk) followed by a resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tasks.frame_sink import DirectorySink
from tests.helpers import ROOT


class Killed(Exception):
    """Raised by KillingSink once its n-th state is durable."""


class KillingSink(DirectorySink):
    def __init__(self, work: Path, after: int):
        super().__init__(work)
        self.after, self.saved = after, 0

    def save_state(self, state: dict[str, Any]) -> None:
        super().save_state(state)
        self.saved += 1
        if self.saved == self.after:
            raise Killed(self.saved)


def source(name: str, models_dir: Path) -> Any:
    """The loaded PipelineSource of diffusers registry entry `name` (built if generated)."""
    from engines.models import loaded
    from engines.models.registry import load_entry
    from engines.models.weights import prepare

    entry = load_entry("diffusers", name, ROOT / "conf")
    return loaded.load(entry, prepare(entry, models_dir, download=False), "cpu")


def plan(frames: int, width: int, height: int, *, init_image: str | None = None,
         prompt: str = "a garden of flowers", seed: int = 5) -> Any:
    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    moves = tuple(FramePlan((Prompt(prompt, 1.0),)) for _ in range(frames))
    return ShotPlan("video_test", width, height, 16.0, seed, moves, init_image=init_image)


def render(engine_name: str, model: str, shot: Any, work: Path, models_dir: Path, *,
           kill_after: int | None = None, **settings: Any) -> dict[str, bytes]:
    """The shot's frames (PNG bytes by name) rendered by `engine_name` with `model`; with
    `kill_after`, the render is killed after that many durable states and then resumed by a
    fresh sink over the same work folder, as a rerun would."""
    from engines.frames.registry import ENGINES

    engine = ENGINES[engine_name]
    s = engine.Settings.model_validate({"name": engine_name, "model": model, **settings})
    engine.check(s, shot, "film.shots.0")
    models = {"diffusers": (source(model, models_dir),)}
    if kill_after is not None:
        try:
            engine.render(s, shot, models, KillingSink(work, kill_after), "cpu")
        except Killed:
            pass
        else:
            raise AssertionError(f"fewer than {kill_after} durable states were saved")
    engine.render(s, shot, models, DirectorySink(work), "cpu")
    return {p.name: p.read_bytes() for p in sorted((work / "frames").glob("*.png"))}


def image_file(path: Path, width: int, height: int, colour: tuple = (200, 40, 30)) -> str:
    """A test start image: a coloured square on grey."""
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (width, height), (128, 128, 128))
    ImageDraw.Draw(im).rectangle((width // 4, height // 4, 3 * width // 4, 3 * height // 4),
                                 fill=colour)
    im.save(path)
    return str(path)
