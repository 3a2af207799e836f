"""engines/frames/memory.py on CPU with the generated tiny models: the tracer, the estimate against the
real allocations and the resident set, fitting to a budget, and the task's preflight wiring."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engines.frames import memory  # noqa: E402
from engines.frames import pixel_clip as P  # noqa: E402
from engines.frames import vqgan_clip as V  # noqa: E402
from engines.guidance import vq_latent  # noqa: E402
from engines.planning.plan import FramePlan, ShotPlan  # noqa: E402
from engines.planning.prompts import Prompt  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"
MiB = 2 ** 20


@pytest.fixture(scope="module")
def models(models_dir):
    from engines.models import loaded, registry

    clip = loaded.load_model(registry.load_entry("clip", "generated_clip_tiny", CONF), models_dir)
    vq = loaded.load_model(registry.load_entry("vqgan", "generated_vqgan_f16_tiny", CONF),
                            models_dir)
    return {"vqgan": vq, "clip": clip}


def loaded_models(models, engine="vqgan_clip"):
    """The engine's `models` argument: loaded models by kind."""
    out = {"clip": (models["clip"],)}
    return {**out, "vqgan": (models["vqgan"],)} if engine == "vqgan_clip" else out


def real(models, engine="vqgan_clip"):
    """memory_step's argument for the real (not meta) models."""
    return {"clip": [models["clip"]], "vqgan": models["vqgan"]}


def tracer(models, engine="vqgan_clip", settings=None, device="cpu"):
    settings = settings or (V.Settings(cutn=8) if engine == "vqgan_clip" else P.Settings())
    module = V if engine == "vqgan_clip" else P
    return memory.MemoryTracer(module, settings, loaded_models(models, engine), device)


def budget_for(working: int) -> int:
    """The free bytes at which an iteration of `working` bytes just fits."""
    return math.ceil(working * memory.HEADROOM) + memory.RESERVE_BYTES


# ------------------------------------------------------------------------------ tracer
def test_live_bytes_counts_new_storages_once_and_subtracts_frees():
    outside = torch.ones(1000)
    with memory.live_bytes() as m:
        a = torch.empty(1000)  # 4000 bytes
        view = a[:10]  # a view: same storage, nothing new
        b = outside + 1  # 4000 bytes
        outside.add_(1)  # in place on a tensor from outside: nothing new
        del a, view  # 4000 bytes freed
        c = torch.empty(250, dtype=torch.float64)  # 2000 bytes
    assert (m.peak, m.live) == (8000, 6000)
    assert b.numel() == 1000 and c.numel() == 250


def test_meta_clone_keeps_shapes_costs_nothing_and_casts(models):
    clone = memory.meta_clone(models["clip"].model, torch.bfloat16)
    real = dict(models["clip"].model.named_parameters())
    for name, p in clone.named_parameters():
        assert p.device.type == "meta" and p.shape == real[name].shape
        assert p.dtype == (torch.bfloat16 if real[name].is_floating_point() else real[name].dtype)
    assert next(models["clip"].model.parameters()).device.type == "cpu"  # original untouched


# ------------------------------------------------------------------------------ estimate
@pytest.mark.parametrize(("engine", "size"), [("vqgan_clip", (96, 64)), ("vqgan_clip", (160, 96)),
                                              ("pixel_clip", (96, 64))])
def test_meta_estimate_equals_the_real_allocations(models, engine, size):
    """The meta trace allocates exactly what the real CPU iteration allocates (same tracer)."""
    pr = tracer(models, engine)
    settings = V.Settings(cutn=8) if engine == "vqgan_clip" else P.Settings()
    module = V if engine == "vqgan_clip" else P
    if engine == "vqgan_clip":  # the model in the path's memory format, as in a render
        vq_latent.prepare_model(models["vqgan"], settings)
    module.memory_step(settings, *size, real(models), device="cpu")
    with memory.live_bytes() as traced:
        module.memory_step(settings, *size, real(models), device="cpu")
    assert pr.working(settings, *size) == traced.peak > 0
    assert pr.weights == memory.nbytes(models["clip"].model) + (
        memory.nbytes(models["vqgan"]) if engine == "vqgan_clip" else 0)


