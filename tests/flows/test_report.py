"""Run reports and sweep summaries on hand-made artefacts (no render needed)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from engines.core.errors import PromptreelError
from engines.core.files import write_json
from flows import report
from flows.config import Film, Resolution, Runtime
from tasks.artefacts import Store


def missing_refs(page: Path) -> tuple[list[str], list[str]]:
    return report.html_links(page)


def video(path: Path, *, faststart: bool = True, pix_fmt: str = "yuv420p",
          codec: str = "libx264") -> Path:
    """A real 4-frame 64x48 video (ffmpeg's test pattern)."""
    from engines.media.ffmpeg import ffmpeg_exe

    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=64x48:rate=8", "-frames:v", "4", "-c:v", codec, "-pix_fmt",
                    pix_fmt, *(["-movflags", "+faststart"] if faststart else []), str(path)],
                   check=True)
    return path


@pytest.fixture(scope="module", autouse=True)
def sample_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    global SAMPLE_VIDEO
    SAMPLE_VIDEO = video(tmp_path_factory.mktemp("video") / "sample.mp4")
    return SAMPLE_VIDEO


SAMPLE_VIDEO = Path("set by the sample_video fixture")


def png(path: Path, shade: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 6), (shade, 0, 0)).save(path)


def plans_of(cfg: SimpleNamespace) -> tuple:
    """RenderConfig.shot_plans for the hand-made config."""
    from engines.planning.timeline import shot_plan

    return tuple(shot_plan(s, fps=cfg.film.fps, width=cfg.resolution.width,
                           height=cfg.resolution.height, seed=cfg.shot_seed(i),
                           key=f"film.shots.{i}") for i, s in enumerate(cfg.film.shots))


def shot_artefacts(store: Store, name: str, n: int, *, engine: str = "vqgan_clip",
                   records: dict | None = None, clip: tuple[str, ...] = ()) -> tuple[str, str]:
    """A committed generate_frames and extract_frames pair, as the real tasks lay them out;
    `records`: the per-frame table's columns (default: a CLIP engine's loss and seconds, and a
    similarity `clip:<text>` for each of `clip`)."""
    work = store.begin("generate_frames", f"gen{name}")
    for i in range(n):
        png(work.path / "frames" / f"{i:06d}.png", 10 * i)
    columns = records or {"loss": [1.0 - 0.1 * i for i in range(n)], "seconds": [0.5] * n,
                          **{f"clip:{t}": [0.1 * (j + 1) + 0.01 * i for i in range(n)]
                             for j, t in enumerate(clip)}}
    pd.DataFrame({"frame": range(n), **columns}).to_parquet(work.path / "frames.parquet")
    gen = work.commit({"shot": name, "n_frames": n, "fps": 8, "engine": engine,
                       "render_seconds": 1.5})
    work = store.begin("extract_frames", f"ext{name}")
    png(work.path / "contact_sheet.png", 200)
    video(work.path / "production_cut.mp4")
    ext = work.commit(dict(gen.meta), upstream=[f"frames={gen.key}"])
    return gen.key, ext.key


@pytest.fixture
def run(tmp_path: Path) -> tuple[SimpleNamespace, dict]:
    store = Store(tmp_path / "cache")
    keys = [shot_artefacts(store, "a", 3, clip=("a red garden", "blurry")),
            shot_artefacts(store, "b", 4, clip=("noon", "night", "stars"))]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    video(run_dir / "smoke.mp4")
    film = Film(name="smoke", fps=8, shots=[
        {"name": "a", "prompts": "a red garden:1 | blurry:-0.3", "frames": 3},
        {"name": "b", "prompts": {"0": "noon", "2": "night:2 | stars"}, "frames": 4}])
    cfg = SimpleNamespace(
        film=film, seed=7, seed_drawn=False, clip={"name": "tiny"}, shot_seed=lambda i: 7 + i,
        resolution=Resolution(name="r64", width=64, height=64),
        runtime=Runtime(cache_dir=tmp_path / "cache", models_dir=tmp_path / "models",
                        run_dir=run_dir, device="cpu"))
    cfg.shot_plans = lambda: plans_of(cfg)
    record = {"film": "smoke", "video": str(run_dir / "smoke.mp4"),
              "artefacts": {"shots": [e for _, e in keys]},
              "tasks": [
                  {"task": "generate_frames", "key": "gena", "cached": False, "seconds": 2.0},
                  {"task": "generate_frames", "key": "genb", "cached": True, "seconds": 0.01}]}
    write_json(run_dir / "run.json", record)
    return cfg, record


