"""The crash-test hook: `kill_point(name)` SIGKILLs the process (and a running child) at a named
point of a named task, as `kill -9` or a power cut would. Inert unless the environment variable
`PROMPTREEL_TEST_KILL_AT` is `<task>:<point>` (tests/reliability/test_kill.py sets it).

The running task's name is the context variable `CURRENT_TASK`, set by tasks/cache.py around a
build (and by tasks that are not cached, such as select_models, around their work). Points in use:
- `commit` (tasks/artefacts.py `Work.commit`, so every cached task): the manifest is written
  inside `<key>.work/`, not yet renamed;
- `ffmpeg` (engines/media/ffmpeg.py, every task that runs ffmpeg): the task's first ffmpeg is
  running and has opened its output; the hook kills that very ffmpeg, then this process;
- `frame:<i>` (generate_frames, tasks/frame_sink.py: frame i's PNG is on disk, its progress
  record is not; extract_frames and refine_frames, `link_frames`: frames 0..i are linked);
- `state:<n>` (generate_frames: an engine's n-th state file of the shot is on disk, its progress
  record is not); `seed` (generate_frames lengthening a shot:
  the shorter render's frames linked in, no progress yet);
- `timeline` (plan_timeline: timeline.json written, schedules.csv not);
- `entry:<i>` (select_models: models 0..i ready, the next ones not).
tests/reliability/test_kill.py kills a render once in every task.
"""

from __future__ import annotations

import os
import signal
import subprocess
from contextvars import ContextVar

KILL_ENV = "PROMPTREEL_TEST_KILL_AT"
CURRENT_TASK: ContextVar[str] = ContextVar("promptreel_task", default="")


def kill_armed(point: str) -> bool:
    """True when $PROMPTREEL_TEST_KILL_AT is `<running task>:<point>` (always False when unset)."""
    want = os.environ.get(KILL_ENV)
    return bool(want) and want == f"{CURRENT_TASK.get()}:{point}"


def kill_point(point: str, child: subprocess.Popen | None = None) -> None:
    """SIGKILL `child` and this process when the hook is armed for `point` (module doc)."""
    if not kill_armed(point):
        return
    if child is not None:
        child.kill()
        child.wait()
    os.kill(os.getpid(), signal.SIGKILL)
