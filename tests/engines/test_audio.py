"""engines/media/audio.py: fitting a user track to the cut, fades, loudness (measured by ffmpeg),
atomic WAV writing and early, clear errors for bad user files."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from engines.core.errors import ConfigError
from engines.media import audio

SR = 32000


def sine(freq: float, seconds: float, amp: float, sr: int = SR) -> np.ndarray:
    t = np.arange(round(seconds * sr)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music_like(seconds: float, level: float, seed: int = 0) -> np.ndarray:
    """Two detuned tones plus noise, with a slow swell: a stand-in for a real track."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SR)) / SR
    x = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 331.3 * t)
    x = x * (0.6 + 0.4 * np.sin(2 * np.pi * 0.25 * t)) + 0.1 * rng.standard_normal(t.size)
    return (level * x).astype(np.float32)


def ffmpeg_encode(src: Path, dst: Path, *extra: str) -> Path:
    subprocess.run([audio.ffmpeg_exe(), "-y", "-loglevel", "error", "-i", str(src), *extra,
                    str(dst)], check=True)
    return dst


# --- fit_file ------------------------------------------------------------------------------

F, AMP = 441.3, 0.5  # 3 s of it is 1323.9 cycles: the file ends mid-cycle
STEP = 2 * np.pi * F * AMP / SR  # largest |x[i+1] - x[i]| of the sine itself (0.0433)
BOUND = 1.1 * STEP  # what a click-free loop must stay under at every sample, seams included


