"""Per-frame prompts of a shot under each transition (engines/timeline.frame_prompts)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from engines.planning.timeline import frame_prompts


def shot(prompts, kind: str, frames: int = 0):
    return SimpleNamespace(prompts=prompts, transition=SimpleNamespace(kind=kind, frames=frames))


@pytest.mark.parametrize("kind", ["cut", "crossfade", "interpolate"])
def test_frames_before_the_first_keyframe_hold_it(kind: str) -> None:
    out = frame_prompts(shot({"4": "a", "8": "b"}, kind, 2), fps=8, n_frames=12, key="s")
    assert [[(p.text, p.weight) for p in f] for f in out[:5]] == [[("a", 1.0)]] * 5
    assert [(p.text, p.weight) for p in out[11]] == [("b", 1.0)]


def test_interpolate_weights_between_keyframes() -> None:
    out = frame_prompts(shot({"4": "a", "8": "b"}, "interpolate"), fps=8, n_frames=10, key="s")
    assert [(p.text, round(p.weight, 4)) for p in out[5]] == [("a", 0.75), ("b", 0.25)]
    assert [(p.text, p.weight) for p in out[8]] == [("b", 1.0)]


def test_story_keyframes_reach_the_plan_with_every_phrase() -> None:
    from engines.planning.film import Shot
    from engines.planning.prompts import Prompt
    from engines.planning.timeline import shot_plan

    s = Shot(name="s", frames=6, prompts={"0": "a sunflower|photo:-1 ^ a rose", "3": "a pond"})
    plan = shot_plan(s, fps=8, width=64, height=48, seed=1, key="film.shots.0")
    assert plan.frames[0].story == ((Prompt("a sunflower"), Prompt("photo", -1.0)),
                                    (Prompt("a rose"),))
    assert plan.frames[0].prompts == (Prompt("a sunflower"), Prompt("photo", -1.0))
    assert plan.frames[3].story == () and plan.frames[3].prompts == (Prompt("a pond"),)


def test_fit_fps_clips_frames_over_seconds_as_nerdyrodent() -> None:
    # nerdyrodent's generate.py: fps = np.clip(total_frames / video_length, 10, 60)
    from engines.planning.film import FitFps, Shot
    from engines.planning.speed import SpeedSettings
    from engines.planning.timeline import timeline

    fit = FitFps()  # seconds 10, min 10, max 60
    assert (fit.fps(120), fit.fps(50), fit.fps(1000)) == (12.0, 10.0, 60.0)
    none = SpeedSettings(factor=1.0, method="hold")
    tl = timeline([(Shot(name="a", frames=300, prompts="x"), none)], 8.0, fit)
    assert (tl.fps, tl.total_frames, tl.duration_s, tl.render_fps) == (30.0, 300, 10.0, 8.0)
    with pytest.raises(ValueError, match="min_fps"):
        FitFps(min_fps=30, max_fps=20)
