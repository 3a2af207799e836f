"""Editing with the bundled ffmpeg: intermediates, speed modulation, shot blending, export.

Every function builds an ffmpeg-python graph, runs it through `engines.media.ffmpeg.run` (argv, no
shell, stderr in the error) and never trusts ffmpeg's frame count: the count is planned in
Python, every output goes through a guard (`tpad` clones the last frame, `trim` cuts at the
planned count) and is then decoded (`probe`) and checked; a mismatch raises.

Intermediates between post-production steps are FFV1 (lossless, planar RGB `gbrp`) in Matroska.
Matroska stores timestamps in milliseconds, so every reader re-stamps frames from their index
(`setpts=N/rate/TB`, then `fps`) instead of trusting the stored times.

Files are written under `<name>.part` in the same directory and renamed into place, so a killed
run never leaves a playable-looking partial file under the final name.
"""

from __future__ import annotations

import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import ffmpeg
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from engines.core.errors import ConfigError, PromptreelError
from engines.core.files import atomic_output, link_or_copy
from engines.media.ffmpeg import OUTPUT_BITEXACT, MediaInfo, probe, run
from engines.planning.joins import Transition, planned_total
from engines.planning.speed import SpeedSettings, hold_indices, source_positions, source_starts

INTERMEDIATE = {"vcodec": "ffv1", "level": 3, "g": 1, "pix_fmt": "gbrp", "format": "matroska"}
MIN_INTERPOLATE = 32  # px: minterpolate's smallest frame side
FRAME_NAME = re.compile(r"^(\d{6})\.png$")


# ---------------------------------------------------------------- helpers
def as_rate(fps: float | Fraction) -> Fraction:
    """Exact frame rate: 24 -> 24/1, 23.976 -> 24000/1001, 12.5 -> 25/2."""
    if isinstance(fps, Fraction):
        return fps
    if fps <= 0 or not math.isfinite(fps):
        raise ConfigError("fps", fps, "a positive frame rate")
    ntsc = Fraction(round(fps * 1.001)) * Fraction(1000, 1001)
    if abs(float(ntsc) - fps) < 5e-4 and not float(fps).is_integer():
        return ntsc
    return Fraction(fps).limit_denominator(1001)


def _rate_str(rate: Fraction) -> str:
    return f"{rate.numerator}/{rate.denominator}"


def list_frames(frames_dir: Path) -> list[Path]:
    """The PNG sequence `NNNNNN.png` of a directory, sorted; the numbers must be consecutive."""
    frames_dir = Path(frames_dir)
    if not frames_dir.is_dir():
        raise PromptreelError(f"frame directory {frames_dir} does not exist")
    names = sorted(p.name for p in frames_dir.iterdir() if FRAME_NAME.match(p.name))
    if not names:
        raise PromptreelError(f"no frames named 000000.png, 000001.png, ... in {frames_dir}")
    first = int(names[0][:6])
    for i, name in enumerate(names):
        if int(name[:6]) != first + i:
            raise PromptreelError(f"frame sequence in {frames_dir} has a gap: expected "
                                  f"{first + i:06d}.png, found {name}")
    return [frames_dir / n for n in names]


def _image_input(frames_dir: Path, rate: Fraction) -> tuple[Any, int]:
    frames = list_frames(frames_dir)
    stream = ffmpeg.input(str(Path(frames_dir) / "%06d.png"), f="image2", framerate=_rate_str(rate),
                          start_number=int(frames[0].name[:6]))
    return stream.video, len(frames)


def _retimed(stream: Any, rate: Fraction) -> Any:
    """Frame timestamps from the frame index (stored ones may be rounded to milliseconds)."""
    return stream.filter("setpts", f"N/({_rate_str(rate)})/TB").filter("fps", fps=_rate_str(rate))


def _exact(stream: Any, n: int, rate: Fraction) -> Any:
    """The guard: clone the last frame past the end, cut at exactly `n` frames."""
    return (stream.filter("tpad", stop_mode="clone", stop=n).filter("trim", end_frame=n)
            .filter("setpts", f"N/({_rate_str(rate)})/TB"))


def _check_count(path: Path, n: int, what: str, *, decode: bool = False) -> MediaInfo:
    """Probe an output (packets for intermediates, full decode for exports); raise on a
    frame count other than the plan."""
    info = probe(path, decode=decode)
    if info.frames != n:
        raise PromptreelError(f"{what}: {path.name} has {info.frames} frames, the plan says {n}")
    return info


