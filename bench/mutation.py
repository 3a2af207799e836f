"""Mutation check: plant one small bug at a time in chosen modules and see whether their tests fail.

Not a benchmark: a measure of the test suite. For each target module, every mutation site found
by walking its syntax tree gives one mutant:
- arithmetic: + <-> -, * <-> /, // -> /, % -> //, ** -> * (also in `x += ...`);
- comparisons: < <-> <=, > <-> >=, == <-> !=, in <-> not in, is <-> is not;
- boolean: and <-> or, `not x` -> `x`, `-x` -> `x`;
- numbers: an int n -> n + 1, a float x -> x + 1.0, True <-> False;
- calls: round(x) -> int(x), math.floor <-> math.ceil, min <-> max.
Strings are never mutated, nor anything inside `raise`, f-strings, logging calls or
`if __name__ == "__main__"` (messages and entry points, not behaviour).

The repository (tracked and untracked files that git does not ignore) is copied once to a
temporary directory; each mutant replaces its module there (as `ast.unparse` of the mutated
tree) and the module's test files run in a fresh `python -m pytest -x -q` (CI=true, no
bytecode written, so no stale .pyc), with a timeout of 3x the clean run plus 30 s. A mutant is
killed when the tests fail or time out, and survives when they pass. The clean (unparsed,
unmutated) copy must pass first. Score = killed / mutants.

`python -m bench.mutation [--only NAME,...] [--stride K] [--list] [--out FILE.json]`; NAME is a
key of TARGETS (default: DEFAULT, the modules the audit named). `--stride K` runs every K-th
mutant of each module (sites 0, K, 2K, ... in syntax-tree order: a systematic sample spread over
the whole module, for a run that must fit a time bound); the score is then over that sample.
Results and the command: docs/CONTRIBUTING.md.
"""

from __future__ import annotations

import argparse
import ast
import copy
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# name -> (module file, the test files that check it)
TARGETS: dict[str, tuple[str, tuple[str, ...]]] = {
    "keyframes": ("engines/planning/keyframes.py", ("tests/engines/test_schedule.py",)),
    "expr": ("engines/planning/expr.py", ("tests/engines/test_expr.py",)),
    "prompts": ("engines/planning/prompts.py", ("tests/engines/test_prompts.py",
                                                "tests/engines/test_timeline_prompts.py")),
    "timeline": ("engines/planning/timeline.py", ("tests/engines/test_timeline.py",
                                                  "tests/engines/test_timeline_prompts.py")),
    "speed": ("engines/planning/speed.py", ("tests/engines/test_speed.py",)),
    "cache_manifest": ("tasks/artefacts.py", ("tests/tasks/test_artefacts.py",)),
    "files": ("engines/core/files.py", ("tests/tasks/test_artefacts.py",)),
    "safe_ckpt": ("engines/models/safe_ckpt.py", ("tests/engines/test_safe_ckpt.py",)),
}
# The targets the trust audit (issue 19) named; the default run. `--only` picks any of TARGETS.
DEFAULT = ("keyframes", "prompts", "speed", "cache_manifest", "files", "safe_ckpt", "timeline")

BINOPS = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
          ast.FloorDiv: ast.Div, ast.Mod: ast.FloorDiv, ast.Pow: ast.Mult}
CMPOPS = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
          ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot,
          ast.IsNot: ast.Is}
SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
          ast.Mod: "%", ast.Pow: "**", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
          ast.Eq: "==", ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in", ast.Is: "is",
          ast.IsNot: "is not", ast.And: "and", ast.Or: "or"}
NAME_SWAPS = {"min": "max", "max": "min", "round": "int"}
LOGGERS = {"log", "logger", "logging", "warnings"}


