"""The memory estimate (engines/frames/memory.py) against the memory one iteration really takes.

For each size, in increasing order, in one fresh process: the engine's own `probe` (one
iteration: start, loss, backward, optimiser step) runs on the real models, and
- on a CPU, measured = growth of the resident set: VmHWM after the iteration minus VmRSS before
  it, with the high-water mark reset first (/proc/self/clear_refs). PyTorch's CPU allocator has
  no statistics, so the process runs with glibc's mmap threshold fixed at 64 KiB
  (MALLOC_MMAP_THRESHOLD_): every tensor above that is its own mapping and goes back to the OS
  when freed, and the resident set follows the live tensors. A warm-up iteration at 64x64 comes
  first (library code pages, thread pools);
- on CUDA, measured = torch.cuda.max_memory_allocated() minus memory_allocated() before.
The estimate is `memory.estimate(...).working` for the same settings, size and device.

`run(...)` starts that process and returns its rows; `python -m bench.memcheck --help` is the
process itself (one JSON line on stdout).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import common


def parse_size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def settings_for(engine: str, overrides: dict[str, Any]) -> Any:
    from engines.frames.registry import ENGINES

    return ENGINES[engine].Settings.model_validate(overrides)


def measure(engine: str, sizes: list[tuple[int, int]], overrides: dict[str, Any], vqgan: str,
            clip: str, device: str, models: str | None) -> list[dict[str, Any]]:
    """Rows {size, estimate, measured, ratio} (bytes) for each size, in this process."""
    import torch

    from engines.frames import memory
    from engines.frames.registry import ENGINES

    module = ENGINES[engine]
    settings = settings_for(engine, overrides)
    vq, perc = common.load(vqgan if "vqgan" in module.MODELS else None, clip, device,
                           Path(models) if models else None)
    loaded = {"clip": (perc,), **({"vqgan": (vq,)} if vq is not None else {})}
    real = {"clip": [perc], **({"vqgan": vq} if vq is not None else {})}
    cuda = device.startswith("cuda")
    module.memory_step(settings, 64, 64, real, device=device)  # warm-up
    tracer = memory.MemoryTracer(module, settings, loaded, device)
    rows = []
    for w, h in sizes:
        est = tracer.working(settings, w, h)
        common.sync(device)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        else:
            common.reset_peak()
            before = common.rss()["VmRSS"]
        module.memory_step(settings, w, h, real, device=device)
        common.sync(device)
        got = (torch.cuda.max_memory_allocated() if cuda else common.rss()["VmHWM"]) - before
        rows.append({"size": f"{w}x{h}", "estimate": est, "measured": got,
                     "ratio": round(est / got, 4) if got > 0 else None})
    return rows


def run(engine: str, sizes: list[str], overrides: dict[str, Any], *, vqgan: str = common.VQGAN,
        clip: str = common.CLIP, device: str = "cpu", models: str | None = None,
        timeout: float = 600) -> list[dict[str, Any]]:
    """`measure` in a fresh process with the allocator settings above; its rows."""
    cmd = [sys.executable, "-m", "bench.memcheck", "--engine", engine, "--sizes", ",".join(sizes),
           "--set", json.dumps(overrides), "--vqgan", vqgan, "--clip", clip, "--device", device]
    if models:
        cmd += ["--models", str(models)]
    env = {**os.environ, **common.MMAP_ENV, "PYTHONPATH": str(common.ROOT)}
    proc = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])["rows"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--engine", default="vqgan_clip")
    ap.add_argument("--sizes", default="128x128,256x256,512x288", help="WxH,WxH,...")
    ap.add_argument("--set", default="{}", help="engine settings as JSON, e.g. '{\"cutn\": 32}'")
    ap.add_argument("--vqgan", default=common.VQGAN)
    ap.add_argument("--clip", default=common.CLIP)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--models", default=None, help="models dir (default: the render's)")
    a = ap.parse_args(argv)
    sizes = sorted((parse_size(s) for s in a.sizes.split(",")), key=lambda s: s[0] * s[1])
    rows = measure(a.engine, sizes, json.loads(a.set), a.vqgan, a.clip, a.device, a.models)
    print(json.dumps({"engine": a.engine, "device": a.device, "rows": rows}))


if __name__ == "__main__":
    main()