def test_estimate_grows_with_size_and_cutouts_and_checkpointing_saves(models):
    pr = tracer(models)
    s = V.Settings(cutn=8)
    small, large = pr.working(s, 128, 128), pr.working(s, 256, 256)
    assert large > 2 * small
    assert pr.working(s.model_copy(update={"cutn": 16}), 128, 128) > small
    ck = pr.working(s.model_copy(update={"decoder_checkpointing": True}), 256, 256)
    assert ck < 0.6 * large
    half = pr.working(s.model_copy(update={"canvas_scale": 0.5}), 256, 256)
    assert half == pr.working(s, 128, 128)


def test_cuda_estimate_uses_bf16_activations_on_the_fast_path(models):
    cpu = tracer(models).working(V.Settings(cutn=8), 256, 256)
    cuda_fast = tracer(models, device="cuda").working(V.Settings(cutn=8), 256, 256)
    ref = V.Settings(cutn=8, path="reference")
    cuda_ref = tracer(models, settings=ref, device="cuda").working(ref, 256, 256)
    assert cuda_fast < 0.75 * cpu
    assert cuda_ref == tracer(models, settings=ref).working(ref, 256, 256)  # fp32 like the CPU


# ------------------------------------------------------------------------------ fitting
def test_preflight_is_a_no_op_without_cuda(models):
    s = V.Settings(cutn=8)
    assert memory.free_memory("cpu") is None
    assert memory.preflight(V, s, 4096, 4096, loaded_models(models), device="cpu",
                            shot="a") == (s, None)


def test_preflight_names_the_largest_size_and_cutouts_that_fit(models, monkeypatch):
    s = V.Settings(cutn=16)
    pr = tracer(models, settings=s, device="cuda")  # the estimate preflight makes for CUDA
    free = budget_for(pr.working(s, 256, 144))  # room for 256x144 at 16 cutouts
    monkeypatch.setattr(memory, "free_memory", lambda device: free)
    with pytest.raises(memory.DeviceMemoryError) as err:
        memory.preflight(V, s, 640, 360, loaded_models(models), device="cuda", shot="garden")
    text = str(err.value)
    assert text.startswith("shot 'garden': vqgan_clip at 640x360 with 16 cutouts needs about")
    w, h = map(int, re.search(r"resolution (\d+)x(\d+) at 16 cutouts", text).groups())
    assert (w, h) == (256, 144)  # the largest multiple of 16 wide with the same aspect
    assert memory.fits(pr.working(s, w, h), free)
    assert not memory.fits(pr.working(s, w + 16, round((w + 16) * 9 / 16 / 2) * 2), free)
    assert "engine.decoder_checkpointing=true needs about" in text
    assert "engine.auto_fit=true" in text
    count = re.search(r"640x360 at engine.cutn=(\d+)", text)
    if count:  # fewer cutouts may not be enough at all at this size
        n = int(count.group(1))
        assert memory.fits(pr.working(s.model_copy(update={"cutn": n}), 640, 360), free)
        assert not memory.fits(pr.working(s.model_copy(update={"cutn": n + 1}), 640, 360), free)


def test_auto_fit_turns_on_checkpointing_then_lowers_cutouts_or_the_canvas(models):
    s = V.Settings(cutn=32, auto_fit=True)
    pr = tracer(models, settings=s)
    ck = s.model_copy(update={"decoder_checkpointing": True})
    fitted, note = memory.fit(pr, s, 256, 256, budget_for(pr.working(ck, 256, 256)))
    assert (fitted, note) == (ck, "decoder_checkpointing=true")
    # 128x128: fewer cutouts are enough
    free = budget_for(pr.working(ck.model_copy(update={"cutn": 12}), 128, 128))
    fitted, note = memory.fit(pr, s, 128, 128, free)
    n = fitted.cutn
    assert V.MIN_CUTN <= n < 32 and (fitted.decoder_checkpointing, fitted.canvas_scale) == (
        True, 1.0) and note == f"decoder_checkpointing=true, cutn={n}"
    assert not memory.fits(pr.working(fitted.model_copy(update={"cutn": n + 1}), 128, 128), free)
    # 256x256 checkpointed: the decoder's recomputation sets the peak whatever the cutouts, so
    # the cutouts stay and the canvas shrinks
    free = budget_for(pr.working(ck.model_copy(update={"canvas_scale": 0.5}), 256, 256))
    fitted, note = memory.fit(pr, s, 256, 256, free)
    units = round(fitted.canvas_scale * 256 / 16)
    assert fitted.cutn == 32 and 8 <= units < 16 and fitted.canvas_scale == units * 16 / 256
    assert note == f"decoder_checkpointing=true, canvas_scale={fitted.canvas_scale:.3f}"
    bigger = fitted.model_copy(update={"canvas_scale": (units + 1) * 16 / 256})
    assert not memory.fits(pr.working(bigger, 256, 256), free)
    with pytest.raises(memory.DeviceMemoryError, match="does not fit even after auto_fit"):
        memory.fit(pr, s, 256, 256, memory.RESERVE_BYTES)


