"""Prefect's temporary server, started early by the render (flows/prefect_server.py): it answers,
it stops with the render, and it does not outlive a render killed with `kill -9`."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from flows.prefect_server import LOG_NAME, TemporaryServer
from tests.helpers import ROOT, repo_env


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_the_server_answers_and_stops(tmp_path: Path) -> None:
    server = TemporaryServer(tmp_path)
    try:
        url = server.wait(timeout=120)
        assert url == f"http://127.0.0.1:{server.port}/api" and server.healthy()
    finally:
        server.stop()
    assert server.process.poll() is not None and not server.healthy()
    assert (tmp_path / LOG_NAME).exists()


def test_the_server_exits_when_the_render_is_killed(tmp_path: Path) -> None:
    code = ("import os, signal, sys, pathlib\n"
            "from flows.prefect_server import TemporaryServer\n"
            "s = TemporaryServer(pathlib.Path(sys.argv[1])); s.wait(timeout=120)\n"
            "print(s.process.pid, flush=True); os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, timeout=180,
                          capture_output=True, text=True, env=repo_env())
    assert proc.returncode == -9, proc.stderr
    pid = int(proc.stdout.split()[0])
    deadline = time.monotonic() + 30
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not alive(pid), "the temporary server outlived the killed render"
