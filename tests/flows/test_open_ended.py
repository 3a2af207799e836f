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


def test_make_stop_writes_the_stop_file_of_a_cache(tmp_path, capsys):
    assert stop_cli.main([f"runtime.cache_dir={tmp_path}"]) == 0
    assert (tmp_path / STOP_FILE).is_file()
    assert "stop requested" in capsys.readouterr().out
    assert stop_cli.main(["seed=3"]) == 2
