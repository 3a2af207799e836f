"""engines/frames/pixel_clip.py on CPU with the generated tiny CLIP (random weights, real format)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

torch = pytest.importorskip("torch")

from engines.core.errors import ConfigError  # noqa: E402
from engines.frames import pixel_clip as P  # noqa: E402
from engines.guidance import pixel_views  # noqa: E402
from engines.planning.plan import FramePlan, ShotPlan  # noqa: E402
from engines.planning.prompts import Prompt  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"
PROMPTS = (Prompt("a red flower"), Prompt("a koala", 0.5))
FAST = {"iterations_per_frame": 3, "profile": "promptreel"}  # tests of promptreel's settings
PAPER = {"profile": "paper", "iterations_per_frame": 3, "first_frame_iterations": 3,
         "carry_over_iteration": 2}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from engines.models import loaded, registry

    out = tmp_path_factory.mktemp("models")
    return loaded.load_model(registry.load_entry("clip", "generated_clip_tiny", CONF), out)


class MemorySink:
    """In-memory FrameSink; `crash_at` raises when that frame would be committed."""

    def __init__(self, crash_at=None):
        self.frames, self.states, self.records = {}, {}, {}
        self.crash_at = crash_at

    def resume(self):
        n = len(self.frames)
        return (n, copy.deepcopy(self.states[n - 1])) if n else (0, None)

    def commit(self, index, image, state, record):
        if index == self.crash_at:
            raise KeyboardInterrupt("simulated crash")
        assert index == len(self.frames) and image.dtype == np.uint8
        assert all(isinstance(v, torch.Tensor) and v.device.type == "cpu" for v in state.values())
        self.frames[index] = image.copy()
        self.states[index] = {k: v.clone() for k, v in state.items()}
        self.records[index] = dict(record)


def plan(n=4, width=64, height=36, prompts=PROMPTS, seed=3, **motion):
    return ShotPlan("test", width, height, 8.0, seed,
                    tuple(FramePlan(prompts, **motion) for _ in range(n)))


def render(clip, shot, sink=None, **settings):
    sink = sink or MemorySink()
    P.render(P.Settings(**{**FAST, **settings}), shot, {"clip": (clip,)}, sink, "cpu")
    return sink


def test_temperature_mapping_golden_values():
    assert P.temperature_mapping(0) == pytest.approx(
        {"stability_weight": 4.0, "squish": 2.0, "noise_std": 0.05})
    assert P.temperature_mapping(30) == pytest.approx(
        {"stability_weight": 2.8, "squish": 3.2, "noise_std": 0.08})
    assert P.temperature_mapping(100) == pytest.approx(
        {"stability_weight": 0.0, "squish": 6.0, "noise_std": 0.15})
    assert P.noise_std(50, noise_scale=0.1) == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="temperature"):
        P.temperature_mapping(101)


@pytest.mark.parametrize("size", [(64, 36), (50, 50)])
def test_frames_have_the_exact_plan_size(clip, size):
    sink = render(clip, plan(n=2, width=size[0], height=size[1]))
    assert [f.shape for f in sink.frames.values()] == [(size[1], size[0], 3)] * 2
    rec = sink.records[1]
    assert rec["iterations"] == 6
    assert rec["noise_std"] == pytest.approx(0.08) and rec["stability_weight"] == pytest.approx(2.8)
    assert rec["prompts"] == "a red flower:1 | a koala:0.5"
    assert math.isfinite(rec["loss"]) and rec["loss:stability"] > 0
    assert -1 <= rec["clip:a koala"] <= 1
    assert sink.records[0]["loss:stability"] == 0 and sink.records[0]["noise_std"] == 0


def test_low_temperature_changes_frames_less_than_high(clip):
    """Acceptance test of the paper's temperature: same seed, T=10 vs T=90."""
    def mean_step(temperature):
        sink = render(clip, plan(n=5), temperature=temperature)
        f = [sink.frames[i].astype(np.float64) for i in range(5)]
        return np.mean([np.abs(f[i] - f[i - 1]).mean() for i in range(1, 5)])

    cold, hot = mean_step(10), mean_step(90)
    assert cold < hot / 2, (cold, hot)