def test_run_report_tables_html_and_cached_scores(run, monkeypatch) -> None:
    cfg, record = run
    calls = []

    def fake_scores(entry, models_dir, device, items):
        calls.append([(Path(p).name, texts) for p, texts in items])
        return [[0.1 * (i + 1) for i in range(len(texts))] for _, texts in items]

    monkeypatch.setattr(report, "clip_scores", fake_scores)
    page = report.run_report(cfg, record, artifacts=False)
    # the last frame of each shot, scored against the positive prompts in force there
    assert calls == [[("000002.png", ["a red garden"])], [("000003.png", ["night", "stars"])]]
    out = cfg.runtime.run_dir / "report"
    shots = pd.read_parquet(out / "shots.parquet")
    assert shots["shot"].tolist() == ["a", "b"]
    assert shots["score"].tolist() == pytest.approx([0.1, (0.1 * 2 + 0.2 * 1) / 3])
    frames = pd.read_csv(out / "frames.csv")
    assert len(frames) == 7 and frames.groupby("shot").size().to_dict() == {"a": 3, "b": 4}
    tasks = pd.read_parquet(out / "tasks.parquet")
    assert tasks["task"].tolist() == ["generate_frames"] * 2 + ["score_frames"] * 2
    assert tasks["cached"].tolist() == [False, True, False, False]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["score"] == pytest.approx((0.1 + 0.4 / 3) / 2)
    assert (summary["frames"], summary["cached"], summary["computed"]) == (7, 1, 3)
    refs, missing = missing_refs(page)
    assert missing == [] and "smoke.mp4" in refs
    assert sum(r.endswith("contact_sheet.png") for r in refs) == 4  # link + img per shot
    assert sum(r.endswith("production_cut.mp4") for r in refs) == 2

    report.run_report(cfg, record, artifacts=False)  # again: the scores come from the cache
    assert len(calls) == 2
    assert pd.read_parquet(out / "tasks.parquet")["cached"].tolist()[2:] == [True, True]


def test_report_refuses_a_damaged_artefact(run) -> None:
    cfg, record = run
    store = Store(cfg.runtime.cache_dir)
    Path(store.load("generate_frames", "gena").path, "frames.parquet").unlink()
    with pytest.raises(PromptreelError, match="generate_frames/gena is not .* in the cache"):
        report.run_report(cfg, record, score=False, artifacts=False)


def test_run_report_without_scores(run) -> None:
    cfg, record = run
    page = report.run_report(cfg, record, score=False, artifacts=False)
    shots = pd.read_parquet(cfg.runtime.run_dir / "report" / "shots.parquet")
    assert shots["score"].isna().all()
    assert json.loads((page.parent / "report" / "summary.json").read_text())["score"] is None
    assert missing_refs(page)[1] == []


