"""Run reports and sweep summaries: pandas tables (Parquet + CSV), a static HTML page, Prefect
artifacts.

A run report lives in `<run dir>/report/` (tasks, shots, frames as .parquet and .csv,
`summary.json`, `media/` with hard links to each shot's contact sheet and production cut) plus
`<run dir>/report.html`. A sweep summary lives in the sweep dir: `summary.{parquet,csv,html}`, one
row per job ranked by score (failed jobs last, with why). Every file the HTML pages reference sits
next to them (relative links), so the folder can be copied or served as it is.

Score: CLIP cosine similarity (in [-1, 1]) of a shot's last rendered frame to the positive
prompts in force at that frame, under the guiding perceptor (`cfg.clip`), weighted by prompt
weight. Scores are cached artefacts (`score_frames`), so re-running a render computes nothing.
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from engines.core.errors import PromptreelError
from engines.core.files import atomic_path, write_bytes, write_json
from tasks.artefacts import Artefact, Store
from tasks.cache import LEDGER, run_cached

log = logging.getLogger("promptreel")
SCORE_TASK = "score_frames"
SCORE_VERSION = "1"
REPORT = "report"


# ---------------------------------------------------------------- tables
def write_table(df: pd.DataFrame, directory: Path, stem: str) -> None:
    """`<stem>.parquet` and `<stem>.csv`, each written atomically."""
    with atomic_path(directory / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(directory / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)


def link_media(src: Path, dst: Path) -> Path:
    """Hard link (copy across devices) a cached file next to the report."""
    import os
    import shutil

    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
    return dst


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


def shot_rows(cfg: Any, record: dict[str, Any], out: Path, *, score: bool) -> tuple[list, list]:
    """One row per shot (score, media) and the per-frame metrics of every shot."""
    store = Store(cfg.runtime.cache_dir)
    rows, frames = [], []
    for i, (shot, key) in enumerate(zip(cfg.film.shots, record["artefacts"]["shots"], strict=True)):
        extracted = committed(store, "extract_frames", key)
        rendered = committed(store, "generate_frames", upstream_key(extracted, "frames"))
        n = int(rendered.meta["n_frames"])
        row = {"shot": shot.name, "index": i, "n_frames": n, "engine": rendered.meta.get("engine"),
               "render_seconds": rendered.meta.get("render_seconds"),
               "frames_key": rendered.key, "score": None, "score_texts": None}
        if score:
            prompts = tuple(final_prompts(shot, cfg.film.fps, n))
            result = score_shot(frames=rendered, prompts=prompts, clip=cfg.clip,
                                runtime=cfg.runtime).meta
            row.update(score=result["score"], score_texts=" | ".join(result["texts"]))
        for name in ("contact_sheet.png", "production_cut.mp4"):
            dst = link_media(extracted.file(name), out / "media" / f"{i:02d}_{shot.name}_{name}")
            row[name.split(".")[0]] = dst.relative_to(out.parent).as_posix()
        rows.append(row)
        table = rendered.file("frames.parquet")
        if table.exists():
            frames.append(pd.read_parquet(table).assign(shot=shot.name))
    return rows, frames


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
    scores = [s for s in shots["score"] if s is not None and pd.notna(s)]
    summary = {
        "film": cfg.film.name, "seed": cfg.seed,
        "score": sum(scores) / len(scores) if scores else None,
        "shots": len(rows), "frames": int(shots["n_frames"].sum()),
        "tasks": len(tasks), "cached": int(tasks["cached"].sum()),
        "computed": int((~tasks["cached"].astype(bool)).sum()),
        "task_seconds": round(float(tasks["seconds"].sum()), 3),
        "video": video.name if video is not None and video.parent == run_dir else None,
        "width": cfg.resolution.width, "height": cfg.resolution.height,
    }
    write_json(out / "summary.json", summary)
    page = run_html(summary, shots, tasks, frame_df, record)
    write_bytes(run_dir / "report.html", page.encode())
    if artifacts:
        publish(f"run-{cfg.film.name}", [summary], run_markdown(summary, shots))
    return run_dir / "report.html"


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
        row.update(status="ok", **json.loads(summary.read_text()))
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


def sweep_summary(sweep_dir: Path, *, artifacts: bool = True) -> pd.DataFrame:
    """Write `summary.{parquet,csv,html}` in a sweep dir: one row per job, best score first."""
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
    text_cols = {c: "string" for c in ("error", "video") if c in df}
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
    """Table and markdown artifacts in the Prefect UI; never fails a render."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    slug = re.sub(r"[^a-z0-9-]+", "-", key.lower()).strip("-")
    clean = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()}
             for r in table]
    try:
        create_table_artifact(table=clean, key=slug, description=f"promptreel {key}")
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
STYLE = ("body{font-family:sans-serif;margin:2em;max-width:80em}table{border-collapse:collapse}"
         "td,th{border:1px solid #ccc;padding:.3em .6em;vertical-align:top}"
         "img{max-width:40em}video{max-width:40em}.failed{background:#fee}")


