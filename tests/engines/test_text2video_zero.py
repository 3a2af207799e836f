"""text2video_zero (engines/frames/text2video_zero.py): the motion field comes from the shot's
translation schedule; frame 0 is the same with or without motion and the later frames move;
batches share frame 0; a kill mid-batch resumes to the same bytes; bad t0/t1 and several prompts
are refused before any model loads."""

from __future__ import annotations

import pytest

from engines.core.errors import ConfigError
from engines.frames import text2video_zero as t2vz
from engines.planning.plan import FramePlan, ShotPlan
from engines.planning.prompts import Prompt
from tests.engines.sd_helpers import kill_and_resume, render_here

TINY = {"model": "generated_sd15_tiny", "t0": 1, "t1": 2, "batch_frames": 2}


def plan(n: int, dx: float = 0.0, dy: float = 0.0, texts: tuple[str, ...] = ("a garden",)):
    frames = tuple(FramePlan((Prompt(texts[min(i, len(texts) - 1)], 1.0),), translation_x=dx,
                             translation_y=dy) for i in range(n))
    return ShotPlan("s", 64, 48, 8, 1, frames)


def test_motion_field_is_the_summed_translation_on_the_512_grid():
    field = t2vz.motion_field(plan(3, dx=2.0, dy=-1.5))
    # sampled from where the picture was: minus the offset, in 512ths of the frame
    assert field == [(0.0, 0.0), (-2.0 * 512 / 64, 1.5 * 512 / 48), (-4.0 * 512 / 64, 3.0 * 512 / 48)]


def test_t0_t1_default_to_the_papers_share_of_the_steps():
    assert t2vz.ts_of(t2vz.Settings(), 50) == (44, 47)
    assert t2vz.ts_of(t2vz.Settings(), 25) == (22, 24)


def test_bad_t1_and_several_prompts_are_refused():
    with pytest.raises(ConfigError) as err:
        t2vz.check(t2vz.Settings(model="generated_sd15_tiny", t0=1, t1=3), plan(2), "film.shots.0")
    assert err.value.key == "engine.t1"
    with pytest.raises(ConfigError) as err:
        t2vz.check(t2vz.Settings(model="generated_sd15_tiny", t0=1, t1=2),
                   plan(2, texts=("a garden", "a city")), "film.shots.0")
    assert err.value.key == "film.shots.0.prompts"


def test_translation_moves_the_frames_after_the_first(tmp_path, models_dir):
    still = render_here("text2video_zero", tmp_path / "still", models_dir,
                        {"frames": 3, "settings": TINY})
    moving = render_here("text2video_zero", tmp_path / "moving", models_dir,
                         {"frames": 3, "settings": TINY, "motion": {"translation_x": 8.0}})
    assert (still[0] == moving[0]).all()  # frame 0 is never moved
    assert (still[2] != moving[2]).any()


def test_kill_mid_batch_resumes_byte_identical(tmp_path, models_dir):
    kill_and_resume("text2video_zero", tmp_path, models_dir,
                    {"frames": 3, "settings": TINY, "motion": {"translation_x": 4.0}},
                    ["frame:0"])
