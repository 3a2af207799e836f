"""The whole DAG from the command line: smoke render, cached re-run, kill and resume, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import ROOT, read_run, run_cli


def probe(path: Path) -> dict:
    from engines.media.ffmpeg import probe as ff_probe

    return ff_probe(path)


@pytest.fixture(scope="module")
def smoke_run(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("smoke")
    started = time.perf_counter()
    run_cli("film=smoke", cache=base / "cache", models=models_dir, run_dir=base / "run1")
    first = time.perf_counter() - started
    return {"base": base, "models": models_dir, "first_seconds": first,
            "record": read_run(base / "run1")}


def artefact_manifests(cache: Path) -> dict[str, float]:
    return {str(p): p.stat().st_mtime_ns for p in cache.glob("*/*/manifest.json")}


def test_smoke_writes_the_planned_h264_video(smoke_run: dict) -> None:
    record = smoke_run["record"]
    info = probe(Path(record["video"]))
    plan = record["timeline"]
    assert info.codec == "h264" and info.pix_fmt == "yuv420p"
    assert info.frames == plan["total_frames"]
    assert abs(info.duration - plan["duration_s"]) < 1 / plan["fps"] + 1e-6
    assert info.audio is not None
    assert abs(info.audio.duration - info.duration) <= 1 / plan["fps"]


def test_smoke_writes_a_report_people_can_open(smoke_run: dict) -> None:
    import json

    import pandas as pd

    from flows.report import html_links

    run = smoke_run["base"] / "run1"
    links, missing = html_links(run / "report.html")
    assert missing == [] and any(x.endswith(".mp4") for x in links)
    assert len({x for x in links if x.endswith("contact_sheet.png")}) == 2  # one per shot
    summary = json.loads((run / "report" / "summary.json").read_text())
    plan = smoke_run["record"]["timeline"]
    shots = pd.read_parquet(run / "report" / "shots.parquet")
    frames = pd.read_csv(run / "report" / "frames.csv")
    assert summary["shots"] == len(shots) == 2 and -1 <= summary["score"] <= 1
    assert len(frames) == shots["n_frames"].sum() == summary["frames"]
    tasks = pd.read_parquet(run / "report" / "tasks.parquet")
    assert {"generate_frames", "export_video", "score_frames"} <= set(tasks["task"])
    assert plan["total_frames"] > 0


def test_smoke_again_computes_nothing(smoke_run: dict) -> None:
    base = smoke_run["base"]
    before = artefact_manifests(base / "cache")
    run_cli("film=smoke", cache=base / "cache", models=smoke_run["models"], run_dir=base / "run2")
    assert artefact_manifests(base / "cache") == before
    assert not list((base / "cache").glob("*/*.work"))
    record = read_run(base / "run2")
    assert all(row["cached"] for row in record["tasks"]), record["tasks"]
    assert Path(record["video"]).read_bytes() == Path(smoke_run["record"]["video"]).read_bytes()


def test_editing_one_shot_rerenders_only_that_shot(smoke_run: dict) -> None:
    base = smoke_run["base"]
    before = set((base / "cache" / "generate_frames").glob("*/manifest.json"))
    run_cli("film=smoke", "film.shots.1.prompts.6=a garden of glass", cache=base / "cache",
            models=smoke_run["models"], run_dir=base / "run3")
    after = set((base / "cache" / "generate_frames").glob("*/manifest.json"))
    assert before <= after and len(after - before) == 1


@pytest.mark.slow
def test_killed_render_resumes_byte_identical(smoke_run: dict, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "flows.render", "film=smoke", f"runtime.cache_dir={cache}",
           f"runtime.models_dir={smoke_run['models']}", f"hydra.run.dir={tmp_path / 'killed'}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 300
    progress = None
    while time.time() < deadline:  # wait until some, not all, frames of shot 1 are committed
        found = list(cache.glob("generate_frames/*.work/progress.json"))
        if found and found[0].stat().st_size > 0 and len(list(found[0].parent.glob("frames/*.png"))) >= 4:
            progress = found[0]
            break
        time.sleep(0.05)
    assert progress is not None, "render never reached frame 4"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    committed = {p.name: p.stat().st_ino for p in progress.parent.glob("frames/*.png")}
    assert 0 < len(committed) < 12
    run_cli("film=smoke", cache=cache, models=smoke_run["models"], run_dir=tmp_path / "resumed")
    record = read_run(tmp_path / "resumed")
    frames_dir = Path(cache / "generate_frames" / record["artefacts"]["shots"][0] / "frames")
    if not frames_dir.exists():  # the killed shot may be the second one
        frames_dir = Path(cache / "generate_frames" / record["artefacts"]["shots"][1] / "frames")
    kept = {p.name: p.stat().st_ino for p in frames_dir.glob("*.png")}
    for name, ino in committed.items():
        if name in kept:
            assert kept[name] == ino, f"{name} was recomputed"
    assert Path(record["video"]).read_bytes() == Path(smoke_run["record"]["video"]).read_bytes()


def test_offline_real_model_fails_fast_naming_file_destination_and_url(tmp_path: Path) -> None:
    models = tmp_path / "empty_models"
    started = time.perf_counter()
    proc = run_cli("film=klee_garden", cache=tmp_path / "cache", models=models,
                   run_dir=tmp_path / "run", check=False, timeout=120)
    elapsed = time.perf_counter() - started
    assert proc.returncode != 0
    err = proc.stderr + proc.stdout
    assert elapsed < 60
    assert "heibox.uni-heidelberg.de" in err or "huggingface.co" in err, err[-2000:]
    assert str(models) in err
    assert not [p for p in models.rglob("*") if p.is_file()]
    assert "Traceback" not in proc.stderr


def test_prefect_logs_a_user_error_without_traceback_and_a_bug_with_one() -> None:
    """Prefect logs a failed task's exception with its traceback; for a PromptreelError (the
    user fixes it from the message) the record keeps its line and loses the traceback."""
    import logging
    import sys

    from engines.core.errors import PromptreelError
    from flows.render import ExpectedErrors

    assert any(isinstance(f, ExpectedErrors) for f in logging.getLogger("prefect.task_runs").filters)
    for exc, kept in ((PromptreelError("disk full"), False), (RuntimeError("a bug"), True)):
        try:
            raise exc
        except Exception:
            record = logging.LogRecord("prefect.task_runs", logging.ERROR, __file__, 1,
                                       "Task run failed", None, sys.exc_info())
        assert ExpectedErrors().filter(record)
        text = logging.Formatter().format(record)
        assert text.startswith("Task run failed") and ("Traceback" in text) == kept
