"""Model files: presence and verification, downloads, generated (random-weight) models, and
`prepare`, which is all of pre-production for one registry entry (engines/models/registry.py).

- `ensure_files` returns present files (right size, and sha256 when listed), downloading missing
  ones with a progress bar, resume of `<file>.part` (HTTP Range), size/checksum verification and
  an atomic rename; when it cannot (offline, dead link, download disabled) it raises
  `MissingWeightsError` naming the file, its destination, its URL and the command that fetches it.
- `materialise_generated` writes a `source: generated` entry in its published file format (the
  kind's format module's `build_generated`), deterministically from `entry.seed`, atomically (a
  work dir renamed into place), once.
- `prepare` = generate or fetch, verify, then the format's `after_fetch` (a VQGAN's Lightning
  checkpoint converted to safetensors without running pickled code; MusicGen's T5 text encoder
  fetched). Its folder is what engines load, through engines/models/loaded.py.
- `missing_files` lists what is absent, without downloading or hashing (make doctor).
Nothing here imports torch at module level.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError, MissingWeightsError
from engines.core.files import fsync_path, fsync_tree, sha256_file
from engines.models.registry import (
    CONFIG_KEYS,
    FETCH_HINT,
    KINDS,
    ModelEntry,
    RemoteFile,
    model_dir,
)

log = logging.getLogger(__name__)

GENERATED_MANIFEST = "generated.json"
GENERATED_VERSION = "1"  # bump when a generator's output for the same entry would change
CONNECT_TIMEOUT_S = 10.0  # seconds to open a connection
READ_TIMEOUT_S = 60.0  # seconds without a byte before a download is abandoned (resumable)
APPROX_TOLERANCE = 0.10  # a download more than 10% off `approx_size` is refused


def format_of(kind: str) -> Any:
    """The module that reads and writes the files of a kind (registry.KINDS)."""
    return importlib.import_module(KINDS[kind].format)


def _size_problem(f: RemoteFile, got: int) -> str | None:
    if f.size is not None and got != f.size:
        return f"size {got} bytes, expected {f.size}"
    if f.approx_size and abs(got - f.approx_size) > APPROX_TOLERANCE * f.approx_size:
        return f"size {got} bytes, expected about {f.approx_size} (within 10%)"
    return None


def check_file(path: Path, f: RemoteFile, *, hash_it: bool = True) -> str | None:
    """None if `path` is a complete, verified copy of `f`; else what is wrong ("missing", ...).
    A verified sha256 is remembered in `<file>.verified.json` (by size and mtime)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return "missing"
    problem = "empty file" if st.st_size == 0 else _size_problem(f, st.st_size)
    if problem or not f.sha256 or not hash_it:
        return problem
    stamp = path.with_name(path.name + ".verified.json")
    try:
        rec = json.loads(stamp.read_text())
        if (rec["size"], rec["mtime_ns"], rec["sha256"]) == (st.st_size, st.st_mtime_ns, f.sha256):
            return None
    except (OSError, ValueError, KeyError, TypeError):
        pass
    got = sha256_file(path)
    if got != f.sha256:
        return f"sha256 {got}, expected {f.sha256}"
    stamp.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": got}))
    return None


def missing_message(entry: ModelEntry, f: RemoteFile, dest: Path, why: str) -> str:
    """The message of a MissingWeightsError: file, destination, URL, reason and the fix."""
    url = f.url or "(no known URL)"
    lines = [f"{entry.kind} model {entry.name!r}: file {f.name} is not available.",
             f"  destination: {dest}", f"  url: {url}", f"  why: {why}"]
    if f.url:
        lines.append(f"  fix: on a connected machine run `{FETCH_HINT}` (it downloads into "
                     "$PROMPTREEL_MODELS or runtime.models_dir) and copy the folder "
                     f"{dest.parent} here, or download the URL to the destination by hand.")
    else:
        lines.append(f"  fix: if you have a copy, put it at the destination by hand; otherwise "
                     f"choose another {CONFIG_KEYS[entry.kind]} ({entry.notes.strip()})")
    return "\n".join(lines)