class Mutator(ast.NodeTransformer):
    """Walks a module in a fixed order, numbering mutation sites; applies site `target` (or none,
    with target -1, to list them in `sites`)."""

    def __init__(self, target: int = -1):
        self.target, self.count, self.sites = target, 0, []

    def _site(self, node: ast.AST, what: str) -> bool:
        """Register a site; True if it is the one to apply."""
        self.sites.append((getattr(node, "lineno", 0), what))
        self.count += 1
        return self.count - 1 == self.target

    # --- contexts left alone
    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        return node

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node

    def visit_If(self, node: ast.If) -> ast.AST:
        test = node.test
        if (isinstance(test, ast.Compare) and isinstance(test.left, ast.Name)
                and test.left.id == "__name__"):
            return node
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        f = node.func
        if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and f.value.id in LOGGERS:
            return node
        if isinstance(f, ast.Name) and f.id == "print":
            return node
        self.generic_visit(node)
        if isinstance(f, ast.Name) and f.id in NAME_SWAPS:
            if self._site(node, f"{f.id}() -> {NAME_SWAPS[f.id]}()"):
                node.func = ast.Name(NAME_SWAPS[f.id], ast.Load())
        elif (isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
              and f.value.id == "math" and f.attr in ("floor", "ceil")):
            other = "ceil" if f.attr == "floor" else "floor"
            if self._site(node, f"math.{f.attr} -> math.{other}"):
                node.func = ast.Attribute(ast.Name("math", ast.Load()), other, ast.Load())
        return node

    # --- mutation sites
    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        new = BINOPS.get(type(node.op))
        if new and self._site(node, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"):
            node.op = new()
        return node

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        self.generic_visit(node)
        new = BINOPS.get(type(node.op))
        if new and self._site(node, f"{SYMBOL[type(node.op)]}= -> {SYMBOL[new]}="):
            node.op = new()
        return node

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            new = CMPOPS.get(type(op))
            if new and self._site(node, f"{SYMBOL[type(op)]} -> {SYMBOL[new]}"):
                node.ops[i] = new()
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        new = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._site(node, f"{SYMBOL[type(node.op)]} -> {SYMBOL[new]}"):
            node.op = new()
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._site(node, "not x -> x"):
            return node.operand
        if (isinstance(node.op, ast.USub) and not isinstance(node.operand, ast.Constant)
                and self._site(node, "-x -> x")):
            return node.operand
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        v = node.value
        if isinstance(v, bool):
            if self._site(node, f"{v} -> {not v}"):
                return ast.Constant(not v)
        elif isinstance(v, int):
            if self._site(node, f"{v} -> {v + 1}"):
                return ast.Constant(v + 1)
        elif isinstance(v, float) and self._site(node, f"{v!r} -> {v + 1.0!r}"):
            return ast.Constant(v + 1.0)
        return node

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if isinstance(node.value, ast.Constant):  # docstrings
            return node
        return self.generic_visit(node)


def sites(source: str) -> list[tuple[int, str]]:
    m = Mutator()
    m.visit(ast.parse(source))
    return m.sites


def mutant(source: str, k: int) -> str:
    tree = ast.parse(source)
    m = Mutator(k)
    tree = ast.fix_missing_locations(m.visit(copy.deepcopy(tree)))
    return ast.unparse(tree) + "\n"


def clean(source: str) -> str:
    return ast.unparse(ast.parse(source)) + "\n"


@dataclass
class Result:
    target: str
    line: int
    what: str
    outcome: str  # killed, timeout, survived
    seconds: float
    code: str  # the original source line


def copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                           check=True, capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not src.is_symlink():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def test_env(repo: Path) -> dict[str, str]:
    """The copy first on the path (an editable install may point elsewhere), CI's settings, no
    bytecode written (mutants of one file often have the same size and mtime second)."""
    return {**os.environ, "CI": "true", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONPATH": str(repo)}


def check_copy(repo: Path) -> None:
    """The copy's modules are the ones its tests import."""
    out = subprocess.run([sys.executable, "-c", "import engines, tasks; print(engines.__file__,"
                          " tasks.__file__)"], cwd=repo, env=test_env(repo), check=True,
                         capture_output=True, text=True).stdout.split()
    if not all(Path(p).resolve().is_relative_to(repo.resolve()) for p in out):
        raise RuntimeError(f"the copy in {repo} imports {out}, not its own modules")


def run_tests(repo: Path, tests: tuple[str, ...], timeout: float | None) -> tuple[str, float]:
    env = test_env(repo)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return "timeout", time.perf_counter() - start
    seconds = time.perf_counter() - start
    if proc.returncode == 0:
        return "survived", seconds
    if proc.returncode in (1, 2) or proc.returncode < 0:  # failures, errors, a crash
        return "killed", seconds
    raise RuntimeError(f"pytest exit {proc.returncode} in {repo}:\n{proc.stdout[-3000:]}")


def check_target(repo: Path, name: str, log: list[Result], stride: int = 1) -> dict:
    module, tests = TARGETS[name]
    original = (ROOT / module).read_text()
    lines = original.splitlines()
    path = repo / module
    path.write_text(clean(original))
    outcome, base = run_tests(repo, tests, None)
    if outcome != "survived":
        raise RuntimeError(f"{name}: the tests fail on the clean copy of {module}")
    found = sites(original)
    picked = [(k, site) for k, site in enumerate(found) if k % stride == 0]
    print(f"{name}: {len(picked)} of {len(found)} mutants of {module}, clean run {base:.1f} s",
          flush=True)
    counts = {"killed": 0, "timeout": 0, "survived": 0}
    for k, (line, what) in picked:
        path.write_text(mutant(original, k))
        outcome, seconds = run_tests(repo, tests, 3 * base + 30)
        counts[outcome] += 1
        log.append(Result(name, line, what, outcome, round(seconds, 2),
                          lines[line - 1].strip() if line else ""))
        if outcome == "survived":
            print(f"  survived {module}:{line}: {what}   | {lines[line - 1].strip()}", flush=True)
    path.write_text(original)
    return {"module": module, "tests": list(tests), "mutants": len(picked), "sites": len(found),
            **counts,
            "clean_run_s": round(base, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="targets: " + ",".join(TARGETS))
    ap.add_argument("--stride", type=int, default=1, help="run every K-th mutant of each module")
    ap.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    ap.add_argument("--out", default=None, help="JSON file for every mutant's outcome")
    a = ap.parse_args(argv)
    names = [n for n in a.only.split(",") if n] or list(DEFAULT)
    unknown = set(names) - set(TARGETS)
    if unknown:
        ap.error(f"unknown target(s) {sorted(unknown)}; choose from {', '.join(TARGETS)}")
    if a.stride < 1:
        ap.error(f"--stride {a.stride}: must be a whole number >= 1 (1 = every mutant)")
    if a.list:
        for n in names:
            module = TARGETS[n][0]
            for k, (line, what) in enumerate(sites((ROOT / module).read_text())):
                if k % a.stride == 0:
                    print(f"{module}:{line}: {what}")
        return
    started = time.perf_counter()
    log: list[Result] = []
    summary = {}
    with tempfile.TemporaryDirectory(prefix="promptreel-mutation-") as tmp:
        repo = Path(tmp)
        copy_repo(repo)
        check_copy(repo)
        for n in names:
            summary[n] = check_target(repo, n, log, a.stride)
    total = sum(s["mutants"] for s in summary.values())
    killed = sum(s["killed"] + s["timeout"] for s in summary.values())
    minutes = (time.perf_counter() - started) / 60
    print("\n| target | module | mutants run (of sites) | killed | survived | score |\n"
          "|---|---|---|---|---|---|")
    for n, s in summary.items():
        k = s["killed"] + s["timeout"]
        print(f"| {n} | `{s['module']}` | {s['mutants']} (of {s['sites']}) | {k} | "
              f"{s['survived']} | {k / s['mutants']:.0%} |")
    print(f"| all | | {total} (of {sum(s['sites'] for s in summary.values())}) | {killed} | "
          f"{total - killed} | {killed / total:.1%} |")
    print(f"\n{dt.date.today()}: {killed}/{total} mutants killed ({killed / total:.1%}) in "
          f"{minutes:.1f} min")
    if a.out:
        Path(a.out).write_text(json.dumps({"date": str(dt.date.today()), "minutes": minutes,
                                           "stride": a.stride,
                                           "summary": summary,
                                           "mutants": [asdict(r) for r in log]}, indent=1))


if __name__ == "__main__":
    main()
