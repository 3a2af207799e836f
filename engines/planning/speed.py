"""Speed modulation maths (no ffmpeg): which source position each output frame shows.

A speed of 2 plays twice as fast (half the frames), 0.5 plays at half speed (twice the frames).
Give exactly one of:
- `factor`: one constant speed;
- `curve`: a Deforum-style schedule of the speed over the *source* clip, e.g.
  `"0:(1.0), 47:(0.25)"`, evaluated by `engines.planning.keyframes`. Keys are source frames (`2.5s` keys
  are seconds), or seconds with `curve_unit: seconds`; `t` in expressions is always the source
  frame index;
- `target_duration_s`: the clip is retimed to last this long (constant factor derived from it).

The maths: source frame i is shown for 1/speed_i output frames (speed is constant over each
source frame), so the source clip lasts T = sum(1/speed_i) output frames. Output frame k shows
source position p(k) with T(p) = k, i.e. 1/speed integrated over the source. Positions past the
last source frame hold it.

Rounding rule: the output has N = max(1, floor(T + 1/2)) frames (T rounded half up); for a
constant factor f that is round(n_in / f), for a target duration round(target_duration_s * fps).
"""

from __future__ import annotations

import math
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from engines.core.errors import ConfigError

MIN_SPEED = 0.01  # slowest speed accepted (100x slow motion)
MAX_SPEED = 100.0  # fastest
MODES = ("factor", "curve", "target_duration_s")
_EPS = 1e-9


class SpeedSettings(BaseModel):
    """Speed modulation of one shot (conf/speed/*.yaml)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "custom"  # preset name (conf/speed/<name>.yaml)
    factor: float | None = Field(default=None, ge=MIN_SPEED, le=MAX_SPEED)  # playback speed, x
    curve_unit: Literal["frames", "seconds"] = "frames"  # unit of the curve's keys
    curve_interpolation: Literal["linear", "quadratic", "cubic", "pchip"] = "linear"  # between curve keys (engines/planning/keyframes.py)
    curve: str | None = None  # speed schedule over the source clip, e.g. "0:(1.0), 47:(0.25)"
    target_duration_s: float | None = Field(default=None, gt=0)  # retime the clip to this length
    method: Literal["hold", "blend", "interpolate"] = "hold"  # how in-between frames are made

    @field_validator("curve")
    @classmethod
    def _curve_parses(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Syntax only; the values are checked per shot (speeds())."""
        if v is None:
            return v
        from engines.planning.keyframes import parse_schedule

        text = _in_seconds(v) if info.data.get("curve_unit") == "seconds" else v
        try:
            parse_schedule(text, key="curve", fps=1000.0)
        except ConfigError as exc:
            raise ValueError(str(exc).removeprefix(f"{exc.key}: bad value {exc.value!r}; ")
                             ) from None
        return v

    @model_validator(mode="after")
    def _one_mode(self) -> SpeedSettings:
        given = [m for m in MODES if getattr(self, m) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(MODES)} (got "
                             f"{', '.join(given) or 'none'})")
        return self

    @property
    def is_identity(self) -> bool:
        """True when the clip plays unchanged (factor 1)."""
        return self.factor == 1.0


def merged(base: SpeedSettings, override: dict) -> dict:
    """Raw settings for a per-shot override: naming a mode (factor, curve or target) replaces the
    base's mode instead of clashing with it; other keys override one by one."""
    raw = base.model_dump()
    if any(override.get(m) is not None for m in MODES):
        for m in MODES:
            raw[m] = None
    return {**raw, "name": "custom", **override}


