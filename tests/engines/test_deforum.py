"""The deforum engine (engines/frames/deforum.py) on tiny generated SD pipelines: a still camera at
strength 0 repeats the frame, a moving one at strength 0 is the warp of the previous frame (to
within rounding), kill and resume with cadence on gives the same bytes, SDXL renders, bad
schedules are refused; the same for 3D mode over the tiny generated depth model."""

from __future__ import annotations

from itertools import pairwise

import pytest

from engines.core.errors import ConfigError
from engines.frames import deforum
from engines.frames.sd import camera
from tests.engines.sd_helpers import kill_and_resume, render_here

STILL = {"strength_schedule": "0:(0)", "noise_schedule": "0:(0)", "colour_coherence": False}


def test_keyframes_and_composed_moves():
    assert deforum.keyframes(5, 1) == [0, 1, 2, 3, 4]
    assert deforum.keyframes(5, 2) == [0, 2, 4]
    assert deforum.keyframes(6, 4) == [0, 4, 5]
    moves = [(1.02, 0.5, 1.0, -2.0), (0.99, -1.0, 3.0, 0.5)]
    one = camera.compose(64, 48, moves)
    back = camera.inverse(64, 48, moves)
    assert camera.compose(64, 48, [one, back]) == pytest.approx(camera.IDENTITY, abs=1e-9)
    assert camera.compose(64, 48, [moves[0]]) == pytest.approx(moves[0], abs=1e-9)


def test_still_camera_at_strength_0_repeats_the_frame(tmp_path, models_dir):
    frames = render_here("deforum", tmp_path / "still", models_dir, {
        "frames": 3, "settings": {"model": "generated_sd15_tiny", **STILL}})
    assert all((f == frames[0]).all() for f in frames[1:])


def test_moving_camera_at_strength_0_is_the_warp_of_the_previous_frame(tmp_path, models_dir):
    import numpy as np

    move = {"zoom": 1.05, "angle": 2.0, "translation_x": 1.5, "translation_y": -1.0}
    frames = render_here("deforum", tmp_path / "move", models_dir, {
        "frames": 3, "motion": move, "settings": {"model": "generated_sd15_tiny", **STILL}})
    for prev, cur in pairwise(frames):
        warped = camera.to_uint8(camera.warp_uint8(prev.astype(np.uint8), camera.frame_move(
            type("F", (), move)), "reflect")).astype(np.int16)
        assert np.abs(cur - warped).max() <= 1  # one resample, rounded once


def test_kill_and_resume_with_cadence_gives_the_same_frames(tmp_path, models_dir):
    spec = {"frames": 5, "motion": {"zoom": 1.03, "translation_x": 1.0},
            "prompts": {"0": "a garden", "3": "a pond"},
            "settings": {"model": "generated_sd15_tiny", "cadence": 2, "steps": 2,
                         "strength_schedule": "0:(0.7)"}}
    # frame:1 is an in-between (the next diffused frame is in the state), frame:2 a diffused one
    kill_and_resume("deforum", tmp_path, models_dir, spec, ["frame:1", "frame:2"])


def test_3d_mode_still_camera_at_strength_0_repeats_the_frame(tmp_path, models_dir):
    frames = render_here("deforum", tmp_path / "still3d", models_dir, {
        "frames": 3, "settings": {"model": "generated_sd15_tiny", "animation_mode": "3D",
                                  "depth_model": "generated_depth_tiny", **STILL}})
    assert all((f == frames[0]).all() for f in frames[1:])


