"""Stopping an open-ended shot (an engine setting `max_iterations: -1`, the notebook's "run until
I stop it"): what a Ctrl-C or `make stop` does, and how generate_frames hears it.

- `request_stop()` (the render's SIGINT handler, flows/render.py) and a stop file
  `<cache_dir>/STOP` (written by `make stop`, flows/stop.py) ask the open-ended shot that is
  rendering to end. A stop file counts only if it was written after the shot started, so an old
  one never stops a later render.
- `Watch(cache_dir)` is what the frame sink asks after each committed frame; when a stop was
  asked, the sink raises `ShotStopped(frames)` once that frame and its state are durable. The
  engine never sees a half-made frame: the stop always falls between two commits.
- `open_ended(settings)`: whether an engine's settings ask for an open-ended shot.

Nothing here imports torch. A stop only ends open-ended shots; without one, Ctrl-C interrupts
the render as usual (the next run resumes from the committed frames).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

STOP_FILE = "STOP"  # under runtime.cache_dir: `make stop` writes it
_EVENT = threading.Event()  # set by request_stop (Ctrl-C)
_ACTIVE = threading.Event()  # set while an open-ended shot renders in this process


class ShotStopped(Exception):  # noqa: N818 - a signal, not an error
    """Raised by the frame sink after a committed frame when a stop was asked."""

    def __init__(self, frames: int):
        super().__init__(f"stopped after {frames} frames")
        self.frames = frames


def open_ended(settings: Any) -> bool:
    """True if the engine settings ask for an open-ended shot (`max_iterations: -1`)."""
    return getattr(settings, "max_iterations", None) == -1


def request_stop() -> None:
    """Ask the open-ended shot rendering in this process to end after its frame in progress."""
    _EVENT.set()


def requested() -> bool:
    """True once a Ctrl-C asked the open-ended shot rendering now to stop."""
    return _EVENT.is_set()


def active() -> bool:
    """True while an open-ended shot renders in this process (Ctrl-C then stops it)."""
    return _ACTIVE.is_set()


def stop_file(cache_dir: Path | str) -> Path:
    return Path(cache_dir) / STOP_FILE


def write_stop_file(cache_dir: Path | str) -> Path:
    """What `make stop` does: a stop file, newer than any shot rendering now."""
    path = stop_file(cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"stop requested at {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    return path


class Watch:
    """The stop check of one open-ended shot: a Ctrl-C since it started, or a stop file written
    after it started. A context manager: it marks the shot as the one Ctrl-C stops."""

    def __init__(self, cache_dir: Path | str):
        self.path = stop_file(cache_dir)
        self.started = time.time()

    def __enter__(self) -> Watch:
        _EVENT.clear()
        _ACTIVE.set()
        self.started = time.time()
        return self

    def __exit__(self, *exc: object) -> None:
        _ACTIVE.clear()
        _EVENT.clear()

    def __call__(self) -> bool:
        if _EVENT.is_set():
            return True
        try:
            return self.path.stat().st_mtime >= self.started
        except OSError:
            return False
