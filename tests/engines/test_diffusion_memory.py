"""The diffusion engines' memory estimate and fit (engines/frames/diffusion/memory.py) with a
stated device memory (no GPU here: `fit` and `preflight` take the free bytes as a number, and
preflight's `free_memory` is replaced by one): the order auto_fit tries (offload none, model,
group, each without then with VAE tiling, then shorter chunks), settings the user fixed are
kept, the error when nothing fits says what would, and the estimate of the real-size Wan 2.1
1.3B (weightless folder, bench/hollow.py) against its published figure."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engines.frames import memory, wan  # noqa: E402
from engines.frames.diffusion import memory as dmem  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
W, H = 512, 320  # large enough for the tiny VAE to tile (its tiles are 256 pixels)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    from engines.models import loaded, registry

    entry = registry.load_entry("diffusers", "generated_wan_tiny", CONF)
    return loaded.load_model(entry, tmp_path_factory.mktemp("wan_models"))


def settings(**kw):
    return wan.Settings(model="generated_wan_tiny", **{"overlap": 2, **kw})


@pytest.fixture(scope="module")
def tracer(source):
    return memory.MemoryTracer(wan, settings(), {"diffusers": (source,)}, "cuda")


def budget_for(working: int) -> int:
    """The free bytes at which a step of `working` bytes just fits."""
    return math.ceil(working * memory.HEADROOM) + memory.RESERVE_BYTES


def need(tr, **kw) -> int:
    return tr.working(settings(**kw), W, H)


def test_weights_come_from_the_safetensors_headers_in_the_render_dtype(tracer, source):
    per = tracer.meta["bytes"]
    assert set(per) == {"transformer", "vae", "text_encoder"}
    numel = dmem.component_numel(source.folder)
    assert per == {k: 4 * n for k, n in numel.items()}  # the tiny rules: float32
    assert tracer.weights == sum(per.values())
    assert all(p.device.type == "meta" for p in tracer.meta["transformer"].parameters())


def test_resident_weights_per_offload_mode():
    per = {"transformer": 100, "transformer_2": 90, "vae": 10, "text_encoder": 50}
    big = {"transformer": 7, "transformer_2": 6, "vae": 3, "text_encoder": 5}
    assert dmem.resident(per, "none") == 250
    assert dmem.resident(per, "model", "transformer") == 100  # one expert at a time
    assert dmem.resident(per, "model", "vae") == 10
    assert dmem.resident(per, "group", "transformer", big) == 14  # in use + prefetched
    assert dmem.resident(per, "sequential", "text_encoder", big) == 5


def test_more_offload_and_tiling_need_less(tracer):
    none, model, group = (need(tracer, offload=o, vae_tiling="off")
                          for o in ("none", "model", "group"))
    seq = need(tracer, offload="sequential", vae_tiling="off")
    assert none > model > group > seq
    for o in ("none", "model", "group"):
        assert need(tracer, offload=o, vae_tiling="on") < need(tracer, offload=o,
                                                               vae_tiling="off")
    assert need(tracer, offload="group", clip_frames=5) < need(tracer, offload="group")


@pytest.mark.parametrize("fits_with, changes", [
    ({"offload": "none", "vae_tiling": "auto"}, []),
    ({"offload": "none", "vae_tiling": "on"}, ["vae_tiling=on"]),
    ({"offload": "model", "vae_tiling": "on"}, ["offload=model", "vae_tiling=on"]),
    ({"offload": "group", "vae_tiling": "on"}, ["offload=group", "vae_tiling=on"]),
    ({"offload": "group", "vae_tiling": "on", "clip_frames": 5},
     ["offload=group", "vae_tiling=on", "clip_frames=5"]),
])
def test_auto_fit_takes_the_cheapest_settings_that_fit(tracer, fits_with, changes):
    free = budget_for(need(tracer, **fits_with))
    fitted, note = memory.fit(tracer, settings(), W, H, free)
    assert memory.fits(tracer.working(fitted, W, H), free)
    assert note == ", ".join(changes)
    assert {k: getattr(fitted, k) for k in fits_with} == fits_with


def test_auto_fit_keeps_what_the_user_set(tracer):
    free = budget_for(need(tracer, offload="model", vae_tiling="off"))  # model would fit
    fitted, note = memory.fit(tracer, settings(offload="none", vae_tiling="off",
                                               clip_frames=9), W, H, free)
    assert (fitted.offload, fitted.vae_tiling, fitted.clip_frames) == ("none", "off", 5)
    assert note == "clip_frames=5"


def test_nothing_fits_says_what_would(tracer):
    free = budget_for(need(tracer, offload="group", vae_tiling="on", clip_frames=5)) - 1
    with pytest.raises(memory.DeviceMemoryError) as err:
        memory.fit(tracer, settings(), W, H, free)
    text = str(err.value)
    assert text.startswith(f"wan at {W}x{H} does not fit even after auto_fit (offload=group,"
                           " vae_tiling=on): it needs about")
    w, h = map(int, re.search(r"What fits: resolution (\d+)x(\d+) with these settings",
                              text).groups())
    assert w % 16 == 0 and h % 16 == 0 and w < W
    assert memory.fits(tracer.working(settings(offload="group", vae_tiling="on"), w, h), free)


def test_preflight_without_auto_fit_names_each_lever(source, tracer, monkeypatch):
    s = settings(offload="none", vae_tiling="off", auto_fit=False)
    free = budget_for(need(tracer, offload="group", vae_tiling="on"))
    monkeypatch.setattr(memory, "free_memory", lambda device: free)
    with pytest.raises(memory.DeviceMemoryError) as err:
        memory.preflight(wan, s, W, H, {"diffusers": (source,)}, device="cuda", shot="garden")
    text = str(err.value)
    assert text.startswith(f"shot 'garden': wan at {W}x{H} with 9 frames per chunk needs about")
    for lever in ("engine.offload=model", "engine.offload=group", "engine.offload=sequential",
                  "engine.vae_tiling=on"):
        assert re.search(rf"{re.escape(lever)} needs about [\d.]+ GiB", text), lever
    assert "would pick engine.offload=group, engine.vae_tiling=on\n" in text
    assert "engine.auto_fit=true" in text
    # with auto_fit the same budget renders, with the settings it named
    fitted, note = memory.preflight(wan, s.model_copy(update={"auto_fit": True, "offload": "auto",
                                                               "vae_tiling": "auto"}),
                                    W, H, {"diffusers": (source,)}, device="cuda", shot="garden")
    assert (fitted.offload, fitted.vae_tiling) == ("group", "on") and note


@pytest.mark.slow
def test_real_size_wan_1_3b_estimate_against_the_published_peak(tmp_path):
    """Wan 2.1 T2V 1.3B at 832x480, 81 frames, with offloading: the Wan 2.1 README publishes
    8.19 GB on an RTX 4090 (conf/diffusers/wan2_1_t2v_1_3b.yaml `vram_gib`). The estimate runs
    on a weightless folder with the real configs and tensor shapes (bench/hollow.py)."""
    from bench.hollow import hollow_folder
    from engines.models.diffusers import PipelineSource, rules_of
    from engines.models.registry import load_entry

    entry = load_entry("diffusers", "wan2_1_t2v_1_3b", CONF)
    rules = rules_of(entry)
    src = PipelineSource(entry.name, hollow_folder("wan", tmp_path / "wan"), rules)
    s = wan.Settings(offload="group", vae_tiling="off")
    tr = memory.MemoryTracer(wan, s, {"diffusers": (src,)}, "cuda")
    assert 1.2e9 < tr.meta["bytes"]["transformer"] / 2 < 1.5e9  # 1.3B parameters, bf16
    assert tr.meta["bytes"]["vae"] == 4 * dmem.component_numel(src.folder)["vae"]  # fp32 VAE
    grouped = tr.working(s, 832, 480)
    assert abs(grouped / 1e9 - rules.vram_gib) / rules.vram_gib < 0.2, grouped / 1e9
    # a 24 GiB card: everything on it with an untiled decode would not fit (UMT5-XXL alone is
    # 11 GB in bf16), a tiled decode does; an 8 GiB card streams the layers and tiles
    auto = s.model_copy(update={"offload": "auto", "vae_tiling": "auto"})
    assert not memory.fits(tr.working(auto.model_copy(update={"offload": "none"}), 832, 480),
                           24 * memory.GIB)
    fitted, note = memory.fit(tr, auto, 832, 480, 24 * memory.GIB)
    assert (fitted.offload, note) == ("none", "vae_tiling=on")
    fitted, note = memory.fit(tr, auto, 832, 480, 8 * memory.GIB)
    assert note == "offload=group, vae_tiling=on" and fitted.clip_frames is None


def test_bf16_pipeline_reads_its_vae_in_float32_where_the_rules_say(source):
    """Wan's VAE decodes in float32 (`vae_fp32`): loaded so from the files, not cast up after a
    bf16 load; the estimate counts it at 4 bytes a weight."""
    import dataclasses

    from engines.frames.diffusion import pipeline as loader

    src = dataclasses.replace(source, rules=source.rules.model_copy(update={"vae_fp32": True}))
    s = settings(dtype="bfloat16")
    pipe = loader.load(src, s, "cpu", engine=wan)
    assert pipe.vae.dtype == torch.float32
    assert pipe.transformer.dtype == torch.bfloat16
    assert pipe.text_encoder.dtype == torch.bfloat16
    meta = memory.MemoryTracer(wan, s, {"diffusers": (src,)}, "cpu").meta
    numel = dmem.component_numel(src.folder)
    assert meta["bytes"] == {"vae": 4 * numel["vae"], "transformer": 2 * numel["transformer"],
                             "text_encoder": 2 * numel["text_encoder"]}
    assert next(meta["vae"].parameters()).dtype == torch.float32
