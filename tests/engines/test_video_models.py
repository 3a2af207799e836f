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
    ("ltx", "ltx_video_2b", {"clip_frames": 100}, "engine_overrides.clip_frames",
     "nearest valid: 97"),
    ("mochi", "mochi_1_preview", {"clip_frames": 50}, "engine_overrides.clip_frames",
     "nearest valid: 49"),
    ("cogvideox", "cogvideox_5b", {"clip_frames": 81}, "engine_overrides.clip_frames",
     "nearest valid: 49"),
])
def test_frame_counts_outside_the_rule_name_the_nearest_valid(engine_name, model, override, key,
                                                              fragment):
    from engines.frames.registry import ENGINES

    engine = ENGINES[engine_name]
    settings = engine.Settings(model=model, **override)
    with pytest.raises(ConfigError) as err:
        engine.check(settings, video_run.plan(8, 704, 480), "film.shots.0")
    assert err.value.key == f"film.shots.0.{key}" and fragment in str(err.value)


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
