"""The diffusion video models' registry (conf/diffusers/) and what every family shares: hub
entries pinned and complete, tiny twins in diffusers' layout that load offline through
from_pretrained, the memory estimate on meta for every family, and the rules refusing bad input
with the nearest valid value before anything loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engines.core.errors import ConfigError
from engines.models.diffusers import PICKLE_SUFFIXES, rules_of
from engines.models.registry import list_entries, load_entry
from tests.engines import video_run
from tests.helpers import ROOT

CONF = ROOT / "conf"
ENTRIES = [load_entry("diffusers", n, CONF) for n in list_entries("diffusers", CONF)]
HUB = [e for e in ENTRIES if e.source == "hub"]
TWINS = [e for e in ENTRIES if e.source == "generated"]
SMOKE = {"ltx": "generated_ltx_tiny", "cogvideox": "generated_cogvideox_tiny",
         "hunyuan": "generated_hunyuan_tiny", "mochi": "generated_mochi_tiny",
         "zeroscope": "generated_zeroscope_tiny", "wan": "generated_wan_tiny"}


@pytest.mark.parametrize("entry", HUB, ids=lambda e: e.name)
def test_hub_entries_are_pinned_complete_and_consistent(entry):
    rules = rules_of(entry)
    assert len(entry.revision) == 40 and int(entry.revision, 16) >= 0
    assert "model_index.json" in entry.allow_patterns
    assert not any(p.endswith(PICKLE_SUFFIXES) or p.endswith("*") and "/" not in p
                   for p in entry.allow_patterns), "only configs, tokenizers and safetensors"
    assert rules.frames.ok(rules.clip_frames), "the default clip is an allowed frame count"
    assert rules.width % rules.size_multiple == 0 and rules.height % rules.size_multiple == 0
    if rules.vram_gib is not None or rules.seconds_per_clip is not None:
        assert rules.published, "published figures say where they come from"
    twin = SMOKE[rules.family]
    assert rules_of(load_entry("diffusers", twin, CONF)).family == rules.family


def test_every_family_has_real_weights_and_a_twin():
    from engines.models.diffusers import FAMILIES

    assert {rules_of(e).family for e in HUB} == set(FAMILIES)
    assert {rules_of(e).family for e in TWINS} == set(FAMILIES)


@pytest.mark.parametrize("entry", TWINS, ids=lambda e: e.name)
def test_twin_loads_offline_through_from_pretrained(entry, models_dir, monkeypatch):
    import diffusers

    from engines.frames.diffusion import pipeline as loader
    from engines.frames.registry import ENGINES

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = video_run.source(entry.name, models_dir)
    rules = source.rules
    index = json.loads((source.folder / "model_index.json").read_text())
    assert index["_class_name"] == rules.pipeline
    assert not [p for p in source.folder.rglob("*") if p.suffix in PICKLE_SUFFIXES]
    assert list(source.folder.rglob("*.safetensors"))
    engine = ENGINES[rules.family]
    settings = engine.Settings(model=entry.name)
    for image in {False, rules.image_pipeline is not None}:
        pipe = loader.load(source, settings, "cpu", image=image)
        cls = rules.image_pipeline if image else rules.pipeline
        assert type(pipe) is getattr(diffusers, cls)
    loader.forget()


@pytest.mark.parametrize("family", sorted(SMOKE))
def test_memory_estimate_runs_on_meta_for_every_family(family, models_dir):
    from engines.frames import memory
    from engines.frames.registry import ENGINES

    engine = ENGINES[family]
    source = video_run.source(SMOKE[family], models_dir)
    settings = engine.Settings(model=SMOKE[family])
    w = h = 64
    est = memory.estimate(engine, settings, w, h, {"diffusers": (source,)}, device="cpu")
    assert est.weights > 0 and est.working > 0
    bigger = memory.estimate(engine, settings, 2 * w, 2 * h, {"diffusers": (source,)},
                             device="cpu")
    assert bigger.working > est.working


@pytest.mark.parametrize("engine_name, model, override, key, fragment", [
    ("ltx", "ltx_video_2b", {"clip_frames": 100}, "engine.clip_frames",
     "nearest valid: 97"),
    ("mochi", "mochi_1_preview", {"clip_frames": 50}, "engine.clip_frames",
     "nearest valid: 49"),
    ("cogvideox", "cogvideox_5b", {"clip_frames": 81}, "engine.clip_frames",
     "nearest valid: 49"),
])
def test_frame_counts_outside_the_rule_name_the_nearest_valid(engine_name, model, override, key,
                                                              fragment):
    from engines.frames.registry import ENGINES

    engine = ENGINES[engine_name]
    settings = engine.Settings(model=model, **override)
    with pytest.raises(ConfigError) as err:
        engine.check(settings, video_run.plan(8, 704, 480), "film.shots.0")
    # the engine names its setting; flows/checks.py re-keys it to where the value was set
    assert err.value.key == key and fragment in str(err.value)


def test_sizes_outside_the_rule_name_the_nearest_valid():
    from engines.frames import cogvideox, ltx

    with pytest.raises(ConfigError) as err:
        ltx.check(ltx.Settings(), video_run.plan(8, 720, 480), "film.shots.0")
    assert err.value.key == "resolution.width" and "nearest valid: 704" in str(err.value)
    with pytest.raises(ConfigError) as err:
        cogvideox.check(cogvideox.Settings(model="cogvideox_5b_i2v"),
                        video_run.plan(8, 832, 480, init_image="x.png"), "film.shots.0")
    assert err.value.key == "resolution" and "nearest valid: 720x480" in str(err.value)


def test_image_only_models_refuse_a_shot_without_a_start_image():
    from engines.frames import cogvideox, wan

    for engine, model in ((cogvideox, "cogvideox_5b_i2v"), (wan, "wan2_1_i2v_14b_480p")):
        with pytest.raises(ConfigError) as err:
            engine.check(engine.Settings(model=model), video_run.plan(8, 720, 480),
                         "film.shots.2")
        assert err.value.key == "film.shots.2.init_image"
        assert "continue: previous" in str(err.value)


def test_text_only_models_refuse_continue_and_name_the_models_that_take_an_image():
    from engines.frames import hunyuan

    shot = video_run.plan(8, 960, 544, init_image="last.png")
    with pytest.raises(ConfigError) as err:
        hunyuan.check(hunyuan.Settings(), shot, "film.shots.1")
    assert err.value.key == "film.shots.1.init_image" and "hunyuan_video" in str(err.value)


def test_a_folder_without_safetensors_or_without_a_pipeline_is_refused(tmp_path):
    from engines.core.errors import MissingWeightsError, UnsafeCheckpointError
    from engines.frames.diffusion.pipeline import check_weights
    from engines.models.diffusers import PipelineSource

    rules = rules_of(load_entry("diffusers", "zeroscope_v2_576w", CONF))
    src = PipelineSource("zeroscope_v2_576w", Path(tmp_path), rules)
    with pytest.raises(MissingWeightsError, match="model_index.json"):
        check_weights(src)
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "unet").mkdir()
    (tmp_path / "unet" / "config.json").write_text("{}")
    (tmp_path / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsafeCheckpointError, match="unet"):
        check_weights(src)


# ------------------------------------------------------------------ renders of every family
def _arrays(frames: dict[str, bytes]) -> list:
    import io

    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(io.BytesIO(b))).astype(int) for b in frames.values()]


@pytest.mark.parametrize("engine_name, model", [
    ("wan", "generated_wan_tiny"), ("cogvideox", "generated_cogvideox_tiny"),
    ("hunyuan", "generated_hunyuan_tiny"), ("mochi", "generated_mochi_tiny"),
    ("zeroscope", "generated_zeroscope_tiny")])
def test_every_text_to_video_family_renders_its_frames(engine_name, model, models_dir,
                                                       tmp_path):
    import numpy as np

    rules = rules_of(load_entry("diffusers", model, CONF))
    w, h = rules.width, rules.height
    frames = _arrays(video_run.render(engine_name, model, video_run.plan(3, w, h),
                                      tmp_path / "a", models_dir, steps=2, overlap=1))
    assert len(frames) == 3 and all(f.shape == (h, w, 3) for f in frames)
    assert all(f.std() > 0 for f in frames), "decoded frames, not a blank"
    other = _arrays(video_run.render(engine_name, model, video_run.plan(3, w, h, seed=6),
                                     tmp_path / "b", models_dir, steps=2, overlap=1))
    assert not np.array_equal(frames[0], other[0]), "the shot's seed reaches the noise"


def test_two_experts_split_the_steps_at_the_boundary_ratio(models_dir, tmp_path):
    """Wan 2.2 T2V-A14B's layout on its tiny twin: the high-noise expert (`transformer`) runs
    the steps whose timestep is at or above boundary_ratio x 1000, then `transformer_2`."""
    from engines.frames import wan
    from engines.frames.diffusion import pipeline as loader

    model = "generated_wan_a14b_tiny"
    source = video_run.source(model, models_dir)
    pipe = loader.load(source, wan.Settings(model=model), "cpu", engine=wan)  # the render's pipe
    assert pipe.config.boundary_ratio == 0.875 and pipe.transformer_2 is not None
    calls = []
    hooks = [m.register_forward_pre_hook(
        lambda _m, args, kwargs, n=n: calls.append((n, float(kwargs["timestep"].flatten()[0]))),
        with_kwargs=True) for n, m in (("high", pipe.transformer), ("low", pipe.transformer_2))]
    try:
        frames = video_run.render("wan", model, video_run.plan(3, 64, 48), tmp_path / "a",
                                  models_dir, overlap=1)
    finally:
        for hook in hooks:
            hook.remove()
        loader.forget()
    assert len(frames) == 3
    assert {n for n, _ in calls} == {"high", "low"}
    boundary = 0.875 * pipe.scheduler.config.num_train_timesteps
    assert all((t >= boundary) == (n == "high") for n, t in calls)
    names = [n for n, _ in calls]
    assert names == sorted(names), "high-noise steps first, then low-noise ones"  # 'high' < 'low'


@pytest.mark.parametrize("model, w, h", [("generated_wan_i2v_tiny", 64, 48),
                                         ("generated_cogvideox_i2v_tiny", 64, 48)])
def test_image_to_video_models_start_from_the_shot_image(model, w, h, models_dir, tmp_path):
    """Wan 2.1 I2V and CogVideoX-5B-I2V layouts: the shot's init image (what `continue:
    previous` sets to the previous shot's last frame) conditions the video; without one the
    shot is refused before anything loads."""
    import numpy as np

    rules = rules_of(load_entry("diffusers", model, CONF))
    engine_name = rules.family
    red = video_run.image_file(tmp_path / "red.png", w, h, (220, 30, 30))
    blue = video_run.image_file(tmp_path / "blue.png", w, h, (30, 30, 220))
    n = rules.clip_frames if rules.frames.min > 1 else 3
    from_red = _arrays(video_run.render(engine_name, model, video_run.plan(n, w, h,
                                                                           init_image=red),
                                        tmp_path / "red", models_dir, steps=2, overlap=1))
    from_blue = _arrays(video_run.render(engine_name, model, video_run.plan(n, w, h,
                                                                            init_image=blue),
                                         tmp_path / "blue", models_dir, steps=2, overlap=1))
    assert len(from_red) == n and from_red[0].shape == (h, w, 3)
    assert not np.array_equal(from_red[0], from_blue[0])
    with pytest.raises(ConfigError) as err:
        video_run.render(engine_name, model, video_run.plan(n, w, h), tmp_path / "none",
                         models_dir, overlap=1)
    assert err.value.key == "film.shots.0.init_image"
