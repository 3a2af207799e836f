"""Every preset composes and validates; bad input fails before any model loads, naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.core.errors import ConfigError, PromptreelError
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
    assert cfg.engine.mode == "evolve" and cfg.engine.images_interval > 0
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


def test_odd_size_for_yuv420p_fails_before_rendering() -> None:
    """4:2:0 video needs even sides: refused at config time, naming the setting that gave it."""
    with pytest.raises(ConfigError) as info:
        compose_config(["film=smoke", "resolution.width=97"])
    assert info.value.key == "resolution.width" and info.value.value == 97
    with pytest.raises(ConfigError) as info:
        compose_config(["film=smoke", "export.height=63"])
    assert info.value.key == "export.height"
    compose_config(["film=smoke", "resolution.width=97", "export.width=96"])  # scaled on export


def test_melody_soundtrack_needs_a_melody_model(tmp_path: Path) -> None:
    import numpy as np
    import soundfile as sf

    tune = tmp_path / "tune.wav"
    sf.write(tune, np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ConfigError) as info:
        compose_config(["film=smoke", "soundtrack=musicgen_melody", f"soundtrack.melody={tune}"])
    assert info.value.key == "soundtrack.model" and "melody model" in str(info.value)


@pytest.mark.parametrize(("overrides", "key"), [
    (["engine.motion_loras=[generated_motion_lora_tiny,motion_lora_zoom_in]"],
     "engine.motion_loras.1"),
    (["+film.shots.0.engine_overrides.motion_loras=[motion_lora_pan_left]"],
     "film.shots.0.engine_overrides.motion_loras.0"),
    (["debug=smoke", "+engines.animatediff.motion_loras=[motion_lora_zoom_out]"],
     "engines.animatediff.motion_loras.0"),
    (["debug=smoke", "engines.animatediff.motion_adapter=animatediff_v1_5_2",
      "runtime.download=false"], "engines.animatediff.motion_adapter"),
])
def test_a_model_that_cannot_be_fetched_is_named_by_its_own_key(
        overrides: list[str], key: str, tmp_path: Path) -> None:
    """An unpinned MotionLoRA (source: dead) or a hub model with downloads off is reported under
    the key that named it (the list item, where it was set), not the kind's `engine.model`."""
    with pytest.raises(ConfigError) as info:
        compose_config(["film=animate_garden", f"runtime.models_dir={tmp_path}", *overrides])
    assert info.value.key == key, str(info.value)


def test_dead_vqgan_is_refused_unless_its_files_are_in_place(tmp_path: Path) -> None:
    # no registry entry is dead today (wikiart_1024 comes from the community mirror); an entry
    # whose host dies is marked `source: dead` and refused when the config is read
    from engines.models import registry
    from engines.models.registry import ModelEntry, RemoteFile
    from flows.checks import _check_dead_model
    from flows.doctor import check_models

    assert compose_config(["film=klee_garden", "vqgan=wikiart_1024"]).vqgan.source == "url"
    dead = ModelEntry(name="gone", kind="vqgan", source="dead", loader="VQModel",
                      files=(RemoteFile(name="model.yaml"), RemoteFile(name="last.ckpt",
                                                                         approx_size=1000)),
                      notes="its host is gone; use wikiart_16384")
    with pytest.raises(ConfigError) as info:
        _check_dead_model(dead, "vqgan", tmp_path)
    assert info.value.key == "vqgan" and "its host is gone" in str(info.value)
    cfg = compose_config(["film=klee_garden", f"runtime.models_dir={tmp_path}"])
    (line,) = [c for c in check_models(cfg.model_copy(update={"vqgan": dead}))
               if "gone" in c.line]
    assert not line.ok and "unavailable, its host is gone" in line.line
    folder = registry.model_dir(dead, tmp_path)
    folder.mkdir(parents=True)
    (folder / "model.yaml").write_text("model: {}\n")
    (folder / "last.ckpt").write_bytes(b"x" * 1000)
    _check_dead_model(dead, "vqgan", tmp_path)  # the files are in place: it renders


def test_show_prints_the_plan_plots_it_and_leaves_no_run_directory(tmp_path: Path) -> None:
    """`make show` renders nothing: the resolved config, the timeline and a summary of the
    schedules on stdout, and one image, the schedule plot, whose path it prints; no run dir."""
    import subprocess
    import sys

    from PIL import Image

    from tests.helpers import repo_env

    env = repo_env()
    proc = subprocess.run([sys.executable, "-m", "flows.render", "film=smoke", "seed=7", "--show"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert '"seed": 7' in proc.stdout and "a garden at night" in proc.stdout
    plot = tmp_path / "outputs" / "show" / "smoke_schedules.png"
    assert f"schedule plot: {plot}" in proc.stdout
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == [plot]
    with Image.open(plot) as im:
        im.verify()
        assert im.format == "PNG"
    schedules = proc.stdout.split("schedules per shot")[1].split("schedule plot:")[0]
    assert len(schedules.strip().splitlines()) < 24  # a summary per shot, not 24 frame rows
    assert "weight 0.25..1 on frames 7-11: a garden at night" in schedules
