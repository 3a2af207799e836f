"""Helpers of the SD engine tests: generated input videos (a moving square, a dancing stick
figure drawn as an OpenPose-style map), the subprocess runner with kill and resume, and
in-process renders."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def moving_square(n: int, width: int = 64, height: int = 48, still: bool = False) -> list:
    """uint8 frames of a textured square on a gradient, moving right 2 px a frame (or still)."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(1, width - 1), yy * 255 // max(1, height - 1),
                     np.full_like(xx, 90)], axis=2).astype(np.uint8)
    frames = []
    for i in range(n):
        f = base.copy()
        x0 = 8 + (0 if still else 2 * i)
        f[14:34, x0:x0 + 20, 0] = 230
        f[14:34, x0:x0 + 20, 1] = 40 + 40 * (np.arange(20)[None, :] % 4)  # stripes: texture
        f[14:34, x0:x0 + 20, 2] = 60
        frames.append(f)
    return frames


def write_frames(frames: list, folder: Path) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:06d}.png")
    return folder


def write_video(frames: list, path: Path, fps: float = 8.0) -> Path:
    """An H.264 (lossless) mp4 of the frames, with the bundled ffmpeg."""
    from engines.media.ffmpeg import ffmpeg_exe

    tmp = write_frames(frames, path.with_suffix(".frames"))
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-framerate", str(fps),
                    "-i", str(tmp / "%06d.png"), "-c:v", "libx264", "-qp", "0",
                    "-pix_fmt", "yuv444p", str(path)], check=True)
    return path


def run(name: str, work: Path, models: Path, spec: dict, kill: str | None = None):
    env = {**os.environ, "PROMPTREEL_TEST_KILL_AT": f"generate_frames:{kill}" if kill else ""}
    return subprocess.run([sys.executable, str(ROOT / "tests" / "engines" / "sd_run.py"), name,
                           str(work), str(models), json.dumps(spec)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


def frames_of(work: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((work / "frames").glob("*.png"))}


def images_of(work: Path) -> list:
    import numpy as np
    from PIL import Image

    return [np.asarray(Image.open(p).convert("RGB")).astype(np.int16)
            for p in sorted((work / "frames").glob("*.png"))]


def kill_and_resume(name: str, tmp: Path, models: Path, spec: dict, points: list[str]) -> None:
    """The frames of an uninterrupted render equal those of renders killed (SIGKILL) at each
    point and run again."""
    whole = run(name, tmp / "whole", models, spec)
    assert whole.returncode == 0, whole.stderr[-3000:]
    want = frames_of(tmp / "whole")
    assert len(want) == spec["frames"]
    for point in points:
        work = tmp / point.replace(":", "_")
        killed = run(name, work, models, spec, kill=point)
        assert killed.returncode == -9, (point, killed.stderr[-3000:])
        resumed = run(name, work, models, spec)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert frames_of(work) == want, f"{name}: resumed after a kill at {point} differs"


def render_here(name: str, work: Path, models: Path, spec: dict) -> list:
    """Render in this process (no kill); the committed frames as int16 arrays."""
    import torch

    from tests.engines.sd_run import run as run_here

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_here(name, work, models, spec) == 0
    finally:
        torch.set_num_threads(threads)
    return images_of(work)
