"""Audio finishing for the soundtrack: read, fit to the cut, fade, normalise loudness, write.

Arrays are float32 of shape (channels, samples); 1-D input is read as mono. Times are in
seconds, sample rates in Hz, loudness in LUFS (LU for differences), peaks in dBFS / dBTP.

Loudness is *measured* by the bundled ffmpeg's `ebur128` filter (its ITU-R BS.1770-4 / EBU R128
implementation, true peak with peak=true), so the numbers are the ones ffmpeg and players
report and no K-weighting is hand-written here. The correction is a plain gain plus a true-peak
limiter in numpy/scipy (peak detection on a 4x oversampled copy, a look-ahead minimum filter and
a box smoother), re-measured by ffmpeg until both targets hold. ffmpeg's own `loudnorm` was not
used: when linear gain would break the peak ceiling it silently switches to dynamic mode and
resamples to 192 kHz; its `alimiter` limits sample peaks, not true peaks.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import numpy as np

from engines.core.errors import ConfigError, PromptreelError

READABLE = "an audio file soundfile or ffmpeg can decode (wav, flac, ogg, mp3, m4a, ...)"
_LIMIT_MARGIN_DB = 0.3  # the limiter aims this far below the ceiling (ffmpeg oversamples finer)


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def as_2d(audio: np.ndarray) -> np.ndarray:
    """(samples,) or (channels, samples) -> float32 (channels, samples)."""
    a = np.asarray(audio, dtype=np.float32)
    if a.ndim == 1:
        return a[None, :]
    if a.ndim != 2:
        raise ValueError(f"audio must be (samples,) or (channels, samples), got shape {a.shape}")
    return a


def _like(result: np.ndarray, original: np.ndarray) -> np.ndarray:
    """Give `result` (channels, samples) the dimensionality of `original`."""
    return result[0] if np.ndim(original) == 1 else result


# --- reading -------------------------------------------------------------------------------

def _decode_ffmpeg(path: Path) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of anything ffmpeg reads, at its own rate and channels.

    PyAV probes the stream; the bundled ffmpeg decodes it (it honours the container's encoder
    delay / edit lists, so an AAC file comes back with exactly its samples)."""
    import av

    with av.open(str(path)) as container:
        stream = next((s for s in container.streams if s.type == "audio"), None)
        if stream is None:
            raise ValueError("it has no audio stream")
        rate = int(stream.rate or stream.codec_context.sample_rate)
        channels = int(stream.layout.nb_channels or stream.codec_context.channels)
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
           "-map", "0:a:0", "-f", "f32le", "-acodec", "pcm_f32le", "-ac", str(channels),
           "-ar", str(rate), "pipe:1"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise ValueError(proc.stderr.decode("utf-8", "replace").strip()[-400:])
    data = np.frombuffer(proc.stdout, dtype="<f4")
    return np.ascontiguousarray(data.reshape(-1, channels).T, dtype=np.float32), rate


