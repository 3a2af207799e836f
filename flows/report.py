"""Run reports and sweep summaries: pandas tables (Parquet + CSV), HTML pages from jinja2
templates (flows/templates/) with matplotlib plots (flows/plots.py), Prefect artifacts.

A run report lives in `<run dir>/report/` (tasks, shots, frames as .parquet and .csv,
`summary.json`, `plots/` with one PNG per shot, `media/` with each shot's contact sheet and
production cut) plus `<run dir>/report.html`. A sweep summary lives in the sweep dir:
`summary.{parquet,csv,html}`, one row per job ranked by score (failed jobs last, with why), a
grid of the takes when two parameters are swept, the best take marked. Every file the pages
reference sits next to them (relative links), so the folder can be copied or served as it is.

Everything a page embeds plays in a browser: a video is linked as it is when it is H.264
yuv420p with its index (moov atom) in front, or VP9 in WebM; any other export (H.265, ProRes,
4:4:4, an index at the end) gets an H.264 yuv420p preview with the index in front
(`report/media/preview.mp4`); a GIF is shown as an image.

Score: CLIP cosine similarity (in [-1, 1]) of a shot's last rendered frame to the positive
prompts in force at that frame, under the guiding perceptor (`cfg.clip`), weighted by prompt
weight. Scores are cached artefacts (`score_frames`), so re-running a render computes nothing.
The plots' per-frame CLIP score is the same weighted mean over the similarities the engine
measured at each committed frame. Engines that measure no loss or CLIP similarity per frame (the
diffusion engines) get the panels of what they did record (flows/plots.py), and the page leaves
out the columns no shot has; a shot whose score cannot be computed (its CLIP model not on this
machine) shows none, with the reason, and the rest of the report is written.
"""

from __future__ import annotations

import json
import logging
import math
import re
import struct
from pathlib import Path
from typing import Any

import pandas as pd

from engines.core.errors import PromptreelError
from engines.core.files import atomic_path, link_or_copy, write_bytes, write_json
from tasks.artefacts import Artefact, Store
from tasks.cache import LEDGER, run_cached

log = logging.getLogger("promptreel")
SCORE_TASK = "score_frames"
SCORE_VERSION = "1"
REPORT = "report"
TEMPLATES = Path(__file__).resolve().parent / "templates"