def ensure_files(entry: ModelEntry, models_dir: Path, *, download: bool = True) -> dict[str, Path]:
    """{file name: local path} for every file of `entry`, downloading what is missing.
    Raises MissingWeightsError (offline, dead link, download=False, failed verification)."""
    if entry.source == "generated":
        out = materialise_generated(entry, models_dir)
        return {p.name: p for p in sorted(out.iterdir()) if p.is_file()
                and not p.name.startswith(".") and p.name != GENERATED_MANIFEST}
    if entry.source == "hub":
        return fetch_hub(entry, model_dir(entry, models_dir), download=download)
    if entry.source == "local" and entry.path is not None:  # a diffusers folder on disk
        folder = model_dir(entry, models_dir)
        return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
                if p.is_file()}
    if entry.source == "local":
        return local_files(entry, models_dir)
    folder = model_dir(entry, models_dir)
    paths = {}
    for f in entry.files:
        dest = folder / f.name
        problem = check_file(dest, f)
        if problem is not None:
            if entry.source == "dead" or not f.url:
                why = f"its host is dead and no replacement is known ({problem})"
                raise MissingWeightsError(missing_message(entry, f, dest, why))
            if not download:
                if f.optional:
                    continue
                why = f"{problem}; downloads are off (runtime.download=false)"
                raise MissingWeightsError(missing_message(entry, f, dest, why))
            try:
                fetch(entry, f, dest)
            except MissingWeightsError as exc:
                if not f.optional:
                    raise
                log.warning("%s: optional file %s not fetched; loading without it (%s)",
                            entry.name, f.name, str(exc).splitlines()[-2].strip())
                continue
        paths[f.name] = dest
    return paths


HUB_MARKER = ".promptreel-hub.json"  # written after a complete hub download: repo, revision, sizes


def _hub_complete(entry: ModelEntry, folder: Path) -> dict[str, Path] | None:
    """The files of a complete download of `entry` in `folder` (marker matches, every file
    there with its recorded size), or None."""
    try:
        rec = json.loads((folder / HUB_MARKER).read_text())
        if (rec["repo"], rec["revision"], rec["patterns"]) != (
                entry.repo, entry.revision, list(entry.allow_patterns)):
            return None
        out = {}
        for rel, size in rec["files"].items():
            path = folder / rel
            if path.stat().st_size != size:
                return None
            out[rel] = path
        return out
    except (OSError, ValueError, KeyError, TypeError):
        return None


def hub_missing_message(entry: ModelEntry, folder: Path, why: str) -> str:
    return "\n".join([
        f"{entry.kind} model {entry.name!r} is not in the models folder.",
        f"  repo: {entry.repo} at revision {entry.revision}",
        f"  files: {', '.join(entry.allow_patterns)}",
        f"  destination: {folder}", f"  why: {why}",
        f"  fix: on a connected machine run `{FETCH_HINT}` (it downloads into $PROMPTREEL_MODELS "
        f"or runtime.models_dir) and copy the folder {folder} here."])


def fetch_hub(entry: ModelEntry, folder: Path, *, download: bool) -> dict[str, Path]:
    """The files of a `source: hub` entry: the repo at its pinned revision, only the files its
    `allow_patterns` name, downloaded with huggingface_hub (progress bars, resume of partial
    files) into `folder`, then recorded in a marker so later runs check sizes, not the hub.
    Renders run with the hub offline (HF_HUB_OFFLINE=1, flows/render.py); this is the one place
    that goes online, and only when `download` allows."""
    done = _hub_complete(entry, folder)
    if done is not None:
        return done
    if not download:
        raise MissingWeightsError(hub_missing_message(
            entry, folder, "downloads are off (runtime.download=false) or the files are missing"))
    import contextlib

    from huggingface_hub import constants, snapshot_download

    unreachable = hub_unreachable(constants.ENDPOINT)
    if unreachable:  # no network: stop now, not after huggingface_hub's retries (about 25 s)
        raise MissingWeightsError(hub_missing_message(entry, folder, f"cannot download here "
                                                      f"({unreachable})"))
    offline = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        snapshot_download(entry.repo, revision=entry.revision, local_dir=str(folder),
                          allow_patterns=list(entry.allow_patterns))
    except Exception as exc:  # noqa: BLE001 - network, hub or disk errors: say what to fetch
        raise MissingWeightsError(hub_missing_message(
            entry, folder, f"cannot download here ({type(exc).__name__}: {_short(exc)})")) from None
    finally:
        with contextlib.suppress(Exception):
            constants.HF_HUB_OFFLINE = offline
    files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*"))
             if p.is_file() and not p.relative_to(folder).as_posix().startswith(".")}
    from engines.core.files import write_json

    write_json(folder / HUB_MARKER, {"repo": entry.repo, "revision": entry.revision,
                                     "patterns": list(entry.allow_patterns),
                                     "files": {rel: p.stat().st_size for rel, p in files.items()}})
    return files


