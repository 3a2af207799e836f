"""Renders of one film on several boxes share the cache: a shot another process is rendering
(its build lock is held) goes last, so each box works on a different shot."""

from __future__ import annotations

from pathlib import Path

from flows.production import busy_elsewhere, shot_order, shot_params
from flows.render import compose_config
from tasks import generate_frames as gf
from tasks.artefacts import Store
from tasks.cache import key_for


def test_a_shot_locked_elsewhere_goes_last(tmp_path: Path) -> None:
    cfg = compose_config(["film=smoke", f"runtime.cache_dir={tmp_path}"])
    n = len(cfg.film.shots)
    assert n >= 2 and shot_order(cfg) == list(range(n))
    params = shot_params(cfg, 0)
    key = key_for(gf.NAME, gf.code_version, params)
    with Store(tmp_path).lock(gf.NAME, key):  # a second lock object: flock is per open file
        assert busy_elsewhere(params)
        assert shot_order(cfg) == [*range(1, n), 0]
    assert not busy_elsewhere(params) and shot_order(cfg) == list(range(n))