# ---------------------------------------------------------------- tables
def write_table(df: pd.DataFrame, directory: Path, stem: str) -> None:
    """`<stem>.parquet` and `<stem>.csv`, each written atomically."""
    with atomic_path(directory / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(directory / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)


def link_media(src: Path, dst: Path) -> Path:
    """Hard link (copy across devices) a cached file next to the report."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    link_or_copy(src, dst)
    return dst


# ---------------------------------------------------------------- media a browser plays
def top_level_boxes(path: Path) -> list[str]:
    """The top-level box (atom) types of an MP4/MOV file, in file order (ISO/IEC 14496-12:
    32-bit size, 4-character type; size 1 = a 64-bit size follows, 0 = to the end)."""
    boxes: list[str] = []
    with open(path, "rb") as fh:
        end = fh.seek(0, 2)
        pos = 0
        while pos + 8 <= end:
            fh.seek(pos)
            size, kind = struct.unpack(">I4s", fh.read(8))
            if size == 1:
                size = struct.unpack(">Q", fh.read(8))[0]
            elif size == 0:
                size = end - pos
            boxes.append(kind.decode("latin-1"))
            if size < 8:
                break
            pos += size
    return boxes


def browser_playable(path: Path) -> str | None:
    """'video' if browsers play `path` as it is in a <video> (H.264 yuv420p MP4/MOV with the
    moov atom before the media data, or VP9 yuv420p WebM), 'img' for a GIF, else None."""
    import av

    try:
        with av.open(str(path)) as c:
            fmt = c.format.name
            stream = c.streams.video[0] if c.streams.video else None
            codec = stream.codec_context.name if stream else None
            pix_fmt = stream.codec_context.pix_fmt if stream else None
    except (av.error.FFmpegError, OSError):
        return None
    if fmt == "gif":
        return "img"
    if codec == "vp9" and "webm" in fmt and pix_fmt == "yuv420p":
        return "video"
    if codec == "h264" and pix_fmt == "yuv420p" and "mp4" in fmt:
        boxes = top_level_boxes(path)
        if "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat"):
            return "video"
    return None


def browser_preview(src: Path, dst: Path) -> Path:
    """An H.264 yuv420p MP4 of `src` with its index in front (even sides, AAC audio if any)."""
    from engines.media.ffmpeg import GLOBAL_ARGS, ffmpeg_exe, run_argv

    dst.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(dst) as tmp:
        run_argv([ffmpeg_exe(), *GLOBAL_ARGS, "-i", str(src), "-map", "0:v:0", "-map", "0:a?",
                  "-vf", "scale=trunc(iw/2)*2:trunc(ih/2)*2", "-c:v", "libx264", "-preset",
                  "veryfast", "-crf", "20", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a",
                  "160k", "-movflags", "+faststart", "-f", "mp4", str(tmp)],
                 what=f"browser preview of {src}")
    return dst


def embed(src: Path, out: Path, stem: str, *, link: bool = True) -> tuple[Path, str]:
    """(file the report shows, 'video' | 'img') for a video: `src` when a browser plays it as it
    is (hard-linked as `<out>/<stem><suffix>` when `link`), else an H.264 preview
    `<out>/<stem>.mp4`."""
    kind = browser_playable(src)
    if kind is None:
        return browser_preview(src, out / f"{stem}.mp4"), "video"
    return (link_media(src, out / f"{stem}{src.suffix}") if link else src), kind


# ---------------------------------------------------------------- scores
def final_prompts(shot: Any, fps: float, n_frames: int) -> list[tuple[str, float]]:
    """(text, weight) of the positive prompts in force at the shot's last frame."""
    from engines.planning.prompts import parse_prompt_schedule

    schedule = parse_prompt_schedule(shot.prompts, key=f"film.shots.{shot.name}.prompts", fps=fps)
    kind = shot.transition.kind if shot.transition.kind in ("cut", "crossfade") else "cut"
    prompts = schedule.at(max(n_frames - 1, 0), transition=kind,
                          transition_frames=shot.transition.frames)
    return [(p.text, p.weight) for p in prompts if p.weight > 0]


def clip_scores(entry: Any, models_dir: Path, device: str,
                items: list[tuple[Path, list[str]]]) -> list[list[float]]:
    """CLIP cosine similarity (-1..1) of each image file to each of its texts, one perceptor."""
    from engines.guidance.clip_guide import clip_similarity, load_image
    from engines.models.loaded import load_model

    perceptor = load_model(entry, models_dir, device)
    return [clip_similarity(perceptor, load_image(path, device=device), list(texts))
            for path, texts in items]


def score_shot(*, frames: Artefact, prompts: tuple[tuple[str, float], ...], clip: Any,
               runtime: Any) -> Artefact:
    """Cached: `scores.json` = {score, texts, similarities} for one shot's last frame."""

    def build(work: Path) -> dict[str, Any]:
        from engines.core.device import pick_device

        last = sorted(Path(frames.path, "frames").glob("*.png"))[-1]
        texts = [t for t, _ in prompts]
        sims = clip_scores(clip, runtime.models_dir, pick_device(runtime.device),
                           [(last, texts)])[0] if texts else []
        total = sum(w for _, w in prompts)
        weighted = sum(s * w for s, (_, w) in zip(sims, prompts, strict=True))
        score = weighted / total if sims else None
        result = {"score": score, "frame": last.name, "texts": texts, "similarities": sims}
        write_json(work / "scores.json", result)
        return result

    return run_cached(SCORE_TASK, SCORE_VERSION, locals(), build)


def upstream_key(artefact: Artefact, name: str) -> str:
    manifest = json.loads(Path(artefact.path, "manifest.json").read_text())
    return next(u.split("=", 1)[1] for u in manifest["upstream"] if u.startswith(f"{name}="))


def committed(store: Store, task: str, key: str) -> Artefact:
    artefact = store.load(task, key)
    if artefact is None:
        raise PromptreelError(f"report: artefact {task}/{key} is not (or no longer) in the cache "
                              f"{store.root}; run the same render again to rebuild it")
    return artefact


def number(value: Any) -> float | None:
    """A float for a table cell, None for a missing or NaN value."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def shot_rows(cfg: Any, record: dict[str, Any], out: Path, *, score: bool) -> tuple[list, list]:
    """One row per shot (score, media, plot) and the per-frame metrics of every shot."""
    from flows.plots import clip_score, metric_panels, schedule_table, shot_figure

    store = Store(cfg.runtime.cache_dir)
    rows, frames = [], []
    plans = cfg.shot_plans()
    for i, (shot, key) in enumerate(zip(cfg.film.shots, record["artefacts"]["shots"], strict=True)):
        extracted = committed(store, "extract_frames", key)
        rendered = committed(store, "generate_frames", upstream_key(extracted, "frames"))
        n = int(rendered.meta["n_frames"])
        row = {"shot": shot.name, "index": i, "n_frames": n, "engine": rendered.meta.get("engine"),
               "render_seconds": rendered.meta.get("render_seconds"),
               "frames_key": rendered.key, "score": None, "score_texts": None}
        if score:
            prompts = tuple(final_prompts(shot, cfg.film.fps, n))
            try:
                result = score_shot(frames=rendered, prompts=prompts, clip=cfg.clip,
                                    runtime=cfg.runtime).meta
                row.update(score=result["score"], score_texts=" | ".join(result["texts"]))
            except PromptreelError as exc:  # e.g. a diffusion render without the CLIP weights
                log.warning("report: no score for shot %s: %s", shot.name, exc)
                row.update(score_texts=f"not scored: {exc}")
        stem = f"{i:02d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', shot.name)}"
        sheet = link_media(extracted.file("contact_sheet.png"),
                           out / "media" / f"{stem}_contact_sheet.png")
        cut, kind = embed(extracted.file("production_cut.mp4"), out / "media",
                          f"{stem}_production_cut")
        row.update(contact_sheet=sheet.relative_to(out.parent).as_posix(),
                   production_cut=cut.relative_to(out.parent).as_posix(), production_cut_kind=kind)
        # the plan as rendered: an open-ended shot stopped early has fewer frames
        plan = plans[i].head(n) if n < plans[i].n_frames else plans[i]
        table = rendered.file("frames.parquet")
        metrics = pd.read_parquet(table) if table.exists() else None
        row.update(seconds_per_frame=None, final_loss=None, final_clip_score=None)
        if metrics is not None and len(metrics) and "frame" in metrics:
            panels = metric_panels(metrics)
            if "clip" in panels:
                metrics = metrics.assign(clip_score=clip_score(metrics, schedule_table(plan)))
            frames.append(metrics.assign(shot=shot.name))
            last = metrics.iloc[-1]
            if "seconds" in metrics:
                row["seconds_per_frame"] = number(pd.to_numeric(metrics["seconds"],
                                                                errors="coerce").mean())
            row.update(final_loss=number(last.get("loss")),
                       final_clip_score=number(last.get("clip_score")))
        plot = shot_figure(plan, out / "plots" / f"{stem}.png", metrics)
        row.update(plot=plot.relative_to(out.parent).as_posix(),
                   plot_panels=", ".join(metric_panels(metrics)))
        rows.append(row)
    return rows, frames


def clean(value: Any) -> Any:
    """None for NaN/None (JSON and templates), the value otherwise."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value


def run_report(cfg: Any, record: dict[str, Any], *, score: bool = True,
               artifacts: bool = True) -> Path:
    """Write `<run dir>/report/*` and `<run dir>/report.html`; return the HTML path.

    Call it at the end of the parent flow, after `run.json` (the Prefect artifacts then attach to
    that flow run). `score=False` skips the CLIP scores.
    """
    run_dir = Path(cfg.runtime.run_dir)
    out = run_dir / REPORT
    before = len(LEDGER)
    rows, frames = shot_rows(cfg, record, out, score=score)
    tasks = pd.DataFrame([*record.get("tasks", []), *LEDGER[before:]],
                         columns=["task", "key", "cached", "seconds"])
    shots = pd.DataFrame(rows)
    frame_df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame({"shot": []})
    write_table(tasks, out, "tasks")
    write_table(shots, out, "shots")
    write_table(frame_df, out, "frames")
    video = Path(record["video"]) if record.get("video") else None
    preview, preview_kind = (embed(video, out / "media", "preview", link=False)
                             if video and video.is_file() else (None, None))
    scores = [s for s in shots["score"] if clean(s) is not None]
    summary = {
        "film": cfg.film.name, "seed": cfg.seed,
        "score": sum(scores) / len(scores) if scores else None,
        "shots": len(rows), "frames": int(shots["n_frames"].sum()),
        "tasks": len(tasks), "cached": int(tasks["cached"].sum()),
        "computed": int((~tasks["cached"].astype(bool)).sum()),
        "task_seconds": round(float(tasks["seconds"].sum()), 3),
        "video": video.name if video is not None and video.parent == run_dir else None,
        "preview": preview.relative_to(run_dir).as_posix() if preview else None,
        "preview_kind": preview_kind,
        "width": cfg.resolution.width, "height": cfg.resolution.height,
        "plots": [r["plot"] for r in rows],
    }
    write_json(out / "summary.json", summary)
    shown = [{k: clean(v) for k, v in r.items()} for r in rows]
    # a column no shot has a value in (a diffusion engine's loss) is left out
    columns = [c for c in ("score", "seconds_per_frame", "final_loss", "final_clip_score")
               if any(r.get(c) is not None for r in shown)]
    page = render_template("run_report.html.j2", summary=summary, shots=shown, columns=columns,
                           tasks=tasks.to_dict("records"), seed_drawn=record.get("seed_drawn"),
                           frames_csv=f"{REPORT}/frames.csv")
    write_bytes(run_dir / "report.html", page.encode())
    if artifacts:
        publish(f"run-{cfg.film.name}", [summary_row(summary)], run_markdown(summary, shots))
    return run_dir / "report.html"


def summary_row(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if not isinstance(v, list | dict)}


# ---------------------------------------------------------------- sweeps
def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: json.dumps(obj) if isinstance(obj, list) else obj}