def test_resume_is_byte_identical(clip):
    shot = plan(n=4)
    straight = render(clip, shot)
    sink = MemorySink(crash_at=2)
    with pytest.raises(KeyboardInterrupt):
        render(clip, shot, sink)
    assert len(sink.frames) == 2
    sink.crash_at = None
    render(clip, shot, sink)
    for i in range(4):
        assert np.array_equal(straight.frames[i], sink.frames[i]), i
    assert sink.records[3]["iterations"] == straight.records[3]["iterations"] == 12
    render(clip, shot, sink)  # already complete: nothing happens
    assert len(sink.frames) == 4


def test_seed_decides_the_frames(clip):
    a, b, c = (render(clip, plan(n=1, seed=s)).frames[0] for s in (5, 5, 6))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_reference_path_matches_fast_path_on_cpu(clip):
    fast = render(clip, plan(n=2), path="fast")
    ref = render(clip, plan(n=2), path="reference")
    for i in range(2):
        diff = np.abs(fast.frames[i].astype(int) - ref.frames[i].astype(int))
        assert diff.max() <= 1
    assert fast.records[1]["loss"] == pytest.approx(ref.records[1]["loss"], rel=1e-4)


def test_alternating_perceptors_use_one_per_iteration(clip, monkeypatch):
    used = []
    orig = P._Run._encode

    def spy(self, pi, views):
        used.append((pi, views.shape[0]))
        return orig(self, pi, views)

    monkeypatch.setattr(P._Run, "_encode", spy)
    shot = plan(n=1)
    P.render(P.Settings(iterations_per_frame=4, n_augments=3, profile="promptreel"), shot,
             {"clip": (clip, clip)}, MemorySink(), "cpu")
    assert used == [(0, 3), (1, 3), (0, 3), (1, 3)]
    used.clear()
    P.render(P.Settings(iterations_per_frame=2, alternate_perceptors=False, profile="promptreel"),
             shot, {"clip": (clip, clip)}, MemorySink(), "cpu")
    assert used == [(0, 4), (1, 4), (0, 4), (1, 4)]


def test_augment_shapes_and_crop_windows():
    g = torch.Generator().manual_seed(0)
    wins = pixel_views.crop_windows(36, 64, 200, (0.7, 0.999), g)
    areas = [h * w / (36 * 64) for _, _, h, w in wins]
    assert min(areas) > 0.6 and max(areas) <= 1.0
    assert all(0 <= t <= 36 - h and 0 <= left <= 64 - w for t, left, h, w in wins)
    img = torch.rand(1, 3, 36, 64)
    views = pixel_views.augment(img, 32, 4, (0.7, 0.999), 0.2, g, torch.Generator().manual_seed(1))
    assert views.shape == (4, 3, 32, 32)
    ident = pixel_views.augment(img, 64, 1, (1.0, 1.0), 0.0, g, torch.Generator().manual_seed(1))
    full = torch.nn.functional.interpolate(img, (64, 64), mode="bilinear", antialias=True)
    assert torch.allclose(ident, full, atol=1e-5)


def test_paper_prompt_schedule():
    shot = ShotPlan("s", 8, 8, 8.0, 0, tuple(
        FramePlan((Prompt("cat"),) if i < 2 else (Prompt("koala", 3.0),)) for i in range(5)))
    got = [[(p.text, round(p.weight, 3)) for p in ps] for ps in P.frame_prompts(shot, 2)]
    assert got == [[("cat", 1.0)], [("cat", 0.5), ("koala", 0.5)], [("koala", 1.0)],
                   [("koala", 1.0)], [("koala", 1.0)]]
    assert P.frame_prompts(shot, None)[3] == (Prompt("koala", 3.0),)


def test_settings_validation_and_yaml():
    with pytest.raises(ValidationError):
        P.Settings(temperature=120)
    with pytest.raises(ValidationError):
        P.Settings(crop_scale=(0.9, 0.5))
    with pytest.raises(ValidationError):
        P.Settings(iterations=3)  # misspelt key
    raw = yaml.safe_load((CONF / "engine" / "pixel_clip.yaml").read_text())
    assert raw.pop("name") == P.NAME
    assert P.Settings(**raw) == P.Settings()



