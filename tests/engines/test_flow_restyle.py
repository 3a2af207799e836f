"""Flow-guided restyling (engines/frames/flow_restyle.py, engines/frames/sd/flow.py): warping and
the forward-backward occlusion test on known flows; a still input video gives a still result;
a moving one renders; torchvision's RAFT files are checked and converted without unpickling code.

The bound for a still video: consecutive restyled frames differ by at most 1 level (of 255) in
any pixel and channel, and by at most 0.5/255 on average (in fact by nothing: every pixel is
visible and unchanged, so it keeps its restyled value)."""

from __future__ import annotations

import hashlib
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from tests.engines.sd_helpers import moving_square, render_here, write_frames

torch = pytest.importorskip("torch")
CONF = Path(__file__).resolve().parents[2] / "conf"
SETTINGS = {"model": "generated_sd15_tiny", "flow_model": "generated_raft_tiny",
            "flow_iterations": 2, "steps": 2}


def test_warp_follows_a_whole_pixel_flow_and_consistency_finds_occlusions():
    from engines.frames.sd import flow as of

    img = torch.rand(1, 3, 12, 16, dtype=torch.float64)
    shift = torch.zeros(1, 2, 12, 16, dtype=torch.float64)
    shift[:, 0] = 2.0  # pixel p shows what the other image shows at p + (2, 0)
    moved = of.warp(img, shift)
    assert torch.allclose(moved[..., :, :-2], img[..., :, 2:])
    assert of.consistent(shift, -shift).min() == 1  # there and back again
    wrong = -shift.clone()
    wrong[:, 0, :, 8:] = 9.0  # the way back disagrees on the right half
    mask = of.consistent(shift, wrong)
    assert mask[..., :, :5].min() == 1 and mask[..., :, 7:].max() == 0


def test_identical_frames_have_zero_flow(models_dir):
    from engines.frames.sd import flow as of
    from engines.models import loaded, registry

    raft = loaded.load_model(registry.load_entry("flow", "generated_raft_tiny", CONF), models_dir)
    a = torch.rand(1, 3, 48, 64)
    assert not torch.any(of.flow(raft, a, a.clone(), 2))
    f = of.flow(raft, a, torch.rand(1, 3, 48, 64), 2)  # RAFT runs (at 128 px short side)
    assert f.shape == (1, 2, 48, 64) and torch.isfinite(f).all()


def test_a_still_video_gives_a_still_result(tmp_path, models_dir):
    video = write_frames(moving_square(4, still=True), tmp_path / "still")
    frames = render_here("flow_restyle", tmp_path / "out", models_dir, {
        "frames": 4, "input_frames": str(video), "settings": SETTINGS})
    for prev, cur in pairwise(frames):
        change = np.abs(cur - prev)
        assert change.max() <= 1 and change.mean() <= 0.5
    assert np.abs(frames[0] - np.asarray(moving_square(1)[0], dtype=np.int16)).mean() > 1  # restyled


def test_a_moving_video_is_redrawn_where_it_changes(tmp_path, models_dir):
    video = write_frames(moving_square(3), tmp_path / "moving")
    frames = render_here("flow_restyle", tmp_path / "out", models_dir, {
        "frames": 3, "input_frames": str(video), "settings": SETTINGS})
    assert len(frames) == 3 and any(np.abs(b - a).max() > 0 for a, b in pairwise(frames))


def test_torchvision_weights_are_checked_and_converted(tmp_path):
    from engines.core.errors import MissingWeightsError
    from engines.models import raft, registry
    from engines.models.registry import ModelEntry

    entry = registry.load_entry("flow", "raft_small", CONF)
    assert entry.files[0].url.startswith("https://download.pytorch.org/models/raft_small")
    model = raft._builder(entry)(weights=None, progress=False)
    pth = tmp_path / "weights.pth"
    torch.save(model.state_dict(), pth)
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()
    good = pth.rename(tmp_path / f"raft_small_C_T_V2-{digest[:8]}.pth")
    fake = ModelEntry(name="raft_small", kind="flow", source="generated",
                      arch={"model": "raft_small"})
    raft.after_fetch(fake, {good.name: good})
    assert raft.load(fake, tmp_path).__class__.__name__ == "RAFT"
    bad = tmp_path / "other" / "raft_small_C_T_V2-00000000.pth"
    bad.parent.mkdir()
    bad.write_bytes(good.read_bytes())
    with pytest.raises(MissingWeightsError, match="does not start with 00000000"):
        raft.after_fetch(fake, {bad.name: bad})