# ---------------------------------------------------------------- intermediates
def encode_intermediate(frames_dir: Path, fps: float, out_path: Path) -> int:
    """Encode a PNG sequence losslessly (FFV1, gbrp, Matroska); return its frame count."""
    rate = as_rate(fps)
    stream, n = _image_input(Path(frames_dir), rate)
    with atomic_output(Path(out_path)) as tmp:
        out = ffmpeg.output(_exact(stream.filter("format", "gbrp"), n, rate), str(tmp),
                            **INTERMEDIATE, **OUTPUT_BITEXACT)
        run(out, what=f"encoding {frames_dir} to {Path(out_path).name}")
        _check_count(tmp, n, "encode_intermediate")
    return n


def extract_png(video: Path, out_dir: Path) -> int:
    """Decode every frame of `video` to `out_dir/000000.png, ...` (lossless); return the count."""
    out_dir.mkdir(parents=True, exist_ok=True)
    out = ffmpeg.output(ffmpeg.input(str(video)).video.filter("format", "rgb24"),
                        str(out_dir / "%06d.png"), start_number=0, fps_mode="passthrough",
                        **OUTPUT_BITEXACT)
    run(out, what=f"extracting frames of {video}")
    return len(list_frames(out_dir))


# ---------------------------------------------------------------- speed
def _quote_concat(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def _timeline_list(frames: list[Path], starts: list[float], rate: Fraction, list_path: Path) -> None:
    """An ffconcat file placing source frame i at output time starts[i] (in output frames),
    microsecond timestamps, plus a copy of the last frame at the end (so resamplers have a frame
    on each side of every output instant)."""
    us = [round(s * 1_000_000 / rate) for s in starts]
    lines = ["ffconcat version 1.0"]
    entries = [*zip(frames, us[:-1], us[1:], strict=True),
               (frames[-1], us[-1], us[-1] + round(1_000_000 / rate))]
    for path, a, b in entries:
        lines += [f"file {_quote_concat(path.resolve())}", "option framerate 1000000",
                  f"duration {(b - a) / 1_000_000:.6f}"]
    list_path.write_text("\n".join(lines) + "\n")


def modulate_speed(src: Path, n_in: int, fps: float, settings: SpeedSettings, out_path: Path,
                   *, key: str = "speed") -> int:
    """Retime a shot (a PNG sequence directory or a video) to exactly
    `planned_frames(n_in, settings, fps)` frames; write an FFV1 intermediate; return the count.

    - hold: output frame k repeats (or skips to) source frame floor(p_k) (hard links, no pixels
      touched);
    - blend: ffmpeg `framerate` mixes the two source frames around p_k linearly (in yuv444p);
    - interpolate: ffmpeg `minterpolate` (motion-compensated, in yuv444p).
    Where every position is a whole frame (e.g. factor 1 or 2) all three are the hold path.
    """
    src, out_path = Path(src), Path(out_path)
    rate = as_rate(fps)
    positions = source_positions(n_in, settings, fps, key=key)
    n_out = len(positions)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix=".speed-") as tmp_name:
        tmp = Path(tmp_name)
        if src.is_dir():
            frames = list_frames(src)
        else:
            extract_png(src, tmp / "src")
            frames = list_frames(tmp / "src")
        if len(frames) != n_in:
            raise PromptreelError(f"modulate_speed: {src} has {len(frames)} frames, expected {n_in}")
        whole = all(abs(p - round(p)) < 1e-6 for p in positions)
        if settings.method == "hold" or whole:
            idx = hold_indices(positions)
            seq = frames[0].parent
            if idx != list(range(n_in)) or frames[0].name != "000000.png":
                seq = tmp / "hold"
                seq.mkdir()
                for k, i in enumerate(idx):
                    link_or_copy(frames[i], seq / f"{k:06d}.png")
            return encode_intermediate(seq, fps, out_path)
        _timeline_list(frames, source_starts(n_in, settings, fps, key=key), rate, tmp / "list.txt")
        stream = ffmpeg.input(str(tmp / "list.txt"), f="concat", safe=0).video
        stream = stream.filter("format", "yuv444p")
        if settings.method == "blend":
            stream = stream.filter("framerate", fps=_rate_str(rate), interp_start=0,
                                   interp_end=255, scene=100, flags=0)
        else:  # minterpolate refuses frames under 32 px: pad, then crop back
            from PIL import Image

            with Image.open(frames[0]) as im:
                w, h = im.size
            if min(w, h) < MIN_INTERPOLATE:
                stream = stream.filter("pad", max(w, MIN_INTERPOLATE), max(h, MIN_INTERPOLATE))
            stream = stream.filter("minterpolate", fps=_rate_str(rate), mi_mode="mci",
                                   mc_mode="aobmc", me_mode="bidir", vsbmc=1, scd="none")
            if min(w, h) < MIN_INTERPOLATE:
                stream = stream.filter("crop", w, h, 0, 0)
        stream = _exact(stream.filter("format", "gbrp"), n_out, rate)
        with atomic_output(out_path) as part:
            run(ffmpeg.output(stream, str(part), **INTERMEDIATE, **OUTPUT_BITEXACT),
                what=f"speed modulation ({settings.method}) of {src}")
            _check_count(part, n_out, "modulate_speed")
    return n_out


