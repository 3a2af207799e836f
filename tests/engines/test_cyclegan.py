"""engines/models/cyclegan.py: the ResNet generator in the public CycleGAN checkpoint format."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from engines.core.errors import ConfigError

torch = pytest.importorskip("torch")

from engines.core.errors import PromptreelError, UnsafeCheckpointError  # noqa: E402
from engines.models import cyclegan as C  # noqa: E402
from engines.models import loaded, registry, weights  # noqa: E402

CONF = Path(__file__).resolve().parents[2] / "conf"
# The public implementation's keys for ngf=4, 2 residual blocks, instance norm (no norm params).
TINY_KEYS = ["model.1.weight", "model.1.bias", "model.4.weight", "model.4.bias",
             "model.7.weight", "model.7.bias",
             "model.10.conv_block.1.weight", "model.10.conv_block.1.bias",
             "model.10.conv_block.5.weight", "model.10.conv_block.5.bias",
             "model.11.conv_block.1.weight", "model.11.conv_block.1.bias",
             "model.11.conv_block.5.weight", "model.11.conv_block.5.bias",
             "model.12.weight", "model.12.bias", "model.15.weight", "model.15.bias",
             "model.19.weight", "model.19.bias"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    entry = registry.load_entry("cyclegan", "generated_cyclegan_tiny", CONF)
    return entry, models, loaded.load_model(entry, models)


def frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_generated_checkpoint_is_the_public_format(tiny, tmp_path):
    entry, models, model = tiny
    path = weights.prepare(entry, models) / "latest_net_G.pth"
    assert path.name == "latest_net_G.pth"
    sd = torch.load(path, map_location="cpu", weights_only=True)  # a plain state dict
    assert list(sd) == TINY_KEYS
    assert tuple(sd["model.1.weight"].shape) == (4, 3, 7, 7)
    assert tuple(sd["model.12.weight"].shape) == (16, 8, 3, 3)  # ConvTranspose2d: in, out
    assert tuple(sd["model.19.weight"].shape) == (3, 4, 7, 7)
    assert model.arch == {"input_nc": 3, "output_nc": 3, "ngf": 4, "n_blocks": 2,
                          "norm": "instance", "dropout": False}
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k
    C.build_generated(entry, tmp_path)  # same entry, same bytes
    digest = [hashlib.sha256(p.read_bytes()).hexdigest() for p in (path, tmp_path / path.name)]
    assert digest[0] == digest[1]


@pytest.mark.parametrize("arch", [
    {"ngf": 8, "n_blocks": 6, "norm": "instance", "dropout": False},
    {"ngf": 4, "n_blocks": 3, "norm": "batch", "dropout": True},
    {"ngf": 64, "n_blocks": 9, "norm": "instance", "dropout": False},
])
def test_architecture_is_read_from_the_state_dict(arch, tmp_path):
    model = C.build_generator(**arch)
    if arch["ngf"] == 64:  # the paper's generator: 11,378,179 parameters (Zhu et al.'s count)
        assert sum(p.numel() for p in model.parameters()) == 11_378_179
    torch.save(model.state_dict(), tmp_path / "g.pth")
    loaded = C.load_generator(tmp_path / "g.pth")
    assert loaded.arch == {"input_nc": 3, "output_nc": 3, **arch}
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_old_checkpoints_and_safetensors_load(tiny, tmp_path):
    from safetensors.torch import save_file

    _, _, model = tiny
    sd = dict(model.state_dict())
    old = {f"module.{k}": v for k, v in sd.items()}  # DataParallel prefix, old instance norm stats
    old["module.model.2.running_mean"] = torch.zeros(4)
    old["module.model.2.running_var"] = torch.ones(4)
    torch.save(old, tmp_path / "old.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "g.safetensors"))
    x = frames(1, 20, 24)
    want = C.refine(x, model)
    for name in ("old.pth", "g.safetensors"):
        got = C.refine(x, C.load_generator(tmp_path / name))
        assert np.array_equal(got, want), name


def test_bad_files_are_refused(tmp_path):
    with pytest.raises(PromptreelError, match="does not exist"):
        C.load_generator(tmp_path / "missing.pth")
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "other.pth")
    with pytest.raises(PromptreelError, match="not a CycleGAN"):
        C.load_generator(tmp_path / "other.pth")

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, ("echo pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(UnsafeCheckpointError):
        C.load_generator(tmp_path / "evil.pth")


@pytest.mark.parametrize("size", [(36, 64), (50, 50), (23, 37), (3, 5)])
def test_refine_keeps_the_frame_size(tiny, size):
    x = frames(3, *size)
    y = C.refine(x, tiny[2], batch=2)
    assert y.shape == x.shape and y.dtype == np.uint8
    assert np.array_equal(y, C.refine(x, tiny[2], batch=2))  # deterministic
    other = C.refine(x, tiny[2], batch=3).astype(int)  # another batch: float rounding only
    assert np.abs(other - y).max() <= 1


def test_refine_pads_by_reflection_and_crops_back(tiny):
    model = tiny[2]
    x = frames(1, 50, 50)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        ref = model(torch.nn.functional.pad(t, (0, 2, 0, 2), mode="reflect"))[:, :, :50, :50]
    ref = ((ref + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(C.refine(x, model), ref)


def test_refine_can_feed_the_pixels_in_zero_to_one_as_the_paper_authors_do(tiny):
    # their text2video.py: generate = (G(z) + 1) / 2 with z the optimised pixels (0..1), not
    # mapped to -1..1 first
    model = tiny[2]
    x = frames(1, 48, 48)
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = model(t)
    ref = ((ref + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    got = C.refine(x, model, input_range="0..1")
    assert np.array_equal(got, ref) and not np.array_equal(got, C.refine(x, model))
    with pytest.raises(ConfigError, match="input_range"):
        C.refine(x, model, input_range="0..255")


def test_refine_streams_an_iterator_of_mixed_sizes(tiny):
    a, b = frames(2, 36, 64), frames(1, 30, 30, seed=1)
    out = C.refine(iter([a[0], b[0], a[1]]), tiny[2], batch=4)
    assert not isinstance(out, np.ndarray)
    got = list(out)
    assert [g.shape for g in got] == [(36, 64, 3), (30, 30, 3), (36, 64, 3)]
    assert np.array_equal(got[2], C.refine(a, tiny[2], batch=1)[1])  # alone in its batch


def test_registry_entries_validate():
    names = registry.list_entries("cyclegan", CONF)
    assert {"generated_cyclegan_tiny", "generated_cyclegan_resnet9", "text2video_cyclegan"} \
        <= set(names)
    paper = registry.load_entry("cyclegan", "text2video_cyclegan", CONF)
    assert paper.source == "url" and paper.files[0].url.startswith("https://cmu.box.com/")
