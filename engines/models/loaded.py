"""The one cache of loaded models in a process: `load(entry, folder, device)` returns the model
of a prepared registry entry (its folder from engines/models/weights.py `prepare`), loaded by its
kind's format module, and keeps the `MAX_MODELS` most recently used ones, so a sweep over seeds
loads each model once. The key is the entry's content, the folder, the device and the
modification times of the folder's files (a model rebuilt in place is loaded again).

`load_model(entry, models_dir, device)` prepares and loads in one call (tests, benchmarks).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

from engines.models.registry import ModelEntry
from engines.models.weights import format_of, prepare

MAX_MODELS = 4  # loaded models kept per process (a VQGAN, two CLIPs and a MusicGen)
_LOADED: OrderedDict[tuple[str, ...], Any] = OrderedDict()


def _key(entry: ModelEntry, folder: Path, device: Any) -> tuple[str, ...]:
    folder = Path(folder).resolve()
    stamps = sorted((p.name, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()) \
        if folder.is_dir() else []
    return (hashlib.sha256(entry.model_dump_json().encode()).hexdigest(), str(folder),
            str(device), repr(stamps))


def load(entry: ModelEntry, folder: Path | str, device: Any = "cpu") -> Any:
    """The model of `entry` whose files are in `folder`, on `device` (eval mode, no grad)."""
    key = _key(entry, Path(folder), device)
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key]
    model = format_of(entry.kind).load(entry, Path(folder), device)
    while len(_LOADED) >= MAX_MODELS:
        _LOADED.popitem(last=False)
    _LOADED[key] = model
    return model


def load_model(entry: ModelEntry, models_dir: Path | str, device: Any = "cpu", *,
               download: bool = False) -> Any:
    """Prepare `entry` in `models_dir` (generate, or fetch when `download`) and load it."""
    return load(entry, prepare(entry, Path(models_dir), download=download), device)


def clear() -> None:
    """Forget every loaded model (frees their memory once nothing else holds them)."""
    _LOADED.clear()
