"""Stage-level behaviour through the real command line, on the pixel engine's preset (koala_piano)
with generated tiny models: refine is an artefact like any other, the soundtrack fits the cut
(MusicGen, a user's file, none), and a missing audio file fails before anything renders."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import read_run, run_cli

KOALA = ("film=koala_piano", "debug=smoke")


def probe(path: str | Path):
    from engines.media.ffmpeg import probe as ff_probe

    return ff_probe(Path(path))


def cached(record: dict) -> dict[str, list[bool]]:
    """{task: [cached flag of each call]} from a run record."""
    out: dict[str, list[bool]] = {}
    for row in record["tasks"]:
        out.setdefault(row["task"], []).append(row["cached"])
    return out


@pytest.fixture(scope="module")
def koala(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("koala")
    run_cli(*KOALA, "film.shots.0.frames=16", "soundtrack=smoke", cache=base / "cache",
            models=models_dir, run_dir=base / "run1")
    return {"base": base, "models": models_dir, "record": read_run(base / "run1")}


def test_pixel_engine_film_has_the_planned_frames_and_audio(koala: dict) -> None:
    record = koala["record"]
    info = probe(record["video"])
    assert info.frames == record["timeline"]["total_frames"] == 16
    assert info.audio is not None
    assert abs(info.audio.duration - info.duration) < 0.05


def test_changing_refine_reruns_only_refine_and_what_follows(koala: dict) -> None:
    base = koala["base"]
    run_cli(*KOALA, "film.shots.0.frames=16", "soundtrack=smoke", "refine=nlmeans",
            cache=base / "cache", models=koala["models"], run_dir=base / "run2")
    flags = cached(read_run(base / "run2"))
    for upstream in ("plan_timeline", "generate_frames", "extract_frames", "compose_soundtrack"):
        assert all(flags[upstream]), (upstream, flags)
    for downstream in ("refine_frames", "modulate_speed", "blend_shots", "export_video"):
        assert not any(flags[downstream]), (downstream, flags)


def test_soundtrack_none_exports_no_audio_stream(koala: dict) -> None:
    base = koala["base"]
    run_cli(*KOALA, "film.shots.0.frames=16", "soundtrack=none", cache=base / "cache",
            models=koala["models"], run_dir=base / "run3")
    record = read_run(base / "run3")
    assert all(cached(record)["generate_frames"])
    info = probe(record["video"])
    assert info.audio is None and info.frames == 16


def test_a_short_user_file_fills_a_ten_second_film(koala: dict, tmp_path: Path) -> None:
    import soundfile as sf

    sr = 44100
    t = np.arange(3 * sr) / sr
    sf.write(tmp_path / "my track.wav", 0.3 * np.sin(2 * math.pi * 220 * t), sr)
    base = koala["base"]
    run_cli(*KOALA, "film.shots.0.frames=80", "soundtrack=file",
            f"soundtrack.file='{tmp_path / 'my track.wav'}'", cache=base / "cache",
            models=koala["models"], run_dir=tmp_path / "run")
    info = probe(read_run(tmp_path / "run")["video"])
    assert info.frames == 80 and abs(info.duration - 10.0) < 1e-6
    assert abs(info.audio.duration - 10.0) < 0.05


def test_missing_user_audio_file_fails_before_rendering(koala: dict, tmp_path: Path) -> None:
    proc = run_cli(*KOALA, "soundtrack=file", f"soundtrack.file={tmp_path / 'gone.wav'}",
                   cache=tmp_path / "cache", models=koala["models"], run_dir=tmp_path / "run",
                   check=False)
    assert proc.returncode == 2
    assert "soundtrack.file" in proc.stderr and "gone.wav" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "cache" / "generate_frames").exists()


@pytest.mark.slow
@pytest.mark.parametrize("frames", [20, 96, 284])  # 2.5 s, 12 s and 35.5 s at 8 fps
def test_musicgen_track_lasts_exactly_as_long_as_the_video(koala: dict, frames: int) -> None:
    base = koala["base"]
    run_dir = base / f"len{frames}"
    run_cli(*KOALA, f"film.shots.0.frames={frames}", "soundtrack=smoke", cache=base / "cache",
            models=koala["models"], run_dir=run_dir)
    info = probe(read_run(run_dir)["video"])
    assert info.frames == frames and abs(info.duration - frames / 8) < 1e-6
    assert abs(info.audio.duration - info.duration) < min(1 / 8, 0.05)