def test_pixel_auto_fit_lowers_the_augmentations(models):
    s = P.Settings(n_augments=8, auto_fit=True)
    pr = tracer(models, "pixel_clip", s)
    three = s.model_copy(update={"n_augments": 3})
    fitted, note = memory.fit(pr, s, 96, 64, budget_for(pr.working(three, 96, 64)))
    assert (fitted.n_augments, note) == (3, "n_augments=3")


class ListSink:
    """In-memory FrameSink."""

    def __init__(self):
        self.frames = []

    def resume(self):
        return 0, None

    def commit(self, index, image, state, record):
        self.frames.append(image)

    def save_state(self, state):
        pass


def plan(width=96, height=64, n=1):
    return ShotPlan("t", width, height, 8.0, 1, (FramePlan((Prompt("a red flower"),)),) * n)


def shot_engine(**settings):
    return V.Settings(images_interval=1, **settings)


def test_render_shot_applies_auto_fit_and_returns_what_changed(models, monkeypatch):
    """tasks/generate_frames.py's wiring, on CPU with a pretend GPU budget."""
    from tasks.generate_frames import render_shot

    engine = shot_engine(cutn=8, auto_fit=True)
    ck = engine.model_copy(update={"decoder_checkpointing": True})
    free = budget_for(tracer(models, settings=ck).working(ck, 96, 64))
    monkeypatch.setattr(memory, "free_memory", lambda device: free)
    sink = ListSink()
    note = render_shot(V, engine, plan(), loaded_models(models), sink, "cpu")
    assert note == "decoder_checkpointing=true" and len(sink.frames) == 1
    engine = shot_engine(cutn=8)  # same budget, auto_fit off: stop before rendering
    with pytest.raises(memory.DeviceMemoryError, match="shot 't': vqgan_clip at 96x64 with 8 "
                       "cutouts needs about"):
        render_shot(V, engine, plan(), loaded_models(models), ListSink(), "cpu")


def test_render_shot_turns_a_cuda_out_of_memory_error_into_what_fits(models, monkeypatch):
    from tasks.generate_frames import render_shot

    def oom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    s = V.Settings(cutn=8)
    free = budget_for(tracer(models, settings=s).working(s, 64, 32))
    calls = iter([None, free])  # no preflight budget (as if it passed), then the real one
    monkeypatch.setattr(memory, "free_memory", lambda device: next(calls))
    monkeypatch.setattr(V, "render", oom)
    with pytest.raises(memory.DeviceMemoryError) as err:
        render_shot(V, shot_engine(cutn=8), plan(), loaded_models(models), ListSink(), "cuda")
    text = str(err.value)
    assert text.startswith("ran out of memory. shot 't': vqgan_clip at 96x64 with 8 cutouts "
                           "needed about")
    assert "what fits: resolution 64x42 at 8 cutouts" in text


# ------------------------------------------------------------------------------ measured
@pytest.mark.slow
def test_estimate_is_within_20_percent_of_the_measured_resident_set(models_dir):
    """Three sizes, one fresh process (bench/memcheck.py: RSS growth over one iteration)."""
    from bench import memcheck

    rows = memcheck.run("vqgan_clip", ["128x128", "192x192", "256x256"], {"cutn": 8},
                        vqgan="generated_vqgan_f16_tiny", clip="generated_clip_tiny",
                        models=str(models_dir), timeout=300)
    assert [r["size"] for r in rows] == ["128x128", "192x192", "256x256"]
    for r in rows:
        assert abs(r["estimate"] - r["measured"]) <= 0.2 * r["measured"], r
