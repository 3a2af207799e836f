"""A shot's input files given by a relative path (input_video, init_image, image prompts) are
looked for from the working directory, then from the repository: a preset's `samples/...` video
is found from any directory, the frames' cache key is the same wherever the render starts, and a
file found nowhere is an error naming the key, the value and both places looked at."""

from __future__ import annotations

import shutil

import pytest

from engines.core.errors import ConfigError
from flows.render import compose_config
from tests.helpers import ROOT, shot_params_of


def frames_key(cfg) -> str:
    import tasks.generate_frames as gf
    from tasks.cache import key_for

    return key_for(gf.NAME, gf.code_version, shot_params_of(cfg)[0])


def test_a_presets_sample_video_is_found_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    at_root = compose_config(["film=restyle"])
    assert at_root.film.shots[0].input_video == "samples/restyle.mp4"  # as given
    monkeypatch.chdir(tmp_path)
    elsewhere = compose_config(["film=restyle"])  # the checks read the video (length at 8 fps)
    assert elsewhere.film.shots[0].input_video == str(ROOT / "samples" / "restyle.mp4")
    assert frames_key(elsewhere) == frames_key(at_root)  # the key never hashes the path


def test_the_working_directory_comes_first(tmp_path, monkeypatch):
    (tmp_path / "samples").mkdir()
    shutil.copy(ROOT / "samples" / "restyle.mp4", tmp_path / "samples" / "restyle.mp4")
    monkeypatch.chdir(tmp_path)
    cfg = compose_config(["film=restyle"])
    assert cfg.film.shots[0].input_video == "samples/restyle.mp4"  # kept: found from here


@pytest.mark.parametrize(("override", "key", "value"), [
    ("film.shots.0.input_video=clips/gone.mp4", "film.shots.0.input_video", "clips/gone.mp4"),
    ("+film.shots.0.init_image=pics/gone.png", "film.shots.0.init_image", "pics/gone.png"),
    ("+film.shots.0.image_prompts=[pics/gone.png:0.5]", "film.shots.0.image_prompts.0",
     "pics/gone.png"),
])
def test_a_missing_relative_path_names_both_places(tmp_path, monkeypatch, override, key, value):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        compose_config(["film=restyle", override])
    assert (info.value.key, info.value.value) == (key, value)
    assert str(info.value).endswith(
        f"(not found: {tmp_path.resolve() / value}, then {ROOT / value}; a relative path is "
        "looked for from the working directory, then from the repository)")


def test_relative_images_are_found_in_the_repository(tmp_path, monkeypatch):
    """init_image and image prompts resolve like input_video (the repository is a stand-in
    here, so nothing is written into the real one)."""
    from PIL import Image

    import flows.checks

    repo = tmp_path / "repo"
    (repo / "conf").mkdir(parents=True)
    (repo / "pics").mkdir()
    Image.new("RGB", (8, 8), (30, 160, 60)).save(repo / "pics" / "start.png")
    monkeypatch.setattr(flows.checks, "CONF", repo / "conf")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    cfg = compose_config(["film=smoke", "+film.shots.0.init_image=pics/start.png",
                          "+film.shots.0.image_prompts=[pics/start.png:0.5]"])
    shot = cfg.film.shots[0]
    assert shot.init_image == str(repo / "pics" / "start.png")
    assert shot.image_prompts == (f"{repo / 'pics' / 'start.png'}:0.5:-inf",)
    monkeypatch.chdir(repo)  # the same files given from the repository itself: the same key
    at_repo = compose_config(["film=smoke", "+film.shots.0.init_image=pics/start.png",
                              "+film.shots.0.image_prompts=[pics/start.png:0.5]"])
    assert at_repo.film.shots[0].image_prompts == ("pics/start.png:0.5",)
    assert frames_key(at_repo) == frames_key(cfg)