def job_dirs(sweep_dir: Path) -> list[Path]:
    """Job subdirectories of a Hydra sweep dir (those with a `.hydra/` folder), by job number."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: job_order(p.name))


def job_row(job: Path) -> dict[str, Any]:
    import yaml

    path = job / ".hydra" / "overrides.yaml"
    overrides = (yaml.safe_load(path.read_text()) or []) if path.exists() else []
    row: dict[str, Any] = {"job": job.name, "overrides": list(overrides), "status": "missing",
                           "error": None, "score": None}
    summary, failed = job / REPORT / "summary.json", job / "failed.json"
    if failed.exists():
        why = json.loads(failed.read_text())
        row.update(status="failed", error=f"{why.get('error')}: {why.get('message')}")
    elif summary.exists():
        found = json.loads(summary.read_text())
        row.update(status="ok", **{k: v for k, v in found.items() if not isinstance(v, list)})
    elif (job / "run.json").exists():
        row["status"] = "ok (no report)"
    return row


def job_order(job: str) -> tuple[int, str]:
    """Job dirs in number order (2 before 10), named ones after."""
    return (int(job), "") if str(job).isdigit() else (1 << 30, str(job))


def config_differences(jobs: list[Path]) -> pd.DataFrame:
    """Rows: jobs; columns: the config keys whose values differ between jobs."""
    import yaml

    flat = {}
    for job in jobs:
        path = job / ".hydra" / "config.yaml"
        flat[job.name] = flatten(yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    df = pd.DataFrame.from_dict(flat, orient="index")
    varying = [c for c in df.columns if df[c].astype(str).nunique(dropna=False) > 1]
    return df[varying].rename_axis("job").reset_index()


def swept(overrides: list[str]) -> dict[str, str]:
    """{key: value} of a job's own overrides (`seed=2 resolution=r64` -> seed, resolution)."""
    out = {}
    for item in overrides:
        key, eq, value = item.partition("=")
        if eq:
            out[key.lstrip("+~")] = value
    return out


