"""The artefact cache: the filesystem is the truth.

Every task output is a directory `<cache>/<task>/<key>/` whose `manifest.json` is written last.
An artefact is done iff its manifest parses and every listed file exists with the listed size and
sha256. Work in progress lives in `<key>.work/`; `Work.commit()` writes the manifest there and
renames the directory into place, so a crash never leaves a directory that looks done.

Keys hash the task name, its `code_version`, the canonical JSON of the config slices it reads and
the keys of its upstream artefacts: nothing else (no paths, devices, run ids or timestamps).

A per-key file lock (`<key>.lock`) makes two processes (or two boxes on shared storage) never work
on the same key at once: the second waits, then finds the committed artefact and reuses it.

After a crash: a `<key>.work/` is never trusted (not even with a manifest inside); the next build of
that key starts it afresh (or resumes it, for resumable tasks such as generate_frames), and a
commit deletes leftover temporary files (`.*`, `*.tmp`, `*.part`) instead of keeping them. Work
dirs of keys no config asks for any more are ignored; `<key>.lock` files are empty and harmless.

Durable file writes (atomic writes, fsync, hashes) are engines/core/files.py's; the crash-test
hook is engines/core/crash.py's.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from engines.core.crash import kill_point
from engines.core.errors import CorruptArtefactError
from engines.core.files import describe_file, fsync_path, sha256_file, write_json

log = logging.getLogger("promptreel")

MANIFEST = "manifest.json"


def is_temporary(name: str) -> bool:
    """Names of in-progress files (atomic writes, ffmpeg `.part` outputs): never part of an
    artefact; a commit deletes them."""
    return name.startswith(".") or name.endswith((".tmp", ".part"))


# ---------------------------------------------------------------- keys
def canonical(obj: Any) -> Any:
    """JSON-ready form of config slices (pydantic models, dataclasses, tuples, paths). An object
    with a `cache_identity()` counts as what that returns (a prepared model: its registry entry,
    not its folder)."""
    if hasattr(obj, "cache_identity"):
        return canonical(obj.cache_identity())
    if hasattr(obj, "model_dump"):
        return canonical(obj.model_dump(mode="json"))
    if isinstance(obj, Mapping):
        return {str(k): canonical(v) for k, v in sorted(obj.items(), key=lambda kv: str(kv[0]))}
    if isinstance(obj, (list, tuple)):
        return [canonical(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return repr(obj)  # "inf", "-inf", "nan": JSON has no such numbers (a prompt's stop -inf)
    if isinstance(obj, float) and obj.is_integer():
        return obj  # keep 1.0 as 1.0: json distinguishes it from 1
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "__dataclass_fields__"):
        return canonical({k: getattr(obj, k) for k in obj.__dataclass_fields__})
    raise TypeError(f"cannot hash config value of type {type(obj).__name__}: {obj!r}")


def artefact_key(task: str, code_version: str, config: Any, upstream: Sequence[str] = ()) -> str:
    """Content key: 24 hex chars of sha256 over the canonical JSON of everything that shapes it."""
    payload = {"task": task, "code_version": code_version, "config": canonical(config),
               "upstream": list(upstream)}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


# ---------------------------------------------------------------- artefacts
@dataclass(frozen=True)
class Artefact:
    """A committed task output, small enough to pass between tasks (no models, no tensors)."""

    task: str
    key: str
    path: str  # absolute directory
    meta: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        return Path(self.path) / name


def check_manifest(directory: Path, *, hash_files: bool = True) -> dict[str, Any]:
    """Return the parsed manifest if the artefact is complete and intact, else raise."""
    manifest_path = directory / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CorruptArtefactError(f"{manifest_path}: unreadable manifest ({exc})") from exc
    for rel, info in files.items():
        fp = directory / rel
        try:
            size = fp.stat().st_size
        except OSError as exc:
            raise CorruptArtefactError(f"{fp}: listed in the manifest but missing") from exc
        if size != info["size"]:
            raise CorruptArtefactError(f"{fp}: size {size} != manifest {info['size']}")
        if hash_files and info.get("sha256") and _cached_sha(fp) != info["sha256"]:
            raise CorruptArtefactError(f"{fp}: content differs from its manifest hash")
    return manifest


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _cached_sha(fp: Path) -> str:
    st = fp.stat()
    memo_key = (str(fp), st.st_size, st.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        _SHA_MEMO[memo_key] = sha256_file(fp)
    return _SHA_MEMO[memo_key]


class Store:
    """The cache root. One instance per run; cheap to create."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()

    def dir(self, task: str, key: str) -> Path:
        return self.root / task / key

    def load(self, task: str, key: str) -> Artefact | None:
        """The committed artefact, or None if absent. A corrupt one is moved aside and None."""
        directory = self.dir(task, key)
        if not directory.exists():
            return None
        try:
            manifest = check_manifest(directory)
        except CorruptArtefactError as exc:
            self._quarantine(directory, str(exc))
            return None
        return Artefact(task, key, str(directory), manifest.get("meta", {}))

    def _quarantine(self, directory: Path, why: str) -> None:
        """Move a corrupt artefact out of the way (kept for inspection, never trusted)."""
        target = directory.with_name(f"{directory.name}.corrupt")
        log.warning("corrupt artefact, rebuilding it: %s (moved to %s)", why, target)
        shutil.rmtree(target, ignore_errors=True)
        with contextlib.suppress(OSError):
            os.replace(directory, target)
            (target / "WHY").write_text(why + "\n")

    def lock(self, task: str, key: str) -> FileLock:
        lock_path = self.root / task / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_path))

    def begin(self, task: str, key: str, *, fresh: bool = False) -> Work:
        """Open the work directory (kept across crashes so long tasks can resume)."""
        work = self.root / task / f"{key}.work"
        if fresh and work.exists():
            shutil.rmtree(work)
        work.mkdir(parents=True, exist_ok=True)
        return Work(self, task, key, work)


@dataclass
class Work:
    store: Store
    task: str
    key: str
    path: Path

    def commit(self, meta: Mapping[str, Any] | None = None, *, code_version: str = "",
               config: Any = None, upstream: Sequence[str] = ()) -> Artefact:
        """List every file (size + sha256), write the manifest last, rename into place."""
        for fp in sorted(self.path.rglob("*"), reverse=True):  # a crashed write's leftovers
            if is_temporary(fp.name):
                shutil.rmtree(fp) if fp.is_dir() and not fp.is_symlink() else fp.unlink()
        files = {}
        for fp in sorted(p for p in self.path.rglob("*") if p.is_file()):
            rel = fp.relative_to(self.path).as_posix()
            if rel != MANIFEST:
                files[rel] = describe_file(fp)
        manifest = {"task": self.task, "key": self.key, "code_version": code_version,
                    "upstream": list(upstream), "files": files, "meta": dict(meta or {}),
                    "config": canonical(config) if config is not None else None}
        write_json(self.path / MANIFEST, manifest)
        kill_point("commit")
        final = self.store.dir(self.task, self.key)
        if final.exists():  # a corrupt leftover: replace it
            shutil.rmtree(final)
        os.replace(self.path, final)
        fsync_path(final.parent)
        return Artefact(self.task, self.key, str(final), dict(meta or {}))