def resample(audio: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) of (channels, samples) audio."""
    if sr_in == sr_out:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(sr_in), int(sr_out))
    return resample_poly(audio, sr_out // g, sr_in // g, axis=-1).astype(np.float32)


def read_audio(path: str | Path, sr: int | None = None, *, key: str = "audio file"
               ) -> tuple[np.ndarray, int]:
    """Read a user audio file as float32 (channels, samples), resampled to `sr` Hz if given.

    soundfile first (wav, flac, ogg, mp3, aiff...), the bundled ffmpeg for everything else (m4a,
    aac, opus in mp4/webm, the sound of video files). Raises ConfigError naming `key` if the file is unusable.
    """
    import soundfile as sf

    path = Path(path)
    check_audio_file(path, key)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
        audio = np.ascontiguousarray(data.T)
    except Exception:  # noqa: BLE001 - any libsndfile failure: let ffmpeg try
        try:
            audio, rate = _decode_ffmpeg(path)
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(key, str(path), READABLE, f"could not decode it: {exc}") from None
    if audio.shape[-1] == 0:
        raise ConfigError(key, str(path), "an audio file with at least one sample",
                          "it decodes to zero samples")
    return (resample(audio, rate, sr), sr) if sr else (audio, int(rate))


def check_audio_file(path: str | Path | None, key: str) -> float:
    """Fail fast (before rendering) if a user audio file is missing, empty or unreadable.

    Returns its duration in seconds. Raises ConfigError naming `key` and the path.
    """
    if path is None or str(path).strip() == "":
        raise ConfigError(key, path, "a path to an audio file", "none was given")
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(key, str(path), "an existing audio file",
                          f"no such file (absolute: {p.resolve()}); use an absolute path")
    if not p.is_file():
        raise ConfigError(key, str(path), "an audio file, not a directory")
    if p.stat().st_size == 0:
        raise ConfigError(key, str(path), "a non-empty audio file", "the file has zero bytes")
    if not os.access(p, os.R_OK):
        raise ConfigError(key, str(path), "a readable audio file", "permission denied")
    import soundfile as sf

    try:
        info = sf.info(str(p))
        frames, rate = int(info.frames), int(info.samplerate)
    except Exception:  # noqa: BLE001 - not a libsndfile format: probe with ffmpeg (PyAV)
        frames, rate = _probe_av(p, key)
    if frames <= 0:
        raise ConfigError(key, str(path), "an audio file with at least one sample",
                          "it has zero length")
    return frames / rate


def _probe_av(p: Path, key: str) -> tuple[int, int]:
    """(samples, rate) of the first audio stream; decodes only until the first samples appear."""
    import av

    try:
        with av.open(str(p)) as container:
            stream = next((s for s in container.streams if s.type == "audio"), None)
            if stream is None:
                raise ValueError("it has no audio stream")
            rate = int(stream.rate or stream.codec_context.sample_rate)
            for frame in container.decode(stream):
                if frame.samples > 0:
                    dur = float(stream.duration * stream.time_base) if stream.duration else 0.0
                    return max(int(dur * rate), frame.samples), rate
            return 0, rate
    except ConfigError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(key, str(p), READABLE, f"could not decode it: {exc}") from None


# --- fitting to length ---------------------------------------------------------------------

def crossfade(tail: np.ndarray, head: np.ndarray) -> np.ndarray:
    """Equal-power cross-fade from `tail` to `head` (both (channels, n)), n samples long.

    Gains are sin/cos quarter waves, renormalised by the correlation rho (clipped to [0, 1]) of
    the two segments so the power stays constant: for uncorrelated material (rho = 0) this is
    the classic equal-power fade; for identical material (rho = 1) it becomes equal-gain, which
    avoids the +3 dB bump an equal-power fade gives on correlated audio.
    """
    n = tail.shape[-1]
    if n == 0:
        return tail
    t = (np.arange(n) + 0.5) / n
    g_in, g_out = np.sin(0.5 * np.pi * t), np.cos(0.5 * np.pi * t)
    a, b = tail.astype(np.float64), head.astype(np.float64)
    denom = np.sqrt(np.sum(a * a) * np.sum(b * b))
    rho = float(np.clip(np.sum(a * b) / denom, 0.0, 1.0)) if denom > 0 else 0.0
    k = 1.0 / np.sqrt(g_in**2 + g_out**2 + 2.0 * rho * g_in * g_out)
    return (a * g_out * k + b * g_in * k).astype(np.float32)


def loop_to_length(audio: np.ndarray, n: int, crossfade_n: int) -> np.ndarray:
    """Trim, or repeat with a `crossfade_n`-sample cross-fade at each loop point, to n samples."""
    x = as_2d(audio)
    length = x.shape[-1]
    if length >= n:
        return x[:, :n].copy()
    xf = int(min(max(crossfade_n, 0), length // 2))
    parts, have = [x[:, : length - xf]], length - xf
    prev_tail = x[:, length - xf:]
    while have < n:
        parts.append(crossfade(prev_tail, x[:, :xf]))
        parts.append(x[:, xf: length - xf])
        have += length - xf
    out = np.concatenate(parts, axis=1)
    if out.shape[-1] < n:  # only when xf == 0 and rounding: cannot happen, kept for safety
        out = np.pad(out, ((0, 0), (0, n - out.shape[-1])))
    return out[:, :n]


def fit_file(path: str | Path, duration_s: float, *, sr: int | None = None,
             crossfade_s: float = 0.5, key: str = "soundtrack.file") -> tuple[np.ndarray, int]:
    """A user's track as exactly round(duration_s * sr) samples: trimmed if longer, looped with
    an equal-power cross-fade (crossfade_s seconds, at most half the file) at each loop point if
    shorter. sr None keeps the file's own rate. Returns ((channels, samples) float32, sr)."""
    if duration_s <= 0:
        raise ConfigError("duration_s", duration_s, "a positive duration in seconds")
    if crossfade_s < 0:
        raise ConfigError("soundtrack.loop_crossfade_s", crossfade_s, "seconds >= 0")
    audio, rate = read_audio(path, sr, key=key)
    n = round(duration_s * rate)
    return loop_to_length(audio, n, round(crossfade_s * rate)), rate


