"""Model registry, downloads with verification, and generated (random-weight) models.

Registry: one YAML file per model, `conf/<KIND_DIRS[kind]>/<name>.yaml`, whose `name:` is its file
name (house rule: one name, one string). Files live in `<models_dir>/<kind>/<name>/<file>`.
- `ensure_files` returns present files (right size, and sha256 when listed), downloading missing
  ones with a progress bar, resume of `<file>.part` (HTTP Range), size/checksum verification and
  an atomic rename; when it cannot (offline, dead link, download disabled) it raises
  `MissingWeightsError` naming the file, its destination, its URL and the command that fetches it.
- `materialise_generated` writes a `source: generated` entry in its published file format,
  deterministically from `entry.seed`, atomically (a work dir renamed into place), once.
- `prepare` = all of pre-production for one entry (generate or fetch, verify, safe-convert).
- `load_vqgan` (engines.taming_compat) and `engines.perceptor.load_clip` load either kind.
Nothing here imports torch at module level.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.errors import ConfigError, MissingWeightsError

log = logging.getLogger(__name__)

KIND_DIRS = {"vqgan": "vqgan", "clip": "clip", "musicgen": "soundtrack/models",
             "cyclegan": "refine/models"}  # registry folder of each kind, under conf/
CONFIG_KEYS = {"vqgan": "vqgan", "clip": "clip", "musicgen": "soundtrack.model",
               "cyclegan": "refine.model"}  # the config key that names an entry of each kind
GENERATORS = {"vqgan": "engines.taming_compat", "clip": "engines.perceptor",
              "musicgen": "engines.musicgen", "cyclegan": "engines.cyclegan"}  # build_generated
VQGAN_LOADERS = ("VQModel", "GumbelVQ", "Net2NetTransformer")
GENERATED_MANIFEST = "generated.json"
GENERATED_VERSION = "1"  # bump when a generator's output for the same entry would change
FETCH_HINT = "make fetch-models conf=<your preset>"
CONNECT_TIMEOUT_S = 10.0  # seconds to open a connection
READ_TIMEOUT_S = 60.0  # seconds without a byte before a download is abandoned (resumable)
APPROX_TOLERANCE = 0.10  # a download more than 10% off `approx_size` is refused
SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RemoteFile(Frozen):
    """One file of a model: where it goes, where it comes from, how it is checked."""

    name: str  # file name inside <models_dir>/<kind>/<name>/
    url: str | None = None  # download URL; None = no known host (put the file there by hand)
    size: int | None = Field(None, gt=0)  # exact size in bytes, checked; None = unknown
    approx_size: int | None = Field(None, gt=0)  # bytes as published (rounded), checked to 10%
    sha256: str | None = None  # lowercase hex digest, checked; None = unknown

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not SLUG.match(v) or ".." in v:
            raise ValueError("a plain file name (letters, digits, _ . -), no folders")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("an http:// or https:// URL, or null")
        return v

    @field_validator("sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("64 lowercase hex digits, or null")
        return v


class ModelEntry(Frozen):
    """A registry entry (conf/<kind dir>/<name>.yaml)."""

    name: str  # registry key = file name = config option
    kind: Literal["vqgan", "clip", "musicgen", "cyclegan"]
    source: Literal["url", "open_clip", "audiocraft", "generated", "dead"]
    files: tuple[RemoteFile, ...] = ()  # what to download (empty for generated)
    loader: str | None = None  # vqgan: VQModel | GumbelVQ | Net2NetTransformer
    arch: dict[str, Any] = Field(default_factory=dict)  # open_clip: model + pretrained; generated
    seed: int = Field(0, ge=0)  # torch seed of a generated model's random weights
    notes: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ModelEntry:
        if not SLUG.match(self.name):
            raise ValueError(f"name {self.name!r}: letters, digits, _ . - only")
        if self.source == "generated" and (self.files or not self.arch):
            raise ValueError("source generated: files must be empty and arch must describe it")
        if self.source in ("url", "open_clip", "audiocraft"):
            if not self.files or any(f.url is None for f in self.files):
                raise ValueError(f"source {self.source}: every file needs a url")
        if self.source == "open_clip" and not {"model", "pretrained"} <= set(self.arch):
            raise ValueError("source open_clip: arch needs model (e.g. ViT-B-32) and pretrained")
        if self.source == "dead" and not self.notes:
            raise ValueError("source dead: say in notes what happened and what to use instead")
        if self.kind == "vqgan" and self.loader not in VQGAN_LOADERS:
            raise ValueError(f"kind vqgan: loader must be one of {', '.join(VQGAN_LOADERS)}")
        if len({f.name for f in self.files}) != len(self.files):
            raise ValueError("files: two files with the same name")
        return self


# --- registry --------------------------------------------------------------------------------

def _kind_dir(kind: str, conf_dir: Path) -> Path:
    if kind not in KIND_DIRS:
        raise ConfigError("kind", kind, ", ".join(KIND_DIRS))
    return Path(conf_dir) / KIND_DIRS[kind]


def list_entries(kind: str, conf_dir: Path) -> list[str]:
    """Sorted names of the registry entries of `kind` (YAML files in its conf folder)."""
    folder = _kind_dir(kind, conf_dir)
    if not folder.is_dir():
        return []
    return sorted(p.stem for p in folder.glob("*.yaml") if SLUG.match(p.stem))


def load_entry(kind: str, name: str, conf_dir: Path) -> ModelEntry:
    """The validated registry entry `name` of `kind`; ConfigError names the choices."""
    key = CONFIG_KEYS.get(kind, kind)
    names = list_entries(kind, conf_dir)
    if not isinstance(name, str) or name not in names:
        raise ConfigError(key, name, ", ".join(names) or "(none found)",
                          f"registry entries are conf/{KIND_DIRS[kind]}/<name>.yaml")
    path = _kind_dir(kind, conf_dir) / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "(unparsable YAML)", "valid YAML", str(exc)) from None
    try:
        entry = ModelEntry.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{path.name}:{loc}" if loc else path.name, err.get("input"),
                          err["msg"]) from None
    if entry.name != name or entry.kind != kind:
        raise ConfigError(f"{path.name}:name/kind", (entry.name, entry.kind), f"({name!r}, "
                          f"{kind!r}): the file name and its kind folder (one name, one string)")
    return entry


def default_models_dir() -> Path:
    """`$PROMPTREEL_MODELS`, else ~/.cache/promptreel/models."""
    env = os.environ.get("PROMPTREEL_MODELS")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "promptreel" / "models"


def model_dir(entry: ModelEntry, models_dir: Path) -> Path:
    """Where an entry's files live: <models_dir>/<kind>/<name>."""
    return Path(models_dir) / entry.kind / entry.name


