"""Resources: a full disk stops with a clear error and a consistent cache; a GPU out-of-memory
error says what would fit; `make doctor` checks the machine and says what to fix.

ENOSPC and CUDA out-of-memory are simulated inside the real command line's process (a few lines
of Python run before `flows.render`, see conftest.run_patched), or in this process for the
cheaper cases; /dev/full gives a real ENOSPC to ffmpeg.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from engines.core.errors import PromptreelError
from engines.core.files import write_bytes
from tasks.artefacts import MANIFEST, Store, is_temporary
from tasks.cache import run_cached
from tests.helpers import ROOT, read_run
from tests.reliability.conftest import (
    ENV,
    SMOKE,
    Reference,
    built,
    committed,
    run_patched,
    sha256,
    verify_all,
)

# Python run in the render's process first: the manifest of blend_shots cannot be written.
ENOSPC_AT_COMMIT = """
import errno, pathlib
_write = pathlib.Path.write_bytes
def write_bytes(self, data):
    if self.name.startswith(".manifest.json.") and self.parent.parent.name == "blend_shots":
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    return _write(self, data)
pathlib.Path.write_bytes = write_bytes
"""

# ... a CUDA out-of-memory error in the first shot, on a "GPU" with 60% of the memory it needs
CUDA_OOM = """
import math, torch
from engines.frames import memory
from engines.frames import vqgan_clip
def render(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
vqgan_clip.render = render
_oom = memory.out_of_memory
def out_of_memory(engine, settings, width, height, models, **kw):
    need = memory.MemoryTracer(engine, settings, models, kw["device"]).working(settings, width, height)
    free = math.ceil(0.6 * need * memory.HEADROOM) + memory.RESERVE_BYTES
    memory.free_memory = lambda device: free
    return _oom(engine, settings, width, height, models, **kw)
memory.out_of_memory = out_of_memory
"""


class RT:
    def __init__(self, cache: Path):
        self.cache_dir = cache


def enospc(path: Path) -> OSError:
    return OSError(errno.ENOSPC, "No space left on device", str(path))


# ------------------------------------------------------------------ full disk, command line
@pytest.fixture(scope="module")
def full_disk(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The reference cache without its last two artefacts, re-rendered on a disk that fills up
    when blend_shots commits, then again with space."""
    base = tmp_path_factory.mktemp("enospc")
    cache = reference.copy_cache(base / "cache")
    arts = reference.record["artefacts"]
    blend = next(k for t, k in committed(cache) if t == "blend_shots")
    shutil.rmtree(cache / "blend_shots")
    shutil.rmtree(cache / "export_video")
    full = run_patched(ENOSPC_AT_COMMIT, *SMOKE, cache=cache, models=reference.models,
                       run_dir=base / "full")
    after_full = {"keys": set(committed(cache)), "verified": verify_all(cache),
                  "work": sorted(p.name for p in (cache / "blend_shots" / f"{blend}.work")
                                 .iterdir())}
    again = run_patched(None, *SMOKE, cache=cache, models=reference.models, run_dir=base / "ok")
    return {"cache": cache, "blend": blend, "export": arts["export_video"], "full": full,
            "after_full": after_full, "again": again, "base": base}


def test_a_full_disk_stops_with_a_clear_error(full_disk: dict) -> None:
    proc = full_disk["full"]
    work = full_disk["cache"] / "blend_shots" / f"{full_disk['blend']}.work"
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: disk full while writing {work / MANIFEST}: free space on the disk that holds "
        f"{work} (or point runtime.cache_dir at a larger disk) and run the same command again; "
        "committed artefacts are intact and will be reused")
    assert "Traceback" not in proc.stderr


def test_the_cache_is_consistent_after_a_full_disk(full_disk: dict, reference: Reference) -> None:
    after = full_disk["after_full"]
    expected = set(reference.files) - {("blend_shots", full_disk["blend"]),
                                       ("export_video", full_disk["export"])}
    # every committed key is whole; the one being committed is not; nothing half-written is left
    assert after["keys"] == expected
    assert after["verified"] == len(after["keys"])
    assert after["work"] == ["film.mkv"]
    assert not any(is_temporary(n) for n in after["work"])


def test_the_same_command_then_finishes_the_film(full_disk: dict, reference: Reference) -> None:
    proc = full_disk["again"]
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = read_run(full_disk["base"] / "ok")
    assert built(record) == {("blend_shots", full_disk["blend"]),
                             ("export_video", full_disk["export"])}
    assert sha256(Path(record["video"])) == reference.video_sha
    assert verify_all(full_disk["cache"]) == len(reference.files)


# ------------------------------------------------------------------ full disk, in process
def test_a_full_disk_anywhere_in_a_build_is_named_and_nothing_is_committed(tmp_path: Path) -> None:
    """E.g. libsndfile or PIL writing straight into the work dir, not through atomic_path."""
    def build(work: Path) -> dict:
        write_bytes(work / "a.bin", b"a")
        raise enospc(work / "soundtrack.wav")

    params = {"x": 1, "runtime": RT(tmp_path)}
    with pytest.raises(PromptreelError, match=r"^disk full while writing .*\.work/soundtrack"
                       r"\.wav: free space"):
        run_cached("demo", "1", params, build)
    assert committed(tmp_path) == {}
    ok = run_cached("demo", "1", params, lambda work: write_bytes(work / "a.bin", b"a") or {})
    assert Store(tmp_path).load("demo", ok.key) is not None  # the lock was released


