"""What a shot's frames artefact key depends on: not the shot's speed or join (they act after
rendering), but the contents of its input images, not only their paths."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from flows.render import compose_config
from tasks import generate_frames as gf
from tasks.cache import key_for
from tests.helpers import shot_params_of


def frames_key(overrides: list[str], i: int = 1) -> str:
    cfg = compose_config(["film=smoke", *overrides])
    return key_for(gf.NAME, gf.code_version, shot_params_of(cfg)[i])


def test_speed_and_join_of_a_shot_do_not_rerender_its_frames() -> None:
    base = frames_key([])
    assert frames_key(["film.shots.1.speed.factor=0.25"]) == base
    assert frames_key(["film.shots.0.join.seconds=0.25"], i=0) == frames_key([], i=0)
    assert frames_key(["+film.shots.1.seed=99"]) != base  # what the frames depend on still counts


def test_editing_an_init_image_in_place_rerenders(tmp_path: Path) -> None:
    img = tmp_path / "init image.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(img)
    override = [f"+film.shots.0.init_image={img}"]
    first = frames_key(override, i=0)
    assert frames_key(override, i=0) == first
    Image.new("RGB", (16, 16), (0, 0, 200)).save(img)
    assert frames_key(override, i=0) != first