def test_init_image_image_prompts_and_motion(clip, tmp_path):
    from PIL import Image

    img = np.zeros((36, 64, 3), np.uint8)
    img[:, 32:] = 255
    Image.fromarray(img).save(tmp_path / "init.png")
    shot = ShotPlan("s", 64, 36, 8.0, 1, tuple(FramePlan(PROMPTS, zoom=1.1, angle=5.0)
                                               for _ in range(2)),
                    image_prompts=((str(tmp_path / "init.png"), 0.5, -math.inf),),
                    init_image=str(tmp_path / "init.png"))
    sink = render(clip, shot, lr=0.001, iterations_per_frame=2)
    first = sink.frames[0].astype(int)
    assert np.abs(first - img).max() <= 2 * 0.001 * 255 + 1  # started from the init image
    assert sink.frames[1].shape == (36, 64, 3)
    assert not np.array_equal(sink.frames[1], sink.frames[0])  # moved and noised


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_iteration_loop_never_waits_for_the_gpu(tmp_path):
    from engines.models import loaded, registry

    clip = loaded.load_model(registry.load_entry("clip", "generated_clip_tiny", CONF), tmp_path,
                               "cuda")
    for path in ("fast", "reference"):
        run = P._Run(P.Settings(path=path), plan(n=2, width=320, height=180), [clip, clip],
                     MemorySink(), "cuda", None)
        targets = run.frame_targets(PROMPTS)
        start = run.first()
        run.optimise(start, start, targets, 2)  # warm-up: lazy CUDA initialisation may sync
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            frame, text, stable = run.optimise(start, start, targets, 4)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert frame.shape == (1, 3, 180, 320) and float(text) > 0


def test_compile_setting_passes_the_perceptor_through_torch_compile(clip, monkeypatch):
    from engines.guidance import clip_guide

    compiled = []

    def fake_compile(fn, mode=None):
        compiled.append((fn.__name__, mode))
        return fn

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(clip_guide, "_COMPILED", {})
    render(clip, plan(n=1), compile="reduce-overhead")
    assert compiled == [("_encode_image", "reduce-overhead")]
    compiled.clear()
    render(clip, plan(n=1), compile="reduce-overhead", path="reference")
    assert compiled == []
    assert (P.Settings().compile, P.Settings().auto_fit) == ("none", False)


def test_memory_step_runs_one_iteration_per_perceptor_on_meta_copies(clip, monkeypatch):
    from engines.frames import memory

    pr = memory.MemoryTracer(P, P.Settings(), {"clip": (clip, clip)}, "cpu")
    used = []
    real = P._Run._encode
    monkeypatch.setattr(P._Run, "_encode", lambda self, pi, v: used.append(pi) or real(
        self, pi, v))
    with memory.live_bytes() as m:
        P.memory_step(P.Settings(), 96, 64, pr.meta, device="meta")
    assert used == [0, 1] and m.peak > 0


# ------------------------------------------------------------------------- the paper profile
def test_profiles_fill_every_null_setting():
    paper = P.Settings().resolved()
    # the authors' published settings (text2video.py: fast mode lr .17, 10 iterations, first
    # frame 50, temperature halved, squish noise std 1, carry-over at iteration 9; clip_loss.py:
    # perspective 0.5 then a 0.7-0.999 resized crop)
    assert (paper.lr, paper.iterations_per_frame, paper.first_frame_iterations) == (0.17, 10, 50)
    assert (paper.temperature_scale, paper.noise, paper.noise_scale) == (0.5, "squish", 1.0)
    assert (paper.views, paper.stability_every, paper.carry_over_iteration) == ("sum", 4, 9)
    assert (paper.clamp, paper.augment, paper.perspective) == (False, "perspective_crop", 0.5)
    assert paper.fade == 2
    ours = P.Settings(profile="promptreel", iterations_per_frame=7).resolved()
    assert (ours.lr, ours.first_frame_iterations, ours.noise, ours.noise_scale) == \
        (0.03, 7, "add", 0.025)
    assert (ours.views, ours.stability_every, ours.clamp, ours.fade) == ("mean", 1, True, 1)
    assert P.Settings(lr=0.5).resolved().lr == 0.5  # a value given wins over the profile


