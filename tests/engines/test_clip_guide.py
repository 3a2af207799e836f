"""engines/guidance/clip_guide.py on CPU with the generated tiny CLIP (random weights, real format)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engines.core.errors import ConfigError  # noqa: E402
from engines.guidance.clip_guide import (  # noqa: E402
    Guide,
    clamp_with_grad,
    clip_similarity,
    embed_images,
    embed_texts,
    spherical_dist_loss,
)
from engines.guidance.cutouts import AUGMENTS, Cutouts, check_augments  # noqa: E402
from engines.planning.prompts import Prompt  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"
FAST_REF_RTOL = 1e-5  # fast (batched) vs reference (one by one) path on CPU, fp32


def tiny_clip(models_dir: Path):
    """The registry's generated_clip_tiny, loaded through engines/models/clip.py like real weights."""
    from engines.models import loaded, registry

    return loaded.load_model(registry.load_entry("clip", "generated_clip_tiny", CONF),
                               models_dir, "cpu")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return tiny_clip(tmp_path_factory.mktemp("models"))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def image(h: int = 48, w: int = 80, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=gen(seed))


# ---------------------------------------------------------------------------- cutouts
def test_cutouts_shape_and_determinism():
    cut = Cutouts(32, 5, 1.0, AUGMENTS)
    img = image()
    a = cut(img, gen(1), gen(2))
    b = cut(img, gen(1), gen(2))
    c = cut(img, gen(3), gen(2))
    assert a.shape == (5, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_cutout_sizes_follow_cut_pow():
    # sizes lie between min(side, cut_size) and the shorter side; cut_pow > 1 favours small ones
    small = Cutouts(16, 200, 3.0, ()).windows(48, 80, gen(0))
    large = Cutouts(16, 200, 0.3, ()).windows(48, 80, gen(0))
    for size, top, left in small + large:
        assert 16 <= size <= 48 and 0 <= top <= 48 - size and 0 <= left <= 80 - size
    mean = lambda ws: sum(s for s, _, _ in ws) / len(ws)  # noqa: E731
    assert mean(small) < 16 + 0.3 * 32 < mean(large)


def test_cutout_of_an_image_at_cut_size_is_the_image_without_augments():
    img = image(32, 32)
    out = Cutouts(32, 3, 1.0, ())(img, gen(0), gen(0))
    assert torch.equal(out, img.expand(3, 3, 32, 32))


def test_flip_is_an_exact_mirror():
    img = image(32, 32)
    out = Cutouts(32, 8, 1.0, ("flip",))(img, gen(0), gen(0))
    flipped = img.flip(3)[0]
    kinds = []
    for c in out:
        if (c - img[0]).abs().max() < 1e-5:
            kinds.append("same")
        elif (c - flipped).abs().max() < 1e-5:
            kinds.append("flip")
    assert len(kinds) == 8 and set(kinds) == {"same", "flip"}


@pytest.mark.parametrize("name", [a for a in AUGMENTS if a != "flip"])
def test_each_augment_changes_cutouts_and_stays_finite(name):
    img = image(32, 32)
    out = Cutouts(32, 8, 1.0, (name,))(img, gen(0), gen(0))
    assert torch.isfinite(out).all()
    assert (out - img).abs().amax(dim=(1, 2, 3)).max() > 1e-3


def test_unknown_augment_names_the_key():
    with pytest.raises(ConfigError, match="engine.augments.*'blur'"):
        check_augments(("flip", "blur"), key="engine.augments")


# ------------------------------------------------------------------------------ maths
def test_spherical_distance_golden_values():
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    y = torch.tensor([[3.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    expected = torch.tensor([0.0, math.pi ** 2 / 8, math.pi ** 2 / 2])
    assert torch.allclose(spherical_dist_loss(x, y), expected, atol=1e-6)


def test_clamp_with_grad_lets_gradients_pull_values_back_inside():
    x = torch.tensor([-0.5, 0.5, 1.5], requires_grad=True)
    y = clamp_with_grad(x, 0.0, 1.0)
    assert y.tolist() == [0.0, 0.5, 1.0]
    # loss = -sum(y): gradient -1 pushes up; the value above 1 would go further out: blocked
    (-y.sum()).backward()
    assert x.grad.tolist() == [-1.0, -1.0, 0.0]


# ------------------------------------------------------------------------------ guide
def make_guide(clip, path="fast", augments=AUGMENTS, seed=0, cutn=4):
    return Guide([(clip, 1.0)], cutn=cutn, cut_pow=1.0, augments=augments, generator=gen(seed),
                 path=path, device="cpu")


def test_fast_and_reference_paths_agree(clip):
    prompts = [Prompt("a red flower"), Prompt("blurry", -0.4)]
    results = []
    for path in ("fast", "reference"):
        g = make_guide(clip, path)
        g.set_prompts(prompts, noise_prompts=[(5, 0.3)])
        img = image().requires_grad_(True)
        total, per = g.loss(img, 0)
        total.backward()
        results.append((total.detach(), per, img.grad))
    (t1, p1, g1), (t2, p2, g2) = results
    assert torch.allclose(t1, t2, rtol=FAST_REF_RTOL, atol=1e-7)
    assert p1.keys() == p2.keys() == {"a red flower", "blurry", "noise:5"}
    assert torch.allclose(g1, g2, rtol=1e-4, atol=1e-7)


def test_per_prompt_shares_sum_to_the_total_and_sign_follows_weight(clip):
    g = make_guide(clip)
    g.set_prompts([Prompt("a red flower", 2.0), Prompt("blurry", -0.5)])
    total, per = g.loss(image(), 0)
    assert math.isclose(float(total), float(sum(per.values())), rel_tol=1e-6)
    assert float(per["a red flower"]) > 0 > float(per["blurry"])


def test_stop_cuts_the_gradient_but_keeps_the_value(clip):
    img = image()
    values, grads = [], []
    for stop in (-math.inf, 10.0):  # 10 is above any spherical distance: always stopped
        g = make_guide(clip)
        g.set_prompts([Prompt("a red flower", 1.0, stop)])
        x = img.clone().requires_grad_(True)
        total, _ = g.loss(x, 0)
        total.backward()
        values.append(float(total.detach()))
        grads.append(x.grad.abs().sum())
    assert values[0] == values[1]
    assert grads[0] > 0 and grads[1] == 0


def test_rng_state_round_trip_repeats_the_loss(clip):
    g = make_guide(clip)
    g.set_prompts([Prompt("a red flower")])
    saved = {k: v.clone() for k, v in g.rng_state().items()}
    assert all(v.dtype == torch.uint8 for v in saved.values())
    first = float(g.loss(image(), 0)[0])
    second = float(g.loss(image(), 1)[0])
    g.set_rng_state(saved)
    assert float(g.loss(image(), 0)[0]) == first != second


def test_text_embeddings_are_cached_by_text(clip, monkeypatch):
    calls = []
    real = clip.model.encode_text
    monkeypatch.setattr(clip.model, "encode_text", lambda t: calls.append(1) or real(t))
    g = make_guide(clip)
    for w in (1.0, 0.5, 0.25):  # a cross-fade: same text, new weight every frame
        g.set_prompts([Prompt("a red flower", w)])
    g.set_prompts([Prompt("a red flower"), Prompt("a moon")])
    assert len(calls) == 2


def pixel_descent(clip, weight: float, steps: int = 10) -> tuple[float, float, list[float]]:
    """Optimise pixels toward (weight > 0) or away from a prompt; CLIP similarity before/after
    and the loss per step. A 64 px image with the 64 px tiny CLIP: every cutout is the image."""
    assert clip.image_size == 64
    g = make_guide(clip, augments=())
    g.set_prompts([Prompt("a red flower", weight)])
    x = image(64, 64).requires_grad_(True)
    before = clip_similarity(clip, x.detach(), ["a red flower"])[0]
    opt = torch.optim.Adam([x], lr=0.02)
    losses = []
    for i in range(steps):
        opt.zero_grad()
        loss, _ = g.loss(x, i)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return before, clip_similarity(clip, x.detach(), ["a red flower"])[0], losses


def test_loss_decreases_and_negative_weight_pushes_away(clip):
    before, toward, losses = pixel_descent(clip, 1.0)
    before2, away, _ = pixel_descent(clip, -1.0)
    assert before == before2
    assert losses[-1] < losses[0]
    assert toward > before > away


def test_image_prompt_tensor_and_clip_similarity(clip):
    img = image(40, 60)
    g = make_guide(clip)
    g.set_prompts([], image_prompts=[(img, 1.0, -math.inf)])
    total, per = g.loss(img, 0)
    assert list(per) == [k for k in per if k.startswith("image:")] and len(per) == 1
    sims = clip_similarity(clip, img, ["a red flower", "a moon"])
    emb_i = torch.nn.functional.normalize(embed_images(clip, img), dim=-1)
    emb_t = torch.nn.functional.normalize(embed_texts(clip, ["a red flower", "a moon"]), dim=-1)
    assert sims == pytest.approx((emb_t @ emb_i[0]).tolist(), abs=1e-6)
    assert all(-1 <= s <= 1 for s in sims)
    assert clip_similarity(clip, img, []) == []


def test_noise_prompts_are_deterministic(clip):
    totals = []
    for _ in range(2):
        g = make_guide(clip)
        g.set_prompts([], noise_prompts=[(7, 1.0)])
        totals.append(float(g.loss(image(), 0)[0]))
    assert totals[0] == totals[1] > 0


def test_guide_rejects_a_bad_path(clip):
    with pytest.raises(ConfigError, match="path"):
        Guide([(clip, 1.0)], generator=gen(), path="turbo")


def test_guide_runs_on_meta_copies_for_memory_probes(clip):
    from engines.frames import memory, pixel_clip

    meta = memory.MemoryTracer(pixel_clip, pixel_clip.Settings(), {"clip": (clip,)},
                         "cpu").meta["clip"][0]
    g = Guide([(meta, 1.0)], cutn=4, generator=gen(0), device="meta")
    g.set_prompts([Prompt("a red flower")])
    total, _ = g.loss(torch.empty(1, 3, 48, 80, device="meta", requires_grad=True), 0)
    assert total.device.type == "meta" and g.device_generator.device.type == "cpu"


def test_compiled_and_autocast_helpers():
    from engines.guidance.clip_guide import autocast, compiled

    def fn(module, x):
        return x

    assert compiled(fn, "none") is fn
    with pytest.raises(ConfigError, match="engine.compile"):
        compiled(fn, "turbo")
    with autocast("cpu", False):
        assert not torch.is_autocast_enabled("cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16), autocast("cpu", True):
        assert torch.is_autocast_enabled("cpu")  # fast on a CPU keeps the caller's context


def test_image_prompts_embed_augmented_cutouts_of_the_whole_image(clip):
    # The VQGAN+CLIP notebook: the target image resized to the frame's area (aspect kept), then
    # make_cutouts -> one embedding per cutout; the prompt's distance averages every pair. A
    # centre crop (CLIP's own preprocessing) of a 16:9 image never sees its sides.
    from engines.guidance.clip_guide import area_fit

    assert area_fit((1600, 900), (64, 64)) == (85, 48)  # sqrt(4096 * 16/9), sqrt(4096 * 9/16)
    assert area_fit((32, 18), (640, 360)) == (32, 18)  # never larger than the image itself
    wide = image(36, 64, seed=5)
    sides = wide.clone()
    sides[..., :, :10] = 1.0  # change only the left side, outside the centre 36x36 square
    g = make_guide(clip)
    g.frame_size = (64, 36)
    a, b = g.image_embedding(0, wide), g.image_embedding(0, sides)
    assert a.shape == (g.cutouts[0].cutn, clip_embed_dim(clip))
    assert torch.equal(a, g.image_embedding(0, wide))  # its own generator: the same every time
    assert not torch.allclose(a, b)  # the sides count
    crop_a, crop_b = embed_images(clip, wide), embed_images(clip, sides)
    assert torch.allclose(crop_a, crop_b)  # ... where a centre crop loses them


def clip_embed_dim(clip) -> int:
    return int(embed_texts(clip, ["x"]).shape[-1])


def test_pooling_cutouts_are_the_whole_image_pooled():
    # the notebook's (and nerdyrodent's `latest`) cutouts: (adaptive avg pool + adaptive max
    # pool) / 2 of the whole image to the cut size, the same for every cutout before its
    # augmentations. 64x32 -> 32x32: each output pixel pools a 1x2 block (rows 1, columns 2).
    img = image(32, 64)
    cuts = Cutouts(32, 3, 1.0, (), method="pooling")(img, gen(1), gen(2))
    pairs = img.view(1, 3, 32, 32, 2)
    want = (pairs.mean(-1) + pairs.amax(-1)) / 2
    assert cuts.shape == (3, 3, 32, 32)
    assert all(torch.allclose(cuts[i], want[0], atol=1e-6) for i in range(3))
    with pytest.raises(ConfigError, match="cut_method"):
        Cutouts(32, 3, method="tiles")


def test_nerdyrodent_augment_codes_are_deterministic_and_not_mixed():
    from engines.guidance.cutouts import NERDY_DEFAULT, check_augments

    cut = Cutouts(32, 4, 1.0, NERDY_DEFAULT)
    a, b = cut(image(), gen(1), gen(2)), cut(image(), gen(1), gen(2))
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a, cut(image(), gen(3), gen(2)))
    with pytest.raises(ConfigError, match="not both"):
        check_augments(["flip", "Af"])
    with pytest.raises(ConfigError, match="nerdyrodent"):
        check_augments(["Zz"])
