"""Renders of one film on several boxes share the cache: a shot another process is rendering
(its build lock is held) goes last, so each box works on a different shot."""

from __future__ import annotations

from pathlib import Path

from flows.production import shot_order
from flows.render import compose_config
from tasks import generate_frames as gf
from tasks.artefacts import Store
from tasks.cache import held_elsewhere, key_for
from tests.helpers import shot_params_of


def test_a_shot_locked_elsewhere_goes_last(tmp_path: Path) -> None:
    cfg = compose_config(["film=smoke", f"runtime.cache_dir={tmp_path}"])
    params = shot_params_of(cfg)
    n = len(params)
    assert n >= 2 and shot_order(params) == list(range(n))
    key = key_for(gf.NAME, gf.code_version, params[0])
    with Store(tmp_path).lock(gf.NAME, key):  # a second lock object: flock is per open file
        assert held_elsewhere(gf.NAME, gf.code_version, params[0])
        assert shot_order(params) == [*range(1, n), 0]
    assert not held_elsewhere(gf.NAME, gf.code_version, params[0])
    assert shot_order(params) == list(range(n))
