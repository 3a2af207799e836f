"""Keyframed value schedules: parsing, golden values, interpolation, errors."""

from __future__ import annotations

import math

import pytest

from engines.core.errors import ConfigError
from engines.planning.keyframes import parse_schedule, schedule_values


def test_deforum_zoom_default() -> None:
    assert schedule_values("0:(1.04)", 4, key="zoom") == [1.04] * 4


def test_constant_keys_interpolate_linearly() -> None:
    # 0 -> 10 over 10 frames, then 10 holds; key 20 shapes nothing beyond the last key
    got = schedule_values("0:(0), 10:(10), 20:(10)", 12, key="z")
    assert got == [float(i) for i in range(11)] + [10.0]


def test_spaces_negatives_and_bare_numbers() -> None:
    got = schedule_values("  0 : ( -0.5 ) ,4:-1.5 ,  ", 6, key="angle")
    assert got == [-0.5, -0.75, -1.0, -1.25, -1.5, -1.5]
    assert schedule_values(" -2.5 ", 2, key="angle") == [-2.5, -2.5]  # no ':' = key 0


def test_function_of_t_evaluated_each_frame() -> None:
    got = schedule_values("0:(10*sin(2*3.14*t/10))", 3, key="translation_x")
    assert got == pytest.approx([0.0, 10 * math.sin(0.628), 10 * math.sin(1.256)], rel=1e-12)


def test_deforum_mixed_schedule_golden() -> None:
    text = "0:(1.04), 30:(1.0+0.002*sin(1.25*3.14*t/30))"
    got = schedule_values(text, 32, key="zoom")
    at30 = 1.0 + 0.002 * math.sin(1.25 * 3.14)
    assert got[0] == 1.04
    assert got[15] == pytest.approx(1.04 + (at30 - 1.04) * 0.5, rel=1e-12)
    assert got[30] == pytest.approx(at30, rel=1e-12)
    assert got[31] == pytest.approx(1.0 + 0.002 * math.sin(1.25 * 3.14 * 31 / 30), rel=1e-12)


def test_t_key_runs_until_next_key_then_jumps() -> None:
    # key 0 uses t until frame 3; constant 100 then moves toward key 5's value at t=5 (10)
    got = schedule_values("0:(t), 3:(100), 5:(t*2)", 7, key="k")
    assert got == [0.0, 1.0, 2.0, 100.0, 55.0, 10.0, 12.0]


def test_missing_key_zero_holds_first_value() -> None:
    assert schedule_values("3:(2), 5:(4)", 7, key="k") == [2.0, 2.0, 2.0, 2.0, 3.0, 4.0, 4.0]
    # a t-expression first key holds its value at its own frame before it
    assert schedule_values("2:(t*10)", 4, key="k") == [20.0, 20.0, 20.0, 30.0]


def test_keys_beyond_last_frame_shape_interpolation() -> None:
    assert schedule_values("0:(0), 100:(1)", 3, key="k") == [0.0, 0.01, 0.02]


def test_single_key_and_zero_frames() -> None:
    assert schedule_values("5:(3)", 2, key="k") == [3.0, 3.0]
    assert schedule_values("0:(3)", 0, key="k") == []


def test_commas_inside_parentheses_belong_to_expression() -> None:
    assert schedule_values("0:(min(t, 2)), 4:(atan2(0, 1))", 5, key="k") == [0, 1, 2, 2, 0]


def test_keys_unsorted_are_sorted() -> None:
    s = parse_schedule("10:(1), 0:(0)", key="k")
    assert s.keys == (0, 10)
    assert s.values(11)[5] == 0.5


def test_seconds_keys() -> None:
    s = parse_schedule("0s:(1.0), 2.5s:(1.2)", key="zoom", fps=8)
    assert s.keys == (0, 20)
    assert s.values(21)[10] == pytest.approx(1.1)
    assert parse_schedule("0:(0), 0.3s:(1)", key="k", fps=5).keys == (0, 2)  # 1.5 rounds up
    with pytest.raises(ConfigError, match="no fps"):
        parse_schedule("0s:(1)", key="zoom")


def test_pchip_golden() -> None:
    # Points (0,0), (10,10), (20,10). Secants 1 and 0. Interior tangent 0 (flat neighbour);
    # end tangent ((2*10+10)*1 - 10*0)/20 = 1.5. At s=0.5 in [0,10]:
    # h01*10 + h*(h10*1.5) = 0.5*10 + 10*0.125*1.5 = 6.875
    got = schedule_values("0:(0), 10:(10), 20:(10)", 21, key="k", interpolation="pchip")
    assert got[5] == pytest.approx(6.875)
    assert got[10] == 10.0 and got[15] == 10.0 and got[20] == 10.0
    assert max(got) <= 10.0  # no overshoot
    # two keys: pchip is linear
    assert schedule_values("0:(0), 4:(4)", 5, key="k", interpolation="pchip") == [0, 1, 2, 3, 4]


