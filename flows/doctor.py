"""`make doctor`: check the environment a render needs and say what to fix.

Checks: ffmpeg (the bundled binary runs and has the encoders the presets use), PyTorch and the
GPU, free disk under the cache and models directories, the models a preset needs (present, or
downloadable), and whether a Prefect server is reachable when one is configured.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

MIN_FREE_GB = 5.0
ENCODERS = ("libx264", "libx265", "libvpx-vp9", "prores_ks", "aac", "libopus", "gif")


def check_ffmpeg() -> tuple[bool, str]:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                             timeout=30).stdout
    except Exception as exc:  # noqa: BLE001 - reported to the user
        return False, f"ffmpeg: not usable ({exc}); run `make setup` (imageio-ffmpeg bundles it)"
    missing = [e for e in ENCODERS if e not in out]
    if missing:
        return False, f"ffmpeg {exe}: missing encoders {missing}"
    return True, f"ffmpeg {exe}: all export encoders present"


def check_torch() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch: not installed; run `make setup`"
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        free, total = torch.cuda.mem_get_info()
        return True, (f"torch {torch.__version__}, CUDA: {', '.join(names)}, "
                      f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
    return True, (f"torch {torch.__version__}, no CUDA GPU visible: renders run on the CPU "
                  "(slow; fine for `make smoke`)")


def check_disk(path: Any, label: str) -> tuple[bool, str]:
    os.makedirs(path, exist_ok=True)
    free = shutil.disk_usage(path).free / 2**30
    ok = free >= MIN_FREE_GB
    return ok, (f"{label} {path}: {free:.1f} GiB free"
                + ("" if ok else f" (under {MIN_FREE_GB} GiB: free space or move it)"))


def check_models(cfg: Any) -> list[tuple[bool, str]]:
    from engines import weights
    from flows.pre_production import model_entries

    out = []
    for entry in model_entries(cfg):
        if entry.source == "generated":
            out.append((True, f"model {entry.name}: generated on first use"))
            continue
        problems = weights.preflight([entry], cfg.runtime.models_dir)
        out.append((not problems, f"model {entry.name}: " + ("present" if not problems else
                    "; ".join(problems) + " (fetch with `make fetch-models`)")))
    return out


def check_prefect() -> tuple[bool, str]:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return True, "prefect: no server configured; each render starts a temporary one " \
                     "(`make server` for the UI and schedules)"
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=5).raise_for_status()
        return True, f"prefect: server at {url} is up"
    except Exception as exc:  # noqa: BLE001
        return False, f"prefect: server at {url} unreachable ({exc}); run `make server`"


def doctor(cfg: Any) -> int:
    checks = [check_ffmpeg(), check_torch(), check_disk(cfg.runtime.cache_dir, "cache"),
              check_disk(cfg.runtime.models_dir, "models"), *check_models(cfg), check_prefect()]
    for ok, line in checks:
        print(("ok   " if ok else "FIX  ") + line)
    bad = sum(not ok for ok, _ in checks)
    print(f"\n{len(checks) - bad} ok, {bad} to fix")
    return 1 if bad else 0
