"""An open-ended render (engine max_iterations: -1), the notebook's "run until I stop it": the
real command line, stopped with SIGINT (Ctrl-C), exports exactly the frames committed by then,
and the timeline and the fitted playback rate follow them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import stop as stop_cli
from tasks.stop import STOP_FILE
from tests.helpers import ROOT, read_run

FILM = """# @package _global_
defaults:
  - /debug/smoke
  - override /engine: vqgan_clip
  - override /soundtrack: none
seed: 3
engine:
  max_iterations: -1
film:
  name: endless
  fps: 8
  fit_fps: {seconds: 1.0, min_fps: 2, max_fps: 60}
  shots:
    - name: forever
      prompts: "a garden of flowers"
"""


def committed(cache: Path) -> int:
    try:
        progress = next((cache / "generate_frames").glob("*.work/progress.json"))
        return len(json.loads(progress.read_text())["files"])
    except (StopIteration, OSError, ValueError, KeyError):
        return 0


@pytest.mark.slow
def test_sigint_ends_an_open_ended_render_and_the_export_has_the_committed_frames(tmp_path,
                                                                                    models_dir):
    (tmp_path / "films" / "film").mkdir(parents=True)
    (tmp_path / "films" / "film" / "endless.yaml").write_text(FILM)
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    cmd = [sys.executable, "-m", "flows.render", "film=endless", f"runtime.cache_dir={cache}",
           f"runtime.models_dir={models_dir}", f"hydra.run.dir={run_dir}",
           "--config-dir", str(tmp_path / "films")]
    log = open(tmp_path / "render.log", "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=os.environ)
    try:
        deadline = time.monotonic() + 400
        while committed(cache) < 3:
            assert proc.poll() is None, (tmp_path / "render.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no 3 frames in time"
            time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=400) == 0, (tmp_path / "render.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    text = (tmp_path / "render.log").read_text()
    assert "stop requested" in text and "Traceback" not in text
    n = committed(cache)  # the frame in progress at the SIGINT is committed too
    assert n >= 3
    record = read_run(run_dir)
    assert record["timeline"]["total_frames"] == n
    assert record["timeline"]["fps"] == pytest.approx(max(n / 1.0, 2))  # clip(n / 1 s, 2, 60)
    from engines.media.ffmpeg import probe

    video = probe(Path(record["video"]), decode=True)
    assert video.frames == n
    assert float(video.fps) == pytest.approx(record["timeline"]["fps"])
    # the stopped shot's one committed artefact holds those frames; the open-ended work dir
    # stays, so the same command goes on rendering from there
    shots = [p for p in (cache / "generate_frames").iterdir()
             if not p.name.endswith((".work", ".lock"))]
    assert [len(list((p / "frames").glob("*.png"))) for p in shots] == [n]
    assert len(list((cache / "generate_frames").glob("*.work"))) == 1


def start_endless(tmp_path: Path, models_dir: Path) -> tuple[subprocess.Popen, Path, Path]:
    """The open-ended render of FILM on the real command line, its output in render.log, once
    it has committed 2 frames: (process, cache, run dir)."""
    (tmp_path / "films" / "film").mkdir(parents=True)
    (tmp_path / "films" / "film" / "endless.yaml").write_text(FILM)
    cache, run_dir = tmp_path / "cache", tmp_path / "run"
    cmd = [sys.executable, "-m", "flows.render", "film=endless", f"runtime.cache_dir={cache}",
           f"runtime.models_dir={models_dir}", f"hydra.run.dir={run_dir}",
           "--config-dir", str(tmp_path / "films")]
    with open(tmp_path / "render.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                env=os.environ)
    deadline = time.monotonic() + 400
    while committed(cache) < 2:
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("no 2 frames in time:\n"
                                 + (tmp_path / "render.log").read_text()[-3000:])
        time.sleep(0.5)
    return proc, cache, run_dir


def temporary_servers(pid: int) -> list:
    """The Prefect temporary servers a render process started (its own session: flows/
    prefect_server.py), as psutil processes."""
    import psutil

    return [c for c in psutil.Process(pid).children(recursive=True)
            if "flows.prefect_server" in " ".join(c.cmdline())]


def gone(processes: list, timeout: float = 15.0) -> bool:
    import psutil

    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


@pytest.mark.slow
def test_make_stop_ends_an_open_ended_render_started_the_fast_way(tmp_path, models_dir):
    """`make stop` (python -m flows.stop) with the render's late imports and its fast exit: the
    shot ends after a committed frame, the export and the report are written, the process exits
    0, and its temporary server (in a session of its own) goes with it."""
    proc, cache, run_dir = start_endless(tmp_path, models_dir)
    try:
        servers = temporary_servers(proc.pid)
        assert len(servers) == 1
        assert stop_cli.main([f"runtime.cache_dir={cache}"]) == 0
        assert proc.wait(timeout=400) == 0, (tmp_path / "render.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "render.log").read_text()
    assert "stopped by the user" in text and "Traceback" not in text
    n = committed(cache)
    record = read_run(run_dir)
    assert record["timeline"]["total_frames"] == n >= 2
    assert (run_dir / "report.html").is_file()
    assert gone(servers), "the temporary server outlived the render"


@pytest.mark.slow
def test_a_second_ctrl_c_aborts_and_leaves_no_server(tmp_path, models_dir):
    """Ctrl-C twice: the first asks the open-ended shot to stop, the second interrupts the
    render at once (no export); the temporary server does not outlive it."""
    proc, cache, run_dir = start_endless(tmp_path, models_dir)
    try:
        servers = temporary_servers(proc.pid)
        proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 60
        while "stop requested" not in (tmp_path / "render.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    text = (tmp_path / "render.log").read_text()
    assert code != 0, text[-3000:]
    assert not (run_dir / "run.json").exists()
    assert gone(servers), "the temporary server outlived the render"
    assert committed(cache) >= 2  # the committed frames stay for the next run


def test_make_stop_writes_the_stop_file_of_a_cache(tmp_path, capsys):
    assert stop_cli.main([f"runtime.cache_dir={tmp_path}"]) == 0
    assert (tmp_path / STOP_FILE).is_file()
    assert "stop requested" in capsys.readouterr().out
    assert stop_cli.main(["seed=3"]) == 2
