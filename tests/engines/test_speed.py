"""Speed curve maths: planned counts, positions, the rounding rule, validation, presets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from engines.core.errors import ConfigError
from engines.planning.speed import (
    SpeedSettings,
    hold_indices,
    merged,
    planned_frames,
    positions_from_speeds,
    source_positions,
    source_starts,
)

ROOT = Path(__file__).resolve().parents[2]
RAMP = "0:(1.0), 47:(0.25)"


@pytest.mark.parametrize(("factor", "expected"), [(0.5, 96), (2.0, 24), (0.37, 130), (1.0, 48),
                                                  (3.0, 16), (0.25, 192)])
def test_constant_factor_counts(factor: float, expected: int) -> None:
    s = SpeedSettings(factor=factor)
    assert planned_frames(48, s, 24) == expected
    assert len(source_positions(48, s, 24)) == expected


def test_ramp_count_matches_integral_of_inverse_speed() -> None:
    s = SpeedSettings(curve=RAMP)
    speeds = [1.0 - 0.75 * i / 47 for i in range(48)]  # the linear ramp, by hand
    total = sum(1 / v for v in speeds)
    assert math.isclose(total, 89.3944, abs_tol=1e-4)
    assert planned_frames(48, s, 24) == math.floor(total + 0.5) == 89
    pos = source_positions(48, s, 24)
    assert len(pos) == 89 and pos[0] == 0.0 and pos[-1] == 47.0
    assert all(b >= a for a, b in zip(pos, pos[1:], strict=False))
    steps = [b - a for a, b in zip(pos[:40], pos[1:41], strict=True)]
    assert steps[0] == pytest.approx(1.0, abs=0.02) and steps[-1] < steps[0]  # slowing down


def test_positions_constant_factors() -> None:
    assert source_positions(48, SpeedSettings(factor=0.5), 24)[:5] == [0, 0.5, 1, 1.5, 2]
    assert source_positions(48, SpeedSettings(factor=0.5), 24)[-2:] == [47, 47]  # last frame held
    assert source_positions(48, SpeedSettings(factor=2.0), 24) == [float(2 * k) for k in range(24)]
    assert hold_indices(source_positions(6, SpeedSettings(factor=0.37), 24)) == [
        0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 4, 4, 4, 5, 5]


def test_rounding_rule_is_half_up_and_at_least_one() -> None:
    assert planned_frames(3, SpeedSettings(factor=2.0), 24) == 2  # 1.5 -> 2
    assert planned_frames(5, SpeedSettings(factor=2.0), 24) == 3  # 2.5 -> 3
    assert planned_frames(1, SpeedSettings(factor=2.0), 24) == 1  # 0.5 -> 1
    assert planned_frames(1, SpeedSettings(factor=100.0), 24) == 1  # never 0


def test_target_duration() -> None:
    s = SpeedSettings(target_duration_s=3.0)
    assert planned_frames(48, s, 24) == 72
    pos = source_positions(48, s, 24)
    assert len(pos) == 72 and pos[1] == pytest.approx(48 / 72) and max(pos) <= 47
    assert planned_frames(48, SpeedSettings(target_duration_s=1.3), 10) == 13
    with pytest.raises(ConfigError, match="speed.target_duration_s"):
        planned_frames(48, SpeedSettings(target_duration_s=1000.0), 24)


def test_seconds_curve_equals_frame_curve() -> None:
    frames = SpeedSettings(curve="0:(1), 24:(0.5)")
    seconds = SpeedSettings(curve="0:(1), 1:(0.5)", curve_unit="seconds")
    assert source_positions(48, seconds, 24) == source_positions(48, frames, 24)
    assert source_starts(48, seconds, 24)[-1] == pytest.approx(sum(
        1 / v for v in [1 - 0.5 * i / 24 for i in range(24)] + [0.5] * 24))


def test_exactly_one_mode_and_bad_values_name_the_key() -> None:
    for raw in ({}, {"factor": 2.0, "curve": RAMP}, {"factor": 1.0, "target_duration_s": 2.0}):
        with pytest.raises(ValidationError, match="exactly one of factor, curve, target_duration_s"):
            SpeedSettings(**raw)
    with pytest.raises(ValidationError) as err:
        SpeedSettings(factor=0)
    assert err.value.errors()[0]["loc"] == ("factor",)
    with pytest.raises(ValidationError) as err:
        SpeedSettings(curve="0:(1.0), 2.5:(0.25)")  # fractional frame key
    assert err.value.errors()[0]["loc"] == ("curve",) and "2.5s" in str(err.value)
    with pytest.raises(ValidationError):
        SpeedSettings(factor=1.0, method="warp")
    with pytest.raises(ConfigError, match=r"film.shots.a.speed.curve.*0.0 at source frame 20"):
        planned_frames(48, SpeedSettings(curve="0:(1-t/20)"), 24, key="film.shots.a.speed")


def test_merged_override_replaces_the_mode() -> None:
    base = SpeedSettings(name="none", factor=1.0)
    shot = SpeedSettings.model_validate(merged(base, {"curve": RAMP, "method": "blend"}))
    assert shot.factor is None and shot.curve == RAMP and shot.method == "blend"
    kept = SpeedSettings.model_validate(merged(SpeedSettings(factor=0.5), {"method": "blend"}))
    assert kept.factor == 0.5 and kept.method == "blend"


@settings(max_examples=200, deadline=None)
@given(n_in=st.integers(1, 300), factor=st.floats(0.05, 20.0))
def test_positions_properties(n_in: int, factor: float) -> None:
    s = SpeedSettings(factor=factor)
    pos = source_positions(n_in, s, 24)
    assert len(pos) == planned_frames(n_in, s, 24) == max(1, math.floor(n_in / factor + 0.5 + 1e-9))
    assert pos[0] == 0 and all(0 <= p <= n_in - 1 for p in pos)
    assert all(b >= a for a, b in zip(pos, pos[1:], strict=False))
    assert all(0 <= i < n_in for i in hold_indices(pos))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(0.05, 10.0), min_size=1, max_size=80))
def test_variable_speed_positions_properties(values: list[float]) -> None:
    pos = positions_from_speeds(values)
    total = sum(1 / v for v in values)
    assert len(pos) == max(1, math.floor(total + 0.5 + 1e-9))
    assert all(b >= a - 1e-12 for a, b in zip(pos, pos[1:], strict=False))
    assert all(0 <= p <= len(values) - 1 for p in pos)


def test_presets_validate_and_are_commented() -> None:
    files = sorted((ROOT / "conf" / "speed").glob("*.yaml"))
    assert {p.stem for p in files} >= {"none", "half", "double", "ramp_slowdown", "fit_duration"}
    for path in files:
        s = SpeedSettings.model_validate(yaml.safe_load(path.read_text()))
        assert s.name == path.stem
        planned_frames(48, s, 24)
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                assert "  # " in line, f"{path.name}: uncommented key: {line}"
    assert planned_frames(48, SpeedSettings.model_validate(yaml.safe_load(
        (ROOT / "conf/speed/half.yaml").read_text())), 24) == 96