def test_squish_noise_divides_the_frame_then_adds_noise(clip):
    # the authors' alter_z_noise: z / squish + N(0, noise_std). T = 30, halved (fast mode) to 15:
    # squish = 2 + 4 * 15 / 100 = 2.6, stability weight 4 - 4 * 15 / 100 = 3.4
    run = P._Run(P.Settings(noise_scale=0.0), plan(n=2), [clip], None, "cpu", None)
    assert (run.squish, run.w_c) == (pytest.approx(2.6), pytest.approx(3.4))
    prev = torch.rand(1, 3, 36, 64, generator=torch.Generator().manual_seed(0))
    start, ref = run.next_start(prev, plan(n=2).frames[1])
    assert torch.allclose(start, prev / 2.6) and torch.equal(ref, prev)
    run = P._Run(P.Settings(), plan(n=2), [clip], None, "cpu", None)
    start, _ = run.next_start(prev, plan(n=2).frames[1])
    noise = start - prev / 2.6
    assert 0.8 < float(noise.std()) < 1.2  # std 1, not clamped to 0..1
    assert float(start.min()) < 0 < 1 < float(start.max())


def test_summed_views_are_n_times_the_mean(clip):
    targets_of = lambda run: run.frame_targets(PROMPTS)  # noqa: E731
    frame = torch.rand(1, 3, 36, 64, generator=torch.Generator().manual_seed(1))
    losses = {}
    for views in ("sum", "mean"):
        run = P._Run(P.Settings(views=views), plan(n=1), [clip], None, "cpu", None)
        losses[views] = float(run.text_loss(frame, targets_of(run)))
    assert losses["sum"] == pytest.approx(4 * losses["mean"], rel=1e-5)


def test_perspective_crop_views():
    g, d = torch.Generator().manual_seed(0), torch.Generator().manual_seed(1)
    black = torch.zeros(1, 3, 36, 64)
    views = pixel_views.perspective_crop(black, 32, 4, (0.7, 0.999), 0.5, g, d)
    assert views.shape == (4, 3, 32, 32)
    assert float(views.max()) > 0.5  # the perspective brings white fill into view
    # no distortion, the whole square frame: the frame itself
    img = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    same = pixel_views.perspective_crop(img, 32, 1, (1.0, 1.0), 0.0, g, d)
    assert torch.allclose(same, img, atol=1e-5)
    # torchvision's window rule: area fraction in the range, aspect 3/4..4/3, inside the frame
    for t, left, h, w in pixel_views.resized_crop_windows(224, 398, 100, (0.7, 0.999), g):
        assert 0.69 < h * w / (224 * 398) < 1.0 and 3 / 4 - 0.02 < w / h < 4 / 3 + 0.02
        assert 0 <= t <= 224 - h and 0 <= left <= 398 - w


def test_paper_profile_renders_unclamped_with_carry_over_and_resumes(clip):
    shot = plan(n=3)
    straight = render(clip, shot, **PAPER)
    assert straight.records[2]["iterations"] == 9
    assert "carry" in straight.states[1]  # the next frame starts from iteration 2 of 3
    assert float(straight.states[1]["prev"].min()) < 0  # pixels are not clamped ...
    assert all(f.dtype == np.uint8 for f in straight.frames.values())  # ... frames are clipped
    sink = MemorySink(crash_at=2)
    with pytest.raises(KeyboardInterrupt):
        render(clip, shot, sink, **PAPER)
    sink.crash_at = None
    render(clip, shot, sink, **PAPER)
    for i in range(3):
        assert np.array_equal(straight.frames[i], sink.frames[i]), i


def test_paper_frames_per_prompt_fades_over_two_f_frames():
    shot = ShotPlan("s", 8, 8, 8.0, 0, tuple(
        FramePlan((Prompt("cat"),) if i < 2 else (Prompt("koala"),)) for i in range(6)))
    got = [[(p.text, round(p.weight, 3)) for p in ps] for ps in P.frame_prompts(shot, 2, fade=2)]
    assert got == [[("cat", 1.0)], [("cat", 0.75), ("koala", 0.25)], [("cat", 0.5), ("koala", 0.5)],
                   [("cat", 0.25), ("koala", 0.75)], [("koala", 1.0)], [("koala", 1.0)]]