def test_pchip_matches_scipy_pchip() -> None:
    interpolate = pytest.importorskip("scipy.interpolate")
    xs, ys = [0, 7, 12, 30, 41], [1.0, 1.3, 0.2, 0.25, -2.0]
    text = ", ".join(f"{x}:({y})" for x, y in zip(xs, ys, strict=True))
    got = schedule_values(text, 45, key="k", interpolation="pchip")
    want = interpolate.PchipInterpolator(xs, ys)(list(range(42)))
    assert got[:42] == pytest.approx(list(want), abs=1e-12)
    assert got[42:] == [-2.0] * 3


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"),
    ("   ", "empty"),
    ("0:(1), 0:(2)", "both fall on frame 0"),
    ("0:(1), 0s:(2)", "both fall on frame 0"),
    ("-1:(1)", "negative"),
    ("1.5:(1)", "for seconds write '1.5s'"),
    ("0:(1), 10:", "has no value"),
    ("0:(1) 10:(2)", "not an expression"),
    ("zero:(1)", "expected 'key:(value)'"),
    ("0:(1)), 5:(2)", "unbalanced"),
    ("0:(1, 5:(2)", "not an expression"),
    ("0:(x)", "unknown name 'x'"),
    ("0:(__import__('os'))", "not allowed"),
    ("0:(1), 10:(log(t - 20))", "math domain error"),
])
def test_errors_name_the_key(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_schedule(text, key="film.shots.0.motion.zoom", fps=8).values(12)
    msg = str(info.value)
    assert msg.startswith("film.shots.0.motion.zoom") and why in msg


def test_expression_error_names_schedule_key_and_frame_key() -> None:
    with pytest.raises(ConfigError, match=r"^zoom \(key 30\).*fails at t=30"):
        schedule_values("0:(1), 30:(1/(t-30))", 31, key="zoom")


def test_bad_interpolation_and_frames() -> None:
    s = parse_schedule("0:(1)", key="zoom")
    with pytest.raises(ConfigError, match="'linear', 'quadratic', 'cubic'.*'pchip'"):
        s.values(3, "spline")
    with pytest.raises(ValueError):
        s.values(-1)


def test_number_input_and_speed() -> None:
    assert schedule_values(1.5, 2, key="k") == [1.5, 1.5]  # type: ignore[arg-type]
    text = ", ".join(f"{k * 10}:({k}+0.01*sin(t))" for k in range(100))
    assert len(schedule_values(text, 2000, key="k", interpolation="cubic")) == 2000


# ----------------------------------------------------------------- Deforum's keyframe rules
# Deforum (deforum-stable-diffusion, `get_inbetweens`): every frame of the shot starts empty; a
# key holding a plain number sets its own frame; a key holding an expression sets every frame
# from its key to the next key, evaluated at t = frame; frame 0 and the last frame, if empty,
# take the first and the last value set; the empty frames are then filled by pandas'
# Series.interpolate(method), i.e. scipy's make_interp_spline(x, y, k) through the set frames
# (k = 2 quadratic, 3 cubic; cubic with <= 3 keys is quadratic, quadratic with <= 2 is linear).
# The golden values below are derived by hand from those rules.

def test_an_expression_key_is_evaluated_every_frame_even_when_constant() -> None:
    # (1+0) is an expression: frames 0-9 are 1, then key 10 jumps to 2. (1) is a number: it
    # glides to 2 over frames 0-10: value 1 + f/10.
    assert schedule_values("0:(1+0), 10:(2)", 12, key="k") == [1.0] * 10 + [2.0, 2.0]
    assert schedule_values("0:(1), 10:(2)", 11, key="k") == \
        pytest.approx([1 + f / 10 for f in range(11)], abs=1e-15)
    assert schedule_values("0:(2*3), 4:(0)", 5, key="k", interpolation="cubic") == \
        [6.0, 6.0, 6.0, 6.0, 0.0]


def test_deforum_cubic_through_four_keys_is_the_cubic_polynomial_and_overshoots() -> None:
    # 4 set frames, not-a-knot: no interior knot, so the spline is the one cubic through them.
    # Keys on y = x (30 - x) / 200 (a parabola: a cubic with zero x^3 term): 0, 1, 1, 0 at
    # x = 0, 10, 20, 30. At frame 15: 15 * 15 / 200 = 1.125 > 1: the overshoot.
    got = schedule_values("0:(0), 10:(1), 20:(1), 30:(0)", 31, key="zoom", interpolation="cubic")
    assert got == pytest.approx([x * (30 - x) / 200 for x in range(31)], abs=1e-12)
    assert got[15] == pytest.approx(1.125) and max(got) > 1
    # the same points on y = (x / 10) ** 3: frame 5 is 0.125, frame 25 is 15.625
    got = schedule_values("0:(0), 10:(1), 20:(8), 30:(27)", 31, key="k", interpolation="cubic")
    assert got[5] == pytest.approx(0.125) and got[25] == pytest.approx(15.625)


def test_deforum_cubic_pins_the_last_frame_and_has_one_interior_knot() -> None:
    # Shot of 41 frames, keys at 0, 10, 20, 30: frame 40 takes the last value (27), so the
    # points are x = 0, 10, 20, 30, 40, y = 0, 1, 8, 27, 27. Not-a-knot with 5 points keeps the
    # interior knot x = 20 only: s(x) = a + b x + c x^2 + d x^3 + e (x - 20)_+^3. Solve the 5
    # interpolation conditions for (a, b, c, d, e) and compare every frame.
    np = pytest.importorskip("numpy")
    xs, ys = [0, 10, 20, 30, 40], [0, 1, 8, 27, 27]

    def basis(x: float) -> list[float]:
        return [1, x, x**2, x**3, max(x - 20, 0) ** 3]

    coef = np.linalg.solve(np.array([basis(x) for x in xs], dtype=float), np.array(ys, float))
    want = [float(np.dot(basis(x), coef)) for x in range(41)]
    got = schedule_values("0:(0), 10:(1), 20:(8), 30:(27)", 41, key="k", interpolation="cubic")
    assert got == pytest.approx(want, abs=1e-9)
    assert got[35] != 27  # the pinned end makes the curve move after the last key


def test_deforum_quadratic_knots_at_midpoints() -> None:
    # 4 points x = 0, 10, 20, 30: degree-2 knots at the midpoints 5, 15, 25 minus the first and
    # last, so one interior knot at 15: s(x) = a + b x + c x^2 + e (x - 15)_+^2.
    np = pytest.importorskip("numpy")
    xs, ys = [0, 10, 20, 30], [0.0, 1.0, 0.0, 2.0]

    def basis(x: float) -> list[float]:
        return [1, x, x**2, max(x - 15, 0) ** 2]

    coef = np.linalg.solve(np.array([basis(x) for x in xs], dtype=float), np.array(ys))
    want = [float(np.dot(basis(x), coef)) for x in range(31)]
    got = schedule_values("0:(0), 10:(1), 20:(0), 30:(2)", 31, key="k",
                          interpolation="quadratic")
    assert got == pytest.approx(want, abs=1e-9)
    # and points on a parabola come back exactly: y = (x / 10) ** 2
    got = schedule_values("0:(0), 10:(1), 20:(4), 30:(9)", 31, key="k", interpolation="quadratic")
    assert got == pytest.approx([(x / 10) ** 2 for x in range(31)], abs=1e-12)


def test_deforum_degree_follows_the_key_count() -> None:
    # cubic with 3 keys is quadratic: the parabola through (0,0), (10,1), (20,0) is x(20-x)/100
    got = schedule_values("0:(0), 10:(1), 20:(0)", 21, key="k", interpolation="cubic")
    assert got == pytest.approx([x * (20 - x) / 100 for x in range(21)], abs=1e-12)
    # quadratic (and cubic) with 2 keys is linear
    for kind in ("quadratic", "cubic"):
        assert schedule_values("0:(0), 4:(2)", 5, key="k", interpolation=kind) == \
            [0.0, 0.5, 1.0, 1.5, 2.0]


def test_deforum_spline_runs_through_expression_frames() -> None:
    # key 0 is an expression (t * 0.1) over frames 0-9; number keys at 10, 20, 30 (4 keys: a
    # true cubic). Frames 0-9 and 10, 20, 30 are set; the rest come from the spline through
    # all 13 points, which must pass through every set frame and hold the number keys.
    got = schedule_values("0:(t*0.1), 10:(2), 20:(1), 30:(3)", 31, key="k",
                          interpolation="cubic")
    assert got[:10] == pytest.approx([f * 0.1 for f in range(10)], abs=1e-12)
    assert (got[10], got[20], got[30]) == (2.0, 1.0, 3.0)
    interpolate = pytest.importorskip("scipy.interpolate")
    xs = list(range(10)) + [10, 20, 30]
    ys = [f * 0.1 for f in range(10)] + [2.0, 1.0, 3.0]
    want = interpolate.make_interp_spline(xs, ys, k=3)(range(31))
    assert got == pytest.approx(list(want), abs=1e-9)


def test_deforum_modes_ignore_keys_beyond_the_shot() -> None:
    # a key at 100 in a 5-frame shot: Deforum never sees it; the first value holds
    assert schedule_values("0:(1), 100:(5)", 5, key="k", interpolation="cubic") == [1.0] * 5
    # linear keeps promptreel's rule: keys beyond the shot shape the line
    assert schedule_values("0:(1), 100:(5)", 3, key="k") == [1.0, 1.04, 1.08]
