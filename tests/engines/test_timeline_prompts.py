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
