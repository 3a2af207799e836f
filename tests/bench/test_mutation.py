"""The mutation check (bench/mutation.py) plants exactly one bug per mutant, in behaviour only:
never in docstrings, error messages or logging."""

from __future__ import annotations

from bench import mutation

SOURCE = '''def f(x):
    """doc 1"""
    if x < 2 and not x:
        raise ValueError(f"{x + 1}")
    log.info("%d", x - 1)
    return round(x * 0.5) + 1
'''


def test_every_site_gives_one_mutant_of_behaviour() -> None:
    assert [what for _, what in mutation.sites(SOURCE)] == [
        "2 -> 3", "< -> <=", "not x -> x", "and -> or", "0.5 -> 1.5", "* -> /",
        "round() -> int()", "1 -> 2", "+ -> -"]
    clean = mutation.clean(SOURCE)
    mutants = [mutation.mutant(SOURCE, k) for k in range(9)]
    assert len(set(mutants)) == 9 and clean not in mutants
    for m in mutants:  # one line changed, never the message, the log call or the docstring
        changed = [i for i, (a, b) in enumerate(zip(clean.splitlines(), m.splitlines(),
                                                    strict=True)) if a != b]
        assert len(changed) == 1 and changed[0] in (2, 5)
    assert "return int(x * 0.5) + 1" in mutants[6] and "if x < 2 or not x:" in mutants[3]


def test_stride_runs_every_kth_mutant_and_refuses_zero(capsys) -> None:
    """`--stride K` lists sites 0, K, 2K, ... of each module, in order; K < 1 is refused."""
    import pytest

    mutation.main(["--list", "--only", "files"])
    every = capsys.readouterr().out.splitlines()
    mutation.main(["--list", "--only", "files", "--stride", "3"])
    assert capsys.readouterr().out.splitlines() == every[::3] and len(every) > 3
    with pytest.raises(SystemExit):
        mutation.main(["--stride", "0"])
    assert "--stride 0: must be a whole number >= 1" in capsys.readouterr().err