def test_a_full_disk_between_two_frames_keeps_the_committed_ones(tmp_path: Path,
                                                                 monkeypatch) -> None:
    import numpy as np

    from tasks.frame_sink import DirectorySink

    sink = DirectorySink(tmp_path)
    sink.commit(0, np.zeros((4, 4, 3), np.uint8), {}, {})
    write = Path.write_bytes

    def full(self: Path, data: bytes) -> int:
        if "000001.png" in self.name:
            raise enospc(self)
        return write(self, data)

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(PromptreelError, match=r"disk full while writing .*frames/000001\.png"):
        sink.commit(1, np.zeros((4, 4, 3), np.uint8), {}, {})
    monkeypatch.undo()
    assert [p.name for p in (tmp_path / "frames").iterdir()] == ["000000.png"]
    done, state = DirectorySink(tmp_path).resume()
    assert done == 1 and state == {}


def test_ffmpeg_on_a_full_disk_says_disk_full(tmp_path: Path) -> None:
    """/dev/full: every write fails with ENOSPC, for real."""
    from engines.media.ffmpeg import ffmpeg_exe, run_argv

    args = [ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
            "color=size=64x64:duration=1", "-f", "rawvideo", "/dev/full"]
    with pytest.raises(PromptreelError) as err:
        run_argv(args, what="writing a test clip")
    assert str(err.value).startswith("disk full while writing /dev/full: free space")


# ------------------------------------------------------------------ GPU out of memory
def test_a_cuda_out_of_memory_error_becomes_what_fits(tmp_path: Path, models_dir: Path) -> None:
    proc = run_patched(CUDA_OOM, *SMOKE, cache=tmp_path / "cache", models=models_dir,
                       run_dir=tmp_path / "run")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "OutOfMemoryError" not in proc.stderr
    assert "Traceback" not in proc.stdout  # Prefect's log of the failed task/flows: one line each
    assert "Task run failed with exception: " in proc.stdout
    lines = proc.stderr.strip().splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[first].startswith("error: ran out of memory. shot 'evolve': vqgan_clip at 96x64 "
                                   "with 4 cutouts needed about")
    assert lines[first + 1].startswith("  what fits: resolution ")
    assert "at 4 cutouts" in lines[first + 1]
    assert lines[-1] == "  or set engine.auto_fit=true to lower the settings automatically"
    assert not any(t == "generate_frames" for t, _ in committed(tmp_path / "cache"))


# ------------------------------------------------------------------ make doctor
def doctor(*args: str, models: Path, tmp_path: Path, env: dict | None = None):
    cmd = [sys.executable, "-m", "flows.render", *args, f"runtime.models_dir={models}",
           f"runtime.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / 'run'}",
           "--doctor"]
    environ = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**environ, **ENV, **(env or {})})


def test_doctor_passes_on_a_ready_machine(models_dir: Path, tmp_path: Path) -> None:
    from flows.doctor import MIN_FREE_GB

    if shutil.disk_usage(tmp_path).free < MIN_FREE_GB * 2**30:
        pytest.skip(f"this machine has under {MIN_FREE_GB} GiB free: not a ready machine")
    proc = doctor("film=smoke", models=models_dir, tmp_path=tmp_path)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [ln.split()[1].rstrip(":") for ln in lines if ln.startswith("ok ")] == [
        "ffmpeg", "torch", "cache", "models", "model", "model", "model", "prefect"]
    assert lines[-1] == "8 ok, 0 to fix" and "fix:" not in proc.stdout


def test_doctor_says_what_to_fix(tmp_path: Path) -> None:
    """A preset whose models are not downloaded, and a Prefect server that is not there."""
    proc = doctor("film=klee_garden", models=tmp_path / "empty", tmp_path=tmp_path,
                  env={"PREFECT_API_URL": "http://127.0.0.1:9/api"})
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr
    assert "Traceback" not in proc.stderr
    fixes = [ln for ln in out.splitlines() if ln.startswith("FIX  ")]
    assert [ln.split()[1] for ln in fixes if ln.split()[1] != "url"] == ["model", "model",
                                                                         "prefect:"]
    assert "FIX  model vqgan_imagenet_f16_16384: vqgan vqgan_imagenet_f16_16384: model.yaml " \
           f"missing at {tmp_path / 'empty'}/vqgan/vqgan_imagenet_f16_16384/model.yaml" in out
    assert out.count("     fix: on a connected machine run `make fetch-models conf=klee_garden`") \
        == 2
    assert "     fix: start it with `make server`, or unset PREFECT_API_URL" in out
    # its download URLs: checked when the network is up (HEAD, size), skipped offline
    urls = [ln for ln in out.splitlines() if " url" in ln[:10]]
    assert urls and all(ln.startswith(("ok   url", "FIX  url")) for ln in urls)
    n_ok = 4 + sum(ln.startswith("ok   url") for ln in urls)
    n_fix = 3 + sum(ln.startswith("FIX  url") for ln in urls)
    assert out.splitlines()[-1] == f"{n_ok} ok, {n_fix} to fix"


def test_doctor_checks_disk_space_gpu_and_folders(tmp_path: Path, monkeypatch) -> None:
    from flows import doctor as d

    usage = shutil.disk_usage(tmp_path)._replace(free=2 * 2**30)
    monkeypatch.setattr(d.shutil, "disk_usage", lambda path: usage)
    low = d.check_disk(tmp_path, "cache")
    assert low == (False, f"cache {tmp_path}: 2.0 GiB free, under 5 GiB",
                   "free space there, or point runtime.cache_dir at a larger disk")
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    bad = d.check_disk(blocked / "models", "models")
    assert not bad.ok and bad.fix.startswith("make it writable, or point runtime.models_dir")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert not d.check_torch("cuda").ok and "nvidia-smi" in d.check_torch("cuda:0").fix
    assert d.check_torch("auto").ok and d.check_torch("cpu").ok