def sweep_grid(jobs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """When exactly two parameters vary between the jobs: {rows: (key, values), columns:
    (key, values), cells: {(row value, column value): [job rows]}}; else None. Values keep the
    order of the jobs (Hydra's sweep order)."""
    in_order = sorted(jobs, key=lambda r: job_order(str(r["job"])))
    params = [swept(str(r["overrides"]).split()) for r in in_order]
    keys = list(dict.fromkeys(k for p in params for k in p))
    varying = [k for k in keys if len({p.get(k) for p in params}) > 1]
    if len(varying) != 2:
        return None
    row_key, col_key = varying
    values = {k: list(dict.fromkeys(p.get(k) for p in params)) for k in varying}
    cells: dict[tuple, list[dict[str, Any]]] = {}
    for r in jobs:
        p = swept(str(r["overrides"]).split())
        cells.setdefault((p.get(row_key), p.get(col_key)), []).append(r)
    return {"rows": (row_key, values[row_key]), "columns": (col_key, values[col_key]),
            "cells": cells}


def job_media(sweep_dir: Path, r: dict[str, Any]) -> dict[str, Any]:
    """A job's playable take (its report's preview, else its video) and contact sheets, as
    paths relative to the sweep dir."""
    job = sweep_dir / str(r["job"])
    take, kind = None, "video"
    preview, video = r.get("preview"), r.get("video")
    if isinstance(preview, str) and (job / preview).is_file():
        take, kind = f"{r['job']}/{preview}", r.get("preview_kind") or "video"
    elif isinstance(video, str) and (job / video).is_file():  # a report from before previews
        take, kind = f"{r['job']}/{video}", "img" if video.endswith(".gif") else "video"
    sheets = [p.relative_to(sweep_dir).as_posix()
              for p in sorted((job / REPORT / "media").glob("*contact_sheet.png"))]
    report = f"{r['job']}/report.html" if (job / "report.html").is_file() else None
    return {"take": take, "take_kind": kind, "sheets": sheets, "report": report}


def sweep_summary(sweep_dir: Path, *, artifacts: bool = False) -> pd.DataFrame:
    """Write `summary.{parquet,csv,html}` in a sweep dir: one row per job, best score first.
    `artifacts`: also publish it to Prefect (inside a flow run: flows/sweep.py)."""
    sweep_dir = Path(sweep_dir)
    jobs = job_dirs(sweep_dir)
    rows = [job_row(j) for j in jobs]
    shared = set.intersection(*(set(r["overrides"]) for r in rows)) if len(rows) > 1 else set()
    for r in rows:  # show what differs between jobs: the sweep's own values
        r["overrides"] = " ".join(o for o in r["overrides"] if o not in shared)
    df = pd.DataFrame(rows)
    if df.empty:
        df = pd.DataFrame(columns=["job", "overrides", "status", "error", "score"])
    df["score"] = pd.to_numeric(df["score"], errors="coerce")
    df = df.sort_values(["score", "job"], ascending=[False, True], na_position="last",
                        key=lambda c: c if c.name == "score" else c.map(job_order))
    df.insert(0, "rank", range(1, len(df) + 1))
    diffs = config_differences(jobs)
    text_cols = {c: "string" for c in ("error", "video", "preview", "preview_kind") if c in df}
    write_table(df.astype(text_cols), sweep_dir, "summary")
    write_table(diffs.astype(str), sweep_dir, "config_differences")
    write_bytes(sweep_dir / "summary.html", sweep_html(sweep_dir, df, diffs).encode())
    if artifacts:
        name = sweep_dir.parent.name or "sweep"
        cols = [c for c in ("rank", "job", "overrides", "status", "score", "error") if c in df]
        publish(f"sweep-{name}", df[cols].to_dict("records"), sweep_markdown(sweep_dir, df))
    return df


# ---------------------------------------------------------------- Prefect artifacts
def publish(key: str, table: list[dict[str, Any]], markdown: str) -> None:
    """Table and markdown artifacts in the Prefect UI, attached to the current flow run (call it
    inside a flow); never fails a render."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    slug = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")
    rows = [{k: clean(v) for k, v in r.items()} for r in table]
    try:
        create_table_artifact(table=rows, key=slug, description=f"promptreel {key}")
        create_markdown_artifact(markdown=markdown, key=f"{slug}-md")
    except Exception as exc:  # noqa: BLE001 - the report on disk is the record; the UI is a view
        log.warning("could not publish Prefect artifacts %s: %s", slug, exc)


def run_markdown(summary: dict[str, Any], shots: pd.DataFrame) -> str:
    cols = [c for c in ("shot", "n_frames", "score", "render_seconds") if c in shots]
    return (f"# {summary['film']} (seed {summary['seed']})\n\nscore {fmt(summary['score'])}, "
            f"{summary['computed']} tasks computed, {summary['cached']} cached\n\n"
            f"```\n{shots[cols].to_string(index=False)}\n```\n")


def sweep_markdown(sweep_dir: Path, df: pd.DataFrame) -> str:
    cols = [c for c in ("rank", "job", "overrides", "status", "score", "error") if c in df]
    return f"# Sweep {sweep_dir}\n\n```\n{df[cols].to_string(index=False)}\n```\n"


# ---------------------------------------------------------------- HTML
def html_links(page_path: Path) -> tuple[list[str], list[str]]:
    """(every src/href of an HTML page but in-page anchors, those that are not files next to
    it): a check for tests."""
    from html.parser import HTMLParser

    refs: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            refs.extend(v for k, v in attrs if k in ("src", "href") and v and v[0] != "#")

    Parser().feed(Path(page_path).read_text())
    return refs, [r for r in refs if not (Path(page_path).parent / r).is_file()]


def fmt(v: Any, digits: int = 4) -> str:
    """A value for a page: '-' for None/NaN, floats rounded."""
    if clean(v) is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def environment() -> Any:
    """The jinja2 environment of flows/templates/ (HTML autoescaped, `fmt` as a filter)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES),
                             autoescape=jinja2.select_autoescape(("html", "j2")),
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["fmt"] = fmt
    return env


def render_template(name: str, **context: Any) -> str:
    return environment().get_template(name).render(**context)


def sweep_html(sweep_dir: Path, df: pd.DataFrame, diffs: pd.DataFrame) -> str:
    records = [{k: clean(v) for k, v in r.items()} for r in df.to_dict("records")]
    best = next((r["job"] for r in records if r.get("score") is not None), None)
    for r in records:
        r.update(job_media(sweep_dir, r), best=r["job"] == best)
    grid = sweep_grid(records) if records else None
    return render_template("sweep_summary.html.j2", title=f"promptreel sweep: {sweep_dir}",
                           jobs=records, grid=grid, best=best,
                           diff_columns=list(diffs.columns) if len(diffs.columns) > 1 else [],
                           diffs=diffs.to_dict("records"))
