"""The model registry: one YAML file per model, `conf/<kind folder>/<name>.yaml`, whose `name:` is
its file name (house rule: one name, one string), validated into a `ModelEntry`.

Each kind of model has one line in `KINDS`: the registry folder under conf/, the config key
that names an entry of that kind (for error messages), and the module that knows its published
file format (`engines/models/<format>.py`: `build_generated`, `load`, and optionally
`after_fetch`, see engines/models/weights.py). Files of an entry live in
`<models_dir>/<kind>/<name>/`. Nothing here imports torch.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engines.core.errors import ConfigError


@dataclass(frozen=True)
class Kind:
    conf_dir: str  # registry folder under conf/
    config_key: str  # the config key that names an entry of this kind
    format: str  # module that reads and writes its file format


KINDS = {
    "vqgan": Kind("vqgan", "vqgan", "engines.models.taming"),
    "clip": Kind("clip", "clip", "engines.models.clip"),
    "musicgen": Kind("soundtrack/models", "soundtrack.model", "engines.models.audiocraft"),
    "cyclegan": Kind("refine/models", "refine.model", "engines.models.cyclegan"),
    "diffusers": Kind("diffusers", "engine.model", "engines.models.diffusers"),
    "sd": Kind("sd", "engine.model", "engines.models.sd"),  # SD 1.5 / SDXL components
    "flow": Kind("flow", "engine.flow_model", "engines.models.raft"),  # optical flow (RAFT)
    "depth": Kind("depth", "engine.depth_model", "engines.models.depth"),  # monocular depth
    "pose": Kind("pose", "engine.pose_model", "engines.models.pose"),  # human pose (ViTPose)
}
KIND_DIRS = {k: v.conf_dir for k, v in KINDS.items()}  # registry folder of each kind, under conf/
CONFIG_KEYS = {k: v.config_key for k, v in KINDS.items()}  # config key naming an entry of a kind
VQGAN_LOADERS = ("VQModel", "GumbelVQ", "Net2NetTransformer")
FETCH_HINT = "make fetch-models conf=<your preset>"
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
    mirrors: tuple[str, ...] = ()  # other URLs of the same file, tried in order when `url` fails
    optional: bool = False  # the model loads without it (a companion file): a failed download
    # is logged, not an error

    @field_validator("mirrors")
    @classmethod
    def _mirrors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for url in v:
            if not re.match(r"^https?://", url):
                raise ValueError("http:// or https:// URLs")
        return v

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
    kind: Literal[tuple(KINDS)]  # type: ignore[valid-type]
    source: Literal["url", "open_clip", "audiocraft", "hub", "local", "generated", "dead"]
    files: tuple[RemoteFile, ...] = ()  # what to download (empty for generated and hub)
    repo: str | None = None  # hub: the Hugging Face repo id, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers
    revision: str | None = None  # hub: the pinned commit (40 hex digits)
    allow_patterns: tuple[str, ...] = ()  # hub: the files it needs (globs, relative to the repo)
    rules: dict[str, Any] = Field(default_factory=dict)  # how the model is used (its kind's format)
    path: str | None = None  # local: a model folder on disk, used where it is (not copied)
    loader: str | None = None  # vqgan: VQModel | GumbelVQ | Net2NetTransformer
    arch: dict[str, Any] = Field(default_factory=dict)  # open_clip: model + pretrained; generated
    seed: int = Field(0, ge=0)  # torch seed of a generated model's random weights
    notes: str = ""
    config: str | None = None  # source local: path of the model's taming yaml (vqgan=local)
    checkpoint: str | None = None  # source local: path of its Lightning checkpoint

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
        if self.source == "hub":
            if not self.repo or not re.fullmatch(r"[\w.-]+/[\w.-]+", self.repo):
                raise ValueError("source hub: repo must be a Hugging Face repo id, owner/name")
            if not self.revision or not re.fullmatch(r"[0-9a-f]{40}", self.revision):
                raise ValueError("source hub: revision must be the pinned commit, 40 hex digits")
            if not self.allow_patterns or self.files:
                raise ValueError("source hub: list allow_patterns (the files it needs), no files")
        if self.path is not None and not (self.source == "local" and self.kind == "diffusers"):
            raise ValueError("path is a local diffusers pipeline folder's, and only theirs")
        if self.source == "dead" and not self.notes:
            raise ValueError("source dead: say in notes what happened and what to use instead")
        if self.source == "local" and self.kind == "diffusers":
            if self.path is None or self.files:
                raise ValueError("source local diffusers: a pipeline folder (path), no files")
        elif self.source == "local":
            if self.kind != "vqgan" or self.files:
                raise ValueError("source local: a vqgan whose config and checkpoint are paths "
                                 "(files empty)")
            # the paths are given with vqgan=local and checked when the config is read
            # (flows/config.py, engines/models/taming.py local_entry)
        elif self.config is not None or self.checkpoint is not None:
            raise ValueError("config and checkpoint are paths of a source local entry only")
        if self.kind == "vqgan" and self.loader not in VQGAN_LOADERS and not (
                self.source == "local" and self.loader is None):
            raise ValueError(f"kind vqgan: loader must be one of {', '.join(VQGAN_LOADERS)}")
        if len({f.name for f in self.files}) != len(self.files):
            raise ValueError("files: two files with the same name")
        return self

    def cache_identity(self) -> dict[str, Any]:
        """What an artefact key hashes of a model: everything but a local folder's path (its
        content is in `arch.fingerprint`). The hub fields appear only when set, so entries of
        other kinds hash as they did before the fields existed."""
        data = self.model_dump(mode="json", exclude={"path"})
        for k in ("repo", "revision", "allow_patterns", "rules"):
            if not data[k]:
                del data[k]
        return data


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
    """Where an entry's files live: <models_dir>/<kind>/<name>, or a local entry's own folder."""
    if entry.source == "local":
        return Path(entry.path)
    return Path(models_dir) / entry.kind / entry.name


@dataclass(frozen=True)
class Prepared:
    """A registry entry whose files pre-production made present and safe, and their folder: what
    select_models hands to the stages that load models. In artefact keys it counts as its entry
    only (`cache_identity`): the folder is where the files are, not what they are."""

    entry: ModelEntry
    folder: str

    def cache_identity(self) -> Any:
        if self.entry.source == "local" and self.entry.kind == "vqgan":  # content, no paths
            return {"entry": self.entry.model_copy(update={"config": None, "checkpoint": None}),
                    "content": Path(self.folder).name}
        return self.entry
