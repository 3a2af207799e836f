"""ffmpeg editing: exact frame counts for speed modulation and shot blending, every export preset
decoded and checked against the plan, audio/video agreement, metadata, atomic export."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

from engines.core.errors import ConfigError, PromptreelError
from engines.media.editing import (
    ExportSettings,
    as_rate,
    blend_shots,
    contact_sheet,
    encode_intermediate,
    encode_preview,
    export,
    modulate_speed,
)
from engines.media.ffmpeg import ffmpeg_exe, probe, run_argv
from engines.planning.joins import TRANSITIONS, Transition, planned_total
from engines.planning.speed import SpeedSettings, planned_frames, source_positions

ROOT = Path(__file__).resolve().parents[2]
FPS = 24


def write_frames(d: Path, n: int, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    """A moving RGB gradient, frame i shifted by 3 px per frame."""
    d.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:h, 0:w]
    for i in range(n):
        img = np.stack([(x * 4 + i * 3 + seed) % 256, (y * 5 + i * 2) % 256,
                        (x + y + i * 7 + 3 * seed) % 256], -1).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i:06d}.png")
    return d


def write_flat(d: Path, values: list[int], w: int = 32, h: int = 24) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(values):
        Image.fromarray(np.full((h, w, 3), v, np.uint8)).save(d / f"{i:06d}.png")
    return d


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def load_preset(name: str) -> ExportSettings:
    return ExportSettings.model_validate(yaml.safe_load((ROOT / f"conf/export/{name}.yaml").read_text()))


@pytest.fixture(scope="module")
def frames(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_frames(tmp_path_factory.mktemp("frames") / "frames", 48)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory, frames: Path) -> Path:
    out = tmp_path_factory.mktemp("film") / "film.mkv"
    assert encode_intermediate(frames, FPS, out) == 48
    return out


# ---------------------------------------------------------------- intermediates
def test_intermediate_is_lossless_and_deterministic(frames: Path, film: Path, tmp_path: Path) -> None:
    info = probe(film)
    assert (info.codec, info.frames, info.width, info.height, info.fps) == ("ffv1", 48, 64, 48, 24)
    got = decode(film)
    for i in (0, 17, 47):
        assert np.array_equal(got[i], np.asarray(Image.open(frames / f"{i:06d}.png")))
    again = tmp_path / "again.mkv"
    encode_intermediate(frames, FPS, again)
    assert again.read_bytes() == film.read_bytes()
    assert not list(tmp_path.glob("*.part"))


def test_as_rate() -> None:
    assert as_rate(24) == 24 and as_rate(12.5) == Fraction(25, 2)
    assert as_rate(23.976) == Fraction(24000, 1001) and as_rate(29.97) == Fraction(30000, 1001)


# ---------------------------------------------------------------- speed: 12 exact counts
CASES = {"half": {"factor": 0.5}, "double": {"factor": 2.0}, "x0.37": {"factor": 0.37},
         "ramp": {"curve": "0:(1.0), 47:(0.25)"}}


@pytest.mark.parametrize("method", ["hold", "blend", "interpolate"])
@pytest.mark.parametrize("case", list(CASES))
def test_speed_count_is_exact(frames: Path, tmp_path: Path, case: str, method: str) -> None:
    s = SpeedSettings(**CASES[case], method=method)
    planned = planned_frames(48, s, FPS)
    assert planned == {"half": 96, "double": 24, "x0.37": 130, "ramp": 89}[case]
    n = modulate_speed(frames, 48, FPS, s, tmp_path / "shot.mkv")
    info = probe(tmp_path / "shot.mkv")
    assert n == info.frames == planned
    assert info.fps == FPS and (info.width, info.height) == (64, 48)


def test_hold_repeats_source_frames_losslessly(frames: Path, film: Path, tmp_path: Path) -> None:
    s = SpeedSettings(factor=0.37, method="hold")
    modulate_speed(film, 48, FPS, s, tmp_path / "held.mkv")  # from a video this time
    got = decode(tmp_path / "held.mkv")
    src = decode(film)
    idx = [int(p + 1e-9) for p in source_positions(48, s, FPS)]
    assert all(np.array_equal(g, src[i]) for g, i in zip(got, idx, strict=True))


@pytest.mark.parametrize("method", ["blend", "interpolate"])
def test_blend_mixes_neighbours_at_fractional_positions(tmp_path: Path, method: str) -> None:
    values = [i * 5 for i in range(48)]
    src = write_flat(tmp_path / "flat", values)
    s = SpeedSettings(factor=0.37, method=method)
    modulate_speed(src, 48, FPS, s, tmp_path / "b.mkv")
    got = [int(f[0, 0, 0]) for f in decode(tmp_path / "b.mkv")]
    want = [5 * p for p in source_positions(48, s, FPS)]  # linear mix of the two neighbours
    assert max(abs(g - w) for g, w in zip(got, want, strict=True)) <= 2
    assert got[-1] == 235  # the tail holds the last frame


def test_speed_refuses_wrong_input_count(frames: Path, tmp_path: Path) -> None:
    with pytest.raises(PromptreelError, match="has 48 frames, expected 40"):
        modulate_speed(frames, 40, FPS, SpeedSettings(factor=2.0), tmp_path / "x.mkv")


# ---------------------------------------------------------------- blending shots
def test_one_second_crossfade_shortens_by_one_second(tmp_path: Path) -> None:
    a = tmp_path / "a.mkv"
    b = tmp_path / "b.mkv"
    encode_intermediate(write_flat(tmp_path / "fa", list(range(48))), FPS, a)
    encode_intermediate(write_flat(tmp_path / "fb", list(range(100, 160))), FPS, b)
    t = [Transition("fade", FPS)]
    assert planned_total([48, 60], t) == 48 + 60 - FPS
    n = blend_shots([a, b], FPS, t, tmp_path / "film.mkv")
    info = probe(tmp_path / "film.mkv")
    assert n == info.frames == 84
    assert info.duration == pytest.approx(84 / FPS, abs=1 / FPS)
    got = [int(f[0, 0, 0]) for f in decode(tmp_path / "film.mkv")]
    assert got[:24] == list(range(24))  # shot 1 alone
    assert got[48:] == list(range(124, 160))  # shot 2 alone, from its frame 24: aligned
    assert all(got[k] < got[k + 1] for k in range(24, 47))  # fading across


def test_cuts_and_transitions_chain(tmp_path: Path) -> None:
    shots = []
    for j, n in enumerate((20, 30, 16, 24)):
        shots.append(tmp_path / f"s{j}.mkv")
        encode_intermediate(write_frames(tmp_path / f"f{j}", n, seed=40 * j), FPS, shots[-1])
    t = [Transition("cut"), Transition("wipeleft", 10), Transition("dissolve", 16)]
    total = planned_total([20, 30, 16, 24], t)
    assert total == 20 + 30 + 16 + 24 - 26
    assert blend_shots(shots, FPS, t, tmp_path / "film.mkv") == probe(tmp_path / "film.mkv").frames
    got, s1 = decode(tmp_path / "film.mkv"), decode(shots[1])
    assert np.array_equal(got[20], s1[0]) and np.array_equal(got[39], s1[19])  # hard cut


def test_transition_validation() -> None:
    assert "circleopen" in TRANSITIONS and "slideup" in TRANSITIONS and "custom" not in TRANSITIONS
    with pytest.raises(ConfigError, match="transition.kind"):
        Transition("spin", 4)
    with pytest.raises(ConfigError, match="transitions.0.frames"):
        planned_total([10, 5], [Transition("fade", 6)])
    assert planned_total([10, 5], [Transition("cut", 6)]) == 15
    assert planned_total([7], []) == 7


def test_transitions_list_matches_the_bundled_ffmpeg() -> None:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-h", "filter=xfade"], capture_output=True,
                         text=True, check=True).stdout
    listed = {line.split()[0] for line in out.splitlines()
              if line.startswith("     ") and "transition" in line and "..FV" in line}
    assert TRANSITIONS == listed - {"custom"}


# ---------------------------------------------------------------- export
@pytest.fixture(scope="module")
def wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2.3 s of tone at 32 kHz mono (longer than the 2 s film: export trims it)."""
    path = tmp_path_factory.mktemp("audio") / "soundtrack.wav"
    t = np.arange(int(32000 * 2.3)) / 32000
    sf.write(path, 0.3 * np.sin(2 * np.pi * 440 * t), 32000)
    return path


