"""`make doctor`: check the environment a render needs and say what to fix.

Checks: ffmpeg (the bundled binary runs and has the encoders the presets use), PyTorch and the
GPU (a CUDA device when `runtime.device` asks for one), free disk under the cache and models
directories, the models a preset needs (present, or generated on first use), every URL those
models are downloaded from (a HEAD request, its status and size against the registry's, mirrors
included; skipped, not failed, when no URL answers at all: the network is down), and whether a
Prefect server is reachable when one is configured. Each check prints `ok   <what was found>` or
`FIX  <what is wrong>` followed by `     fix: <what to do>`; the exit code is 1 if anything needs
fixing, else 0.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from flows.config import RenderConfig

MIN_FREE_GB = 5.0
ENCODERS = ("libx264", "libx265", "libvpx-vp9", "prores_ks", "aac", "libopus", "gif")


class Check(NamedTuple):
    ok: bool
    line: str  # what was found
    fix: str = ""  # what to do, when not ok


def check_ffmpeg() -> Check:
    try:
        import imageio_ffmpeg

        exe = imageio_ffmpeg.get_ffmpeg_exe()
        out = subprocess.run([exe, "-hide_banner", "-encoders"], capture_output=True, text=True,
                             timeout=30).stdout
    except Exception as exc:  # noqa: BLE001 - reported to the user
        return Check(False, f"ffmpeg: not usable ({exc})",
                     "run `make setup` (imageio-ffmpeg bundles ffmpeg)")
    missing = [e for e in ENCODERS if e not in out]
    if missing:
        return Check(False, f"ffmpeg {exe}: missing encoders {', '.join(missing)}",
                     "reinstall imageio-ffmpeg (`make setup`), or use an export preset whose "
                     "encoder is present")
    return Check(True, f"ffmpeg {exe}: all export encoders present")


def check_torch(device: str = "auto") -> Check:
    try:
        import torch
    except ImportError:
        return Check(False, "torch: not installed", "run `make setup`")
    if torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        free, total = torch.cuda.mem_get_info()
        return Check(True, f"torch {torch.__version__}, CUDA GPU: {', '.join(names)}, "
                     f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free")
    if str(device).startswith("cuda"):
        return Check(False, f"torch {torch.__version__}: runtime.device={device} but no CUDA "
                     "GPU is visible", "check the driver with `nvidia-smi` (and "
                     "CUDA_VISIBLE_DEVICES), or render with runtime.device=cpu or auto")
    return Check(True, f"torch {torch.__version__}, no CUDA GPU visible: renders run on the CPU "
                 "(slow; fine for `make smoke`)")


def check_disk(path: Any, label: str) -> Check:
    try:
        os.makedirs(path, exist_ok=True)
        free = shutil.disk_usage(path).free / 2**30
    except OSError as exc:
        return Check(False, f"{label} {path}: cannot be created or read ({exc.strerror or exc})",
                     f"make it writable, or point runtime.{label}_dir at another folder")
    if free < MIN_FREE_GB:
        return Check(False, f"{label} {path}: {free:.1f} GiB free, under {MIN_FREE_GB:g} GiB",
                     f"free space there, or point runtime.{label}_dir at a larger disk")
    return Check(True, f"{label} {path}: {free:.1f} GiB free")


def check_models(cfg: RenderConfig) -> list[Check]:
    from engines.models import weights
    from flows.pre_production import model_entries

    out = []
    for entry in model_entries(cfg):
        if entry.source == "generated":
            out.append(Check(True, f"model {entry.name}: generated on first use"))
            continue
        problems = weights.missing_files([entry], cfg.runtime.models_dir)
        if not problems:
            out.append(Check(True, f"model {entry.name}: present"))
            continue
        if entry.source == "dead":
            out.append(Check(False, f"model {entry.name}: unavailable, its host is gone "
                             f"({entry.notes.strip()})", "choose another model, or put the "
                             f"files you have in <models_dir>/{entry.kind}/{entry.name}/"))
            continue
        out.append(Check(False, f"model {entry.name}: " + "; ".join(problems),
                         f"on a connected machine run `make fetch-models conf={cfg.film.name}` "
                         "(it downloads into runtime.models_dir), or copy the files there"))
    return out


URL_TIMEOUT_S = 10.0


def url_size(url: str) -> tuple[int | None, int | None, str]:
    """(HTTP status, size in bytes or None, error) of a URL: HEAD (redirects followed), or a
    one-byte ranged GET when the server refuses HEAD. Status None: no answer at all."""
    import requests

    try:
        resp = requests.head(url, allow_redirects=True, timeout=URL_TIMEOUT_S)
        if resp.status_code in (403, 405, 501):  # some hosts answer GET only
            with requests.get(url, headers={"Range": "bytes=0-0"}, stream=True,
                              allow_redirects=True, timeout=URL_TIMEOUT_S) as resp:
                total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                size = int(total) if total.isdigit() else None
                return resp.status_code, size, ""
        length = resp.headers.get("Content-Length", "")
        return resp.status_code, int(length) if length.isdigit() else None, ""
    except requests.RequestException as exc:
        return None, None, f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"


def check_urls(entries: Any) -> list[Check]:
    """One check per downloadable file of `entries`: does its URL (or a mirror) answer, with
    the size the registry expects? No answer from any URL at all: the network is down, and the
    checks are skipped (one `ok` line saying so)."""
    from engines.models.weights import APPROX_TOLERANCE

    rows, answered = [], False
    for entry in entries:
        if entry.source not in ("url", "open_clip", "audiocraft"):
            continue
        for f in entry.files:
            results = [(url, *url_size(url)) for url in (f.url, *f.mirrors) if url]
            answered = answered or any(status is not None for _, status, _, _ in results)
            good = [(url, size) for url, status, size, _ in results
                    if status is not None and status < 400]
            label = f"url {entry.name}/{f.name}"
            if not good:
                why = "; ".join(f"{url}: {err or f'HTTP {status}'}"
                                for url, status, _, err in results)
                fix = ("optional: the model loads without it" if f.optional else
                       f"the host is down or moved: find the file elsewhere, put it in "
                       f"<models_dir>/{entry.kind}/{entry.name}/{f.name}, or choose another "
                       f"{entry.kind}")
                rows.append(Check(f.optional, f"{label}: no answer ({why})", fix))
                continue
            url, size = good[0]
            want = f.size or f.approx_size
            tolerance = 0 if f.size else APPROX_TOLERANCE * (want or 0)
            if want and size is not None and abs(size - want) > tolerance:
                rows.append(Check(False, f"{label}: {url} serves {size} bytes, the registry "
                                  f"expects {'' if f.size else 'about '}{want}",
                                  "the wrong file behind the URL? check it before downloading"))
                continue
            where = "" if url == f.url else " (mirror)"
            rows.append(Check(True, f"{label}: {url}{where} answers"
                              + (f", {size} bytes" if size is not None else ", size not given")))
    if rows and not answered:
        return [Check(True, f"urls: none of {len(rows)} model URLs answered: offline, checks "
                      "skipped (run `make doctor` on a connected machine)")]
    return rows


def check_prefect() -> Check:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        return Check(True, "prefect: no server configured; each render starts a temporary one "
                     "(`make server` for the UI and schedules)")
    import httpx

    try:
        httpx.get(url.rstrip("/") + "/health", timeout=5).raise_for_status()
        return Check(True, f"prefect: server at {url} is up")
    except Exception as exc:  # noqa: BLE001
        return Check(False, f"prefect: server at {url} unreachable ({exc})",
                     "start it with `make server`, or unset PREFECT_API_URL to let each render "
                     "start a temporary one")


def doctor(cfg: RenderConfig) -> int:
    """Print every check; return the exit code (1 if anything needs fixing)."""
    from flows.pre_production import model_entries

    checks = [check_ffmpeg(), check_torch(cfg.runtime.device),
              check_disk(cfg.runtime.cache_dir, "cache"),
              check_disk(cfg.runtime.models_dir, "models"), *check_models(cfg),
              *check_urls(model_entries(cfg)), check_prefect()]
    for check in checks:
        print(("ok   " if check.ok else "FIX  ") + check.line)
        if not check.ok:
            print(f"     fix: {check.fix}")
    bad = sum(not c.ok for c in checks)
    print(f"\n{len(checks) - bad} ok, {bad} to fix")
    return 1 if bad else 0
