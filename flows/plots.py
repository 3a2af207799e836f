"""Plots of a film's shots with matplotlib (object API, Agg canvas: no display needed).

One figure per shot for the run report: the engine's per-frame metrics against the frame (from
the shot's per-frame table, when it has been rendered), then prompt weights and camera motion
against the frame (from the shot's plan). `make show` draws the schedule panels of every shot
into one image before anything is rendered. Nothing here imports torch.

Metric panels are drawn for what the engine measured, and only that (`metric_panels`): the
CLIP engines (vqgan_clip, pixel_clip) record a loss and CLIP similarities at every frame; a
diffusion engine (wan) records neither, and its figure shows its seconds per frame instead.

- loss: the engine's total loss at each committed frame (lower is closer to the prompts).
- CLIP score: cosine similarity (-1..1) of each committed frame to each prompt text in force
  (thin lines), and their mean weighted by the positive prompt weights of the frame (thick
  line, the run report's score at the last frame).
- seconds per frame: wall seconds the engine spent on each frame (only when neither of the
  above was recorded; a diffusion chunk's time is shared by its frames).
- prompt weights: each prompt text's weight at each frame (negative: pushed away from).
- motion: zoom (scale per frame, 1 = still), and angle (degrees per frame) with translation
  (pixels per frame) on the right-hand axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from engines.planning.plan import MOTION_3D

DPI = 100
PANEL = (9.0, 2.2)  # inches per panel (width, height)


def schedule_table(plan: Any) -> pd.DataFrame:
    """Per frame of a ShotPlan: one `weight:<text>` column per prompt text (NaN where the
    text is not in force), zoom, angle, translation_x, translation_y (and the 3D camera's
    translation_z, rotation_3d_x/y/z when the shot moves in 3D). A story line's phrases
    (`a ^ b`, used in turn within the frame) each count: a text's weight is its largest in any
    phrase."""
    rows = []
    for f, fp in enumerate(plan.frames):
        row: dict[str, Any] = {"frame": f, "zoom": fp.zoom, "angle": fp.angle,
                               "translation_x": fp.translation_x,
                               "translation_y": fp.translation_y}
        if any(f.moves_3d for f in plan.frames):
            row.update({k: getattr(fp, k) for k in MOTION_3D})
        for phrase in fp.story or (fp.prompts,):
            weights: dict[str, float] = {}
            for p in phrase:
                weights[p.text] = weights.get(p.text, 0.0) + p.weight
            for text, w in weights.items():
                key = f"weight:{text}"
                row[key] = max(row[key], w) if key in row else w
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


def _measured(frames: pd.DataFrame, column: str) -> bool:
    return column in frames and pd.to_numeric(frames[column], errors="coerce").notna().any()


def metric_panels(frames: pd.DataFrame | None) -> list[str]:
    """The metric panels a shot's figure has, from its engine's per-frame table: "loss" and
    "clip" for what was recorded, else "seconds" (seconds per frame), else none."""
    if frames is None or "frame" not in frames:
        return []
    panels = [name for name, found in (
        ("loss", _measured(frames, "loss")),
        ("clip", any(_measured(frames, c) for c in frames.columns if c.startswith("clip:"))))
        if found]
    if not panels and _measured(frames, "seconds"):
        panels = ["seconds"]
    return panels


def _metrics_panels(axes: list, panels: list[str], frames: pd.DataFrame,
                    schedule: pd.DataFrame) -> None:
    for ax, panel in zip(axes, panels, strict=True):
        if panel == "loss":
            ax.plot(frames["frame"], frames["loss"], color="tab:red", lw=1.5)
            ax.set_ylabel("loss")
        elif panel == "seconds":
            ax.plot(frames["frame"], frames["seconds"], color="tab:gray", lw=1.5)
            ax.set_ylabel("seconds / frame")
        else:
            for col in [c for c in frames.columns if c.startswith("clip:")]:
                ax.plot(frames["frame"], frames[col], lw=0.8, alpha=0.6, label=_short(col[5:]))
            score = clip_score(frames, schedule)
            if score.notna().any():
                ax.plot(frames["frame"], score, color="black", lw=2, label="weighted score")
            ax.set_ylabel("CLIP score")
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=7, loc="upper right")


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
                        ("translation_y", "tab:purple"), ("translation_z", "tab:red"),
                        ("rotation_3d_x", "tab:brown"), ("rotation_3d_y", "tab:pink"),
                        ("rotation_3d_z", "tab:olive")):
        if col not in schedule:  # the 3D columns: only for a shot that moves in 3D
            continue
        right.plot(schedule["frame"], schedule[col], color=colour, lw=1, label=col)
    right.set_ylabel("deg or px / frame")
    lines = motion_ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    motion_ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper right")


def _save(fig: Any, path: Path) -> Path:
    from engines.core.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI)
    return path


def shot_figure(plan: Any, path: Path, frames: pd.DataFrame | None = None) -> Path:
    """One shot: the engine's metrics against the frame (`metric_panels` of `frames`, the
    engine's per-frame table, when given), prompt weights and motion against the frame; a PNG
    at `path`."""
    from matplotlib.figure import Figure

    schedule = schedule_table(plan)
    panels = metric_panels(frames)
    n = len(panels) + 2
    fig = Figure(figsize=(PANEL[0], PANEL[1] * n))
    # fixed margins: matplotlib's automatic layouts cost 0.2 s a figure on a 2-core machine
    fig.subplots_adjust(left=0.09, right=0.9, top=1 - 0.35 / (PANEL[1] * n), bottom=0.45 / (PANEL[1] * n),
                        hspace=0.12)
    axes = list(fig.subplots(n, 1, sharex=True, squeeze=False)[:, 0])
    if panels:
        _metrics_panels(axes[:len(panels)], panels, frames, schedule)
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
