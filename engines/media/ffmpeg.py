"""The ffmpeg runner and prober: the bundled binary, argv (never a shell string), error capture.

- `ffmpeg_exe()` is the ffmpeg that `imageio-ffmpeg` ships (there is no ffprobe: `probe` uses
  PyAV, which links the same libav* libraries).
- `run(stream, what=...)` compiles an ffmpeg-python graph to an argv list, puts the global
  options first (`-nostdin -hide_banner -nostats -loglevel error -y`), runs it with stdin closed
  and stderr captured, and raises `PromptreelError` naming `what` and the last lines of stderr
  (or, when ffmpeg says "No space left on device", the cache's "disk full" error naming the
  output). The crash-test hook `engines.core.crash.kill_point` can kill it mid-encode.
- `OUTPUT_BITEXACT` are the output options that keep files byte-identical across runs on one
  machine: no encoder version strings or creation times (`+bitexact`), no metadata copied from
  inputs (`-map_metadata -1`, `-map_chapters -1`).
- `probe(path)` decodes the file and reports what a player would see (`MediaInfo`).

User text never goes into a filter graph: container metadata is passed as `-metadata key=value`
argv items, which ffmpeg does not parse as filter syntax. `escape_filter_text` exists for the day
a filter must carry text (e.g. drawtext).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from engines.core.crash import kill_armed, kill_point
from engines.core.errors import PromptreelError
from engines.core.files import disk_full

GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y")
OUTPUT_BITEXACT: dict[str, Any] = {"fflags": "+bitexact", "flags": "+bitexact",
                                   "map_metadata": -1, "map_chapters": -1}
STDERR_LINES = 15  # lines of ffmpeg's stderr quoted in an error


def ffmpeg_exe() -> str:
    """Absolute path of the ffmpeg binary bundled by imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def argv(stream: Any) -> list[str]:
    """The argv list of an ffmpeg-python output node, global options first."""
    args = stream.compile(cmd=ffmpeg_exe())
    return [args[0], *GLOBAL_ARGS, *args[1:]]


def run_argv(args: list[str], *, what: str, timeout: float | None = None) -> str:
    """Run an ffmpeg argv list; return stderr; raise PromptreelError (with `what`) on failure."""
    if kill_armed("ffmpeg"):  # crash-test hook (tasks/artefacts.py): die in mid-encode
        child = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)
        while child.poll() is None and not Path(args[-1]).exists():
            time.sleep(0.001)
        kill_point("ffmpeg", child)
    try:
        proc = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout, check=False)
    except FileNotFoundError:
        raise PromptreelError(f"ffmpeg not found at {args[0]} while {what}: reinstall "
                              "imageio-ffmpeg (`make setup`)") from None
    except subprocess.TimeoutExpired:
        raise PromptreelError(f"ffmpeg took longer than {timeout} s while {what}") from None
    err = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0 and "No space left on device" in err:
        raise disk_full(args[-1])
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-STDERR_LINES:]) or "(no output)"
        raise PromptreelError(f"ffmpeg failed while {what} (exit {proc.returncode}):\n{tail}")
    return err


def run(stream: Any, *, what: str, timeout: float | None = None) -> str:
    """Run an ffmpeg-python output node (see module doc); return ffmpeg's stderr."""
    return run_argv(argv(stream), what=what, timeout=timeout)


def escape_filter_text(text: str) -> str:
    """Escape text for use as one option value inside a -filter_complex string.

    Two levels (ffmpeg-filters(1), "Notes on filtergraph escaping"): first the option value
    (`\\`, `'` and `:`), then the graph description (`\\ ' [ ] , ;`). `%` is left alone: drawtext
    must be given `expansion=none` when the text is not a template.
    """
    level1 = "".join("\\" + c if c in "\\':" else c for c in text)
    return "".join("\\" + c if c in "\\'[],;" else c for c in level1)


@dataclass(frozen=True)
class AudioInfo:
    codec: str
    sample_rate: int  # Hz
    channels: int
    duration: float  # seconds: decoded samples / sample_rate


@dataclass(frozen=True)
class MediaInfo:
    path: Path
    container: str  # demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "gif"
    codec: str  # video codec, e.g. h264, hevc, vp9, prores, gif, ffv1
    pix_fmt: str  # of the decoded frames
    width: int  # pixels
    height: int
    fps: Fraction  # frames per second (GIF: frames / duration, its delays are 1/100 s)
    frames: int  # decoded video frames
    duration: float  # seconds from the first frame's start to the last frame's end
    audio: AudioInfo | None
    metadata: dict[str, str] = field(default_factory=dict)  # container tags, keys lower-case


def _audio(path: Path, decode: bool) -> AudioInfo | None:
    import av

    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        s = c.streams.audio[0]
        rate = s.codec_context.sample_rate
        if decode:
            seconds = sum(f.samples for f in c.decode(s)) / rate
        else:
            seconds = float(sum(p.duration or 0 for p in c.demux(s) if p.size) * s.time_base)
        return AudioInfo(codec=s.codec_context.name, sample_rate=rate,
                         channels=s.codec_context.channels, duration=seconds)


def probe(path: str | Path, *, decode: bool = True) -> MediaInfo:
    """What a player sees in `path`; PromptreelError if unreadable.

    `decode=True` decodes every frame and sample (the truth, used on final exports);
    `decode=False` counts packets instead (fast; exact for intra-only codecs such as the FFV1
    intermediates, where one packet is one frame).
    """
    import av

    path = Path(path)
    try:
        with av.open(str(path)) as c:
            if not c.streams.video:
                raise PromptreelError(f"{path} has no video stream")
            s = c.streams.video[0]
            s.thread_type = "AUTO"
            n, first, end, pix_fmt = 0, None, None, s.codec_context.pix_fmt
            items = c.decode(s) if decode else (p for p in c.demux(s) if p.size)
            for item in items:
                n += 1
                if decode:
                    pix_fmt = item.format.name
                if item.pts is not None:
                    t0 = Fraction(item.pts) * item.time_base
                    first = t0 if first is None or t0 < first else first
                    t1 = t0 + Fraction(item.duration or 0) * item.time_base
                    end = t1 if end is None or t1 > end else end
            container = c.format.name
            rate = s.average_rate or s.guessed_rate or Fraction(0)
            meta = {str(k).lower(): str(v) for k, v in c.metadata.items()}
            codec, width, height = s.codec_context.name, s.codec_context.width, s.codec_context.height
        audio = _audio(path, decode)
    except (av.error.FFmpegError, OSError) as exc:
        raise PromptreelError(f"cannot read video {path}: {exc}") from None
    if first is not None and end is not None and end > first:
        duration = end - first
    else:
        duration = Fraction(n) / rate if rate else Fraction(0)
    if container == "gif" and duration:
        rate = (Fraction(n) / duration).limit_denominator(1001)
    return MediaInfo(path=path, container=container, codec=codec, pix_fmt=pix_fmt or "", width=width,
                     height=height, fps=Fraction(rate), frames=n, duration=float(duration),
                     audio=audio, metadata=meta)