def _in_seconds(curve: str) -> str:
    """The curve with bare keys marked as seconds for engines.planning.keyframes: '0:(1), 2:(.5)' ->
    '0s:(1), 2s:(.5)'. Items are split on commas outside parentheses."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(curve):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(curve[start:i])
            start = i + 1
    parts.append(curve[start:])
    return ",".join(re.sub(r"^(\s*[+-]?(?:\d+\.?\d*|\.\d+))(\s*:)", r"\1s\2", p, count=1)
                    for p in parts)


def _curve_text(settings: SpeedSettings) -> str:
    assert settings.curve is not None
    return _in_seconds(settings.curve) if settings.curve_unit == "seconds" else settings.curve


def speeds(n_in: int, settings: SpeedSettings, fps: float, *, key: str = "speed") -> list[float]:
    """Speed of each source frame (n_in values), checked to lie in [MIN_SPEED, MAX_SPEED]."""
    if settings.curve is None:
        if settings.factor is not None:
            factor = settings.factor
        else:
            factor = n_in / (settings.target_duration_s * fps)
            if not MIN_SPEED <= factor <= MAX_SPEED:
                raise ConfigError(f"{key}.target_duration_s", settings.target_duration_s,
                                  f"a duration between {n_in / fps / MAX_SPEED:.3g} and "
                                  f"{n_in / fps / MIN_SPEED:.3g} s for this {n_in}-frame shot "
                                  f"(speed {MIN_SPEED} to {MAX_SPEED})")
        return [factor] * n_in
    from engines.planning.keyframes import schedule_values

    values = schedule_values(_curve_text(settings), n_in, key=f"{key}.curve", fps=fps,
                             interpolation=settings.curve_interpolation)
    for i, v in enumerate(values):
        if not (math.isfinite(v) and MIN_SPEED <= v <= MAX_SPEED):
            raise ConfigError(f"{key}.curve", settings.curve,
                              f"speeds between {MIN_SPEED} and {MAX_SPEED}",
                              f"it gives {v!r} at source frame {i}")
    return list(values)


def output_count(total: float) -> int:
    """The rounding rule: output length T (in frames, may be fractional) -> frames, half up."""
    return max(1, math.floor(total + 0.5 + _EPS))


def positions_from_speeds(values: list[float]) -> list[float]:
    """Source position (fractional frame index) of each output frame, for per-source-frame
    speeds (see module doc). Positions lie in [0, len(values) - 1]."""
    n_in = len(values)
    if n_in == 0:
        raise ValueError("no source frames")
    last = float(n_in - 1)
    if all(v == values[0] for v in values):  # constant: exact closed form
        f = values[0]
        return [min(k * f, last) for k in range(output_count(n_in / f))]
    starts = _starts(values)
    out, i = [], 0
    for k in range(output_count(starts[-1])):
        while i < n_in - 1 and starts[i + 1] <= k + _EPS:
            i += 1
        out.append(min(i + max(k - starts[i], 0.0) * values[i], last))
    return out


def _starts(values: list[float]) -> list[float]:
    """Output time (in frames) at which each source frame starts; the last item is the total."""
    starts = [0.0]
    for v in values:
        starts.append(starts[-1] + 1.0 / v)
    return starts


def source_positions(n_in: int, settings: SpeedSettings, fps: float, *,
                     key: str = "speed") -> list[float]:
    """For each output frame, its fractional source frame position (see module doc)."""
    if n_in < 1:
        raise ConfigError(f"{key}", n_in, "a shot of at least one frame")
    return positions_from_speeds(speeds(n_in, settings, fps, key=key))


def source_starts(n_in: int, settings: SpeedSettings, fps: float, *,
                  key: str = "speed") -> list[float]:
    """Output time (in output frames) at which each source frame starts showing; n_in + 1
    values, the last being the clip's output length T (before rounding)."""
    values = speeds(n_in, settings, fps, key=key)
    if all(v == values[0] for v in values):
        return [i / values[0] for i in range(n_in + 1)]
    return _starts(values)


def planned_frames(n_in: int, settings: SpeedSettings, fps: float, *, key: str = "speed") -> int:
    """Output frame count after speed modulation (= len(source_positions)); cheap, no ffmpeg."""
    if n_in < 1:
        raise ConfigError(f"{key}", n_in, "a shot of at least one frame")
    values = speeds(n_in, settings, fps, key=key)
    if all(v == values[0] for v in values):
        return output_count(n_in / values[0])
    return output_count(_starts(values)[-1])


def hold_indices(positions: list[float]) -> list[int]:
    """Source frame shown by each output frame with `method: hold` (the position, floored)."""
    return [math.floor(p + _EPS) for p in positions]
