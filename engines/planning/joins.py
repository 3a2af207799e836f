"""How shots join: a hard cut or one of ffmpeg's xfade cross-fades over some frames, and the
length of the joined film. Pure arithmetic, used when the timeline is planned (before anything
renders) and by engines/media/editing.py when the shots are blended.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engines.core.errors import ConfigError

# ffmpeg's xfade transitions (all but `custom`), as listed by `ffmpeg -h filter=xfade`
TRANSITIONS = frozenset(
    "fade wipeleft wiperight wipeup wipedown slideleft slideright slideup slidedown circlecrop "
    "rectcrop distance fadeblack fadewhite radial smoothleft smoothright smoothup smoothdown "
    "circleopen circleclose vertopen vertclose horzopen horzclose dissolve pixelize diagtl diagtr "
    "diagbl diagbr hlslice hrslice vuslice vdslice hblur fadegrays wipetl wipetr wipebl wipebr "
    "squeezeh squeezev zoomin fadefast fadeslow hlwind hrwind vuwind vdwind coverleft coverright "
    "coverup coverdown revealleft revealright revealup revealdown".split())

@dataclass(frozen=True)
class Transition:
    """How one shot joins the next: `cut`, or an xfade transition over `frames` frames."""

    kind: str = "cut"
    frames: int = 0  # overlap in frames (ignored for a cut)

    def __post_init__(self) -> None:
        if self.kind != "cut" and self.kind not in TRANSITIONS:
            raise ConfigError("transition.kind", self.kind, f"cut, {', '.join(sorted(TRANSITIONS))}")
        if not isinstance(self.frames, int) or self.frames < 0:
            raise ConfigError("transition.frames", self.frames, "an integer >= 0")

    @property
    def overlap(self) -> int:
        """Frames shared by the two shots (0 for a cut or a 0-frame transition)."""
        return 0 if self.kind == "cut" else self.frames


def planned_total(lengths: Sequence[int], transitions: Sequence[Transition]) -> int:
    """Frames of the joined film: sum of the shots minus every cross-fade's overlap."""
    if len(transitions) != len(lengths) - 1:
        raise ValueError(f"{len(lengths)} shots need {len(lengths) - 1} transitions, "
                         f"got {len(transitions)}")
    acc = lengths[0]
    for j, t in enumerate(transitions):
        nxt = lengths[j + 1]
        if t.overlap > min(acc, nxt):
            raise ConfigError(f"transitions.{j}.frames", t.frames,
                              f"at most {min(acc, nxt)} (the shorter of the {acc} frames so far "
                              f"and the next shot's {nxt})")
        acc += nxt - t.overlap
    return acc