# ---------------------------------------------------------------- blending shots
def blend_shots(videos: Sequence[Path], fps: float, transitions: Sequence[Transition],
                out_path: Path) -> int:
    """Join shots with hard cuts (concat) or xfade cross-fades into one FFV1 intermediate of
    exactly `planned_total` frames; return that count."""
    rate = as_rate(fps)
    infos = [probe(v, decode=False) for v in videos]
    lengths = [i.frames for i in infos]
    total = planned_total(lengths, transitions)
    for v, info in zip(videos, infos, strict=True):
        if (info.width, info.height) != (infos[0].width, infos[0].height):
            raise PromptreelError(f"blend_shots: {v} is {info.width}x{info.height}, the first "
                                  f"shot is {infos[0].width}x{infos[0].height}")
    streams = [_retimed(ffmpeg.input(str(v)).video, rate).filter("format", "gbrp")
               for v in videos]
    acc, acc_len = streams[0], lengths[0]
    for j, t in enumerate(transitions):
        if t.overlap == 0:
            acc = ffmpeg.concat(acc, streams[j + 1], v=1, a=0)
        else:
            acc = ffmpeg.filter([acc, streams[j + 1]], "xfade", transition=t.kind,
                                duration=f"{float(t.overlap / rate):.6f}",
                                offset=f"{float((acc_len - t.overlap) / rate):.6f}")
        acc = acc.filter("fps", fps=_rate_str(rate))
        acc_len += lengths[j + 1] - t.overlap
    with atomic_output(Path(out_path)) as part:
        run(ffmpeg.output(_exact(acc, total, rate), str(part), **INTERMEDIATE, **OUTPUT_BITEXACT),
            what=f"blending {len(videos)} shots")
        _check_count(part, total, "blend_shots")
    return total


# ---------------------------------------------------------------- export
VIDEO_CODECS = {"mp4": ("libx264", "libx265"), "mov": ("prores_ks", "libx264", "libx265"),
                "webm": ("libvpx-vp9",), "gif": ("gif",)}
AUDIO_CODECS = {"mp4": ("aac",), "mov": ("pcm_s16le", "pcm_s24le", "aac"), "webm": ("libopus",),
                "gif": ()}
PIX_FMTS = {"libx264": ("yuv420p", "yuv422p", "yuv444p", "yuv420p10le"),
            "libx265": ("yuv420p", "yuv420p10le", "yuv422p", "yuv444p"),
            "libvpx-vp9": ("yuv420p", "yuv444p", "yuv420p10le"),
            "prores_ks": ("yuv422p10le", "yuv444p10le"), "gif": ("pal8",)}
CRF_MAX = {"libx264": 51, "libx265": 51, "libvpx-vp9": 63}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                "slower", "veryslow", "placebo")
DITHERS = ("bayer", "heckbert", "floyd_steinberg", "sierra2", "sierra2_4a", "sierra3", "burkes",
           "atkinson", "none")
OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


def _accept(v: Any, options: Sequence[Any], why: str) -> Any:
    if v not in options:
        raise ValueError(f"accepted {why}: {', '.join(map(str, options))}")
    return v