def make_job(sweep: Path, num: int, overrides: list[str], *, score: float | None = None,
             error: str | None = None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    cfg = {"seed": int(overrides[0].split("=")[1]), "resolution": {"width": 64, "height": 64},
           "film": {"name": "smoke"}}
    (job / ".hydra" / "config.yaml").write_text(yaml.safe_dump(cfg))
    if error:
        write_json(job / "failed.json", {"error": "ConfigError", "message": error})
        return job
    png(job / "report" / "media" / "00_a_contact_sheet.png", 50)
    shutil.copyfile(SAMPLE_VIDEO, job / "smoke.mp4")
    (job / "report.html").write_text("<html></html>")
    write_json(job / "report" / "summary.json",
               {"film": "smoke", "score": score, "video": "smoke.mp4", "cached": 2, "computed": 5})
    return job


def test_sweep_summary_ranks_jobs_and_lists_failures(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    make_job(sweep, 0, ["seed=1"], score=0.21)
    make_job(sweep, 1, ["seed=2"], score=0.35)
    make_job(sweep, 2, ["seed=3"], error="seed: bad value")
    make_job(sweep, 10, ["seed=4"], score=0.30)
    (sweep / "multirun.yaml").write_text("{}")
    df = report.sweep_summary(sweep, artifacts=False)
    assert df["job"].tolist() == ["1", "10", "0", "2"]
    assert df["rank"].tolist() == [1, 2, 3, 4]
    assert df["status"].tolist() == ["ok", "ok", "ok", "failed"]
    assert df["error"].tolist()[-1] == "ConfigError: seed: bad value"
    on_disk = pd.read_csv(sweep / "summary.csv")
    assert on_disk["job"].tolist() == [1, 10, 0, 2]
    assert len(pd.read_parquet(sweep / "summary.parquet")) == 4
    diffs = pd.read_csv(sweep / "config_differences.csv")
    assert list(diffs.columns) == ["job", "seed"]  # only what differs between jobs
    refs, missing = missing_refs(sweep / "summary.html")
    assert missing == []
    assert sum(r.endswith(".mp4") for r in refs) == 3 and "1/report.html" in refs
    assert "seed: bad value" in (sweep / "summary.html").read_text()


def test_clip_scores_with_the_generated_perceptor(tmp_path: Path) -> None:
    """The real scorer (engines/models/clip.py + clip_guide) on the tiny generated CLIP."""
    from engines.models import registry, weights

    conf = Path(report.__file__).parents[1] / "conf"
    entry = registry.load_entry("clip", "generated_clip_tiny", conf)
    models_dir = tmp_path / "models"
    weights.materialise_generated(entry, models_dir)
    png(tmp_path / "a.png", 120)
    png(tmp_path / "b.png", 0)
    items = [(tmp_path / "a.png", ["a red garden", "night"]), (tmp_path / "b.png", ["night"])]
    first = report.clip_scores(entry, models_dir, "cpu", items)
    assert [len(s) for s in first] == [2, 1]
    assert all(-1.0 <= v <= 1.0 for s in first for v in s)
    assert report.clip_scores(entry, models_dir, "cpu", items) == first  # deterministic
    assert first[0][0] != first[0][1]  # the texts are told apart


def test_report_names_every_plot_and_each_is_a_valid_image(run, monkeypatch) -> None:
    from PIL import Image

    cfg, record = run
    monkeypatch.setattr(report, "clip_scores", lambda e, m, d, items: [[0.2] * len(t)
                                                                       for _, t in items])
    page = report.run_report(cfg, record, artifacts=False)
    plots = sorted((page.parent / "report" / "plots").glob("*"))
    assert [p.name for p in plots] == ["00_a.png", "01_b.png"]  # one per shot
    refs = report.html_links(page)[0]
    for plot in plots:
        assert plot.relative_to(page.parent).as_posix() in refs
        with Image.open(plot) as im:
            im.verify()
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    summary = json.loads((page.parent / "report" / "summary.json").read_text())
    assert summary["plots"] == [p.relative_to(page.parent).as_posix() for p in plots]
    # the per-frame table gains the weighted CLIP score where the engine measured similarities:
    # shot a's only positive prompt is 'a red garden' (blurry is -0.3); shot b's last frames
    # weigh night 2 and stars 1 (noon is no longer in force)
    frames = pd.read_csv(page.parent / "report" / "frames.csv")
    a, b = frames[frames["shot"] == "a"], frames[frames["shot"] == "b"]
    assert a["clip_score"].tolist() == pytest.approx(a["clip:a red garden"].tolist())
    last = b.iloc[-1]
    assert last["clip_score"] == pytest.approx((2 * last["clip:night"] + last["clip:stars"]) / 3)
    shots = pd.read_parquet(page.parent / "report" / "shots.parquet")
    assert shots["plot_panels"].tolist() == ["loss, clip", "loss, clip"]
    assert shots["final_clip_score"].notna().all() and shots["final_loss"].notna().all()
    assert "nan" not in page.read_text().lower()


@pytest.mark.parametrize(("kind", "args", "previewed"), [
    ("h264 yuv420p, index in front", {}, False),
    ("h264 yuv420p, index at the end", {"faststart": False}, True),
    ("h264 yuv444p", {"pix_fmt": "yuv444p"}, True),
    ("h265", {"codec": "libx265"}, True)])
def test_a_video_browsers_cannot_play_gets_an_h264_preview(tmp_path: Path, kind: str, args: dict,
                                                           previewed: bool) -> None:
    src = video(tmp_path / "take.mp4", **args)
    assert (report.browser_playable(src) is None) == previewed, kind
    shown, what = report.embed(src, tmp_path / "media", "preview", link=False)
    assert what == "video" and (shown != src) == previewed
    assert report.browser_playable(shown) == "video"
    boxes = report.top_level_boxes(shown)
    assert boxes.index("moov") < boxes.index("mdat")


def grid_cells(page: Path) -> list[str]:
    """The data-job of every cell of the sweep grid (table class 'grid')."""
    cells: list[str] = []

    class Parser(HTMLParser):
        in_grid = False

        def handle_starttag(self, tag: str, attrs: list) -> None:
            a = dict(attrs)
            if tag == "table":
                self.in_grid = "grid" in (a.get("class") or "").split()
            elif tag == "td" and self.in_grid and "data-job" in a:
                cells.append(a["data-job"])

    Parser().feed(page.read_text())
    return cells


def test_sweep_of_two_parameters_is_a_grid_with_one_cell_per_job(tmp_path: Path) -> None:
    sweep = tmp_path / "multirun"
    scores = [0.21, 0.35, 0.30, None]
    for num, (seed, res) in enumerate([(1, "r64"), (1, "r96x64"), (2, "r64"), (2, "r96x64")]):
        make_job(sweep, num, [f"seed={seed}", f"resolution={res}", "film=smoke"],
                 score=scores[num], error="out of memory" if scores[num] is None else None)
    report.sweep_summary(sweep)
    page = sweep / "summary.html"
    assert sorted(grid_cells(page)) == ["0", "1", "2", "3"]
    text = page.read_text()
    assert "Grid: seed &times; resolution" in text
    assert text.count('class="cell best"') == 1 and 'data-job="1"' in text  # job 1 scored best
    refs, missing = report.html_links(page)
    assert missing == []
    # each take plays inline: in the grid and in the ranked list
    assert sum(r.endswith("smoke.mp4") for r in refs) == 2 * 3
    make_job(sweep / "one", 0, ["seed=1"], score=0.1)  # one parameter: no grid
    make_job(sweep / "one", 1, ["seed=2"], score=0.2)
    report.sweep_summary(sweep / "one")
    assert grid_cells(sweep / "one" / "summary.html") == []


def test_report_of_an_engine_without_loss_or_clip_scores(run) -> None:
    """A diffusion engine's frame records (chunk, steps, seconds, prompts; no loss, no CLIP
    similarity): its plot has what it measured, the page no column of values nobody has and no
    NaN, and a shot whose score cannot be computed (no CLIP weights here) still gets its report."""
    from PIL import Image

    from engines.models import registry

    cfg, record = run
    # a real CLIP entry whose weights are not in this models folder (and are never fetched here)
    cfg.clip = registry.load_entry("clip", "vit_b_32_openai", Path(report.__file__).parents[1] / "conf")
    store = Store(cfg.runtime.cache_dir)
    keys = [shot_artefacts(store, "a", 3, engine="wan", records={
                "chunk": [0, 0, 1], "steps": [4] * 3, "seconds": [0.2, 0.2, 0.3],
                "prompts": ["a red garden"] * 3}),
            shot_artefacts(store, "b", 4, engine="wan", records={
                "chunk": [0] * 4, "steps": [4] * 4, "seconds": [0.1] * 4,
                "prompts": ["noon"] * 4})]
    record = {**record, "artefacts": {"shots": [e for _, e in keys]}}
    page = report.run_report(cfg, record, artifacts=False)
    text = page.read_text()
    assert "nan" not in text.lower().replace("nanoseconds", "")
    assert "final loss" not in text and "final CLIP score" not in text
    assert "s/frame" in text and "seconds per frame against the frame" in text
    shots = pd.read_parquet(page.parent / "report" / "shots.parquet")
    assert shots["score"].isna().all() and shots["final_loss"].isna().all()
    assert shots["plot_panels"].tolist() == ["seconds", "seconds"]
    assert shots["seconds_per_frame"].tolist() == pytest.approx([0.7 / 3, 0.1])
    assert all(t.startswith("not scored: ") for t in shots["score_texts"])
    frames = pd.read_csv(page.parent / "report" / "frames.csv")
    assert "clip_score" not in frames.columns and len(frames) == 7
    refs, missing = missing_refs(page)
    assert missing == []
    for plot in sorted((page.parent / "report" / "plots").glob("*.png")):
        assert plot.relative_to(page.parent).as_posix() in refs
        with Image.open(plot) as im:
            im.verify()


def test_shot_figure_panels_follow_what_the_engine_measured(tmp_path: Path) -> None:
    from flows import plots

    assert plots.metric_panels(None) == []
    clip = pd.DataFrame({"frame": [0, 1], "loss": [1.0, 0.5], "clip:a": [0.1, 0.2],
                         "seconds": [1.0, 1.0]})
    assert plots.metric_panels(clip) == ["loss", "clip"]
    assert plots.metric_panels(clip.drop(columns=["loss"])) == ["clip"]
    nan_loss = clip.assign(loss=float("nan")).drop(columns=["clip:a"])
    assert plots.metric_panels(nan_loss) == ["seconds"]  # a NaN column is not a measurement
    assert plots.metric_panels(pd.DataFrame({"frame": [0], "chunk": [0]})) == []