# --- presence and verification ---------------------------------------------------------------

def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    got = sha256_of(path)
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
                why = f"{problem}; downloads are off (runtime.download=false)"
                raise MissingWeightsError(missing_message(entry, f, dest, why))
            fetch(entry, f, dest)
        paths[f.name] = dest
    return paths


def preflight(entries: list[ModelEntry] | tuple[ModelEntry, ...], models_dir: Path) -> list[str]:
    """Problems that would stop these entries loading, found without downloading or hashing
    (generated entries are built on first use and never a problem)."""
    problems = []
    for entry in entries:
        if entry.source == "generated":
            continue
        for f in entry.files:
            dest = model_dir(entry, models_dir) / f.name
            problem = check_file(dest, f, hash_it=False)
            if problem is None:
                continue
            where = f"download {f.url}" if f.url and entry.source != "dead" else "host dead"
            problems.append(f"{entry.kind} {entry.name}: {f.name} {problem} at {dest} ({where})")
    return problems


# --- downloads -------------------------------------------------------------------------------

class VerificationError(MissingWeightsError):
    """A downloaded file failed its size or checksum check (the partial file was deleted)."""


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fetch(entry: ModelEntry, f: RemoteFile, dest: Path) -> Path:
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
        got = sha256_of(part)
        problem = None if got == f.sha256 else f"sha256 {got}, expected {f.sha256}"
    if problem is not None:
        part.unlink(missing_ok=True)
        why = f"the download failed verification: {problem} (deleted; wrong file behind the URL?)"
        raise VerificationError(missing_message(entry, f, dest, why))
    os.replace(part, dest)
    _fsync_path(dest.parent)
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


def _fsync_tree(folder: Path) -> None:
    for p in [*folder.iterdir(), folder]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


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
            importlib.import_module(GENERATORS[entry.kind]).build_generated(entry, work)
            files = {p.name: p.stat().st_size for p in sorted(work.iterdir())
                     if p.is_file() and not p.name.startswith(".")}
            (work / GENERATED_MANIFEST).write_text(json.dumps(
                {"fingerprint": fingerprint, "files": files, "seed": entry.seed}, indent=2))
            _fsync_tree(work)
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
    its files, then convert a VQGAN's Lightning checkpoint to safetensors through the safe
    unpickler, so a missing or unsafe model fails before any frame renders. Returns its folder."""
    files = ensure_files(entry, models_dir, download=download)
    if entry.kind == "vqgan":
        from engines import safe_ckpt
        from engines.taming_compat import CKPT_FILE, prefix_of

        safe_ckpt.cached_safetensors(files[CKPT_FILE], prefix=prefix_of(entry))
    text_encoder = (entry.arch or {}).get("text_encoder")
    if entry.kind == "musicgen" and text_encoder and entry.source != "generated":
        from engines.musicgen import ensure_text_encoder

        ensure_text_encoder(text_encoder, download=download)
    return model_dir(entry, models_dir)


def load_vqgan(entry: ModelEntry, models_dir: Path, device: Any = "cpu", *,
               download: bool = False) -> Any:
    """The VQGAN of `entry` (eval mode, no grad) on `device`: see engines.taming_compat."""
    from engines.taming_compat import load_vqgan as load

    return load(entry, models_dir, device, download=download)
