"""The animatediff engine (engines/frames/animatediff.py) on tiny generated SD 1.5 components:
kill and resume (mid-denoise and after decoding) give the same bytes, with prompt travel and
FreeNoise windows; the ControlNet and video-to-video variants render from a generated video (and
restyling resumes exactly mid-denoise too); MotionLoRAs are fused; bases must match."""

from __future__ import annotations

import pytest

from engines.core.errors import ConfigError
from engines.frames import animatediff
from tests.engines.sd_helpers import kill_and_resume, moving_square, render_here, write_frames

TINY = {"model": "generated_sd15_tiny", "motion_adapter": "generated_motion_adapter_tiny",
        "steps": 3, "checkpoint_every": 1, "context_frames": 4, "context_stride": 2}


def test_kill_and_resume_with_prompt_travel_and_free_noise(tmp_path, models_dir):
    spec = {"frames": 6, "prompts": {"0": "a garden", "4": "a pond at night"}, "settings": TINY}
    kill_and_resume("animatediff", tmp_path, models_dir, spec, ["state:1", "frame:2"])


def test_restyle_resumes_mid_denoise(tmp_path, models_dir):
    video = write_frames(moving_square(3), tmp_path / "video")
    spec = {"frames": 3, "input_frames": str(video),
            "settings": {**TINY, "input_use": "restyle", "strength": 0.7}}
    kill_and_resume("animatediff", tmp_path, models_dir, spec, ["state:0"])


@pytest.mark.parametrize("control", ["maps", "canny"])
def test_controlnet_follows_the_input_video(tmp_path, models_dir, control):
    video = write_frames(moving_square(3), tmp_path / "video")
    net = "generated_controlnet_pose_tiny" if control == "maps" else "generated_controlnet_canny_tiny"
    frames = render_here("animatediff", tmp_path / "out", models_dir, {
        "frames": 3, "input_frames": str(video),
        "settings": {**TINY, "controlnet": net, "control": control, "steps": 2}})
    assert len(frames) == 3


def test_motion_lora_is_fused(tmp_path, models_dir):
    base = render_here("animatediff", tmp_path / "plain", models_dir,
                       {"frames": 2, "settings": {**TINY, "steps": 2}})
    fused = render_here("animatediff", tmp_path / "lora", models_dir, {
        "frames": 2, "settings": {**TINY, "steps": 2,
                                  "motion_loras": ["generated_motion_lora_tiny"]}})
    assert any((a != b).any() for a, b in zip(base, fused, strict=True))


def test_lora_keys_in_every_layout():
    from engines.models.sd import lora_pairs

    m = "down_blocks.0.motion_modules.0.transformer_blocks.0.attn1"
    for down, up in ((f"unet.{m}.processor.to_q_lora.down.weight",
                      f"unet.{m}.processor.to_q_lora.up.weight"),
                     (f"{m}.to_q.lora.down.weight", f"{m}.to_q.lora.up.weight"),
                     (f"unet.{m}.to_q.lora_A.weight", f"unet.{m}.to_q.lora_B.weight")):
        assert list(lora_pairs({down: 1, up: 2})) == [f"{m}.to_q"]
    assert list(lora_pairs({f"unet.{m}.processor.to_out_lora.down.weight": 1,
                            f"unet.{m}.processor.to_out_lora.up.weight": 2})) == [f"{m}.to_out.0"]


@pytest.mark.parametrize("model,adapter", [("sdxl_base", "animatediff_v1_5_2"),
                                           ("sd15", "animatediff_sdxl_beta")])
def test_adapter_of_another_base_is_refused(model, adapter):
    settings = animatediff.Settings(model=model, motion_adapter=adapter)
    with pytest.raises(ConfigError) as err:
        animatediff.models(settings, {})
    assert err.value.key == "engine.motion_adapter" and "same base" in str(err.value)
