"""Keyframed value schedules in Deforum's syntax, e.g. `"0:(1.04), 30:(1.0+0.002*sin(t/30))"`.

Syntax: comma-separated `key:(expression)` items. Spaces are allowed anywhere, the parentheses
are optional (`0:1.04`, `0:-0.5`), commas inside parentheses belong to the expression
(`0:(min(t, 5))`). A key is a whole frame number (`30`), or seconds with an `s` suffix (`2.5s`),
converted to the nearest frame with the fps given (`round(seconds * fps)`, halves up). A text
without any `:` is one expression at frame 0 (`"1.04"`). Keys may lie beyond the last frame
rendered (they only shape the interpolation); two keys on the same frame are an error.
Expressions use the restricted grammar of `engines.planning.expr` with the variable `t` (frame index).

Value at frame `f` (keys sorted: k_0 < k_1 < ...). A key's value is a *number* (`0:(1.04)`,
`0:-0.5`: Deforum's plain numbers) or an *expression* (anything else, `t` used or not:
`0:(1.0+0.002*sin(t))`, `0:(2*3)`).
- before the first key (when key 0 is missing): the first key's value at t = k_0 holds;
- at or after key k_i holding an expression: that expression evaluated at t = f, every frame,
  until the next key (which then takes over, possibly with a jump) - even a constant expression:
  Deforum evaluates an expression key at every frame until the next key;
- at or after key k_i holding a number: interpolated from it toward the next key's value (the
  next expression evaluated at t = k_{i+1}), reached at k_{i+1};
- after the last key: the last expression at t = f (a number holds).

Interpolation (`INTERPOLATIONS`):
- `linear`: straight lines between keys. Keys beyond the last frame shape the line.
- `pchip`: monotone piecewise cubic Hermite (Fritsch-Carlson tangents with the end rules of
  `scipy.interpolate.PchipInterpolator`, written here over plain floats) through the points
  (k_j, value of key j at t = k_j). It passes through every key and never overshoots: a zoom
  that goes 1.0 -> 1.1 -> 1.1 never exceeds 1.1. With two keys it is linear.
- `quadratic`, `cubic`: Deforum's. Deforum fills a series of the shot's frames with every
  number key at its frame and every expression key's values on its frames (keys at or beyond
  the last frame are ignored), sets frame 0 to the first value found and the last frame to the
  last value found when they hold none, and fills the remaining frames with pandas'
  `Series.interpolate(method=...)`, i.e. the interpolating B-spline of degree 2 or 3 of
  `scipy.interpolate.make_interp_spline` through every filled frame (degree 3: not-a-knot end
  conditions; degree 2: knots at the midpoints between points, the 2nd and 2nd-to-last left
  out). The curve passes through every point and may overshoot between them (a zoom
  1.0 -> 1.1 -> 1.1 -> 1.0 rises above 1.1). As in Deforum, `cubic` with 3 keys or fewer is
  `quadratic`, and `quadratic` with 2 or fewer is linear (over the filled frames); with fewer
  filled frames than the degree needs, the degree drops to what they allow. Because the last
  frame is pinned to the last value, the curve depends on the shot's length (lengthening a shot
  changes its earlier motion).
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from dataclasses import dataclass

from engines.core.errors import ConfigError
from engines.planning.expr import Expr, compile_expr

MAX_CHARS = 100_000
INTERPOLATIONS = ("linear", "quadratic", "cubic", "pchip")
INTERPOLATION_FORM = "interpolation 'linear', 'quadratic', 'cubic' (Deforum's) or 'pchip'"
# Deforum's test for a plain number (a key value that is interpolated, not evaluated per frame)
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def is_number(text: str) -> bool:
    """True if a key's value is a plain number (`1.04`, `(-0.5)`), not an expression."""
    text = text.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    return _NUMBER.fullmatch(text) is not None
ACCEPTED = ("keyframes 'frame:(expression)' joined by commas, e.g. "
            "'0:(1.04), 30:(1.0+0.002*sin(t))'; keys are whole frames >= 0 or seconds like '2.5s'")
