"""Prefect's temporary API server for a render that has no `PREFECT_API_URL`, started early.

Without a configured server, Prefect starts its own temporary one at the first flow: it imports
the whole server stack in the render's process, then starts it in a child process and waits for
it, about 10 s on a 2-core machine before any work begins. `start()` instead starts the child at
once (the render has only validated its config) so the server boots on another core while the
render imports torch and the engines; `TemporaryServer.wait()` is called just before the first
flow, and `prefect_settings()` points Prefect at it.

The child (`python -m flows.prefect_server <port> <parent pid> <log>`) runs the same uvicorn app
Prefect's own temporary server runs (`prefect.server.api.server:create_app`, UI off), writes its
output to `<PREFECT_HOME>/temporary-server.log`, and exits on its own when the render's process
is gone, even after `kill -9` (it polls its parent process id). The render stops it at exit.
The child's module imports nothing of the project.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1"}  # what Prefect sets for its own temporary server
LOG_NAME = "temporary-server.log"
_CURRENT: TemporaryServer | None = None


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1 now (the child retries if it is taken meanwhile)."""
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class TemporaryServer:
    """One child process serving Prefect's API on 127.0.0.1 for this render's process."""

    def __init__(self, home: Path):
        self.log_path = Path(home) / LOG_NAME
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.ready = False
        self._spawn()
        atexit.register(self.stop)

    def _spawn(self) -> None:
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.prefect_server", str(self.port), str(os.getpid())],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env={**os.environ, **SERVER_ENV}, cwd=Path(__file__).resolve().parent.parent,
                start_new_session=True)  # a Ctrl-C in the terminal reaches the render only

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def wait(self, timeout: float = 90.0) -> str:
        """Block until the API answers; return its URL. RuntimeError (with the tail of the
        server's log) if it exits or does not answer within `timeout` seconds."""
        deadline, tries = time.monotonic() + timeout, 1
        while not self.ready:
            if self.healthy():
                self.ready = True
                break
            if self.process.poll() is not None and tries < 3:  # port taken meanwhile: retry
                tries += 1
                self._spawn()
            elif self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Prefect's temporary server did not start (log "
                                   f"{self.log_path}):\n{tail}")
            time.sleep(0.05)
        return self.api_url

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start() -> TemporaryServer | None:
    """Start the temporary server for this process unless one runs already or Prefect is told to
    use another (PREFECT_API_URL set, or its ephemeral server disabled). Returns it, or None."""
    from prefect.settings import PREFECT_API_URL, PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_ENABLED

    global _CURRENT
    if _CURRENT is not None and _CURRENT.process.poll() is None:
        return _CURRENT
    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None
    _CURRENT = TemporaryServer(Path(PREFECT_HOME.value()))
    return _CURRENT


def prefect_settings(server: TemporaryServer) -> dict:
    """Prefect settings for flows run against `server`: its URL, no UI links in the log (it
    serves no UI), and no run heartbeats (the server dies with this process, nothing would ever
    read them)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        PREFECT_UI_URL,
    )

    url = server.wait(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    return {PREFECT_API_URL: url, PREFECT_UI_URL: "", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}


# ---------------------------------------------------------------- the child
def _exit_with(parent: int) -> None:
    """Exit this server as soon as the process that started it is gone (its parent id changes:
    the child is re-parented), so a render killed with `kill -9` leaves no server behind."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def serve(port: int, parent: int) -> None:
    import uvicorn

    threading.Thread(target=_exit_with, args=(parent,), daemon=True, name="watch-parent").start()
    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1",
                port=port, log_level="error", lifespan="on")


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))
