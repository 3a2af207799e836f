"""Restricted expression evaluator: golden values, refusals, and property tests."""

from __future__ import annotations

import math
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engines.core.errors import ConfigError
from engines.planning.expr import MAX_CHARS, compile_expr, evaluate


@pytest.mark.parametrize(("text", "t", "want"), [
    ("1.04", 0, 1.04),
    ("t", 7, 7.0),
    ("-t", 7, -7.0),
    ("+t", 7, 7.0),
    ("2 ** 10", 0, 1024.0),
    ("2 ** -1", 0, 0.5),
    ("-2 ** 2", 0, -4.0),  # Python precedence: -(2**2)
    ("7 // 2", 0, 3.0),
    ("-7 // 2", 0, -4.0),
    ("-7 % 3", 0, 2.0),
    ("7 / 2", 0, 3.5),
    ("(1 + 2) * 3", 0, 9.0),
    ("1.0+0.002*sin(1.25*3.14*t/30)", 12, 1.0 + 0.002 * math.sin(1.25 * 3.14 * 12 / 30)),
    ("10*sin(2*3.14*t/10)", 5, 10 * math.sin(3.14)),
    ("atan2(1, 1)", 0, math.pi / 4),
    ("log(e)", 0, 1.0),
    ("log(8, 2)", 0, 3.0),
    ("log10(1000)", 0, 3.0),
    ("sqrt(t)", 16, 4.0),
    ("abs(-3.5) + floor(2.7) + ceil(2.1)", 0, 8.5),
    ("min(t, 3, 9)", 5, 3.0),
    ("max(t, 3)", 5, 5.0),
    ("clamp(t, 0, 2)", 5, 2.0),
    ("clamp(t, 0, 2)", -1, 0.0),
    ("tau / pi", 0, 2.0),
    ("exp(0) + cos(0) + tan(0) + asin(0) + acos(1) + atan(0)", 0, 2.0),
    ("  ( t )  ", 3, 3.0),
])
def test_golden(text: str, t: float, want: float) -> None:
    got = evaluate(text, t, "k")
    assert type(got) is float
    assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_expr_object() -> None:
    e = compile_expr("t * T", key="k", names=("t", "T"))
    assert e(t=3, T=10) == 30.0
    assert e.used == frozenset({"t", "T"}) and not e.is_constant
    assert compile_expr("2*pi", key="k").is_constant
    with pytest.raises(TypeError):
        e(t=3)
    with pytest.raises(ConfigError, match="unknown name 'T'"):
        compile_expr("t * T", key="k")


@pytest.mark.parametrize(("text", "construct"), [
    ("t.real", "attribute access"),
    ("().__class__", "attribute access"),
    ("__import__('os')", "'__import__' is not allowed"),
    ("__builtins__", "underscore names"),
    ("import os", "not an expression"),
    ("lambda: 1", "lambda"),
    ("[x for x in (1, 2)]", "comprehension"),
    ("sum(x for x in (1, 2))", "call of 'sum'"),
    ("t[0]", "subscript"),
    ("'abc'", "not a real number"),
    ("b'a'", "not a real number"),
    ("True", "not a real number"),
    ("1j", "not a real number"),
    ("None", "not a real number"),
    ("open('f')", "call of 'open'"),
    ("eval('1')", "call of 'eval'"),
    ("sin(x=1)", "positional arguments only"),
    ("max(*t)", "positional arguments only"),
    ("sin(1, 2)", "takes 1 arguments, got 2"),
    ("min(1)", "2 or more"),
    ("sin", "a function needs parentheses"),
    ("x", "unknown name 'x'"),
    ("t > 1", "comparison"),
    ("t and 1", "and/or"),
    ("1 if t else 2", "if/else"),
    ("f'{t}'", "string"),
    ("(t := 1)", "NamedExpr"),
    ("t << 2", "BinOp"),
    ("~t", "UnaryOp"),
    ("", "empty"),
    ("1 +", "not an expression"),
    ("1" * 400, "too large"),
    ("t" + "+t" * 200, "syntax nodes"),
    ("1+" * 600 + "1", "characters"),
    ("(" * 300 + "1" + ")" * 300, "not an expression"),
])
def test_refused(text: str, construct: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_expr(text, key="motion.zoom")
    msg = str(info.value)
    assert msg.startswith("motion.zoom: bad value") and construct in msg


@pytest.mark.parametrize(("text", "t", "why"), [
    ("1 / (t - 3)", 3, "fails at t=3"),
    ("t % 0", 1, "fails at t=1"),
    ("log(t - 5)", 2, "math domain error"),
    ("sqrt(-1)", 0, "every t"),
    ("2 ** 65", 0, "beyond +-64"),
    ("9 ** 9 ** 9", 0, "beyond +-64"),
    ("(-8) ** (1/3)", 0, "math domain error"),
    ("10.0 ** 64 ** 1 * 1e300", 0, "gives inf"),
    ("exp(1000)", 0, "math range error"),
    ("1e308 * 10 - 1e308 * 10", 0, "gives nan"),
])
def test_runtime_failures_name_t(text: str, t: float, why: str) -> None:
    with pytest.raises(ConfigError, match="zoom") as info:
        evaluate(text, t, "zoom")
    assert why in str(info.value)


def test_length_and_type_limits() -> None:
    with pytest.raises(ConfigError, match=f"longer than {MAX_CHARS}"):
        compile_expr("1" + " " * MAX_CHARS, key="k")
    with pytest.raises(ConfigError, match="must be a string"):
        compile_expr(1.0, key="k")  # type: ignore[arg-type]


# --- property tests ---------------------------------------------------------------------
_leaf = st.one_of(st.just("t"), st.just("pi"), st.integers(-99, 99).map(str),
                  st.floats(-1e6, 1e6, allow_nan=False).map(repr))
_unary = ("sin", "cos", "tan", "asin", "acos", "atan", "sqrt", "exp", "log", "log10", "abs",
          "floor", "ceil", "sinh", "tanh")


def _extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    ops = st.sampled_from(["+", "-", "*", "/", "//", "%", "**"])
    return st.one_of(
        st.tuples(inner, ops, inner).map(lambda x: f"({x[0]} {x[1]} {x[2]})"),
        st.tuples(st.sampled_from("+-"), inner).map(lambda x: f"{x[0]}{x[1]}"),
        st.tuples(st.sampled_from(_unary), inner).map(lambda x: f"{x[0]}({x[1]})"),
        st.tuples(st.sampled_from(["atan2", "min", "max"]), inner, inner)
        .map(lambda x: f"{x[0]}({x[1]}, {x[2]})"),
        st.tuples(inner, inner, inner).map(lambda x: f"clamp({x[0]}, {x[1]}, {x[2]})"),
    )


grammar = st.recursive(_leaf, _extend, max_leaves=40)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grammar, st.floats(-1e4, 1e4, allow_nan=False))
def test_grammar_gives_finite_float_or_config_error(text: str, t: float) -> None:
    start = time.perf_counter()
    try:
        value = evaluate(text, t, "k")
    except ConfigError:
        pass
    else:
        assert type(value) is float and math.isfinite(value)
    assert time.perf_counter() - start < 0.05


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet="t()+-*/%. ,:_[]'\"abcdefghijklmnopqrstuvwxyz"
                                        "0123456789", max_size=200))
def test_random_text_never_escapes(text: str) -> None:
    try:
        value = evaluate(text, 1.5, "k")
    except ConfigError as exc:
        assert str(exc).startswith("k: bad value")
    else:
        assert type(value) is float and math.isfinite(value)
