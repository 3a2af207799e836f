"""Pre-production planning: per-shot frame plans and the film's timeline, pure Python.

`shot_plan` turns one shot's config into the `ShotPlan` an engine renders (prompts and motion per
frame). `timeline` computes every length before anything renders: frames rendered per shot, frames
after speed modulation, overlaps of cross-fades, the film's total frames and duration. The
soundtrack is composed to exactly that duration.

Prompt transitions between keyframes:
- `cut`: the keyframe's prompts hold until the next key.
- `crossfade`: at a key the outgoing prompts fade out and the incoming fade in, linearly over
  `frames` frames starting at the key.
- `interpolate`: the weights move linearly from each keyframe to the next over the whole gap
  (the 001 paper's prompt interpolation; with keys every F frames it equals its
  frames-per-prompt schedule). The last keyframe holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engines.planning.keyframes import schedule_values
from engines.planning.plan import MOTION_3D, FramePlan, ShotPlan
from engines.planning.prompts import Prompt, parse_prompt_schedule


def shot_frames(shot: Any, fps: float) -> int:
    """Rendered frame count of a shot: `frames`, or round(seconds * fps) (at least 1); an
    open-ended shot without either plans OPEN_HORIZON frames (it stops when the user says)."""
    from engines.planning.film import OPEN_HORIZON

    if shot.frames is None and shot.seconds is None:
        return OPEN_HORIZON
    return shot.frames if shot.frames is not None else max(1, round(shot.seconds * fps))


def _interpolated(schedule: Any, frame: int) -> tuple[Prompt, ...]:
    keys = schedule.keys
    if frame >= keys[-1] or frame <= keys[0] or len(keys) == 1:  # before the first key: hold it
        return schedule.at(frame)
    i = max(j for j, k in enumerate(keys) if k <= frame)
    a, b = keys[i], keys[i + 1]
    w = (frame - a) / (b - a)
    out = [Prompt(p.text, p.weight * (1 - w), p.stop) for p in schedule.at(a)]
    out += [Prompt(p.text, p.weight * w, p.stop) for p in schedule.at(b)]
    return tuple(p for p in out if p.weight != 0)


def frame_prompts(shot: Any, fps: float, n_frames: int, key: str) -> list[tuple[Prompt, ...]]:
    """The prompts of each frame (the first story phrase of a story line)."""
    schedule = parse_prompt_schedule(shot.prompts, key=f"{key}.prompts", fps=fps)
    t = shot.transition
    if t.kind != "cut" and t.frames != 0 or t.kind == "interpolate":
        schedule.refuse_story_blend(t.kind)
    if t.kind == "interpolate":
        return [_interpolated(schedule, f) for f in range(n_frames)]
    return [schedule.at(f, transition=t.kind, transition_frames=t.frames) for f in range(n_frames)]


def frame_stories(shot: Any, fps: float, n_frames: int, key: str) -> list[tuple]:
    """The story phrases of each frame: `()` unless its line has several (`^`)."""
    schedule = parse_prompt_schedule(shot.prompts, key=f"{key}.prompts", fps=fps)
    if not schedule.has_story:
        return [()] * n_frames
    out = []
    for f in range(n_frames):
        story = schedule.story_at(f)
        out.append(story if len(story) > 1 else ())
    return out


def shot_plan(shot: Any, *, fps: float, width: int, height: int, seed: int, key: str) -> ShotPlan:
    from engines.planning.prompts import parse_image_prompt

    n = shot_frames(shot, fps)
    prompts = frame_prompts(shot, fps, n, key)
    stories = frame_stories(shot, fps, n, key)
    m = shot.motion
    motion = {
        name: schedule_values(getattr(m, name), n, key=f"{key}.motion.{name}", fps=fps,
                              interpolation=m.interpolation)
        for name in ("zoom", "angle", "translation_x", "translation_y", *MOTION_3D)
    }
    frames = tuple(
        FramePlan(prompts=prompts[f], story=stories[f],
                  **{name: values[f] for name, values in motion.items()})
        for f in range(n)
    )
    image_prompts = tuple(parse_image_prompt(p, key=f"{key}.image_prompts")
                          for p in shot.image_prompts)
    return ShotPlan(name=shot.name, width=width, height=height, fps=fps, seed=seed,
                    frames=frames, image_prompts=image_prompts, init_image=shot.init_image,
                    continues=shot.continues == "previous", border=m.border,
                    input_video=shot.input_video)


@dataclass(frozen=True)
class ShotTiming:
    name: str
    rendered: int  # frames the engine makes
    after_speed: int  # frames after speed modulation
    join_kind: str  # how it joins the next shot
    join_frames: int  # overlap with the next shot (0 for a cut or the last shot)


@dataclass(frozen=True)
class Timeline:
    fps: float  # playback frames per second of the finished film (the soundtrack and the export)
    shots: tuple[ShotTiming, ...]
    total_frames: int  # of the finished film
    duration_s: float  # total_frames / fps
    render_fps: float | None = None  # the film's fps, when fit_fps set another playback rate

    def as_dict(self) -> dict[str, Any]:
        out = {"fps": self.fps, "total_frames": self.total_frames, "duration_s": self.duration_s,
               "shots": [vars(s) for s in self.shots]}
        if self.render_fps is not None:
            out["render_fps"] = self.render_fps
        return out


def timeline(shots: list[tuple[Any, Any]], fps: float, fit_fps: Any = None) -> Timeline:
    """`shots`: (shot config, speed settings) pairs in film order. `fit_fps`
    (engines/planning/film.py FitFps): the playback rate follows the film's frame count."""
    from engines.planning.joins import Transition, planned_total
    from engines.planning.speed import planned_frames

    timings = []
    for i, (shot, speed) in enumerate(shots):
        rendered = shot_frames(shot, fps)
        after = planned_frames(rendered, speed, fps)
        last = i == len(shots) - 1
        join = 0 if last or shot.join.kind == "cut" else round(shot.join.seconds * fps)
        timings.append(ShotTiming(shot.name, rendered, after, shot.join.kind, join))
    transitions = [Transition(kind=t.join_kind, frames=t.join_frames) for t in timings[:-1]]
    total = planned_total([t.after_speed for t in timings], transitions)
    if fit_fps is not None:
        play = fit_fps.fps(total)
        return Timeline(fps=play, shots=tuple(timings), total_frames=total,
                        duration_s=total / play, render_fps=fps)
    return Timeline(fps=fps, shots=tuple(timings), total_frames=total, duration_s=total / fps)
