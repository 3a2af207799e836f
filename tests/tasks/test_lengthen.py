"""Lengthening a shot goes on from its shorter render (tasks/generate_frames.py), and an
open-ended shot stopped by the user commits the frames it has (tasks/stop.py), through the
generate_frames task's own code (called without Prefect) on tiny generated models."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from engines.frames import vqgan_clip as V  # noqa: E402
from engines.models.registry import Prepared, load_entry  # noqa: E402
from engines.models.weights import prepare  # noqa: E402
from engines.planning.plan import FramePlan, ShotPlan  # noqa: E402
from engines.planning.prompts import Prompt  # noqa: E402
from tasks import generate_frames as gf  # noqa: E402
from tasks import stop  # noqa: E402
from tasks.runtime import Runtime  # noqa: E402
from tests.helpers import ROOT  # noqa: E402

W, H = 32, 32  # pixels: one f16 latent of 2x2


def plan(n: int) -> ShotPlan:
    frames = tuple(FramePlan((Prompt("a red flower"),), zoom=1.05, angle=2.0 + 0.1 * i,
                             translation_x=1.0) for i in range(n))
    return ShotPlan("grow", W, H, 8.0, 5, frames, border="replicate")


def call(p: ShotPlan, settings: V.Settings, cache: Path, models_dir: Path):
    conf = ROOT / "conf"
    models = {kind: tuple(Prepared(e, str(prepare(e, models_dir, download=False)))
                          for e in entries)
              for kind, entries in {"vqgan": (load_entry("vqgan", "generated_vqgan_f16_tiny", conf),),
                                    "clip": (load_entry("clip", "generated_clip_tiny", conf),)}.items()}
    runtime = Runtime(device="cpu", cache_dir=cache, models_dir=models_dir, run_dir=cache / "run")
    return gf.generate_frames.fn(plan=p, engine=settings, models=models, runtime=runtime)


def frames(art) -> list[bytes]:
    return [f.read_bytes() for f in sorted(Path(art.path, "frames").glob("*.png"))]


def seconds(art) -> list[str]:
    with open(Path(art.path, "frames.csv")) as f:
        return [row["seconds"] for row in csv.DictReader(f)]


SETTINGS = V.Settings(mode="animate_2d", steps_per_frame=1, cutn=2, augments=())


@pytest.mark.slow
def test_lengthening_a_shot_renders_only_the_new_frames(tmp_path, models_dir):
    short = call(plan(12), SETTINGS, tmp_path / "cache", models_dir)
    long = call(plan(24), SETTINGS, tmp_path / "cache", models_dir)
    assert long.meta["n_frames"] == 24
    # the first 12 frames are the short render's bytes, taken (hard-linked) from it...
    assert frames(long)[:12] == frames(short)
    first = Path(long.path, "frames", "000000.png")
    assert first.stat().st_ino == Path(short.path, "frames", "000000.png").stat().st_ino
    # ... not rendered again: their per-frame records (wall time) are the short render's
    assert seconds(long)[:12] == seconds(short)
    # and the whole shot is what a render of 24 frames from scratch makes
    scratch = call(plan(24), SETTINGS, tmp_path / "other cache", models_dir)
    assert frames(scratch) == frames(long)


def test_no_prefix_reuse_when_frames_depend_on_the_shot_length(tmp_path, models_dir):
    decay = SETTINGS.model_copy(update={"init_weight": 1.0, "init_mode": "decay"})
    assert V.depends_on_length(decay) == "init_mode decay spreads init_weight over the whole shot"
    assert V.depends_on_length(SETTINGS) is None
    cache = tmp_path / "cache"
    short = call(plan(2), decay, cache, models_dir)
    long = call(plan(3), decay, cache, models_dir)  # rendered from frame 0: nothing linked
    assert long.meta["n_frames"] == 3
    assert Path(long.path, "frames", "000000.png").stat().st_nlink == 1
    assert Path(short.path, "frames", "000000.png").stat().st_nlink == 1


def test_a_stopped_open_ended_shot_commits_its_frames(tmp_path, models_dir, monkeypatch):
    open_settings = SETTINGS.model_copy(update={"max_iterations": -1})
    commits = []
    real = gf.DirectorySink.commit

    def commit(self, index, image, state, record):
        if index == 2:  # as the SIGINT handler does, while frame 2 is being made
            stop.request_stop()
        commits.append(index)
        real(self, index, image, state, record)  # raises ShotStopped once frame 2 is durable

    monkeypatch.setattr(gf.DirectorySink, "commit", commit)
    art = call(plan(50), open_settings, tmp_path / "cache", models_dir)
    assert art.meta["n_frames"] == 3 and len(frames(art)) == 3
    assert commits == [0, 1, 2]  # the stop falls after frame 2's commit: nothing more rendered
    assert not stop.active() and not stop.requested()
    # the artefact is the one of the plan cut to 3 frames; the 50-frame work dir stays, to go on
    work = list((tmp_path / "cache" / "generate_frames").glob("*.work"))
    assert len(work) == 1 and len(list((work[0] / "frames").glob("*.png"))) == 3
    # a stop file newer than the shot stops it too; an older one does not
    cache = tmp_path / "cache2"
    stop.write_stop_file(cache)
    watch = stop.Watch(cache)
    with watch:
        assert not watch()
        stop.write_stop_file(cache)
        assert watch()
