"""The Stable Diffusion presets render end to end with `debug=smoke` on the CPU (tiny generated
models in the published layouts; the imagery is noise): deforum_garden (zoom_garden's schedules
through the deforum loop), deforum_flythrough (deforum's 3D mode over a depth model), zero_garden (text2video_zero, its pan from the shot's translation
schedule), restyle (flow_restyle) and pose_dance (controlnet with pose maps), the last two on
small videos generated here by the same code that made their sample inputs. Kept short: a few
frames each (deforum_garden at 0.5 fps keeps its keyframes at 0 s, 4 s, 8 s)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samples.make_samples import pose_frames, scene_frames, write_mp4
from tests.helpers import run_cli

SMOKE = ("debug=smoke", "soundtrack=none")


def generated(tmp: Path) -> list:
    """The engine's frames (the generate_frames artefact in the run's cache), as arrays."""
    from PIL import Image

    [folder] = (tmp / "cache" / "generate_frames").glob("*/frames")
    return [np.asarray(Image.open(f)) for f in sorted(folder.glob("*.png"))]


def render(tmp: Path, models: Path, film: str, *args: str):
    run_cli(f"film={film}", *SMOKE, *args, cache=tmp / "cache", models=models,
            run_dir=tmp / "run")
    from engines.media.ffmpeg import probe

    info = probe(tmp / "run" / f"{film}.mp4")
    assert (info.width, info.height) == (96, 64)
    return info


@pytest.mark.slow
def test_deforum_garden_renders_its_zoom(tmp_path, models_dir):
    # 12 s at 0.5 fps = 6 frames (prompt keys at frames 0, 2, 4); the schedules keyed past frame 5
    # are given as constants
    out = render(tmp_path, models_dir, "deforum_garden", "film.fps=0.5",
                 "film.shots.0.transition.frames=1", "film.shots.0.motion.translation_x='0:(1)'",
                 "engine.strength_schedule='0:(0.6)'")
    assert out.frames == 6
    frames = generated(tmp_path)
    assert len(frames) == 6 and frames[0].shape[:2] == (64, 96)
    assert (frames[5] != frames[0]).any()  # the zoom moves it


@pytest.mark.slow
def test_deforum_flythrough_renders_in_3d(tmp_path, models_dir):
    # 8 s at 0.5 fps = 4 frames at cadence 2: frames 0, 2, 3 diffused, each moved over the depth
    # model's estimate, frame 1 an in-between
    out = render(tmp_path, models_dir, "deforum_flythrough", "film.fps=0.5",
                 "film.shots.0.transition.frames=1", "engine.strength_schedule='0:(0.6)'")
    assert out.frames == 4
    frames = generated(tmp_path)
    assert len(frames) == 4 and (frames[3] != frames[0]).any()  # the camera moved it
    [run_json] = (tmp_path / "run").glob("run.json")
    assert "generated_depth_tiny" in run_json.read_text()  # the depth model was prepared


@pytest.mark.slow
def test_zero_garden_pans_along_its_translation_schedule(tmp_path, models_dir):
    import pandas as pd

    out = render(tmp_path, models_dir, "zero_garden", "film.shots.0.frames=3")
    assert out.frames == 3
    frames = generated(tmp_path)
    assert len(frames) == 3 and frames[0].shape[:2] == (64, 96)
    assert (frames[2] != frames[0]).any()
    # the motion field each frame got: minus the translation summed over frames 1..k, on
    # diffusers' 512 grid; the preset's keys (x 6 -> 2, y 0 -> 1, linear over frames 0..23)
    # give frame t x = 6 - 4t/23, y = t/23 (keys past the shot still shape the curve)
    [table] = (tmp_path / "cache" / "generate_frames").glob("*/frames.parquet")
    offsets = [tuple(o) for o in pd.read_parquet(table).sort_values("frame")["offset"]]
    x, y = (lambda t: 6 - 4 * t / 23), (lambda t: t / 23)
    expected = [(0.0, 0.0), (-x(1) * 512 / 96, -y(1) * 512 / 64),
                (-(x(1) + x(2)) * 512 / 96, -(y(1) + y(2)) * 512 / 64)]
    assert [o for pair in offsets for o in pair] == pytest.approx(
        [o for pair in expected for o in pair])


@pytest.mark.slow
@pytest.mark.parametrize("film,make", [("restyle", scene_frames), ("pose_dance", pose_frames)])
def test_video_presets_render_a_generated_input(tmp_path, models_dir, film, make):
    video = write_mp4(make(3, 96, 64), tmp_path / f"{film}-input.mp4", fps=8)
    out = render(tmp_path, models_dir, film, f"film.shots.0.input_video={video}",
                 "film.shots.0.frames=3")
    assert out.frames == 3
    frames = generated(tmp_path)
    assert len(frames) == 3 and frames[0].shape[:2] == (64, 96)
    assert any((f != frames[0]).any() for f in frames[1:])  # it follows the moving input