# --- fades and loudness --------------------------------------------------------------------

def fade(audio: np.ndarray, sr: int, fade_in_s: float, fade_out_s: float) -> np.ndarray:
    """Raised-cosine fade in and out (seconds). If they overlap, both shrink in proportion."""
    if fade_in_s < 0 or fade_out_s < 0:
        raise ConfigError("soundtrack.fade_in_s/fade_out_s", (fade_in_s, fade_out_s),
                          "seconds >= 0")
    x = as_2d(audio).copy()
    n = x.shape[-1]
    fi, fo = fade_in_s * sr, fade_out_s * sr
    if fi + fo > n > 0:
        fi, fo = fi * n / (fi + fo), fo * n / (fi + fo)
    fi, fo = int(round(fi)), int(round(fo))
    if fi:
        x[:, :fi] *= 0.5 - 0.5 * np.cos(np.pi * (np.arange(fi) + 0.5) / fi)
    if fo:
        x[:, n - fo:] *= 0.5 + 0.5 * np.cos(np.pi * (np.arange(fo) + 0.5) / fo)
    return _like(x, audio)


def remove_dc(audio: np.ndarray, sr: int, cutoff_hz: float = 10.0) -> np.ndarray:
    """Zero-phase 2nd-order Butterworth high-pass (run forward and back) at `cutoff_hz`:
    removes DC offset and sub-audio drift, which waste headroom and upset limiters."""
    from scipy.signal import butter, sosfiltfilt

    x = as_2d(audio)
    if x.shape[-1] < 16:
        return _like(x - x.mean(axis=-1, keepdims=True), audio)
    sos = butter(2, cutoff_hz, btype="highpass", fs=sr, output="sos")
    return _like(sosfiltfilt(sos, x.astype(np.float64), axis=-1).astype(np.float32), audio)


def true_peak_dbtp(audio: np.ndarray) -> float:
    """True peak in dBTP: the largest magnitude of a 4x oversampled copy (BS.1770 Annex 2)."""
    from scipy.signal import resample_poly

    x = as_2d(audio)
    if x.shape[-1] == 0:
        return float("-inf")
    peak = float(np.max(np.abs(resample_poly(x.astype(np.float64), 4, 1, axis=-1))))
    return 20 * np.log10(peak) if peak > 0 else float("-inf")


def limit_true_peak(audio: np.ndarray, sr: int, ceiling_db: float, window_s: float = 0.02
                    ) -> np.ndarray:
    """Look-ahead limiter on 4x oversampled peaks, channels linked.

    The gain each sample needs is min(1, ceiling / peak); a minimum filter over +-window_s and a
    box average of the same width make it smooth (it ramps over 2 * window_s) while never
    exceeding what any peak inside the window needs.
    """
    from scipy.ndimage import minimum_filter1d, uniform_filter1d
    from scipy.signal import resample_poly

    x = as_2d(audio).astype(np.float64)
    c, n = x.shape
    if n == 0:
        return _like(x.astype(np.float32), audio)
    peak = np.abs(resample_poly(x, 4, 1, axis=-1)[:, : 4 * n]).reshape(c, n, 4).max(axis=(0, 2))
    need = np.minimum(1.0, 10 ** (ceiling_db / 20) / np.maximum(peak, 1e-12))
    if need.min() >= 1.0:
        return _like(x.astype(np.float32), audio)
    size = 2 * max(1, int(window_s * sr)) + 1
    gain = uniform_filter1d(minimum_filter1d(need, size, mode="nearest"), size, mode="nearest")
    return _like((x * np.minimum(gain, need.max())).astype(np.float32), audio)


