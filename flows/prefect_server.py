"""Prefect's API server: the temporary one a render starts early, and `make server` (the UI).

**The temporary server.** Without `PREFECT_API_URL`, Prefect starts its own temporary server at
the first flow: it imports the whole server stack in the render's process, then starts it in a
child process and waits for it, about 10 s on a 2-core machine before any work begins. `start()`
instead starts the child at once (the render has only validated its config) so the server boots
on another core while the render imports torch and the engines; `TemporaryServer.wait()` is
called just before the first flow, and `prefect_settings()` points Prefect at it. Measured when
this replaced Prefect's own start (docs/benchmarks.md, 2026-11-22, three alternated pairs on the
same 2-core host): smoke-render overhead 30.4-32.6 s with Prefect's start, 22.3-25.4 s with this
one; fully cached re-render 23.8-26.6 s against 15.3-20.3 s. That gain is why it is kept.

The child (`python -m flows.prefect_server temporary <port> <parent pid>`) runs the uvicorn app
Prefect's own temporary server runs (`prefect.server.api.server:create_app`, UI off), writes its
output to `<PREFECT_HOME>/temporary-server.log`, and exits on its own when the render's process
is gone, even after `kill -9` (it polls its parent process id). The render stops it at exit.

It serves only what a render's client calls (flow runs, their states, artifacts): the services
that write to its SQLite database in the background are off (task-run recorder, event persister
and its vacuum, triggers, event streaming), and the render sends it no log records. Nobody can
read those records (the server has no UI and dies with the render), and they cost: a background
write waiting on SQLite's lock for Prefect's full `busy_timeout` (60 s) was the render's
unexplained 60 s stall. The server's log showed it: `prefect.server.services.task_run_recorder -
Error flushing 1 events ... database is locked`, 60 s after the blocked insert of a task-run
state, and the flow's own state update returned only once the recorder had given up. With
those services off, no render stalled in a soak (docs/benchmarks.md).

**`make server`** (`python -m flows.prefect_server ui --port N`): `prefect server start` on
127.0.0.1, with the UI told the API's real address. Prefect's UI takes its API URL from
`PREFECT_UI_API_URL`, else `PREFECT_API_URL`, else `PREFECT_SERVER_API_HOST`/`_PORT`, which
`prefect server start --port N` does not set: the UI on port N would call the API on 4200.

The temporary child's code imports nothing of the project but flows.env.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

# what Prefect sets for its own temporary server, and the background services it can do without
SERVER_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1",
              "PREFECT__SERVER_FINAL": "1",
              "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_ENABLED": "false",
              "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_ENABLED": "false",
              "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
              "PREFECT_SERVER_SERVICES_EVENT_LOGGER_ENABLED": "false",
              "PREFECT_API_EVENTS_STREAM_OUT_ENABLED": "false",
              "PREFECT_SERVER_LOGS_STREAM_OUT_ENABLED": "false"}
UI_HOST = "127.0.0.1"  # `make server` listens on the loopback only
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
        self.started = time.monotonic()
        self._spawn()
        atexit.register(self.stop)

    def _spawn(self) -> None:
        self.port = free_port()
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "flows.prefect_server", "temporary", str(self.port),
                 str(os.getpid())],
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
        if self.ready:
            return self.api_url
        deadline, tries, waited = time.monotonic() + timeout, 1, time.monotonic()
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
        now = time.monotonic()
        logging.getLogger("promptreel").debug(
            "Prefect's temporary server answered %.1f s after its start (waited %.1f s for it)",
            now - self.started, now - waited)
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
    """Start the temporary server for this process unless one runs already or the environment
    names another (PREFECT_API_URL) or disables it. Reads only the environment, so it runs
    before Prefect is imported; `prefect_settings` checks Prefect's other sources (a profile
    naming a server) and stops this one if it is not needed. Returns it, or None."""
    global _CURRENT
    if _CURRENT is not None and _CURRENT.process.poll() is None:
        return _CURRENT
    enabled = os.environ.get("PREFECT_SERVER_EPHEMERAL_ENABLED", "true").strip().lower()
    if os.environ.get("PREFECT_API_URL") or enabled in ("0", "false", "no", "off"):
        return None
    from flows import env

    _CURRENT = TemporaryServer(Path(env.apply()["PREFECT_HOME"]))
    return _CURRENT


def prefect_settings(server: TemporaryServer) -> dict:
    """Prefect settings for flows run against `server`: its URL, no UI links in the log (it
    serves no UI), and neither run heartbeats nor log records sent to it (the server dies with
    this process, nothing would ever read them; render.log has every line)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_LOGGING_TO_API_ENABLED,
        PREFECT_SERVER_EPHEMERAL_ENABLED,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        PREFECT_UI_URL,
    )

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        server.stop()  # a Prefect profile names a server, or disables temporary ones
        return {}
    url = server.wait(timeout=PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    return {PREFECT_API_URL: url, PREFECT_UI_URL: "", PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None,
            PREFECT_LOGGING_TO_API_ENABLED: False}


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


# ---------------------------------------------------------------- make server
def ui_env(port: int, host: str = UI_HOST) -> dict[str, str]:
    """The environment of `make server port=N`: the project's Prefect defaults, and the API's
    address (host and port) told to the server, its UI and its clients alike."""
    from flows import env

    url = f"http://{host}:{port}/api"
    env.apply()
    return {**os.environ, "PREFECT_SERVER_API_HOST": host, "PREFECT_SERVER_API_PORT": str(port),
            "PREFECT_UI_API_URL": url, "PREFECT_API_URL": url}


def ui_command(port: int, host: str = UI_HOST) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)]


def main(argv: list[str]) -> None:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m flows.prefect_server",
                                 description="Prefect's server for promptreel")
    sub = ap.add_subparsers(dest="command", required=True)
    ui = sub.add_parser("ui", help="`make server`: Prefect server and UI on 127.0.0.1:PORT")
    ui.add_argument("--port", type=int, default=4200)
    child = sub.add_parser("temporary", help="a render's temporary server (started by the render)")
    child.add_argument("port", type=int)
    child.add_argument("parent", type=int)
    a = ap.parse_args(argv)
    if a.command == "temporary":
        serve(a.port, a.parent)
        return
    if not 0 < a.port < 65536:
        ap.error(f"--port: bad value {a.port}; accepted: 1-65535")
    os.execve(sys.executable, ui_command(a.port), ui_env(a.port))


if __name__ == "__main__":
    main(sys.argv[1:])
