"""Pre-production planning (engines/planning/timeline.py): frames per shot before and after speed
changes, cross-fade overlaps, the film's total frames and duration (what `make show` prints and the
soundtrack's length follows), and the per-frame plan an engine renders."""

from __future__ import annotations

import pytest

from engines.planning.film import Shot
from engines.planning.speed import SpeedSettings
from engines.planning.timeline import shot_frames, shot_plan, timeline

SAME = SpeedSettings(factor=1.0)


def test_seconds_become_frames_at_the_film_rate() -> None:
    assert shot_frames(Shot(name="a", prompts="x", frames=7), 12) == 7
    assert shot_frames(Shot(name="a", prompts="x", seconds=2.5), 12) == 30
    assert shot_frames(Shot(name="a", prompts="x", seconds=0.99), 12) == 12  # 11.88: nearest
    assert shot_frames(Shot(name="a", prompts="x", seconds=0.01), 12) == 1  # at least one


def test_the_readme_film_is_108_frames_and_9_seconds() -> None:
    # README, "Make your own film": 48 + 72 frames - 12 of cross-fade = 108 frames, 9 s
    dawn = Shot(name="dawn", prompts="x", seconds=4, join={"kind": "fade", "seconds": 1})
    storm = Shot(name="storm", prompts="x", seconds=6)
    tl = timeline([(dawn, SAME), (storm, SAME)], 12)
    assert [(s.name, s.rendered, s.after_speed, s.join_kind, s.join_frames) for s in tl.shots] == [
        ("dawn", 48, 48, "fade", 12), ("storm", 72, 72, "cut", 0)]
    assert (tl.fps, tl.total_frames, tl.duration_s) == (12, 108, 9.0)


def test_speed_changes_and_joins_add_up_as_in_the_smoke_film() -> None:
    # 12 frames, a 0.5 s fade at 8 fps (4 frames), then 12 frames slowed 2x (24): 32 frames, 4 s.
    # The last shot's join overlaps nothing.
    evolve = Shot(name="evolve", prompts="x", frames=12, join={"kind": "fade", "seconds": 0.5})
    zoom = Shot(name="zoom", prompts="x", frames=12, join={"kind": "fade", "seconds": 1})
    tl = timeline([(evolve, SAME), (zoom, SpeedSettings(factor=0.5))], 8)
    assert tl.as_dict() == {"fps": 8, "total_frames": 32, "duration_s": 4.0, "shots": [
        {"name": "evolve", "rendered": 12, "after_speed": 12, "join_kind": "fade",
         "join_frames": 4},
        {"name": "zoom", "rendered": 12, "after_speed": 24, "join_kind": "fade",
         "join_frames": 0}]}


def test_a_fade_overlaps_the_nearest_whole_number_of_frames() -> None:
    a = Shot(name="a", prompts="x", frames=10, join={"kind": "dissolve", "seconds": 0.3})
    b = Shot(name="b", prompts="x", frames=10)
    tl = timeline([(a, SAME), (b, SAME)], 12)  # 0.3 s at 12 fps = 3.6 frames: 4
    assert tl.shots[0].join_frames == 4 and tl.total_frames == 16


def test_a_cut_overlaps_nothing_whatever_its_seconds() -> None:
    a = Shot(name="a", prompts="x", frames=10, join={"kind": "cut", "seconds": 1})
    b = Shot(name="b", prompts="x", frames=6)
    c = Shot(name="c", prompts="x", frames=9)
    tl = timeline([(a, SAME), (b, SpeedSettings(factor=2.0)), (c, SAME)], 4)
    assert [(s.after_speed, s.join_frames) for s in tl.shots] == [(10, 0), (3, 0), (9, 0)]
    assert (tl.total_frames, tl.duration_s) == (22, 5.5)


def test_shot_plan_holds_prompts_motion_and_the_shot_settings() -> None:
    shot = Shot(name="z", prompts={"0": "a garden", "2": "a city"}, frames=4,
                motion={"zoom": "0:(1.0), 3:(1.3)", "angle": "0:(2*t)", "translation_y": "-1.5"},
                init_image="init.png")
    plan = shot_plan(shot, fps=8, width=96, height=64, seed=5, key="film.shots.0")
    assert (plan.name, plan.width, plan.height, plan.fps, plan.seed, plan.n_frames,
            plan.init_image) == ("z", 96, 64, 8, 5, 4, "init.png")
    assert [[(p.text, p.weight) for p in f.prompts] for f in plan.frames] == [
        [("a garden", 1.0)], [("a garden", 1.0)], [("a city", 1.0)], [("a city", 1.0)]]
    assert [f.zoom for f in plan.frames] == pytest.approx([1.0, 1.1, 1.2, 1.3])
    assert [f.angle for f in plan.frames] == [0.0, 2.0, 4.0, 6.0]
    assert [(f.translation_x, f.translation_y) for f in plan.frames] == [(0.0, -1.5)] * 4


STORY = {"0": "a sunflower ^ a rose", "3": "a pond"}


@pytest.mark.parametrize(("transition", "refused"), [
    ({"kind": "cut"}, False), ({"kind": "cut", "frames": 2}, False),
    ({"kind": "crossfade", "frames": 0}, False),  # a crossfade of no frames is a cut
    ({"kind": "crossfade", "frames": 2}, True), ({"kind": "interpolate"}, True)])
def test_story_keyframes_refuse_only_a_transition_that_blends_them(transition: dict,
                                                                   refused: bool) -> None:
    from engines.core.errors import ConfigError

    shot = Shot(name="s", frames=6, prompts=STORY, transition=transition)
    if refused:
        with pytest.raises(ConfigError, match="transition.kind=cut") as err:
            shot_plan(shot, fps=8, width=64, height=48, seed=1, key="film.shots.0")
        assert "film.shots.0.prompts" in str(err.value)
    else:
        plan = shot_plan(shot, fps=8, width=64, height=48, seed=1, key="film.shots.0")
        assert [f.prompts[0].text for f in plan.frames] == ["a sunflower"] * 3 + ["a pond"] * 3


@pytest.mark.parametrize(("continues", "want"), [("previous", True), (None, False)])
def test_shot_plan_says_whether_the_shot_continues_the_previous_one(continues, want) -> None:
    shot = Shot(name="s", frames=2, prompts="x", **{"continue": continues})
    assert shot_plan(shot, fps=8, width=64, height=48, seed=1, key="k").continues is want