def normalise(audio: np.ndarray, sr: int, target_lufs: float = -16.0,
              true_peak_db: float = -1.0, tolerance_lu: float = 0.5) -> np.ndarray:
    """Gain to `target_lufs` integrated loudness with true peaks at or below `true_peak_db`.

    Loudness and true peak are measured by ffmpeg's ebur128; a true-peak limiter handles
    material too peaky for the plain gain; up to 5 rounds of measure-and-correct. Silence, or
    audio shorter than one 400 ms gating block, gets no loudness gain, only the peak ceiling.
    """
    x = as_2d(audio)
    loud, _ = measure_loudness(x, sr=sr)
    ceiling = true_peak_db
    if not np.isfinite(loud) or loud <= -70.0:
        out = x
        if true_peak_dbtp(out) > ceiling:
            out = limit_true_peak(out, sr, ceiling - _LIMIT_MARGIN_DB)
        return _like(_under_ceiling(out, sr, ceiling), audio)
    gain_db = target_lufs - loud
    out = x
    for _ in range(5):
        out = limit_true_peak(x * np.float32(10 ** (gain_db / 20)), sr, ceiling - _LIMIT_MARGIN_DB)
        loud, tp = measure_loudness(out, sr=sr)
        tp = max(tp, true_peak_dbtp(out))
        if abs(loud - target_lufs) <= tolerance_lu and tp <= ceiling:
            return _like(out, audio)
        gain_db += target_lufs - loud
    return _like(_under_ceiling(out, sr, ceiling), audio)


def _under_ceiling(x: np.ndarray, sr: int, ceiling: float) -> np.ndarray:
    """Last resort: scale down until both estimates of the true peak sit under the ceiling."""
    for _ in range(3):
        tp = max(measure_loudness(x, sr=sr)[1], true_peak_dbtp(x))
        if tp <= ceiling:
            break
        x = x * np.float32(10 ** ((ceiling - tp - 0.05) / 20))
    return x


_SUMMARY = re.compile(r"Summary:.*?I:\s*(-?[\d.]+|-?inf|nan)\s*LUFS.*?Peak:\s*(-?[\d.]+|-?inf|nan)\s*dBFS",
                      re.S | re.I)


def measure_loudness(path_or_array: str | Path | np.ndarray, *, sr: int | None = None
                     ) -> tuple[float, float]:
    """(integrated loudness in LUFS, true peak in dBTP) as ffmpeg's ebur128 filter reports them
    (BS.1770-4 gating; true peak with peak=true). Arrays need `sr`. Silence gives -70 LUFS."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostats", "-nostdin"]
    data = None
    if isinstance(path_or_array, (str, Path)):
        cmd += ["-i", str(path_or_array), "-vn"]
    else:
        if not sr:
            raise ValueError("measure_loudness of an array needs sr")
        x = as_2d(path_or_array)
        data = np.ascontiguousarray(x.T, dtype="<f4").tobytes()
        cmd += ["-f", "f32le", "-ar", str(int(sr)), "-ac", str(x.shape[0]), "-i", "pipe:0"]
        cmd.remove("-nostdin")
    cmd += ["-filter:a", "ebur128=peak=true:framelog=quiet", "-f", "null", "-"]
    proc = subprocess.run(cmd, input=data, capture_output=True, check=False)
    err = proc.stderr.decode("utf-8", "replace")
    match = _SUMMARY.search(err)
    if proc.returncode != 0 or not match:
        raise PromptreelError(f"ffmpeg could not measure loudness ({proc.returncode}): "
                              f"{err.strip()[-600:]}")
    return float(match.group(1)), float(match.group(2))


# --- writing -------------------------------------------------------------------------------

def write_wav(path: str | Path, audio: np.ndarray, sr: int) -> Path:
    """Write a 32-bit float WAV atomically (engines.core.files.atomic_path: temp file, fsync, rename).

    Float keeps the normalised signal bit-exact (no quantisation, no clipping); ffmpeg reads it
    when muxing. scipy writes it, not libsndfile: libsndfile adds a PEAK chunk holding the time
    of writing, so the same audio would give different bytes on every run. Returns the path."""
    from scipy.io import wavfile

    from engines.core.files import atomic_path

    if int(sr) <= 0:
        raise ValueError(f"sample rate must be > 0, got {sr}")
    path = Path(path)
    with atomic_path(path) as tmp:
        wavfile.write(tmp, int(sr), np.ascontiguousarray(as_2d(audio).T, dtype=np.float32))
    return path
