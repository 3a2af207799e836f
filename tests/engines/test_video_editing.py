"""The engines that redraw an input video in batches with cross-frame attention
(engines/frames/sd/batched.py): controlnet (pose maps, Canny edges) and pix2pix. Batches repeat
frame 0 as their anchor; a still video gives identical frames across batches (same noise, same
anchor); kill and resume across and inside batches give the same bytes."""

from __future__ import annotations

import pytest

from engines.core.errors import ConfigError
from engines.frames import controlnet
from engines.frames.sd.batched import batches
from tests.engines.sd_helpers import kill_and_resume, moving_square, render_here, write_frames

POSE = {"model": "generated_sd15_tiny", "controlnet": "generated_controlnet_pose_tiny",
        "batch_frames": 2, "checkpoint_every": 1, "steps": 2}
EDIT = {"model": "generated_pix2pix_tiny", "batch_frames": 2, "checkpoint_every": 1, "steps": 2}


def test_batches_repeat_frame_0_as_the_anchor():
    assert batches(3, 8) == [[0, 1, 2]]
    assert batches(5, 2) == [[0, 1], [0, 2], [0, 3], [0, 4]]
    assert batches(6, 3) == [[0, 1, 2], [0, 3, 4], [0, 5]]


@pytest.mark.parametrize("engine,settings", [("controlnet", POSE), ("pix2pix", EDIT)])
def test_a_still_video_gives_identical_frames_across_batches(tmp_path, models_dir, engine,
                                                             settings):
    video = write_frames(moving_square(3, still=True), tmp_path / "still")
    frames = render_here(engine, tmp_path / "out", models_dir, {
        "frames": 3, "input_frames": str(video), "settings": settings})
    assert all((f == frames[0]).all() for f in frames[1:])


def test_canny_maps_follow_the_video(tmp_path, models_dir):
    video = write_frames(moving_square(2), tmp_path / "moving")
    frames = render_here("controlnet", tmp_path / "out", models_dir, {
        "frames": 2, "input_frames": str(video),
        "settings": {**POSE, "controlnet": "generated_controlnet_canny_tiny", "control": "canny"}})
    assert (frames[0] != frames[1]).any()


def test_controlnet_kill_and_resume_across_and_inside_batches(tmp_path, models_dir):
    video = write_frames(moving_square(3), tmp_path / "video")
    spec = {"frames": 3, "input_frames": str(video), "settings": POSE}
    # states 0-1: batch 0's steps; frame:1 ends batch 0; state:3 is inside batch 1
    kill_and_resume("controlnet", tmp_path, models_dir, spec, ["frame:1", "state:3"])


def test_canny_with_a_pose_controlnet_is_refused():
    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    plan = ShotPlan("s", 64, 48, 8, 1, (FramePlan((Prompt("a", 1.0),)),))
    with pytest.raises(ConfigError) as err:
        controlnet.check(controlnet.Settings(control="canny"), plan, "film.shots.0")
    assert err.value.key == "engine.control"