EXPECT = {"h264": ("h264", "yuv420p", "mp4", "aac"), "h265": ("hevc", "yuv420p", "mp4", "aac"),
          "vp9": ("vp9", "yuv420p", "webm", "opus"),
          "prores": ("prores", "yuv422p10le", "mov", "pcm_s16le"), "gif": ("gif", None, "gif", None)}
NASTY = "a garden %{pts} : , ; [x] 'quoted' \\ back=slash\nline two | weird:0.5"


@pytest.mark.parametrize("name", list(EXPECT))
def test_export_preset_matches_the_plan(film: Path, wav: Path, tmp_path: Path, name: str) -> None:
    preset = load_preset(name)
    codec, pix_fmt, suffix, acodec = EXPECT[name]
    out = tmp_path / f"film.{preset.container}"
    meta = {"title": "Klee garden", "comment": NASTY, "promptreel_key": "0123abcd"}
    info = export(film, wav, out, preset, fps=FPS, size=(96, 64), metadata=meta,
                  poster_path=tmp_path / "poster.png")
    assert out.suffix == f".{suffix}" and info.path == out and out.exists()
    again = probe(out)
    assert again == info
    assert info.codec == codec and info.frames == 48 and (info.width, info.height) == (96, 64)
    assert info.pix_fmt == pix_fmt or pix_fmt is None
    assert info.fps == FPS
    assert info.duration == pytest.approx(2.0, abs=1 / FPS)
    if acodec is None:
        assert info.audio is None
    else:
        assert info.audio.codec == acodec and info.audio.sample_rate == 48000
        assert abs(info.audio.duration - info.duration) <= 1 / FPS
    if name != "gif":  # GIF has no metadata
        assert {k: info.metadata[k] for k in meta} == meta
    with Image.open(tmp_path / "poster.png") as im:
        assert im.size == (96, 64) and im.mode == "RGB"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, "poster.png"])
    rerun = tmp_path / "rerun" / out.name
    export(film, wav, rerun, preset, fps=FPS, size=(96, 64), metadata=meta, poster_path=None)
    assert rerun.read_bytes() == out.read_bytes()  # byte-identical on the same machine


