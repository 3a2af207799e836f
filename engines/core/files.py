"""Durable files: atomic writes, fsync, content hashes, hard links. One copy of each, used by the
artefact store (tasks/), model downloads and conversions (engines/models/) and media outputs
(engines/media/).

- `atomic_path(path)`: a uniquely named temporary file in the same directory, fsynced and renamed
  onto `path` on success, deleted on failure; it gets the umask's permissions (not mkstemp's
  0600). `write_bytes` / `write_json` are built on it.
- `atomic_output(path)`: the same with the fixed name `<path>.part` (ffmpeg outputs: a killed run
  leaves a `.part` that the next run overwrites and that a commit deletes, never a playable file
  under the final name).
- `fsync_path` (file or directory), `fsync_tree`, `sha256_file`, `describe_file` (size + sha256),
  `link_or_copy` (hard link, or a copy across devices).
- `disk_full(path)`: the error for ENOSPC / a full quota, naming the path and the fix.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engines.core.errors import PromptreelError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def current_umask() -> int:
    """The process umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def fsync_path(path: Path | str) -> None:
    """fsync a file or a directory (its entries); a filesystem that cannot is ignored."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every entry of `folder` (one level), then the folder itself."""
    for p in [*Path(folder).iterdir(), Path(folder)]:
        fsync_path(p)


def disk_full(path: Path | str) -> PromptreelError:
    """The error for ENOSPC (or a full quota) while writing `path`."""
    path = Path(path)
    return PromptreelError(
        f"disk full while writing {path}: free space on the disk that holds {path.parent} (or "
        "point runtime.cache_dir at a larger disk) and run the same command again; committed "
        "artefacts are intact and will be reused")


def _disk_error(path: Path, exc: OSError) -> PromptreelError:
    if exc.errno in DISK_FULL:
        return disk_full(path)
    return PromptreelError(f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temp path in the same directory; on success fsync it and rename it to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # as a plain open() would, not mkstemp's 0600
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        fsync_path(tmp_path)
        os.replace(tmp_path, path)
        fsync_path(path.parent)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        raise _disk_error(path, exc) from exc
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_output(path: Path | str) -> Iterator[Path]:
    """Yield `<path>.part` (removed first if a killed run left it); on success fsync it and
    rename it to `path`; on failure delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
        fsync_path(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path | str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n").encode())


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_file(path: Path) -> dict[str, Any]:
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def link_or_copy(src: Path | str, dst: Path | str) -> None:
    """Hard-link `src` to `dst` (replacing `dst`), or copy it when a link is impossible
    (another filesystem)."""
    dst = Path(dst)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