class ExportSettings(BaseModel):
    """Final encode preset (conf/export/*.yaml). Defaults are the h264 preset."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=True)

    name: str = "h264"  # preset name = conf/export/<name>.yaml
    container: Literal["mp4", "mov", "webm", "gif"] = "mp4"  # file type and suffix
    video_codec: str = "libx264"  # ffmpeg encoder
    pix_fmt: str = "yuv420p"  # pixel format of the encoded video
    crf: int | None = 18  # constant rate factor (x264/x265 0-51, vp9 0-63), lower = better
    preset: str | None = "medium"  # x264/x265 speed preset, ultrafast ... placebo
    cpu_used: int | None = None  # vp9 speed, 0 (slow, best) to 8 (fast)
    profile: int | None = None  # prores_ks profile: 0 proxy, 1 LT, 2 standard, 3 HQ, 4/5 4444
    tag: str | None = None  # codec tag written in the file (hvc1 for H.265 in Apple players)
    audio_codec: str | None = "aac"  # ffmpeg audio encoder; None = no audio track
    audio_bitrate_k: int | None = Field(default=192, gt=0, le=1024)  # kbit/s (lossy codecs)
    sample_rate: int = Field(default=48000, ge=8000, le=192000)  # Hz of the audio track
    faststart: bool = True  # mp4/mov: index at the front, playable while downloading
    width: int | None = Field(default=None, gt=0, le=8192)  # px; None = render resolution
    height: int | None = Field(default=None, gt=0, le=8192)  # px; None = render resolution
    scale_flags: Literal["lanczos", "bicubic", "bilinear", "neighbor", "spline"] = "lanczos"
    gif_colors: int = Field(default=256, ge=4, le=256)  # palette size of a GIF
    gif_dither: str = "sierra2_4a"  # paletteuse dithering
    gif_palette_fps: float = Field(default=2.0, gt=0, le=240)  # frames/s sampled for the palette
    loop: int = Field(default=0, ge=-1)  # GIF repeats: 0 forever, -1 play once

    @field_validator("video_codec")
    @classmethod
    def _vcodec(cls, v: str, info: ValidationInfo) -> str:
        c = info.data.get("container", "mp4")
        return _accept(v, VIDEO_CODECS[c], f"video codecs in {c}")

    @field_validator("pix_fmt")
    @classmethod
    def _pix(cls, v: str, info: ValidationInfo) -> str:
        codec = info.data.get("video_codec")
        return _accept(v, PIX_FMTS[codec], f"pixel formats for {codec}") if codec else v

    @field_validator("crf")
    @classmethod
    def _crf(cls, v: int | None, info: ValidationInfo) -> int | None:
        top = CRF_MAX.get(info.data.get("video_codec") or "")
        if top is not None and (v is None or not 0 <= v <= top):
            raise ValueError(f"an integer 0-{top} for {info.data['video_codec']} (lower = better)")
        return v

    @field_validator("preset")
    @classmethod
    def _preset(cls, v: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("video_codec") in ("libx264", "libx265"):
            return _accept(v, X26X_PRESETS, "x264/x265 presets")
        return v

    @field_validator("cpu_used")
    @classmethod
    def _cpu(cls, v: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("video_codec") == "libvpx-vp9":
            return _accept(1 if v is None else v, range(9), "vp9 cpu_used")
        return v

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: int | None, info: ValidationInfo) -> int | None:
        if info.data.get("video_codec") == "prores_ks":
            _accept(v, range(6), "prores profiles")
            want = "yuv444p10le" if v >= 4 else "yuv422p10le"
            if info.data.get("pix_fmt") not in (None, want):
                raise ValueError(f"prores profile {v} needs pix_fmt {want}")
        return v

    @field_validator("audio_codec")
    @classmethod
    def _acodec(cls, v: str | None, info: ValidationInfo) -> str | None:
        c = info.data.get("container", "mp4")
        if v is None:
            return v
        if not AUDIO_CODECS[c]:
            raise ValueError(f"none: a {c} file has no audio track (use null)")
        return _accept(v, AUDIO_CODECS[c], f"audio codecs in {c}")

    @field_validator("sample_rate")
    @classmethod
    def _rate(cls, v: int, info: ValidationInfo) -> int:
        if info.data.get("audio_codec") == "libopus":
            return _accept(v, OPUS_RATES, "Opus sample rates")
        return v

    @field_validator("gif_dither")
    @classmethod
    def _dither(cls, v: str) -> str:
        return _accept(v, DITHERS, "dithering modes")

    @property
    def format(self) -> str:
        """ffmpeg muxer name."""
        return self.container

    def codec_args(self) -> dict[str, Any]:
        """Output options of the video (and audio) encoders."""
        a: dict[str, Any] = {"vcodec": self.video_codec}
        if self.video_codec in ("libx264", "libx265"):
            a.update(crf=self.crf, preset=self.preset)
        if self.video_codec == "libx265":
            a["x265-params"] = "log-level=error"
        if self.video_codec == "libvpx-vp9":
            a.update({"crf": self.crf, "b:v": 0, "deadline": "good", "cpu-used": self.cpu_used,
                      "row-mt": 1})
        if self.video_codec == "prores_ks":
            a.update({"profile:v": self.profile, "vendor": "apl0"})
        if self.video_codec != "gif":
            a["pix_fmt"] = self.pix_fmt
        else:
            a["loop"] = self.loop
        if self.tag:
            a["tag:v"] = self.tag
        if self.container in ("mp4", "mov"):
            a["movflags"] = "+use_metadata_tags" + ("+faststart" if self.faststart else "")
        if self.audio_codec:
            a.update(acodec=self.audio_codec, ar=self.sample_rate)
            if not self.audio_codec.startswith("pcm_"):
                a["b:a"] = f"{self.audio_bitrate_k}k"
        return a


def _metadata_args(metadata: dict[str, str]) -> dict[str, str]:
    """`-metadata:g:i key=value` output options; values are argv items, never filter text."""
    meta = dict(metadata)
    if "comment" in meta and "description" not in meta:
        meta["description"] = meta["comment"]
    out = {}
    for i, (k, v) in enumerate(sorted(meta.items())):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", k):
            raise ConfigError("metadata key", k, "letters, digits and '_'")
        out[f"metadata:g:{i}"] = f"{k}={str(v).replace(chr(0), '')}"
    return out


def check_even(preset: ExportSettings, w: int, h: int, *,
               keys: tuple[str, str] = ("export.width", "export.height")) -> None:
    """4:2:0 needs even width and height, 4:2:2 an even width. `keys` name the settings that
    gave `w` and `h` (export.*, or resolution.* when the export keeps the render size)."""
    sides = {"yuv420": ((keys[0], w), (keys[1], h)), "yuv422": ((keys[0], w),)}
    for key, v in sides.get(preset.pix_fmt[:6], ()):
        if v % 2:
            raise ConfigError(key, v, f"an even number for pix_fmt {preset.pix_fmt}",
                              "set export.width and export.height, pick an even resolution, "
                              "or export.pix_fmt=yuv444p")


def export(video: Path, audio: Path | None, out_path: Path, preset: ExportSettings, *,
           fps: float, size: tuple[int, int] | None = None,
           metadata: dict[str, str] | None = None, poster_path: Path | None = None,
           frames: int | None = None) -> MediaInfo:
    """Encode the film with `preset`; mux `audio` padded/trimmed to the video's length;
    write container metadata and a poster PNG (the middle frame). Returns the probe of the file.

    MP4/MOV keep every metadata key (`use_metadata_tags`), Matroska/WebM keep every key
    (upper-cased tags), GIF keeps none. Sizes: `scale=W:H:flags=<scale_flags>` when `size`
    differs from the video's.
    """
    video, out_path = Path(video), Path(out_path)
    rate = as_rate(fps)
    src = probe(video, decode=False)
    n = src.frames if frames is None else frames
    w, h = size or (src.width, src.height)
    check_even(preset, w, h)
    v = _exact(_retimed(ffmpeg.input(str(video)).video, rate), n, rate)
    if (w, h) != (src.width, src.height):
        v = v.filter("scale", w, h, flags=preset.scale_flags).filter("setsar", 1)
    if preset.video_codec == "gif":
        split = v.split()
        palette = split[0].filter("fps", fps=preset.gif_palette_fps).filter(
            "palettegen", max_colors=preset.gif_colors, stats_mode="full")
        v = ffmpeg.filter([split[1], palette], "paletteuse", dither=preset.gif_dither)
    else:
        v = v.filter("format", preset.pix_fmt)
    streams = [v]
    with_audio = audio is not None and preset.audio_codec is not None
    if with_audio:
        sr = preset.sample_rate
        samples = round(Fraction(n * sr) / rate)
        streams.append(ffmpeg.input(str(audio)).audio.filter("aresample", sr)
                       .filter("apad", whole_len=samples).filter("atrim", end_sample=samples)
                       .filter("asetpts", "N/SR/TB"))
    args = preset.codec_args()
    if not with_audio:
        for k in ("acodec", "ar", "b:a"):
            args.pop(k, None)
    with atomic_output(out_path) as part:
        run(ffmpeg.output(*streams, str(part), format=preset.format, **args, **OUTPUT_BITEXACT,
                          **_metadata_args(metadata or {})),
            what=f"exporting {out_path.name} ({preset.name})")
        info = _check_count(part, n, "export", decode=True)
        if with_audio and (info.audio is None or abs(info.audio.duration - n / rate) > 1 / rate):
            raise PromptreelError(f"export: audio lasts {info.audio and info.audio.duration} s, "
                                  f"the video {float(n / rate)} s (more than one frame apart)")
    if poster_path is not None:
        poster(video, Path(poster_path), fps=fps, size=(w, h), scale_flags=preset.scale_flags,
               index=n // 2)
    return replace(info, path=out_path)


def poster(video: Path, out_png: Path, *, fps: float, size: tuple[int, int] | None = None,
           scale_flags: str = "lanczos", index: int | None = None) -> Path:
    """Write frame `index` (default: the middle one) of `video` as an RGB PNG, scaled to size."""
    rate = as_rate(fps)
    if index is None:
        index = probe(video, decode=False).frames // 2
    v = _retimed(ffmpeg.input(str(video)).video, rate).filter(
        "trim", start_frame=index, end_frame=index + 1)
    if size is not None:
        v = v.filter("scale", size[0], size[1], flags=scale_flags).filter("setsar", 1)
    with atomic_output(out_png) as part:
        run(ffmpeg.output(v.filter("format", "rgb24"), str(part), format="image2pipe",
                          vcodec="png", frames=1, **OUTPUT_BITEXACT),
            what=f"writing poster frame {index} of {video.name}")
        if part.stat().st_size == 0:
            raise PromptreelError(f"poster: {video} has no frame {index}")
    return out_png


# ---------------------------------------------------------------- review outputs
def contact_sheet(frames_dir: Path, out_png: Path, columns: int = 6, thumb_width: int = 160, *,
                  every: int | None = None, max_rows: int = 8, padding: int = 2) -> Path:
    """A PNG grid (ffmpeg `tile`) of every `every`-th frame (default: enough to fit
    `columns` x `max_rows` thumbnails), each `thumb_width` px wide, `padding` px apart."""
    if columns < 1 or thumb_width < 1 or max_rows < 1:
        raise ConfigError("contact_sheet", (columns, thumb_width, max_rows), "positive sizes")
    stream, n = _image_input(Path(frames_dir), Fraction(1))
    every = every or math.ceil(n / (columns * max_rows))
    count = math.ceil(n / every)
    rows = math.ceil(count / columns)
    v = (stream.filter("framestep", every).filter("scale", thumb_width, -1, flags="lanczos")
         .filter("tile", f"{columns}x{rows}", padding=padding, margin=padding))
    with atomic_output(Path(out_png)) as part:
        run(ffmpeg.output(v.filter("format", "rgb24"), str(part), format="image2pipe",
                          vcodec="png", frames=1, **OUTPUT_BITEXACT),
            what=f"contact sheet of {frames_dir}")
    return Path(out_png)


def encode_preview(frames_dir: Path, fps: float, out_mp4: Path, *, crf: int = 20) -> int:
    """The production-cut video of a shot: H.264 yuv420p MP4 (odd sizes padded to even),
    exactly one frame per PNG; return the frame count."""
    rate = as_rate(fps)
    stream, n = _image_input(Path(frames_dir), rate)
    v = _exact(stream, n, rate).filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2").filter(
        "format", "yuv420p")
    with atomic_output(Path(out_mp4)) as part:
        run(ffmpeg.output(v, str(part), format="mp4", vcodec="libx264", crf=crf,
                          preset="veryfast", pix_fmt="yuv420p", movflags="+faststart",
                          **OUTPUT_BITEXACT),
            what=f"production-cut preview of {frames_dir}")
        _check_count(part, n, "encode_preview", decode=True)
    return n