def test_h265_is_tagged_hvc1(film: Path, tmp_path: Path) -> None:
    export(film, None, tmp_path / "f.mp4", load_preset("h265"), fps=FPS)
    with av.open(str(tmp_path / "f.mp4")) as c:
        assert c.streams.video[0].codec_context.codec_tag == "hvc1"


@pytest.mark.parametrize("seconds", [0.7, 5.0])
def test_audio_is_padded_or_trimmed_to_the_video(film: Path, tmp_path: Path, seconds: float) -> None:
    path = tmp_path / "a.wav"
    sf.write(path, np.full((int(44100 * seconds), 2), 0.1), 44100)
    for name in ("h264", "vp9", "prores"):
        info = export(film, path, tmp_path / f"f.{load_preset(name).container}", load_preset(name),
                      fps=FPS)
        assert info.audio is not None and info.audio.channels == 2
        assert abs(info.audio.duration - info.duration) <= 1 / FPS, name


def test_metadata_never_reaches_the_filter_graph(film: Path, tmp_path: Path, monkeypatch) -> None:
    import engines.media.ffmpeg as ff

    seen: list[list[str]] = []
    real = ff.run_argv

    def spy(args: list[str], **kw):
        seen.append(list(args))
        return real(args, **kw)

    monkeypatch.setattr(ff, "run_argv", spy)
    for comment in ("plain", NASTY):
        export(film, None, tmp_path / "f.mp4", ExportSettings(), fps=FPS,
               metadata={"title": "t", "comment": comment, "promptreel_key": "k"})
    plain, nasty = seen  # one ffmpeg run per export (probing uses PyAV)
    graph = plain[plain.index("-filter_complex") + 1]
    assert nasty[nasty.index("-filter_complex") + 1] == graph
    assert f"comment={NASTY}" in nasty and len(nasty) == len(plain)
    assert probe(tmp_path / "f.mp4").metadata["comment"] == NASTY


