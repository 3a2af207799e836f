"""A film kept outside the repository (`--config-dir DIR`, the film in DIR/film/): render, show,
doctor and fetch-models read it the same way (the sweep: tests/flows/test_sweep.py). The one
render here is also the run whose console and report are checked: task-state lines name their
task, one progress bar per shot, no library warnings; every plot named and valid; every video
and image of the report plays and loads in headless Chromium (skipped without a chromium)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.browser import find_chromium, media_report
from tests.helpers import ROOT, read_run, run_cli


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """DIR/film/my_smoke.yaml: the smoke preset under another name, outside conf/."""
    films = tmp_path_factory.mktemp("films")
    text = (ROOT / "conf" / "film" / "smoke.yaml").read_text()
    assert text.count("name: smoke") == 1
    (films / "film").mkdir()
    (films / "film" / "my_smoke.yaml").write_text(text.replace("name: smoke", "name: my_smoke"))
    return films


@pytest.fixture(scope="module")
def outside_run(films: Path, models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("outside")
    # the flag first: the command line takes it anywhere, not only after the overrides
    proc = run_cli("--config-dir", str(films), "film=my_smoke", cache=base / "cache",
                   models=models_dir, run_dir=base / "run")
    return {"base": base, "run": base / "run", "proc": proc, "models": models_dir}


def test_render_reads_a_film_from_config_dir(outside_run: dict) -> None:
    record = read_run(outside_run["run"])
    assert record["film"] == "my_smoke" and Path(record["video"]).is_file()


@pytest.mark.parametrize(("flag", "form"), [("--show", "space"), ("--show", "equals"),
                                             ("--doctor", "space"), ("--fetch-models", "equals")])
def test_read_only_flags_read_a_film_from_config_dir(films: Path, outside_run: dict,
                                                     tmp_path: Path, flag: str, form: str) -> None:
    given = [f"--config-dir={films}"] if form == "equals" else ["--config-dir", str(films)]
    proc = run_cli(*given, "film=my_smoke", flag, cache=tmp_path / "cache",
                   models=outside_run["models"], check=False, timeout=300)
    out = proc.stdout + proc.stderr
    assert "error:" not in out and proc.returncode == 0, out[-3000:]
    if flag == "--show":
        assert '"name": "my_smoke"' in proc.stdout
    elif flag == "--doctor":
        assert "model generated_clip_tiny: generated on first use" in proc.stdout
    else:
        assert "generated_vqgan_f16_tiny ->" in proc.stdout


def test_a_missing_config_dir_is_a_clear_error(tmp_path: Path) -> None:
    for flag in ([], ["--show"]):
        proc = run_cli("film=my_smoke", "--config-dir", str(tmp_path / "nope"), *flag,
                       cache=tmp_path / "cache", models=tmp_path / "models", check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert f"error: --config-dir: bad value '{tmp_path / 'nope'}'; accepted: an existing " \
               "directory" in proc.stderr


def test_the_console_names_tasks_and_shows_a_bar_per_shot(outside_run: dict) -> None:
    out = outside_run["proc"].stdout
    err = outside_run["proc"].stderr
    assert "Finished in state" in out
    for line in out.splitlines():
        if "prefect.task_runs:" in line and "Finished in state" in line:
            task = line.split("prefect.task_runs: ", 1)[1].split(":", 1)[0]
            assert task.rsplit("-", 1)[0] in ("plan_timeline", "select_models", "generate_frames",
                                             "extract_frames", "compose_soundtrack",
                                             "refine_frames", "modulate_speed", "blend_shots",
                                             "export_video"), line
    bars = [line for line in out.splitlines() if "12/12 frames" in line]
    assert [b.split()[0] for b in bars] == ["evolve", "zoom"] and all("s/frame" in b for b in bars)
    assert "frame 3/12" not in out  # a bar, not a line per frame ...
    assert "evolve: frame 3/12" in (outside_run["run"] / "render.log").read_text()  # ... but logged
    for noise in ("Warning", "Still processing items", "Loaded model config"):
        assert noise not in out + err, noise


def test_quiet_prints_only_the_video(films: Path, outside_run: dict, tmp_path: Path) -> None:
    proc = run_cli("film=my_smoke", "--quiet", "--config-dir", str(films),
                   cache=outside_run["base"] / "cache", models=outside_run["models"],
                   run_dir=tmp_path / "quiet")  # a cached re-render
    assert proc.stdout.strip().splitlines() == [str(tmp_path / "quiet" / "my_smoke.mp4")]
    assert proc.stderr.strip() == ""


def test_the_report_names_every_plot_and_each_is_a_valid_image(outside_run: dict) -> None:
    from PIL import Image

    from flows.report import html_links

    run = outside_run["run"]
    refs, missing = html_links(run / "report.html")
    assert missing == []
    plots = sorted((run / "report" / "plots").iterdir())
    assert len(plots) == 2  # one per shot
    for plot in plots:
        assert plot.relative_to(run).as_posix() in refs
        with Image.open(plot) as im:
            im.verify()
            assert im.format == "PNG"
    summary = json.loads((run / "report" / "summary.json").read_text())
    assert summary["preview"] == "my_smoke.mp4" and summary["preview_kind"] == "video"


@pytest.mark.skipif(find_chromium() is None, reason="no chromium installed (make setup installs "
                    "Debian's where apt-get runs as root)")
def test_the_report_plays_in_headless_chromium(outside_run: dict) -> None:
    from flows.report import html_links

    page = outside_run["run"] / "report.html"
    seen = media_report(page)
    refs = html_links(page)[0]
    videos = [r for r in refs if r.endswith((".mp4", ".webm"))]
    assert sorted(v["src"] for v in seen["videos"]) == sorted(set(videos))
    assert len(seen["videos"]) == 3  # the film and a production cut per shot
    for v in seen["videos"]:
        assert v["error"] is None and v["duration"] > 0 and v["played"], v
    assert len(seen["images"]) == 4  # a plot and a contact sheet per shot
    for img in seen["images"]:
        assert img["width"] > 0 and img["height"] > 0, img