def hub_unreachable(endpoint: str, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to the hub's host opens within `timeout` seconds (or a proxy
    is configured, which huggingface_hub goes through instead); else why not."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlsplit(endpoint)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        return f"no network: {host}:{port} cannot be reached ({type(exc).__name__}: {_short(exc)})"
    return None


def missing_files(entries: list[ModelEntry] | tuple[ModelEntry, ...], models_dir: Path) -> list[str]:
    """Problems that would stop these entries loading, found without downloading or hashing
    (generated entries are built on first use and never a problem)."""
    problems = []
    for entry in entries:
        if entry.source == "generated" or entry.path is not None:
            continue
        if entry.source == "hub":
            folder = model_dir(entry, models_dir)
            if _hub_complete(entry, folder) is None:
                problems.append(f"{entry.kind} {entry.name}: {entry.repo}@{entry.revision} not "
                                f"downloaded to {folder}")
            continue
        if entry.source == "local":
            problems += [f"{entry.kind} {entry.name}: {k} {getattr(entry, k)} is missing"
                         for k in ("config", "checkpoint")
                         if not Path(str(getattr(entry, k))).expanduser().is_file()]
            continue
        for f in entry.files:
            dest = model_dir(entry, models_dir) / f.name
            problem = check_file(dest, f, hash_it=False)
            if problem is None or f.optional:
                continue
            where = f"download {f.url}" if f.url and entry.source != "dead" else "host dead"
            problems.append(f"{entry.kind} {entry.name}: {f.name} {problem} at {dest} ({where})")
    return problems


# --- a model's own files by path (vqgan=local) ---------------------------------------------

