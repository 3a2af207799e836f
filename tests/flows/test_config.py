"""Every preset composes and validates; bad input fails before any model loads, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.errors import ConfigError, PromptreelError
from flows.render import compose_config

ROOT = Path(__file__).resolve().parents[2]
PRESETS = sorted(p.stem for p in (ROOT / "conf" / "film").glob("*.yaml"))


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_composes_and_validates(preset: str) -> None:
    cfg = compose_config([f"film={preset}"])
    assert cfg.film.shots and cfg.film.fps > 0
    assert cfg.resolution.width > 0


@pytest.mark.parametrize("preset", PRESETS)
def test_every_preset_validates_under_debug_smoke(preset: str) -> None:
    cfg = compose_config([f"film={preset}", "debug=smoke"])
    assert cfg.clip.source == "generated"
    assert cfg.runtime.device == "cpu"


def test_klee_garden_is_the_papers_setting() -> None:
    cfg = compose_config(["film=klee_garden"])
    assert cfg.film.shots[0].prompts == "Garden full of flowers and plants in Paul Klee style"
    assert (cfg.resolution.width, cfg.resolution.height) == (640, 360)
    assert cfg.vqgan.name == "vqgan_imagenet_f16_16384"
    assert cfg.clip.arch == {"model": "ViT-B-32", "pretrained": "openai"}
    assert cfg.engine.settings.mode == "evolve" and cfg.engine.settings.images_interval > 0
    assert cfg.seed == 42


def test_unknown_preset_lists_available_ones() -> None:
    with pytest.raises(PromptreelError) as info:
        compose_config(["film=no_such_film"])
    for preset in PRESETS:
        assert preset in str(info.value)


def test_seed_minus_one_draws_and_records() -> None:
    cfg = compose_config(["film=smoke", "seed=-1"])
    assert cfg.seed_drawn and cfg.seed >= 0


@pytest.mark.parametrize(("override", "key", "fragment"), [
    ("resolution.width=0", "resolution.width", "greater than 0"),
    ("resolution.height=-5", "resolution.height", "greater than 0"),
    ("vqgan=no_such_model", "vqgan", "vqgan_imagenet_f16_16384"),
    ("engine.images_interval=0", "engine.images_interval", "greater than 0"),
    ("film.shots.0.prompts='a garden:1.2.3'", "film.shots.0.prompts", "a garden:1.2.3"),
    ("+film.shots.0.init_image=/nonexistent/start.png", "film.shots.0.init_image", "/nonexistent/start.png"),
    ("seed=abc", "seed", "abc"),
    ("+engine.no_such_key=1", "engine.no_such_key", "misspelt"),
])
def test_bad_input_is_a_clear_error(override: str, key: str, fragment: str) -> None:
    with pytest.raises(PromptreelError) as info:
        compose_config(["film=klee_garden", override])
    msg = str(info.value)
    assert key.split(".")[0] in msg and fragment in msg, msg


def test_overrides_that_could_run_code_are_refused() -> None:
    for bad in ("+engine._target_=os.system", "seed=${oc.env:HOME}",
                "hydra/launcher=submitit_slurm"):
        with pytest.raises(PromptreelError, match="refused"):
            compose_config(["film=smoke", bad])


def test_config_error_names_key_value_and_accepted() -> None:
    err = ConfigError("resolution.width", -1, "an integer > 0")
    assert str(err) == "resolution.width: bad value -1; accepted: an integer > 0"
