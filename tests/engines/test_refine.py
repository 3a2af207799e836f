"""engines/post/refine.py: OpenCV denoisers, refinement settings and `refine_dir`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from pydantic import ValidationError

from engines.post import refine as D

CONF = Path(__file__).resolve().parents[2] / "conf"


def noisy_flat(h=48, w=64, std=20.0, seed=0):
    """A flat grey frame (128) plus Gaussian noise of `std` (0..255 units)."""
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(128 + rng.normal(0, std, (h, w, 3))), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("method", ["nlmeans", "bilateral"])
def test_denoisers_reduce_noise_on_a_flat_image(method):
    x = noisy_flat()
    s = D.RefineSettings(method=method)
    y = next(D.refine_frames([x], s))
    assert y.shape == x.shape and y.dtype == np.uint8
    before, after = x.astype(float).var(), y.astype(float).var()
    assert after < before / 4, (before, after)
    assert abs(y.astype(float).mean() - 128) < 3  # no brightness shift
    assert np.array_equal(y, next(D.refine_frames([x.copy()], s)))  # deterministic


def test_strength_orders_the_result():
    x = noisy_flat()
    light = D.nlmeans(x, h=5, h_color=5).astype(float).var()
    strong = D.nlmeans(x, h=15, h_color=15).astype(float).var()
    assert strong < light < x.astype(float).var()
    narrow = D.bilateral(x, 9, 10, 2).astype(float).var()
    wide = D.bilateral(x, 9, 80, 6).astype(float).var()
    assert wide < narrow


def test_mix_blends_with_the_original():
    x = noisy_flat()
    full = next(D.refine_frames([x], D.RefineSettings(method="bilateral")))
    none = next(D.refine_frames([x], D.RefineSettings(method="bilateral", mix=0.0)))
    half = next(D.refine_frames([x], D.RefineSettings(method="bilateral", mix=0.5)))
    assert np.array_equal(none, x)
    want = np.rint((full.astype(np.float32) + x.astype(np.float32)) / 2)
    assert np.abs(half.astype(float) - want).max() <= 1


def test_rejects_non_frames():
    with pytest.raises(ValueError, match="uint8"):
        D.nlmeans(np.zeros((8, 8, 3), np.float32))


def test_settings_and_yamls():
    for name in ("none", "cyclegan", "nlmeans", "bilateral"):
        raw = yaml.safe_load((CONF / "refine" / f"{name}.yaml").read_text())
        assert D.RefineSettings(**raw).method == name
    with pytest.raises(ValidationError):
        D.RefineSettings(method="sharpen")
    with pytest.raises(ValidationError):
        D.RefineSettings(method="nlmeans", nlmeans_template=6)
    with pytest.raises(ValidationError):
        D.RefineSettings(strength=3)  # misspelt key


@pytest.mark.parametrize("method", ["none", "nlmeans", "bilateral", "cyclegan"])
def test_refine_dir_writes_every_frame_at_its_size(method, tmp_path):
    from engines.models import registry, weights
    from engines.models.registry import Prepared

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        Image.fromarray(noisy_flat(36, 50, seed=i)).save(src / f"{i:06d}.png")
    entry = registry.load_entry("cyclegan", "generated_cyclegan_tiny", CONF)
    s = D.RefineSettings(method=method, batch=2)
    model = Prepared(entry, str(weights.prepare(entry, tmp_path / "models")))
    n = D.refine_dir(src, tmp_path / "out", s, model=model)
    assert n == 3
    outs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.name for p in outs] == ["000000.png", "000001.png", "000002.png"]
    for p in outs:
        arr = np.asarray(Image.open(p))
        assert arr.shape == (36, 50, 3)
        same = np.array_equal(arr, np.asarray(Image.open(src / p.name)))
        assert same == (method == "none")


def test_refine_dir_uses_a_user_checkpoint(tmp_path):
    from engines.models import cyclegan, registry
    from engines.models.registry import Prepared

    entry = registry.load_entry("cyclegan", "generated_cyclegan_tiny", CONF)
    cyclegan.build_generated(entry, tmp_path)  # a latest_net_G.pth the user points at
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(noisy_flat(20, 20)).save(src / "000000.png")
    s = D.RefineSettings(method="cyclegan", model="text2video_cyclegan",
                         checkpoint=str(tmp_path / "latest_net_G.pth"))
    paper = registry.load_entry("cyclegan", "text2video_cyclegan", CONF)  # not downloaded
    missing = Prepared(paper, str(tmp_path / "m"))  # never loaded: the checkpoint wins
    assert D.refine_dir(src, tmp_path / "out", s, model=missing) == 1