def _memo_sha(path: Path, memo_dir: Path) -> str:
    """sha256 of a user's file, remembered by (path, size, mtime) under `memo_dir`."""
    st = path.stat()
    memo = memo_dir / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24]}.json"
    try:
        rec = json.loads(memo.read_text())
        if (rec["size"], rec["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
            return rec["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    digest = sha256_file(path)
    memo_dir.mkdir(parents=True, exist_ok=True)
    memo.write_text(json.dumps({"path": str(path), "size": st.st_size,
                                "mtime_ns": st.st_mtime_ns, "sha256": digest}))
    return digest


def local_folder(entry: ModelEntry, models_dir: Path) -> Path:
    """`<models_dir>/vqgan/local-<digest>/`: the folder of a local pair, named by the sha256 of
    both files' contents (so a key names the content, never the paths)."""
    memo = Path(models_dir) / entry.kind / ".local-hashes"
    paths = [Path(str(getattr(entry, k))).expanduser() for k in ("config", "checkpoint")]
    for key, path in zip(("config", "checkpoint"), paths, strict=True):
        if not path.is_file():
            raise ConfigError(f"{CONFIG_KEYS[entry.kind]}.{key}", str(path), "an existing file",
                              "the path of your model's yaml (config) and checkpoint")
    digest = hashlib.sha256("".join(_memo_sha(p, memo) for p in paths).encode()).hexdigest()
    return Path(models_dir) / entry.kind / f"local-{digest[:16]}"


def local_files(entry: ModelEntry, models_dir: Path) -> dict[str, Path]:
    """A local yaml/ckpt pair linked (or copied) into its content-named folder under the
    published names, so the format module loads it like a downloaded model."""
    from engines.core.files import link_or_copy
    from engines.models.taming import CKPT_FILE, CONFIG_FILE

    folder = local_folder(entry, models_dir)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for key, name in (("config", CONFIG_FILE), ("checkpoint", CKPT_FILE)):
        src, dest = Path(str(getattr(entry, key))).expanduser(), folder / name
        if not dest.is_file() or dest.stat().st_size != src.stat().st_size:
            link_or_copy(src, dest)
        out[name] = dest
    return out


# --- downloads -------------------------------------------------------------------------------

class VerificationError(MissingWeightsError):
    """A downloaded file failed its size or checksum check (the partial file was deleted)."""


def fetch(entry: ModelEntry, f: RemoteFile, dest: Path) -> Path:
    """Download `f` from its URL, then its mirrors in order until one succeeds (the message of
    the last failure otherwise); see `fetch_from`."""
    urls = [f.url, *f.mirrors]
    for i, url in enumerate(urls):
        try:
            return fetch_from(entry, f.model_copy(update={"url": url}), dest)
        except VerificationError:
            raise  # the wrong file: another host would not be more trustworthy
        except MissingWeightsError:
            if i == len(urls) - 1:
                raise
            log.warning("%s: %s failed; trying the mirror %s", entry.name, url, urls[i + 1])
    raise AssertionError("unreachable")


def fetch_from(entry: ModelEntry, f: RemoteFile, dest: Path) -> Path:
    """Download `f` to `dest` (resuming `<dest>.part`), verify it and move it into place.
    Any network or HTTP failure becomes a MissingWeightsError; a partial download is kept for the
    next attempt unless it failed verification. Nothing is created before the server answers."""
    import requests

    try:
        for _ in range(3):  # retried only if another process changed the .part meanwhile
            if _fetch_once(entry, f, dest, requests):
                return dest
        raise MissingWeightsError(missing_message(entry, f, dest, "another process keeps "
                                                  "changing the partial download"))
    except requests.RequestException as exc:
        why = f"cannot download here ({type(exc).__name__}: {_short(exc)})"
        raise MissingWeightsError(missing_message(entry, f, dest, why)) from None


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) < 300 else text[:300] + "..."


def _fetch_once(entry: ModelEntry, f: RemoteFile, dest: Path, requests: Any) -> bool:
    from filelock import FileLock

    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    resp = requests.get(f.url, stream=True, headers=headers, allow_redirects=True,
                        timeout=(CONNECT_TIMEOUT_S, READ_TIMEOUT_S))
    with resp:
        if resp.status_code == 416 and offset:  # nothing left to send: the .part may be whole
            return _finish_part(entry, f, dest, part)
        resp.raise_for_status()
        ctype = resp.headers.get("Content-Type", "")
        if ctype.startswith("text/html") and not dest.suffix.startswith(".htm"):
            why = (f"the server answered with a web page ({ctype}), not the file: the link is "
                   "dead or needs a browser")
            raise MissingWeightsError(missing_message(entry, f, dest, why))
        dest.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(dest) + ".lock"):
            if check_file(dest, f) is None:  # another process finished it meanwhile
                return True
            now = part.stat().st_size if part.exists() else 0
            if now != offset:
                return False
            resumed = offset > 0 and resp.status_code == 206
            if offset and not resumed:
                log.info("%s: server ignored the resume request; starting again", f.name)
            _stream(resp, part, f, entry, resumed=resumed, offset=offset if resumed else 0)
            return _finish_part(entry, f, dest, part)


def _stream(resp: Any, part: Path, f: RemoteFile, entry: ModelEntry, *, resumed: bool,
            offset: int) -> None:
    from tqdm import tqdm

    length = resp.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    log.info("downloading %s -> %s", f.url, part)
    got, error = offset, None
    with open(part, "ab" if resumed else "wb") as out, tqdm(
            total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
            desc=f"{entry.name}/{f.name}", mininterval=1.0) as bar:
        try:
            for block in resp.iter_content(chunk_size=1 << 16):  # a break loses < 64 KiB
                out.write(block)
                got += len(block)
                bar.update(len(block))
        except Exception as exc:  # noqa: BLE001 - any broken transfer is resumable
            error = f"{type(exc).__name__}: {_short(exc)}"
        out.flush()
        os.fsync(out.fileno())
    if error or (total is not None and got < total):
        why = (f"the transfer stopped at {got} of {total or '?'} bytes ({error or 'short read'}); "
               f"{part.name} is kept: run again to resume")
        raise MissingWeightsError(missing_message(entry, f, part.with_suffix(""), why))


def _finish_part(entry: ModelEntry, f: RemoteFile, dest: Path, part: Path) -> bool:
    """Verify a finished `.part` and move it into place; a bad one is deleted and reported."""
    problem = _size_problem(f, part.stat().st_size)
    if problem is None and f.sha256:
        got = sha256_file(part)
        problem = None if got == f.sha256 else f"sha256 {got}, expected {f.sha256}"
    if problem is not None:
        part.unlink(missing_ok=True)
        why = f"the download failed verification: {problem} (deleted; wrong file behind the URL?)"
        raise VerificationError(missing_message(entry, f, dest, why))
    os.replace(part, dest)
    fsync_path(dest.parent)
    if f.sha256:
        st = dest.stat()
        dest.with_name(dest.name + ".verified.json").write_text(json.dumps(
            {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": f.sha256}))
    return True


# --- generated models ------------------------------------------------------------------------

def _fingerprint(entry: ModelEntry) -> str:
    blob = json.dumps({"kind": entry.kind, "name": entry.name, "arch": entry.arch,
                       "loader": entry.loader, "seed": entry.seed, "v": GENERATED_VERSION},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _generated_ok(folder: Path, fingerprint: str) -> bool:
    try:
        rec = json.loads((folder / GENERATED_MANIFEST).read_text())
        return rec["fingerprint"] == fingerprint and all(
            (folder / n).stat().st_size == s for n, s in rec["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False


def materialise_generated(entry: ModelEntry, models_dir: Path) -> Path:
    """Build a `source: generated` entry into <models_dir>/<kind>/<name>/ in its published file
    format (deterministic from entry.seed) and return that folder. Idempotent and atomic: a
    complete folder (manifest with matching fingerprint and file sizes) is reused; otherwise the
    files are written in a work folder that is renamed into place."""
    from filelock import FileLock

    if entry.source != "generated":
        raise ConfigError(f"{CONFIG_KEYS[entry.kind]}.source", entry.source, "generated",
                          "only generated entries are built; others are downloaded")
    out = model_dir(entry, models_dir)
    fingerprint = _fingerprint(entry)
    if _generated_ok(out, fingerprint):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out.parent / f".{entry.name}.lock")):
        if _generated_ok(out, fingerprint):
            return out
        work = out.parent / f".{entry.name}.work-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        try:
            format_of(entry.kind).build_generated(entry, work)
            files = {p.name: p.stat().st_size for p in sorted(work.iterdir())
                     if p.is_file() and not p.name.startswith(".")}
            (work / GENERATED_MANIFEST).write_text(json.dumps(
                {"fingerprint": fingerprint, "files": files, "seed": entry.seed}, indent=2))
            fsync_tree(work)
            if out.exists():
                old = out.parent / f".{entry.name}.old-{os.getpid()}"
                os.replace(out, old)
                shutil.rmtree(old, ignore_errors=True)
            os.replace(work, out)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    log.info("generated %s %s in %s", entry.kind, entry.name, out)
    return out


def prepare(entry: ModelEntry, models_dir: Path, *, download: bool = True) -> Path:
    """Everything pre-production does for one entry: build it (generated) or fetch and verify
    its files, then its format's `after_fetch` (safe conversion, companion files), so a missing
    or unsafe model fails before any frame renders. Returns the folder engines load from."""
    files = ensure_files(entry, models_dir, download=download)
    after = getattr(format_of(entry.kind), "after_fetch", None)
    if after is not None:
        after(entry, files, download=download)
    if entry.source == "local":
        return local_folder(entry, models_dir)
    return model_dir(entry, models_dir)
