"""Open an HTML page in headless Chromium and report what its <video> and <img> elements did.

Chromium is driven through its DevTools protocol (https://chromedevtools.github.io/devtools-protocol/)
over a WebSocket (the `websockets` package, which Prefect already depends on): navigate to the
page, then evaluate a script that waits for every video's metadata (or error), plays it muted
until its clock moves, and waits for every image. Needs a `chromium` on PATH (Debian's package);
`find_chromium()` returns None without one, and the tests that use this skip.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

# flags for a closed network and a machine with no display
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--autoplay-policy=no-user-gesture-required",
         "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1")

PROBE = """
(async () => {
  const settle = (el, events, done, ms) => new Promise(resolve => {
    let finished = false;
    const finish = () => { if (!finished) { finished = true; resolve(done()); } };
    for (const e of events) el.addEventListener(e, finish, {once: true});
    setTimeout(finish, ms);
  });
  if (document.readyState !== "complete")
    await new Promise(r => addEventListener("load", r, {once: true}));
  const videos = await Promise.all([...document.querySelectorAll("video")].map(async v => {
    v.muted = true;
    if (v.readyState < 1 && !v.error) {
      v.preload = "auto";
      v.load();
      await settle(v, ["loadedmetadata", "error"], () => null, 30000);
    }
    let played = false;
    if (!v.error && v.readyState >= 1) {
      try { await v.play(); } catch (e) {}
      const start = Date.now();
      while (!v.error && v.currentTime <= 0 && !v.ended && Date.now() - start < 30000)
        await new Promise(r => setTimeout(r, 50));
      played = v.currentTime > 0 || v.ended;
      v.pause();
    }
    return {src: v.getAttribute("src"), duration: v.duration, played,
            error: v.error ? `${v.error.code} ${v.error.message}` : null,
            width: v.videoWidth, height: v.videoHeight};
  }));
  const images = await Promise.all([...document.images].map(async img => {
    img.loading = "eager";
    if (!(img.complete && img.naturalWidth))
      await settle(img, ["load", "error"], () => null, 30000);
    return {src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight};
  }));
  return JSON.stringify({videos, images});
})()
"""


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """A minimal DevTools protocol session on one page target."""

    def __init__(self, ws_url: str) -> None:
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=30)
        self.ids = itertools.count(1)
        self.events: list[str] = []  # names of the events received so far

    def call(self, method: str, timeout: float = 120, **params: Any) -> dict:
        msg_id = next(self.ids)
        self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if "method" in reply:
                self.events.append(reply["method"])
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})

    def wait_event(self, method: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while method not in self.events:
            reply = json.loads(self.ws.recv(timeout=max(deadline - time.monotonic(), 0.1)))
            if "method" in reply:
                self.events.append(reply["method"])

    def close(self) -> None:
        self.ws.close()


def end_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the browser's whole process group, SIGKILL to what is left after 20 s."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + 5  # the helpers leave after the browser
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)


def media_report(page: Path, *, timeout: float = 180) -> dict[str, list[dict[str, Any]]]:
    """Open `page` (file://) in headless Chromium; return {videos: [...], images: [...]} as the
    page's elements saw them (duration, played, error; natural width and height)."""
    exe = find_chromium()
    if exe is None:
        raise RuntimeError("no chromium on PATH")
    # Chromium's helper processes (renderer, crashpad, utility) outlive the browser process for
    # a moment and still write into the profile: they run in a process group of their own, which
    # is ended as a whole before the profile is removed (once, the removal met a directory a
    # helper was still filling: "Directory not empty: 'Default'")
    with tempfile.TemporaryDirectory(prefix="promptreel-chromium-",
                                     ignore_cleanup_errors=True) as profile:
        proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            deadline = time.monotonic() + 60
            while not (port_file.exists() and port_file.read_text().strip()):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"chromium did not start (exit {proc.poll()})")
                time.sleep(0.1)
            port = int(port_file.read_text().split()[0])
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=30) as r:
                targets = json.load(r)
            target = next(t for t in targets if t.get("type") == "page")
            tools = DevTools(target["webSocketDebuggerUrl"])
            try:
                tools.call("Page.enable")
                tools.events.clear()
                tools.call("Page.navigate", url=Path(page).resolve().as_uri())
                tools.wait_event("Page.loadEventFired")
                result = tools.call("Runtime.evaluate", timeout=timeout, expression=PROBE,
                                    awaitPromise=True, returnByValue=True)
            finally:
                tools.close()
        finally:
            end_group(proc)
    if "exceptionDetails" in result:
        raise RuntimeError(f"probe script failed: {result['exceptionDetails']}")
    return json.loads(result["result"]["value"])
