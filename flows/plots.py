"""Plots of a film's shots with matplotlib (object API, Agg canvas: no display needed).

One figure per shot for the run report: loss and CLIP score against the frame (from the shot's
per-frame table, when it has been rendered), then prompt weights and camera motion against the
frame (from the shot's plan). `make show` draws the schedule panels of every shot into one
image before anything is rendered. Nothing here imports torch.

- loss: the engine's total loss at each committed frame (lower is closer to the prompts).
- CLIP score: cosine similarity (-1..1) of each committed frame to each prompt text in force
  (thin lines), and their mean weighted by the positive prompt weights of the frame (thick
  line, the run report's score at the last frame).
- prompt weights: each prompt text's weight at each frame (negative: pushed away from).
- motion: zoom (scale per frame, 1 = still), and angle (degrees per frame) with translation
  (pixels per frame) on the right-hand axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

DPI = 100
PANEL = (9.0, 2.2)  # inches per panel (width, height)


def schedule_table(plan: Any) -> pd.DataFrame:
    """Per frame of a ShotPlan: one `weight:<text>` column per prompt text (NaN where the
    text is not in force), zoom, angle, translation_x, translation_y."""
    rows = []
    for f, fp in enumerate(plan.frames):
        row: dict[str, Any] = {"frame": f, "zoom": fp.zoom, "angle": fp.angle,
                               "translation_x": fp.translation_x,
                               "translation_y": fp.translation_y}
        for p in fp.prompts:
            row[f"weight:{p.text}"] = row.get(f"weight:{p.text}", 0.0) + p.weight
        rows.append(row)
    return pd.DataFrame(rows)


def clip_score(frames: pd.DataFrame, schedule: pd.DataFrame) -> pd.Series:
    """Per frame: the CLIP similarities (`clip:<text>` columns of the engine's table) averaged
    with the positive prompt weights in force at that frame; NaN where none is known."""
    merged = frames.merge(schedule, on="frame", how="left")
    total = pd.Series(0.0, index=merged.index)
    weights = pd.Series(0.0, index=merged.index)
    for col in frames.columns:
        if not col.startswith("clip:"):
            continue
        w = merged.get(f"weight:{col[5:]}", pd.Series(float("nan"), index=merged.index))
        w = w.where(w > 0, 0.0).fillna(0.0)
        sim = merged[col]
        total += (sim.fillna(0.0) * w)
        weights += w.where(sim.notna(), 0.0)
    return (total / weights.where(weights > 0)).set_axis(frames.index)


def _short(text: str, n: int = 48) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _metrics_panels(axes: list, frames: pd.DataFrame, schedule: pd.DataFrame) -> None:
    loss_ax, clip_ax = axes
    if "loss" in frames:
        loss_ax.plot(frames["frame"], frames["loss"], color="tab:red", lw=1.5)
    loss_ax.set_ylabel("loss")
    for col in [c for c in frames.columns if c.startswith("clip:")]:
        clip_ax.plot(frames["frame"], frames[col], lw=0.8, alpha=0.6, label=_short(col[5:]))
    score = clip_score(frames, schedule)
    if score.notna().any():
        clip_ax.plot(frames["frame"], score, color="black", lw=2, label="weighted score")
    clip_ax.set_ylabel("CLIP score")
    if clip_ax.get_legend_handles_labels()[0]:
        clip_ax.legend(fontsize=7, loc="upper right")


def _schedule_panels(axes: list, schedule: pd.DataFrame) -> None:
    weight_ax, motion_ax = axes
    for col in [c for c in schedule.columns if c.startswith("weight:")]:
        weight_ax.plot(schedule["frame"], schedule[col], lw=1.5, label=_short(col[7:]))
    weight_ax.axhline(0, color="grey", lw=0.5)
    weight_ax.set_ylabel("prompt weight")
    if weight_ax.get_legend_handles_labels()[0]:
        weight_ax.legend(fontsize=7, loc="upper right")
    motion_ax.plot(schedule["frame"], schedule["zoom"], color="tab:blue", lw=1.5, label="zoom")
    motion_ax.set_ylabel("zoom (scale/frame)")
    right = motion_ax.twinx()
    for col, colour in (("angle", "tab:orange"), ("translation_x", "tab:green"),
                        ("translation_y", "tab:purple")):
        right.plot(schedule["frame"], schedule[col], color=colour, lw=1, label=col)
    right.set_ylabel("deg or px / frame")
    lines = motion_ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    motion_ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")


def _save(fig: Any, path: Path) -> Path:
    from tasks.artefacts import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def shot_figure(plan: Any, path: Path, frames: pd.DataFrame | None = None) -> Path:
    """One shot: loss and CLIP score against the frame (when `frames`, the engine's per-frame
    table, is given), prompt weights and motion against the frame; a PNG at `path`."""
    from matplotlib.figure import Figure

    schedule = schedule_table(plan)
    n = 4 if frames is not None else 2
    fig = Figure(figsize=(PANEL[0], PANEL[1] * n))
    # fixed margins: matplotlib's automatic layouts cost 0.2 s a figure on a 2-core machine
    fig.subplots_adjust(left=0.09, right=0.9, top=1 - 0.35 / (PANEL[1] * n), bottom=0.45 / (PANEL[1] * n),
                        hspace=0.12)
    axes = list(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    if frames is not None:
        _metrics_panels(axes[:2], frames, schedule)
    _schedule_panels(axes[-2:], schedule)
    axes[-1].set_xlabel("frame")
    fig.suptitle(f"shot {plan.name}: {plan.n_frames} frames at {plan.fps:g} fps")
    return _save(fig, path)


def film_schedule_figure(plans: list[Any], path: Path, title: str) -> Path:
    """Every shot's prompt weights and motion against the frame, one row of two panels per
    shot; a PNG at `path` (`make show`)."""
    from matplotlib.figure import Figure

    height = PANEL[1] * len(plans) + 0.6
    fig = Figure(figsize=(PANEL[0] * 2, height))
    fig.subplots_adjust(left=0.05, right=0.95, top=1 - 0.55 / height, bottom=0.45 / height,
                        wspace=0.22, hspace=0.55)
    grid = fig.subplots(len(plans), 2, squeeze=False)
    for row, plan in zip(grid, plans, strict=True):
        _schedule_panels(list(row), schedule_table(plan))
        row[0].set_title(f"shot {plan.name}: prompt weights", fontsize=9)
        row[1].set_title(f"shot {plan.name}: camera motion", fontsize=9)
        for ax in row:
            ax.set_xlabel("frame")
    fig.suptitle(title)
    return _save(fig, path)