def html_links(page_path: Path) -> tuple[list[str], list[str]]:
    """(every src/href of an HTML page, those that are not files next to it): a check for tests."""
    from html.parser import HTMLParser

    refs: list[str] = []

    class Parser(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list) -> None:
            refs.extend(v for k, v in attrs if k in ("src", "href") and v)

    Parser().feed(Path(page_path).read_text())
    return refs, [r for r in refs if not (Path(page_path).parent / r).is_file()]


def fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{v:.4f}" if isinstance(v, float) else html.escape(str(v))


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}"
            "</body></html>\n")


def media(src: str | None, kind: str) -> str:
    if not src:
        return "-"
    s = html.escape(src, quote=True)
    if kind == "video":
        return f"<video controls preload='metadata' src='{s}'></video>"
    return f"<a href='{s}'><img loading='lazy' src='{s}' alt='{s}'></a>"


def run_html(summary: dict[str, Any], shots: pd.DataFrame, tasks: pd.DataFrame,
             frames: pd.DataFrame, record: dict[str, Any]) -> str:
    parts = [f"<p>seed {summary['seed']} &middot; {summary['width']}x{summary['height']} px "
             f"&middot; score {fmt(summary['score'])} &middot; {summary['computed']} tasks "
             f"computed, {summary['cached']} cached, {summary['task_seconds']} s in tasks</p>"]
    if summary.get("video"):
        parts.append(media(summary["video"], "video"))
    parts.append("<h2>Shots</h2><table><tr><th>shot</th><th>frames</th><th>score</th>"
                 "<th>prompts scored</th><th>render s</th><th>contact sheet</th>"
                 "<th>production cut</th></tr>")
    for r in shots.to_dict("records"):
        parts.append(f"<tr><td>{fmt(r['shot'])}</td><td>{r['n_frames']}</td><td>{fmt(r['score'])}"
                     f"</td><td>{fmt(r['score_texts'])}</td><td>{fmt(r['render_seconds'])}</td>"
                     f"<td>{media(r['contact_sheet'], 'img')}</td>"
                     f"<td>{media(r['production_cut'], 'video')}</td></tr>")
    parts.append("</table><h2>Per-frame metrics</h2>")
    numeric = frames.select_dtypes("number").columns.difference(["frame"]).tolist()
    if numeric:
        parts.append(frames.groupby("shot")[numeric].mean().round(4).to_html())
    parts.append(f"<p>every frame: <a href='{REPORT}/frames.csv'>frames.csv</a></p>"
                 f"<h2>Tasks</h2>{tasks.to_html(index=False)}")
    if record.get("seed_drawn"):
        parts.append("<p>seed was drawn (seed: -1)</p>")
    return page(f"promptreel run: {summary['film']}", "".join(parts))


def sweep_html(sweep_dir: Path, df: pd.DataFrame, diffs: pd.DataFrame) -> str:
    rows = ["<table><tr><th>rank</th><th>job</th><th>overrides</th><th>status</th><th>score</th>"
            "<th>video</th><th>contact sheets</th></tr>"]
    for r in df.to_dict("records"):
        job = sweep_dir / r["job"]
        sheets = sorted((job / REPORT / "media").glob("*contact_sheet.png"))
        imgs = "".join(media(p.relative_to(sweep_dir).as_posix(), "img") for p in sheets) or "-"
        video = r.get("video")
        has_video = isinstance(video, str) and (job / video).is_file()
        vid = media(f"{r['job']}/{video}", "video") if has_video else "-"
        status = fmt(r["status"]) + (f"<br>{fmt(r['error'])}" if r.get("error") else "")
        report = job / "report.html"
        name = f"<a href='{r['job']}/report.html'>{fmt(r['job'])}</a>" if report.exists() \
            else fmt(r["job"])
        cls = " class='failed'" if r["status"] == "failed" else ""
        rows.append(f"<tr{cls}><td>{r['rank']}</td><td>{name}</td><td>{fmt(r['overrides'])}</td>"
                    f"<td>{status}</td><td>{fmt(r['score'])}</td><td>{vid}</td><td>{imgs}</td></tr>")
    rows.append("</table><h2>Config differences between jobs</h2>")
    rows.append(diffs.to_html(index=False) if len(diffs.columns) > 1 else "<p>none</p>")
    return page(f"promptreel sweep: {sweep_dir}", "".join(rows))