_KEY = re.compile(r"\s*([+-]?(?:\d+\.?\d*|\.\d+))\s*(s?)\s*:")


def key_to_frame(raw: str, seconds: bool, fps: float | None, *, key: str, text: object) -> int:
    """Frame index of a schedule key: `raw` frames, or `raw` seconds times `fps`."""
    value = float(raw)
    if value < 0:
        raise ConfigError(key, text, ACCEPTED, f"key {raw!r} is negative")
    if seconds:
        if fps is None or not fps > 0:
            raise ConfigError(key, text, ACCEPTED, f"key '{raw}s' is in seconds but no fps was given")
        return math.floor(value * fps + 0.5)
    if not value.is_integer():
        raise ConfigError(key, text, ACCEPTED,
                          f"frame key {raw!r} is not a whole number; for seconds write '{raw}s'")
    return int(value)


def _split(text: str, key: str) -> list[tuple[str, bool, str]]:
    """(key number, is seconds, expression text) items of a schedule string."""
    if ":" not in text:
        return [("0", False, text)]
    items, pos = [], 0
    while pos < len(text):
        if not text[pos:].strip():
            break
        m = _KEY.match(text, pos)
        if not m:
            raise ConfigError(key, text, ACCEPTED, f"expected 'key:(value)' at {text[pos:pos + 30]!r}")
        depth, j = 0, m.end()
        while j < len(text) and not (text[j] == "," and depth == 0):
            depth += {"(": 1, ")": -1}.get(text[j], 0)
            if depth < 0:
                raise ConfigError(key, text, ACCEPTED, f"unbalanced ')' at {text[j:j + 30]!r}")
            j += 1
        value = text[m.end():j].strip()
        if not value:
            raise ConfigError(key, text, ACCEPTED, f"key {m.group(1)}{m.group(2)} has no value")
        items.append((m.group(1), m.group(2) == "s", value))
        pos = j + 1
    return items


