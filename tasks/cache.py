"""Glue between Prefect tasks and the artefact store (tasks/artefacts.py).

Every task is written as::

    @task(name=NAME, **prefect_cache(NAME, CODE_VERSION))
    def some_task(*, upstream: Artefact, settings: Settings, runtime: Runtime) -> Artefact:
        return run_cached(NAME, CODE_VERSION, locals(), build)

The split of parameters is one rule, used by both the Prefect cache key and the store key:
`Artefact` parameters (or tuples of them) are upstream (their keys are hashed), `runtime` is never
hashed, everything else is config. Prefect's cache key is the artefact key only while the committed
artefact is valid, so Prefect can never return a result that points at deleted or corrupt files.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engines.core.crash import CURRENT_TASK
from engines.core.files import DISK_FULL, disk_full
from tasks.artefacts import Artefact, Store, artefact_key

log = logging.getLogger("promptreel")

# One row per task call of the current process's runs: the run report reads it.
LEDGER: list[dict[str, Any]] = []


def split_params(params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    config: dict[str, Any] = {}
    upstream: list[str] = []
    for name, value in sorted(params.items()):
        if name == "runtime":
            continue
        if isinstance(value, Artefact):
            upstream.append(f"{name}={value.key}")
        elif isinstance(value, (tuple, list)) and value and all(isinstance(v, Artefact) for v in value):
            upstream.append(f"{name}=" + ",".join(v.key for v in value))
        elif value is None or not callable(value):
            config[name] = value
    return config, upstream


Version = str | Callable[[Mapping[str, Any]], str]


def version_of(code_version: Version, params: Mapping[str, Any]) -> str:
    """A task's code version: a string, or a function of its parameters (e.g. per engine)."""
    return code_version(params) if callable(code_version) else code_version


def key_for(task: str, code_version: Version, params: Mapping[str, Any]) -> str:
    config, upstream = split_params(params)
    return artefact_key(task, version_of(code_version, params), config, upstream)


def held_elsewhere(task: str, code_version: Version, params: Mapping[str, Any]) -> bool:
    """True while another process (or box, on a shared cache) holds the build lock of these
    params' artefact, which is not committed yet."""
    from filelock import Timeout

    store = Store(params["runtime"].cache_dir)
    key = key_for(task, code_version, params)
    if store.load(task, key) is not None:
        return False
    lock = store.lock(task, key)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def run_cached(task: str, code_version: Version, params: Mapping[str, Any],
               build: Callable[[Path], Mapping[str, Any]], *, resumable: bool = False) -> Artefact:
    """Return the committed artefact for these params, building it (under a lock) if needed.

    `build(work_dir)` writes its files into `work_dir` and returns the manifest's `meta`. A
    resumable build finds its own earlier partial work in `work_dir`; others start empty.
    """
    runtime = params["runtime"]
    store = Store(runtime.cache_dir)
    code_version = version_of(code_version, params)
    config, upstream = split_params(params)
    key = artefact_key(task, code_version, config, upstream)
    started = time.perf_counter()
    artefact = store.load(task, key)
    if artefact is None:
        with store.lock(task, key):
            artefact = store.load(task, key)  # another process may have made it meanwhile
            if artefact is None:
                token = CURRENT_TASK.set(task)  # for the crash-test hook (engines/core/crash.py)
                try:
                    work = store.begin(task, key, fresh=not resumable)
                    meta = build(work.path)
                    artefact = work.commit(meta, code_version=code_version, config=config,
                                           upstream=upstream)
                except OSError as exc:  # any write of the build: say "disk full", not a trace
                    if exc.errno in DISK_FULL:
                        raise disk_full(exc.filename or store.dir(task, key)) from exc
                    raise
                finally:
                    CURRENT_TASK.reset(token)
                _record(task, key, False, started)
                return artefact
    log.info("%s: cached %s", task, key)
    _record(task, key, True, started)
    return artefact


def _record(task: str, key: str, cached: bool, started: float) -> None:
    last = LEDGER[-1] if LEDGER else {}
    if cached and (last.get("task"), last.get("key"), last.get("cached")) == (task, key, True):
        return  # Prefect found no stored result for a valid key and ran the task: one call
    LEDGER.append({"task": task, "key": key, "cached": cached,
                   "seconds": round(time.perf_counter() - started, 3)})


def prefect_cache(task: str, code_version: Version) -> dict[str, Any]:
    """Keyword arguments for `@task`: cache on the artefact key while the artefact is valid."""

    def cache_key_fn(_context: Any, parameters: Mapping[str, Any]) -> str | None:
        runtime = parameters.get("runtime")
        if runtime is None:
            return None
        key = key_for(task, code_version, parameters)
        store = Store(runtime.cache_dir)
        if store.load(task, key) is None:
            return None
        # the stored result holds absolute paths: never share it between cache directories
        where = hashlib.sha256(str(store.root).encode()).hexdigest()[:8]
        _record(task, key, True, time.perf_counter())
        return f"{task}-{key}-{where}"

    return {"cache_key_fn": cache_key_fn, "persist_result": True}