def test_3d_mode_at_strength_0_is_the_depth_warp_of_the_previous_frame(tmp_path, models_dir):
    import numpy as np
    import torch

    from engines.frames.sd import camera3d
    from engines.frames.sd.models import CONF
    from engines.models import loaded, registry
    from engines.models.weights import prepare

    move = {"translation_x": 3.0, "translation_z": 20.0, "rotation_3d_y": 1.5}
    settings = {"model": "generated_sd15_tiny", "animation_mode": "3D",
                "depth_model": "generated_depth_tiny", **STILL}
    frames = render_here("deforum", tmp_path / "move3d", models_dir,
                         {"frames": 3, "motion": move, "settings": settings})
    entry = registry.load_entry("depth", "generated_depth_tiny", CONF)
    depth_model = loaded.load(entry, prepare(entry, models_dir, download=False), "cpu")
    m = camera3d.compose([(3.0, 0.0, 20.0, 0.0, 1.5, 0.0)])
    for prev, cur in pairwise(frames):
        x = torch.from_numpy(prev.astype(np.uint8)).permute(2, 0, 1)[None].double() / 255
        depth = camera3d.depth_units(depth_model(prev.astype(np.uint8)), 1.0, 10.0)
        want = camera.to_uint8(camera3d.warp(x, depth, m, 40.0, "reflect")).astype(np.int16)
        assert np.abs(cur - want).max() <= 1  # one resample, rounded once
        assert (cur != prev).any()


def test_kill_and_resume_in_3d_mode_with_cadence_gives_the_same_frames(tmp_path, models_dir):
    spec = {"frames": 4, "motion": {"translation_z": 15.0, "rotation_3d_z": 2.0},
            "settings": {"model": "generated_sd15_tiny", "cadence": 2, "steps": 2,
                         "animation_mode": "3D", "depth_model": "generated_depth_tiny",
                         "strength_schedule": "0:(0.7)"}}
    kill_and_resume("deforum", tmp_path, models_dir, spec, ["frame:1"])


def test_3d_mode_refuses_2d_zoom(models_dir):
    from engines.planning.plan import FramePlan, ShotPlan

    settings = deforum.Settings(model="generated_sd15_tiny", animation_mode="3D")
    plan = ShotPlan("s", 64, 48, 8.0, 1, (FramePlan(()), FramePlan((), zoom=1.02)))
    with pytest.raises(ConfigError, match=r"film.shots.0.motion.zoom.*1 at every frame"):
        deforum.check(settings, plan, "film.shots.0")
    with pytest.raises(ValueError, match=r"(?s)depth_far.*larger than depth_near"):
        deforum.Settings(depth_near=5.0, depth_far=2.0)


def test_sdxl_renders(tmp_path, models_dir):
    frames = render_here("deforum", tmp_path / "xl", models_dir, {
        "frames": 2, "motion": {"zoom": 1.02},
        "settings": {"model": "generated_sdxl_tiny", "steps": 2}})
    assert len(frames) == 2 and frames[0].shape == (48, 64, 3)


@pytest.mark.parametrize("schedule", ["0:(1.2)", "0:(0.5), 3:(-0.1)"])
def test_strength_outside_0_to_1_is_refused(schedule):
    settings = deforum.Settings(strength_schedule=schedule)
    with pytest.raises(ConfigError) as err:
        deforum.schedules(settings, 5, 8.0)
    assert err.value.key == "engine.strength_schedule"
    assert "a strength from 0 to 1 at every frame" in str(err.value)


def test_3d_mode_memory_estimate_counts_the_depth_model(models_dir):
    from engines.frames.sd import memory
    from engines.frames.sd.models import CONF
    from engines.models import loaded, registry
    from engines.models.diffusers import tensor_sizes
    from engines.models.weights import prepare

    settings = deforum.Settings(model="generated_sd15_tiny", animation_mode="3D",
                                depth_model="generated_depth_tiny")
    models = {kind: tuple(loaded.load(e, prepare(e, models_dir, download=False), "cpu")
                          for e in entries)
              for kind, entries in deforum.models(settings, {}).items()}
    assert set(models) == {"sd", "depth"}
    per = memory.component_bytes(deforum.sources(models, settings), 4)
    depth_entry = registry.load_entry("depth", "generated_depth_tiny", CONF)
    folder = prepare(depth_entry, models_dir, download=False)
    assert per["depth"] == tensor_sizes(folder)[0] * 4 > 0
    two_d = deforum.Settings(model="generated_sd15_tiny")
    assert set(deforum.models(two_d, {})) == {"sd"}  # 2D mode loads no depth model
