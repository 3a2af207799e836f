"""Prefect's temporary server, started early by the render (flows/prefect_server.py): it answers,
it stops with the render, and it does not outlive a render killed with `kill -9`."""

from __future__ import annotations

import os
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


def test_make_server_on_another_port_serves_a_ui_that_calls_its_api(tmp_path: Path) -> None:
    """`make server port=N` (python -m flows.prefect_server ui --port N): the UI's settings name
    the API on port N, even with a PREFECT_API_URL for port 4200 in the caller's environment
    (`prefect server start --port N` alone gives the UI the API on 4200)."""
    import json
    import signal
    import urllib.request

    from flows.prefect_server import free_port

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "home"),
           "PREFECT_API_URL": "http://127.0.0.1:4200/api"}
    env.pop("PREFECT_UI_API_URL", None)
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.prefect_server", "ui", "--port",
                                 str(port)], cwd=ROOT, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "make server did not answer in 240 s"
            time.sleep(0.5)
        with urllib.request.urlopen(f"{base}/ui-settings", timeout=10) as r:
            settings = json.load(r)
        assert settings["api_url"] == f"{base}/api"
        with urllib.request.urlopen(f"{base}/", timeout=10) as r:  # the UI itself is served
            assert r.status == 200 and b"<html" in r.read(4096).lower()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
