"""Shared pieces of the benchmarks: models, the device's measured peak, memory readings, versions."""

from __future__ import annotations

import os
import platform
import re
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
VQGAN = "generated_vqgan_f16_16384"  # real f16 16384 architecture, random weights
CLIP = "generated_clip_vit_b_32"  # real ViT-B/32 architecture, random weights
MMAP_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}  # glibc: big blocks go back to the OS on free


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a benchmark's child process: this one's plus `extra`, with the
    repository first on PYTHONPATH (entries already there are kept)."""
    path = os.environ.get("PYTHONPATH", "")
    return {**os.environ, **(extra or {}),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), path) if p)}


def models_dir() -> Path:
    """Where the generated models are built once: $PROMPTREEL_MODELS, else <repo>/models (the
    render's own default), so the benchmark and renders share them."""
    env = os.environ.get("PROMPTREEL_MODELS")
    return Path(env).expanduser() if env else ROOT / "models"


def load(vqgan: str | None, clip: str, device: str, models: Path | None = None) -> tuple:
    """(VQGAN or None, Perceptor) from the registry, loaded like a render loads them."""
    from engines.models.loaded import load_model
    from engines.models.registry import load_entry

    models = models or models_dir()
    vq = load_model(load_entry("vqgan", vqgan, CONF), models, device) if vqgan else None
    return vq, load_model(load_entry("clip", clip, CONF), models, device)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rss() -> dict[str, int]:
    """Resident set now (VmRSS) and its high-water mark (VmHWM), bytes (Linux)."""
    text = Path("/proc/self/status").read_text()
    return {k: int(re.search(rf"{k}:\s+(\d+)", text).group(1)) * 1024 for k in ("VmRSS", "VmHWM")}


def reset_peak() -> None:
    """Reset the resident-set high-water mark to the current resident set (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_flops(device: str) -> tuple[float, str]:
    """The device's peak as measured here: the best FLOP/s of large square matrix products
    (fp32 on a CPU; bf16 on CUDA, the precision of the fast path), and how it was taken."""
    import torch

    cuda = device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    sizes, reps = ((4096, 8192), 20) if cuda else ((1024, 2048, 4096), 3)
    best = 0.0
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        a @ b
        sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        sync(device)
        best = max(best, 2 * n ** 3 * reps / (time.perf_counter() - start))
    where = "GPU" if cuda else f"CPU, {torch.get_num_threads()} threads"
    return best, (f"best of {dtype} square matmuls (n = {', '.join(map(str, sizes))}) timed "
                  f"with torch on this {where}")


def device_name(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model or platform.processor() or 'CPU'}, {os.cpu_count()} cores"


def versions() -> dict[str, str]:
    import importlib.metadata as md

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("open_clip_torch", "taming-transformers-rom1504", "kornia", "prefect",
                 "imageio-ffmpeg"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
    return out


def load_average() -> str:
    """1, 5 and 15 minute load averages (other work on the machine skews timings)."""
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "?"


GB = 1e9
GIB = 2 ** 30


def table(head: list[str], rows: list[list[Any]]) -> str:
    """A markdown table."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
