"""Shared by the reliability tests (kill, corruption, concurrency, resources, hostile inputs):
one uninterrupted reference render of a short smoke film, built once per test session, and
helpers to look at a cache directory (committed keys, their manifests) and to run the command
line in the background or with a patch applied inside its process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import ROOT, read_run, run_cli

# The smoke film with 8 frames per shot: still every stage (two shots, a 0.5x blend speed change,
# a fade join, the tiny MusicGen soundtrack, H.264 export), 20 frames in the final video.
SMOKE = ("film=smoke", "film.shots.0.frames=8", "film.shots.1.frames=8")
Key = tuple[str, str]  # (task, artefact key)
# Every render here runs torch single-threaded: on a busy 2-core machine two OpenMP threads per
# process ran 20-40x slower. Results are compared only among these renders.
ENV = {"OMP_NUM_THREADS": "1"}


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def committed(cache: Path) -> dict[Key, Path]:
    """Every committed artefact directory (`<task>/<key>/manifest.json`; not .work/.corrupt)."""
    return {(p.parent.parent.name, p.parent.name): p.parent
            for p in Path(cache).glob("*/*/manifest.json")
            if "." not in p.parent.name}


def manifest_files(cache: Path) -> dict[Key, dict]:
    """{(task, key): {file: {size, sha256}}} of every committed artefact."""
    return {k: json.loads((d / "manifest.json").read_text())["files"]
            for k, d in committed(cache).items()}


def stamps(cache: Path) -> dict[Key, tuple[int, int]]:
    """(inode, mtime_ns) of every committed manifest: changes iff the artefact was rebuilt."""
    out = {}
    for k, d in committed(cache).items():
        st = (d / "manifest.json").stat()
        out[k] = (st.st_ino, st.st_mtime_ns)
    return out


def verify_all(cache: Path) -> int:
    """Check every committed artefact (sizes and sha256, as Store.load does); their count."""
    from tasks.artefacts import check_manifest

    found = committed(cache)
    for d in found.values():
        check_manifest(d)
    return len(found)


# Files that legitimately differ between two renders of the same config: per-frame timings in
# generate_frames' metric tables, and the write time libsndfile stamps into a float WAV's PEAK
# chunk (the samples are compared instead).
TIMINGS = ("frames.csv", "frames.parquet", "progress.json")


def assert_same_artefacts(cache: Path, ref: Reference) -> None:
    """Every committed artefact of `cache` equals the reference's, file by file (see TIMINGS)."""
    import soundfile

    got = manifest_files(cache)
    assert sorted(got) == sorted(ref.files)
    for key, files in got.items():
        assert sorted(files) == sorted(ref.files[key]), key
        for name, info in files.items():
            if name.endswith(".wav"):
                a = soundfile.read(committed(cache)[key] / name)[0]
                b = soundfile.read(committed(ref.cache)[key] / name)[0]
                assert a.shape == b.shape and (a == b).all(), (key, name)
            elif name not in TIMINGS:
                assert info == ref.files[key][name], (key, name)


def built(record: dict) -> set[Key]:
    """The artefacts a run computed (its run.json rows with cached false)."""
    return {(t["task"], t["key"]) for t in record["tasks"] if not t["cached"]}


@dataclass(frozen=True)
class Reference:
    base: Path
    cache: Path
    models: Path
    record: dict
    video_sha: str
    files: dict[Key, dict]  # manifest files of every committed artefact

    def copy_cache(self, dst: Path) -> Path:
        """A copy of the reference cache that keeps its hard links (frames are linked between
        generate_frames, extract_frames and refine_frames, as in a real cache)."""
        subprocess.run(["cp", "-a", str(self.cache), str(dst)], check=True)
        return dst


@pytest.fixture(scope="session")
def reference(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """One uninterrupted render of SMOKE, the ground truth for every reliability test."""
    base = tmp_path_factory.mktemp("reference")
    run_cli(*SMOKE, cache=base / "cache", models=models_dir, run_dir=base / "run", extra_env=ENV)
    record = read_run(base / "run")
    return Reference(base, base / "cache", models_dir, record, sha256(Path(record["video"])),
                     manifest_files(base / "cache"))


def render_argv(*args: str, cache: Path, models: Path, run_dir: Path,
                patch: str | None = None) -> list[str]:
    """`python -m flows.render <args>` with its own dirs; `patch` is Python run first in the
    same process (to simulate a full disk or an out-of-memory GPU)."""
    tail = [*args, f"runtime.cache_dir={cache}", f"runtime.models_dir={models}",
            f"hydra.run.dir={run_dir}"]
    if patch is None:
        return [sys.executable, "-m", "flows.render", *tail]
    code = (f"{patch}\nimport runpy, sys\nsys.argv = ['flows/render.py', *{tail!r}]\n"
            "runpy.run_module('flows.render', run_name='__main__', alter_sys=True)\n")
    return [sys.executable, "-c", code]


def start(argv: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a render in its own process group (so `reap` can end what it leaves behind:
    Prefect's temporary server, an ffmpeg), its output to `log`."""
    with open(log, "wb") as out:
        return subprocess.Popen(argv, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **ENV, **(env or {})},
                                start_new_session=True)


def reap(proc: subprocess.Popen, timeout: float = 600) -> int:
    """Wait for a render started by `start`, then SIGKILL what is left of its process group."""
    try:
        rc = proc.wait(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return rc


def run_patched(patch: str | None, *args: str, cache: Path, models: Path, run_dir: Path,
                timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the command line (with `patch` applied in its process); capture its output."""
    argv = render_argv(*args, cache=cache, models=models, run_dir=run_dir, patch=patch)
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV})
