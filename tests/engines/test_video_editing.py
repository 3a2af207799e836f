"""The engines that redraw an input video in batches with cross-frame attention
(engines/frames/sd/batched.py): controlnet (pose maps, Canny edges, poses found by ViTPose) and pix2pix. Batches repeat
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


def test_pose_maps_draw_the_openpose_skeleton():
    import numpy as np

    from engines.frames.sd import pose_maps

    # COCO keypoints of a person standing in a 96 x 128 frame; the left wrist (9) scored low
    coco = np.array([[48, 20], [45, 17], [51, 17], [42, 19], [54, 19], [38, 36], [58, 36],
                     [34, 56], [62, 56], [30, 76], [66, 76], [42, 78], [54, 78], [42, 100],
                     [54, 100], [42, 120], [54, 120]], np.float32)
    scores = np.full(17, 0.9, np.float32)
    scores[9] = 0.1
    points = pose_maps.openpose_keypoints(coco, scores, 0.3)
    assert points[1] == (48.0, 36.0)  # the neck: the middle of the shoulders
    assert points[7] is None and points[4] == (66.0, 76.0)  # left wrist dropped, right kept
    image = pose_maps.draw(points, 96, 128)
    assert image.shape == (128, 96, 3) and image.dtype == np.uint8
    assert tuple(image[20, 48]) == pose_maps.COLOURS[0]  # the nose's dot, OpenPose's red
    assert tuple(image[36, 48]) == pose_maps.COLOURS[1]  # the neck's dot
    assert tuple(image[76, 66]) == pose_maps.COLOURS[4]  # the right wrist's dot
    assert not image[74:79, 28:33].any()  # nothing where the dropped left wrist was
    assert image[46, 36].any()  # the left upper arm (shoulder 38,36 -> elbow 34,56) is drawn
    assert not image[0:5].any() and not image[:, 80:].any()  # black around the person


def test_pose_control_finds_each_frames_pose_with_the_pose_model(tmp_path, models_dir):
    import numpy as np

    from engines.frames.sd import pose_maps
    from engines.frames.sd.models import CONF
    from engines.models import loaded, registry
    from engines.models.weights import prepare

    video = write_frames(moving_square(2), tmp_path / "moving")
    settings = {**POSE, "control": "pose", "pose_model": "generated_vitpose_tiny",
                "pose_threshold": 0.0}
    frames = render_here("controlnet", tmp_path / "out", models_dir, {
        "frames": 2, "input_frames": str(video), "settings": settings})
    assert len(frames) == 2
    entry = registry.load_entry("pose", "generated_vitpose_tiny", CONF)
    model = loaded.load(entry, prepare(entry, models_dir, download=False), "cpu")
    from PIL import Image

    inputs = [np.array(Image.open(p).convert("RGB")) for p in sorted(video.glob("*.png"))]
    maps = controlnet.input_maps(controlnet.Settings(**settings), {"pose": (model,)}, inputs)
    assert len(maps) == 2
    for frame, got in zip(inputs, maps, strict=True):
        assert (got == pose_maps.pose_map(model, frame, 0.0)).all()
        assert got.any() and not (got == frame).all()  # a drawn skeleton, not the frame


def test_pose_control_with_a_canny_controlnet_is_refused():
    from engines.planning.plan import FramePlan, ShotPlan
    from engines.planning.prompts import Prompt

    plan = ShotPlan("s", 64, 48, 8, 1, (FramePlan((Prompt("a", 1.0),)),))
    settings = controlnet.Settings(control="pose", controlnet="controlnet_sd15_canny")
    with pytest.raises(ConfigError, match=r"or a pose \(OpenPose\) ControlNet") as err:
        controlnet.check(settings, plan, "film.shots.0")
    assert err.value.key == "engine.control"
    assert set(controlnet.models(settings, {})) == {"sd", "pose"}
