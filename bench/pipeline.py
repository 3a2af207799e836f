"""The pipeline around the engines: a smoke render's own overhead, a fully cached re-render, and
the export against a plain ffmpeg command on the same frames.

- overhead: `python -m flows.render film=smoke` (the real command line, a fresh cache, the
  render's models dir) timed from outside; engine time = the sum of the per-frame `seconds` of
  every shot (frames.csv of each generate_frames artefact in run.json's task ledger); overhead = total
  minus engine time (interpreter start, imports, Prefect's temporary server, Hydra, model
  loading, the other tasks, ffmpeg). The other tasks' own seconds come from run.json.
- cached: the same command again (new run dir, same cache): everything is a cache hit.
- export: N synthetic frames (a moving colour gradient, so the encoder has real work) encoded
  by the project's path (`engines.media.editing.encode_intermediate` to FFV1, then `export` with the
  h264 preset, both with their frame-count checks) and by one plain
  `ffmpeg -framerate 12 -i %06d.png -c:v libx264 -crf 18 -preset medium -pix_fmt yuv420p`,
  same ffmpeg binary.

- soak (`--soak N`, not part of `make bench`): N smoke renders in a row, each with a fresh cache
  (every task computes), timed from outside; a render more than `--stall` seconds (default 20)
  slower than the median is a stall. Also counts `database is locked` in the temporary server's
  log (`.prefect/temporary-server.log`): the signature of the 60 s stall of Prefect's SQLite
  server (flows/prefect_server.py).

`python -m bench.pipeline --out pipeline.json`;
`python -m bench.pipeline --out soak.json --soak 30`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import common


def render(args: list[str], cache: Path, run_dir: Path, models: Path) -> float:
    """Wall seconds of one `python -m flows.render` run (raises if it fails)."""
    cmd = [sys.executable, "-m", "flows.render", *args, f"runtime.cache_dir={cache}",
           f"runtime.models_dir={models}", f"hydra.run.dir={run_dir}"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=common.ROOT, capture_output=True, text=True, timeout=900,
                          env=common.child_env())
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return seconds


def engine_seconds(run_dir: Path, cache: Path) -> float:
    """Sum of the per-frame engine seconds of every shot of a run (generate_frames tasks in
    run.json's task ledger)."""
    import pandas as pd

    tasks = json.loads((run_dir / "run.json").read_text())["tasks"]
    keys = {t["key"] for t in tasks if t["task"] == "generate_frames"}
    return float(sum(pd.read_csv(cache / "generate_frames" / key / "frames.csv")["seconds"].sum()
                     for key in keys))


def overhead(args: list[str], models: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache"
        total = render(args, cache, Path(tmp) / "run1", models)
        engine = engine_seconds(Path(tmp) / "run1", cache)
        tasks = json.loads((Path(tmp) / "run1" / "run.json").read_text())["tasks"]
        other = sum(t["seconds"] for t in tasks if t["task"] != "generate_frames")
        frames = sum(1 for t in tasks if t["task"] == "generate_frames")
        cached = render(args, cache, Path(tmp) / "run2", models)
        hits = json.loads((Path(tmp) / "run2" / "run.json").read_text())["tasks"]
    return {"command": "python -m flows.render " + " ".join(args), "total_s": total,
            "engine_s": engine, "overhead_s": total - engine, "other_tasks_s": other,
            "shots": frames, "cached_s": cached,
            "cached_all_hits": all(t["cached"] for t in hits)}


def soak(n: int, args: list[str], models: Path, stall: float) -> dict[str, Any]:
    """n renders in a row, a fresh cache each; their wall seconds, stalls, and how often the
    temporary server's log says `database is locked` during the soak."""
    import statistics

    server_log = common.ROOT / ".prefect" / "temporary-server.log"
    before = server_log.read_text(errors="replace").count("database is locked") \
        if server_log.exists() else 0
    seconds = []
    for i in range(n):
        with tempfile.TemporaryDirectory() as tmp:
            seconds.append(render(args, Path(tmp) / "cache", Path(tmp) / "run", models))
        print(f"soak {i + 1}/{n}: {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    after = server_log.read_text(errors="replace").count("database is locked") \
        if server_log.exists() else 0
    median = statistics.median(seconds)
    return {"command": "python -m flows.render " + " ".join(args) + " (fresh cache each)",
            "renders": n, "seconds": [round(s, 2) for s in seconds], "median_s": median,
            "min_s": min(seconds), "max_s": max(seconds),
            "stalls": [round(s, 2) for s in seconds if s > median + stall],
            "stall_threshold_s": median + stall, "database_locked_lines": after - before}


def write_frames(folder: Path, n: int, w: int, h: int) -> None:
    """n PNG frames of a colour gradient moving one step per frame."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(n):
        r = (np.sin((x + 4 * i) / 37.0) + 1) * 127.5
        g = (np.cos((y - 3 * i) / 23.0) + 1) * 127.5
        b = ((x + y + 5 * i) % 256).astype(np.float32)
        img = np.stack([r, g, b], -1).astype(np.uint8)
        Image.fromarray(img).save(folder / f"{i:06d}.png")


def export_throughput(n: int = 120, w: int = 640, h: int = 360, fps: float = 12.0) -> dict:
    from engines.media import editing
    from engines.media.ffmpeg import ffmpeg_exe

    with tempfile.TemporaryDirectory() as tmp:
        frames = Path(tmp) / "frames"
        write_frames(frames, n, w, h)
        start = time.perf_counter()
        editing.encode_intermediate(frames, fps, Path(tmp) / "film.mkv")
        mid = time.perf_counter()
        editing.export(Path(tmp) / "film.mkv", None, Path(tmp) / "film.mp4",
                       editing.ExportSettings(), fps=fps)
        ours = time.perf_counter() - start
        export_only = time.perf_counter() - mid
        plain = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-framerate", f"{fps:g}",
                 "-i", str(frames / "%06d.png"), "-c:v", "libx264", "-crf", "18", "-preset",
                 "medium", "-pix_fmt", "yuv420p", str(Path(tmp) / "plain.mp4")]
        start = time.perf_counter()
        subprocess.run(plain, check=True, capture_output=True)
        theirs = time.perf_counter() - start
    return {"frames": n, "size": f"{w}x{h}", "ours_s": ours, "ours_fps": n / ours,
            "export_only_s": export_only, "plain_s": theirs, "plain_fps": n / theirs,
            "plain_command": "ffmpeg -framerate 12 -i %06d.png -c:v libx264 -crf 18 "
                             "-preset medium -pix_fmt yuv420p out.mp4"}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--models", default=None)
    ap.add_argument("--soak", type=int, default=0, help="N smoke renders in a row instead")
    ap.add_argument("--stall", type=float, default=20.0,
                    help="seconds over the median that count as a stall (--soak)")
    a = ap.parse_args(argv)
    models = Path(a.models) if a.models else common.models_dir()
    if a.soak:
        Path(a.out).write_text(json.dumps({"soak": soak(a.soak, ["film=smoke"], models, a.stall)},
                                          indent=1))
        return
    result = {"overhead": overhead(["film=smoke"], models), "export": export_throughput()}
    Path(a.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
