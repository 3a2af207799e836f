"""A shot's input video (`film.shots.N.input_video`): checked when the config is read, then
extracted by pre-production (tasks/extract_video.py) to PNG frames at the film's fps and the
render's size, with ffmpeg (the `fps` filter picks the frame nearest each output time; `scale`
with Lanczos resizes to the frame size, ignoring the aspect ratio: crop the video beforehand to
keep it).

- `check_video(path, key)`: an existing, readable file that ffmpeg decodes with a video stream;
  else a ConfigError naming the key.
- `frames_at(path, fps)`: how many frames extraction at `fps` gives (ffmpeg runs the same
  filter and counts them; remembered by path, size and modification time).
- `extract_argv(path, fps, width, height, out_dir)`: the extraction command.
- `check_length(...)`: the video's frame count at the film's fps equals the shot's.
"""

from __future__ import annotations

import os
import tempfile
from functools import lru_cache
from pathlib import Path

from engines.core.errors import ConfigError, PromptreelError


def check_video(path: str, key: str) -> None:
    p = Path(path).expanduser()
    if not p.exists():
        raise ConfigError(key, path, "an existing video file", f"not found: {p.resolve()}")
    if not p.is_file():
        raise ConfigError(key, path, "a video file, not a directory")
    if not os.access(p, os.R_OK):
        raise ConfigError(key, path, "a readable video file", "permission denied")
    from engines.media.ffmpeg import probe

    try:
        info = probe(p, decode=False)
    except PromptreelError as exc:
        why = str(exc).removeprefix(f"cannot read video {p}: ")
        raise ConfigError(key, path, "a video file ffmpeg can decode (mp4, webm, mov, mkv, gif, "
                          "...)", f"cannot decode it: {why}") from None
    if info.frames < 1:
        raise ConfigError(key, path, "a video with at least one frame", "it has none")


@lru_cache(maxsize=64)
def _count(path: str, size: int, mtime: int, fps: float) -> int:
    from engines.media.ffmpeg import ffmpeg_exe, run_argv

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "frames.crc"
        run_argv([ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error",
                  "-y", "-i", path, "-map", "0:v:0", "-vf", f"fps={fps!r}", "-f", "framecrc",
                  str(out)], what=f"counting the frames of {path} at {fps:g} fps")
        return sum(1 for line in out.read_text().splitlines() if line and not line.startswith("#"))


def frames_at(path: str, fps: float) -> int:
    """Frames the video gives at `fps` (what `extract_argv` writes)."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    return _count(str(p), st.st_size, st.st_mtime_ns, float(fps))


def extract_argv(path: str, fps: float, width: int, height: int, out_dir: Path) -> list[str]:
    """ffmpeg argv writing the video's frames at `fps`, `width` x `height`, as
    out_dir/000000.png, 000001.png, ..."""
    from engines.media.ffmpeg import ffmpeg_exe

    return [ffmpeg_exe(), "-nostdin", "-hide_banner", "-nostats", "-loglevel", "error", "-y",
            "-i", str(Path(path).expanduser()), "-map", "0:v:0",
            "-vf", f"fps={float(fps)!r},scale={width}:{height}:flags=lanczos,format=rgb24",
            "-fflags", "+bitexact", "-flags", "+bitexact", "-start_number", "0",
            str(Path(out_dir) / "%06d.png")]


def check_length(path: str, key: str, fps: float, n_frames: int, frames_key: str) -> None:
    """The video gives the shot's number of frames at the film's fps."""
    got = frames_at(path, fps)
    if got != n_frames:
        raise ConfigError(key, path, f"a video of the shot's length: {n_frames} frames at "
                          f"{fps:g} fps", f"it gives {got} frames at {fps:g} fps: set "
                          f"{frames_key}={got}, or trim the video")