def _pchip_tangents(xs: list[int], ys: list[float]) -> list[float]:
    """Tangents of the monotone cubic through (xs, ys); the rules of scipy's PchipInterpolator."""
    n = len(xs)
    h = [xs[j + 1] - xs[j] for j in range(n - 1)]
    d = [(ys[j + 1] - ys[j]) / h[j] for j in range(n - 1)]
    if n == 2:
        return [d[0], d[0]]
    m = [0.0] * n
    for j in range(1, n - 1):
        if d[j - 1] * d[j] > 0:
            w1, w2 = 2 * h[j] + h[j - 1], h[j] + 2 * h[j - 1]
            m[j] = (w1 + w2) / (w1 / d[j - 1] + w2 / d[j])

    def sign(x: float) -> int:
        return (x > 0) - (x < 0)

    def edge(h0: float, h1: float, d0: float, d1: float) -> float:
        t = ((2 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
        if sign(t) != sign(d0):
            return 0.0
        if sign(d0) != sign(d1) and abs(t) > abs(3 * d0):
            return 3 * d0
        return t

    m[0] = edge(h[0], h[1], d[0], d[1])
    m[-1] = edge(h[-1], h[-2], d[-1], d[-2])
    return m


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule: `keys` (frame indices, ascending), one expression per key, and whether
    each key's value is a plain number (`numbers`)."""

    text: str
    key: str
    keys: tuple[int, ...]
    exprs: tuple[Expr, ...]
    numbers: tuple[bool, ...] = ()

    def _number(self, i: int) -> bool:
        return self.numbers[i] if self.numbers else self.exprs[i].is_constant

    def values(self, n_frames: int, interpolation: str = "linear") -> list[float]:
        """Value for each frame 0 .. n_frames-1 (floats, finite)."""
        if interpolation not in INTERPOLATIONS:
            raise ConfigError(self.key, interpolation, INTERPOLATION_FORM)
        if isinstance(n_frames, bool) or not isinstance(n_frames, int) or n_frames < 0:
            raise ValueError(f"n_frames must be a whole number >= 0, got {n_frames!r}")
        if interpolation in ("quadratic", "cubic"):
            return self._deforum(n_frames, interpolation)
        keys = list(self.keys)
        ys = [e(t=k) for e, k in zip(self.exprs, keys, strict=True)]
        cubic = interpolation == "pchip" and len(keys) > 2
        m = _pchip_tangents(keys, ys) if cubic else []
        out = []
        for f in range(n_frames):
            i = bisect_right(keys, f) - 1
            if i < 0:
                out.append(ys[0])
                continue
            if not self._number(i) or i == len(keys) - 1:
                out.append(self.exprs[i](t=f))
                continue
            h = keys[i + 1] - keys[i]
            s = (f - keys[i]) / h
            if not cubic:
                out.append(ys[i] + (ys[i + 1] - ys[i]) * s)
                continue
            h01, h10, h11 = 3 * s**2 - 2 * s**3, s**3 - 2 * s**2 + s, s**3 - s**2  # Hermite basis
            out.append(ys[i] + (ys[i + 1] - ys[i]) * h01 + h * (h10 * m[i] + h11 * m[i + 1]))
        return out

    def _deforum(self, n: int, kind: str) -> list[float]:
        """Deforum's series (module docstring): filled frames, then a B-spline through them."""
        import numpy as np

        if n == 0:
            return []
        if kind == "cubic" and len(self.keys) <= 3:
            kind = "quadratic"
        if kind == "quadratic" and len(self.keys) <= 2:
            kind = "linear"
        at = {k: i for i, k in enumerate(self.keys)}
        series = np.full(n, np.nan)
        current = None
        for f in range(n):
            current = at.get(f, current)
            if current is None:
                continue
            if not self._number(current) or f == self.keys[current]:
                series[f] = self.exprs[current](t=f)
        filled = np.flatnonzero(~np.isnan(series))
        if filled.size == 0:  # every key lies beyond the shot: its first value holds
            return [self.exprs[0](t=self.keys[0])] * n
        if np.isnan(series[0]):
            series[0] = series[filled[0]]
        if np.isnan(series[-1]):
            series[-1] = series[filled[-1]]
        x = np.flatnonzero(~np.isnan(series))
        missing = np.flatnonzero(np.isnan(series))
        if missing.size:
            degree = min({"linear": 1, "quadratic": 2, "cubic": 3}[kind], x.size - 1)
            if degree <= 1:
                series[missing] = np.interp(missing, x, series[x])
            else:
                from scipy.interpolate import make_interp_spline

                series[missing] = make_interp_spline(x, series[x], k=degree)(missing)
        if not np.isfinite(series).all():
            raise ConfigError(self.key, self.text, ACCEPTED, "the interpolation is not finite")
        return [float(v) for v in series]


def parse_schedule(text: str, *, key: str, fps: float | None = None) -> Schedule:
    """Parse and validate a schedule string; ConfigError naming `key` if anything is wrong."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        text = repr(text)
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(key, text, ACCEPTED, "the schedule is empty")
    if len(text) > MAX_CHARS:
        raise ConfigError(key, text[:80] + "...", ACCEPTED, f"longer than {MAX_CHARS} characters")
    by_frame: dict[int, tuple[str, Expr, bool]] = {}
    for raw, seconds, expr_text in _split(text, key):
        frame = key_to_frame(raw, seconds, fps, key=key, text=text)
        label = raw + ("s" if seconds else "")
        if frame in by_frame:
            raise ConfigError(key, text, ACCEPTED, f"keys {by_frame[frame][0]!r} and {label!r} "
                              f"both fall on frame {frame}")
        by_frame[frame] = (label, compile_expr(expr_text, key=f"{key} (key {label})"),
                           is_number(expr_text))
    keys = tuple(sorted(by_frame))
    return Schedule(text, key, keys, tuple(by_frame[k][1] for k in keys),
                    tuple(by_frame[k][2] for k in keys))


def schedule_values(text: str, n_frames: int, *, key: str, fps: float | None = None,
                    interpolation: str = "linear") -> list[float]:
    """Parse `text` and return its value for each of `n_frames` frames."""
    return parse_schedule(text, key=key, fps=fps).values(n_frames, interpolation)
