"""The crash-test hook: `kill_point(name)` SIGKILLs the process (and a running child) at a named
point of a named task, as `kill -9` or a power cut would. Inert unless the environment variable
`PROMPTREEL_TEST_KILL_AT` is `<task>:<point>` (tests/reliability/test_kill.py sets it).

The running task's name is the context variable `CURRENT_TASK`, set by tasks/cache.py around a
build. Points in use: `frame:<i>` (a frame's PNG is on disk, its progress record is not),
`state:<n>` (an engine's n-th state file of the shot is on disk, its progress record is not), `ffmpeg` (the
task's ffmpeg is running and has opened its output), `commit` (the manifest is written inside
`<key>.work/`, not yet renamed).
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