def test_fit_file_loops_a_short_file_without_clicks(tmp_path):
    x = sine(F, 3.0, AMP)
    sf.write(tmp_path / "s.wav", x, SR, subtype="FLOAT")
    y, sr = audio.fit_file(tmp_path / "s.wav", 10.0, crossfade_s=0.5)
    assert sr == SR and y.shape == (1, 10 * SR) and y.dtype == np.float32
    steps = np.abs(np.diff(y[0]))
    assert steps.max() < BOUND
    # loop points: every 2.5 s (3 s file minus 0.5 s cross-fade); no bump or dip there
    for k in (1, 2, 3):
        seam = k * round(2.5 * SR)
        win = y[0, seam - SR // 4: seam + SR // 4]
        assert 0.9 * AMP < np.abs(win).max() <= AMP * 1.001
    # the naive loop (np.tile) clicks: its jump at the loop point is about 7x the bound
    naive = np.tile(x, 4)[: 10 * SR]
    jump = abs(naive[3 * SR] - naive[3 * SR - 1])
    assert jump > 5 * BOUND
    assert np.abs(np.diff(naive)).max() > 5 * BOUND


def test_fit_file_trims_and_resamples(tmp_path):
    x = sine(440.0, 3.0, 0.3, sr=44100)
    sf.write(tmp_path / "s.wav", x, 44100, subtype="FLOAT")
    y, sr = audio.fit_file(tmp_path / "s.wav", 2.0)
    assert sr == 44100 and y.shape == (1, 88200)
    np.testing.assert_array_equal(y[0], x[:88200])
    y, sr = audio.fit_file(tmp_path / "s.wav", 7.3, sr=32000)
    assert sr == 32000 and y.shape == (1, round(7.3 * 32000))


@pytest.mark.parametrize("ext,extra", [("flac", ()), ("mp3", ()), ("ogg", ()),
                                       ("m4a", ("-c:a", "aac"))])
def test_fit_file_reads_compressed_formats(tmp_path, ext, extra):
    stereo = np.stack([sine(440.0, 2.0, 0.3), sine(660.0, 2.0, 0.3)], axis=1)
    sf.write(tmp_path / "s.wav", stereo, SR)
    src = ffmpeg_encode(tmp_path / "s.wav", tmp_path / f"s.{ext}", *extra)
    assert audio.check_audio_file(src, "soundtrack.file") == pytest.approx(2.0, abs=0.05)
    y, sr = audio.fit_file(src, 5.0, sr=SR)
    assert y.shape == (2, 5 * SR) and sr == SR
    rms = np.sqrt(np.mean(y[:, SR // 2: -SR // 2] ** 2, axis=1))  # a 0.3 sine: 0.212
    np.testing.assert_allclose(rms, 0.3 / np.sqrt(2), rtol=0.1)


# --- cross-fade, fades ---------------------------------------------------------------------

def test_crossfade_keeps_power_for_uncorrelated_and_gain_for_identical_material():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 1, 64000)).astype(np.float32)
    mixed = audio.crossfade(a, b)[0].astype(np.float64)
    blocks = (mixed.reshape(16, -1) ** 2).mean(axis=1)
    assert blocks.min() > 0.85 and blocks.max() < 1.15  # equal power: no dip in the middle
    same = audio.crossfade(a, a.copy())
    np.testing.assert_allclose(same, a, atol=1e-5)  # equal gain: no +3 dB bump


def test_fade_shapes_and_overlong_fades():
    x = np.ones(SR, np.float32)
    y = audio.fade(x, SR, 0.25, 0.5)
    assert y.shape == x.shape and y[0] < 1e-4 and y[-1] < 1e-4
    assert np.all(np.diff(y[: SR // 4]) >= 0) and np.all(np.diff(y[-SR // 2:]) <= 0)
    np.testing.assert_array_equal(y[SR // 4: SR // 2], 1.0)
    z = audio.fade(x, SR, 1.0, 1.0)  # longer than the audio: both halve, meet in the middle
    assert z[SR // 2 - 1] == pytest.approx(1.0, abs=1e-3) and z.max() <= 1.0
    with pytest.raises(ConfigError):
        audio.fade(x, SR, -1.0, 0.0)


def test_remove_dc():
    x = music_like(2.0, 0.1) + 0.2
    y = audio.remove_dc(x, SR)
    assert abs(float(y.mean())) < 1e-3 and abs(float(x.mean()) - 0.2) < 1e-2


# --- loudness ------------------------------------------------------------------------------

def test_measure_loudness_golden_sine(tmp_path):
    # BS.1770: a 1 kHz mono sine of amplitude 0.5 reads -9.0 LUFS; its true peak is -6.0 dBTP
    x = sine(1000.0, 5.0, 0.5)
    loud, peak = audio.measure_loudness(x, sr=SR)
    assert loud == pytest.approx(-9.0, abs=0.15) and peak == pytest.approx(-6.0, abs=0.1)
    audio.write_wav(tmp_path / "s.wav", x, SR)
    assert audio.measure_loudness(tmp_path / "s.wav") == (loud, peak)
    assert audio.true_peak_dbtp(x) == pytest.approx(-6.0, abs=0.05)


@pytest.mark.parametrize("kind", ["quiet_music", "loud_music", "peaky"])
def test_normalise_hits_target_and_ceiling_as_ffmpeg_measures(tmp_path, kind):
    if kind == "peaky":  # quiet noise with clicks: plain gain would push peaks to +17 dBTP
        x = music_like(6.0, 0.02)
        x[::8000] = 0.9
    else:
        x = music_like(6.0, 0.05 if kind == "quiet_music" else 0.9)
    y = audio.normalise(x, SR, target_lufs=-16.0, true_peak_db=-1.0)
    assert y.shape == x.shape and y.dtype == np.float32
    path = audio.write_wav(tmp_path / "n.wav", y, SR)
    loud, peak = audio.measure_loudness(path)  # ffmpeg's ebur128, peak=true
    assert abs(loud - -16.0) <= 1.0
    assert peak <= -1.0
    assert audio.true_peak_dbtp(y) <= -1.0


def test_normalise_leaves_silence_alone():
    x = np.zeros((2, SR), np.float32)
    np.testing.assert_array_equal(audio.normalise(x, SR), x)


# --- writing and checking ------------------------------------------------------------------

def test_write_wav_is_atomic_and_exact(tmp_path):
    x = music_like(1.0, 0.3)[None].repeat(2, axis=0)
    path = audio.write_wav(tmp_path / "sub" / "a.wav", x, SR)
    data, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR and sf.info(path).subtype == "FLOAT"
    np.testing.assert_array_equal(data.T, x)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="sample rate"):
        audio.write_wav(path, x, 0)
    assert path.read_bytes() == before  # the old file is untouched
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.wav"]  # no temp left behind


def test_write_wav_same_audio_same_bytes_and_umask_permissions(tmp_path):
    """A re-render's soundtrack is byte-identical (no write-time stamp), and readable by the
    group/others as the umask allows (not mkstemp's owner-only 0600)."""
    import os
    import time

    x = music_like(0.5, 0.3)[None]
    a = audio.write_wav(tmp_path / "a.wav", x, SR)
    time.sleep(1.1)  # a timestamp in the file would now differ
    b = audio.write_wav(tmp_path / "b.wav", x, SR)
    assert a.read_bytes() == b.read_bytes()
    old = os.umask(0o022)
    try:
        c = audio.write_wav(tmp_path / "c.wav", x, SR)
    finally:
        os.umask(old)
    assert c.stat().st_mode & 0o777 == 0o644


def test_check_audio_file_errors_name_key_and_path(tmp_path):
    cases = {
        "missing": tmp_path / "nope.wav",
        "directory": tmp_path,
        "zero bytes": tmp_path / "empty.wav",
        "garbage": tmp_path / "garbage.mp3",
        "no samples": tmp_path / "silent.wav",
    }
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.mp3").write_bytes(b"this is not audio at all " * 40)
    sf.write(tmp_path / "silent.wav", np.zeros(0, np.float32), SR)
    expect = {"missing": "no such file", "directory": "not a directory",
              "zero bytes": "zero bytes", "garbage": "could not decode",
              "no samples": "zero length"}
    for what, path in cases.items():
        with pytest.raises(ConfigError) as err:
            audio.check_audio_file(path, "soundtrack.file")
        msg = str(err.value)
        assert msg.startswith("soundtrack.file:") and str(path) in msg and expect[what] in msg
    with pytest.raises(ConfigError, match="soundtrack.melody: bad value None"):
        audio.check_audio_file(None, "soundtrack.melody")
    with pytest.raises(ConfigError, match="soundtrack.file"):
        audio.fit_file(tmp_path / "garbage.mp3", 3.0)