def test_export_rejects_odd_sizes_for_420(film: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="export.width"):
        export(film, None, tmp_path / "f.mp4", ExportSettings(), fps=FPS, size=(97, 64))
    assert not list(tmp_path.iterdir())


def test_export_settings_validation_names_the_key() -> None:
    from pydantic import ValidationError

    cases = [({"container": "webm"}, "video_codec"), ({"crf": 70}, "crf"),
             ({"video_codec": "libx265", "pix_fmt": "rgb24"}, "pix_fmt"),
             ({"container": "gif", "video_codec": "gif", "pix_fmt": "pal8"}, "audio_codec"),
             ({"preset": "fastest"}, "preset"), ({"colour": 3}, "colour")]
    for raw, key in cases:
        with pytest.raises(ValidationError) as err:
            ExportSettings(**raw)
        assert err.value.errors()[0]["loc"] == (key,), raw


def test_export_presets_are_commented() -> None:
    for name in ("h264", "h265", "vp9", "prores", "gif"):
        path = ROOT / f"conf/export/{name}.yaml"
        assert load_preset(name).name == name
        for line in path.read_text().splitlines():
            if line and not line.startswith("#"):
                assert "  # " in line, f"{path.name}: uncommented key: {line}"


KILL_SCRIPT = """
import sys
from pathlib import Path
from engines.media.editing import ExportSettings, export
export(Path(sys.argv[1]), None, Path(sys.argv[2]), ExportSettings(preset="slow"), fps=24,
       frames=72)
"""


def test_killed_export_leaves_nothing_under_the_final_name(tmp_path: Path) -> None:
    src = tmp_path / "noise.mkv"
    run_argv([ffmpeg_exe(), "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=24:duration=3",
              "-vf", "noise=alls=40:allf=t", "-c:v", "ffv1", "-pix_fmt", "gbrp", str(src)],
             what="making test input")
    out = tmp_path / "film.mp4"
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(src), str(out)], cwd=ROOT,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    part = tmp_path / "film.mp4.part"
    deadline = time.time() + 60
    while time.time() < deadline and not (part.exists() and part.stat().st_size > 0):
        assert proc.poll() is None, proc.stderr.read().decode()
        time.sleep(0.01)
    assert part.exists(), "the export never started writing"
    assert proc.poll() is None, "the export finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.2)
    assert not out.exists()
    info = export(src, None, out, ExportSettings(preset="slow"), fps=24)
    assert info.frames == 72 and info.codec == "h264" and not part.exists()


# ---------------------------------------------------------------- review outputs
def test_contact_sheet_grid(tmp_path: Path) -> None:
    src = write_flat(tmp_path / "f", [20 * i for i in range(10)], w=40, h=30)
    out = contact_sheet(src, tmp_path / "sheet.png", columns=4, thumb_width=20, padding=2)
    with Image.open(out) as im:
        a = np.asarray(im.convert("RGB"))
    assert a.shape == (2 + 3 * 15 + 2 * 2 + 2, 2 + 4 * 20 + 3 * 2 + 2, 3)  # 4x3 tiles of 20x15
    assert int(a[2 + 7, 2 + 22 + 10, 0]) == 20  # second thumbnail is frame 1
    assert int(a[2 + 2 * 17 + 7, 2 + 22 + 10, 0]) == 180  # row 3, column 2: frame 9
    every = contact_sheet(src, tmp_path / "s2.png", columns=2, thumb_width=20, max_rows=2)
    with Image.open(every) as im:
        assert im.size == (2 + 2 * 20 + 2 + 2, 2 + 2 * 15 + 2 + 2)  # every 3rd frame, 2x2


def test_preview_pads_odd_sizes(tmp_path: Path) -> None:
    src = write_frames(tmp_path / "f", 12, w=63, h=47)
    assert encode_preview(src, 8, tmp_path / "cut.mp4") == 12
    info = probe(tmp_path / "cut.mp4")
    assert (info.codec, info.frames, info.width, info.height, info.fps) == ("h264", 12, 64, 48, 8)
