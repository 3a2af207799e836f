"""Restricted arithmetic expressions of time, for schedules (never `eval`).

Grammar: numbers, the variable `t` (plus names the caller allows, e.g. `T`), the constants
`pi`, `e` and `tau`, + - * / // % ** (with Python's meaning), unary + and -, parentheses, and
calls of a fixed set of functions (`FUNCTIONS`) with positional arguments only.

The text is parsed once with `ast.parse` (parsing only; nothing is compiled to bytecode or
run), every node is checked against the grammar, and evaluation walks the checked tree in
floating point, so each operation costs O(1): cost is bounded by the node count. Limits:
`MAX_CHARS` characters, `MAX_NODES` syntax nodes, |exponent| <= `MAX_EXPONENT`. Every result
must be a finite float; division by zero, math domain errors, overflow, inf and nan raise
`ConfigError` naming the key, the expression and the value of `t`.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable
from functools import lru_cache

from engines.core.errors import ConfigError

MAX_CHARS = 1000
MAX_NODES = 256
MAX_EXPONENT = 64.0


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


# name -> (function, minimum arguments, maximum arguments or None for any)
FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {
    "sin": (math.sin, 1, 1), "cos": (math.cos, 1, 1), "tan": (math.tan, 1, 1),
    "asin": (math.asin, 1, 1), "acos": (math.acos, 1, 1), "atan": (math.atan, 1, 1),
    "atan2": (math.atan2, 2, 2), "sinh": (math.sinh, 1, 1), "cosh": (math.cosh, 1, 1),
    "tanh": (math.tanh, 1, 1), "sqrt": (math.sqrt, 1, 1), "exp": (math.exp, 1, 1),
    "log": (math.log, 1, 2), "log10": (math.log10, 1, 1), "abs": (abs, 1, 1),
    "floor": (math.floor, 1, 1), "ceil": (math.ceil, 1, 1), "min": (min, 2, None),
    "max": (max, 2, None), "clamp": (_clamp, 3, 3),
}
CONSTANTS = {"pi": math.pi, "e": math.e, "tau": math.tau}
ACCEPTED = ("an arithmetic expression of t: numbers, + - * / // % ** (|exponent| <= 64), "
            "parentheses, pi e tau, and " + " ".join(sorted(FUNCTIONS)))

_BINOPS: dict[type, Callable[[float, float], float]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
    ast.Div: lambda a, b: a / b, ast.FloorDiv: lambda a, b: a // b, ast.Mod: lambda a, b: a % b,
}


class Expr:
    """A validated expression; call it with the variables it may use: `expr(t=3) -> float`."""

    def __init__(self, text: str, tree: ast.expr, key: str, names: tuple[str, ...],
                 used: frozenset[str]):
        self.text, self.key, self.names, self._tree = text, key, names, tree
        self.used = used  # variable names that occur in the expression, e.g. {"t"}

    @property
    def is_constant(self) -> bool:
        """True if no variable occurs (the value is the same for every t)."""
        return not self.used

    def __call__(self, **variables: float) -> float:
        missing = self.used - variables.keys()
        if missing:
            raise TypeError(f"{self.text!r} needs values for {sorted(missing)}")
        env = {k: float(v) for k, v in variables.items()}
        where = ", ".join(f"{k}={env[k]:g}" for k in sorted(self.used)) or "every t"
        try:
            value = _eval(self._tree, env)
        except (ArithmeticError, ValueError) as exc:
            raise ConfigError(self.key, self.text, ACCEPTED, f"fails at {where}: {exc}") from None
        if not math.isfinite(value):
            raise ConfigError(self.key, self.text, ACCEPTED, f"gives {value} at {where}")
        return value

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"


def _refuse(text: str, key: str, what: str) -> ConfigError:
    return ConfigError(key, text, ACCEPTED, what)


def _check(node: ast.AST, text: str, key: str, names: tuple[str, ...], used: set[str]) -> None:
    """Raise ConfigError unless `node` (recursively) is in the grammar."""
    if isinstance(node, ast.Constant):
        if type(node.value) not in (int, float):
            raise _refuse(text, key, f"literal {node.value!r} is not a real number")
        try:
            if not math.isfinite(float(node.value)):
                raise OverflowError
        except OverflowError:
            raise _refuse(text, key, f"number {str(node.value)[:20]}... is too large") from None
    elif isinstance(node, ast.Name):
        if node.id.startswith("_"):
            raise _refuse(text, key, f"name {node.id!r} is not allowed (underscore names)")
        if node.id in names:
            used.add(node.id)
        elif node.id not in CONSTANTS:
            extra = " (a function needs parentheses)" if node.id in FUNCTIONS else ""
            raise _refuse(text, key, f"unknown name {node.id!r}{extra}; variables: "
                          f"{', '.join(names)}")
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.UAdd | ast.USub):
        _check(node.operand, text, key, names, used)
    elif isinstance(node, ast.BinOp) and (type(node.op) in _BINOPS or isinstance(node.op, ast.Pow)):
        _check(node.left, text, key, names, used)
        _check(node.right, text, key, names, used)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            what = ast.unparse(node.func)
            raise _refuse(text, key, f"call of {what!r} is not allowed; functions: "
                          + " ".join(sorted(FUNCTIONS)))
        if node.keywords or any(isinstance(a, ast.Starred) for a in node.args):
            raise _refuse(text, key, f"{node.func.id}() takes positional arguments only")
        _, lo, hi = FUNCTIONS[node.func.id]
        n = len(node.args)
        if n < lo or (hi is not None and n > hi):
            want = f"{lo}" if lo == hi else f"{lo} or more" if hi is None else f"{lo} to {hi}"
            raise _refuse(text, key, f"{node.func.id}() takes {want} arguments, got {n}")
        for arg in node.args:
            _check(arg, text, key, names, used)
    else:
        kind = {ast.Attribute: "attribute access", ast.Subscript: "subscript",
                ast.Lambda: "lambda", ast.Compare: "comparison", ast.BoolOp: "and/or",
                ast.IfExp: "if/else", ast.JoinedStr: "string"}.get(type(node))
        kind = kind or ("comprehension" if "Comp" in type(node).__name__ else type(node).__name__)
        raise _refuse(text, key, f"{kind} ({ast.unparse(node)[:60]!r}) is not allowed")


def _eval(node: ast.expr, env: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return env[node.id] if node.id in env else CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, env)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        if isinstance(node.op, ast.Pow):
            if not abs(b) <= MAX_EXPONENT:
                raise ValueError(f"exponent {b:g} is beyond +-{MAX_EXPONENT:g}")
            return math.pow(a, b)  # real-valued: a negative base with a fractional power fails
        return _BINOPS[type(node.op)](a, b)
    assert isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    return float(FUNCTIONS[node.func.id][0](*(_eval(a, env) for a in node.args)))


def compile_expr(text: str, *, key: str, names: tuple[str, ...] = ("t",)) -> Expr:
    """Parse and validate `text` once; ConfigError (naming `key`) if it is outside the grammar.

    `names`: the variables the expression may use (default just `t`). Results are cached.
    """
    if not isinstance(text, str):
        raise ConfigError(key, text, ACCEPTED, "an expression must be a string")
    return _compile(text, key, tuple(names))


@lru_cache(maxsize=4096)
def _compile(text: str, key: str, names: tuple[str, ...]) -> Expr:
    if len(text) > MAX_CHARS:
        raise _refuse(text[:80] + "...", key, f"longer than {MAX_CHARS} characters")
    if not text.strip():
        raise _refuse(text, key, "the expression is empty")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        detail = getattr(exc, "msg", None) or str(exc) or type(exc).__name__
        raise _refuse(text, key, f"not an expression: {detail}") from None
    count = sum(1 for _ in ast.walk(tree))
    if count > MAX_NODES:
        raise _refuse(text, key, f"{count} syntax nodes, more than {MAX_NODES}")
    used: set[str] = set()
    _check(tree.body, text, key, names, used)
    return Expr(text, tree.body, key, names, frozenset(used))


def evaluate(text: str, t: float, key: str) -> float:
    """Value of expression `text` at time `t` (a float, finite)."""
    return compile_expr(text, key=key)(t=t)
