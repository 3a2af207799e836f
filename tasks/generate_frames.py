"""Production: render one shot's frames with its engine, committing each frame as it is made.

The artefact key covers the shot's plan (prompts and camera motion of every frame, size, fps,
seed: engines/planning/plan.py), its engine settings, the registry entries of the models the
engine uses and the content of its input files, nothing else: editing another shot, the
soundtrack, the speed or the export never re-renders this one. A killed render resumes from the
engine's last durable state when the same command runs again.
Writes `frames/%06d.png` and `frames.parquet` / `frames.csv` (per-frame metrics), and keeps the
sink's `progress.json` and last `state-*.pt`, so a later, longer render of the shot can go on
from there, and `request.json` (the key's code version and config) in the work dir.

Lengthening a shot: when a shot's key has no artefact, the cache is searched for an earlier
render of the same shot (same code version, engine settings, models, input files and every part
of the plan but its frames) whose frames are the first frames of this plan: a committed artefact,
or another key's work dir (one no process is rendering), taking its committed frames. The
longest is seeded into the new work dir (`DirectorySink.seed_from`) and the engine resumes after
its last frame, so 12 -> 24 frames renders only the 12 new ones and the first 12 stay the same
bytes. It needs an engine whose frames depend only on the plan up to them: one that declares
`depends_on_length(settings) -> None` (engines/frames/base.py); settings that spread something
over the whole shot (vqgan_clip `init_mode: decay`, pixel_clip `frames_per_prompt`) say why not,
and such a shot renders from frame 0.

Open-ended shots (engine `max_iterations: -1`, tasks/stop.py): the shot renders until Ctrl-C or
`make stop`; after the frame in progress is committed, the stop ends it, and its committed frames
become the artefact of the plan cut to them (`ShotPlan.head`), seeded from the work dir, which
stays: running the same command again goes on rendering from there.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from prefect import task

from engines.core.files import atomic_path, write_json
from engines.frames.base import EngineSettings
from engines.models.registry import Prepared
from engines.planning.plan import ShotPlan
from tasks.artefacts import MANIFEST, Artefact, Store, canonical
from tasks.cache import prefect_cache, run_cached, split_params, version_of
from tasks.frame_sink import DirectorySink
from tasks.runtime import Runtime
from tasks.stop import ShotStopped, Watch, open_ended

NAME = "generate_frames"
log = logging.getLogger("promptreel")


def code_version(params: Any) -> str:
    """This task's version joined with the version of the engine that renders the shot, so
    changing one engine's output invalidates only that engine's shots."""
    from engines.frames.registry import code_version as engine_version

    return f"2+{engine_version(params['engine'].name)}"


def render_shot(engine: Any, settings: Any, plan: ShotPlan, models: dict[str, tuple], sink: Any,
                device: str) -> str | None:
    """Memory preflight (engines/frames/memory.py: on CUDA, the estimate against the free
    memory, which stops with what would fit, or applies engine.auto_fit), then the engine's
    render. A CUDA out-of-memory error mid-render becomes the same clear error. Returns what
    auto_fit changed, or None."""
    import torch

    from engines.frames import memory

    settings, fitted = memory.preflight(engine, settings, plan.width, plan.height, models,
                                        device=device, shot=plan.name)
    out_of_memory = False
    try:
        engine.render(settings, plan, models, sink, device)
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True  # leave the handler first: its traceback holds the tensors
    if out_of_memory:
        raise memory.out_of_memory(engine, settings, plan.width, plan.height, models,
                                   device=device, shot=plan.name)
    return fitted


def write_table(records: list[dict[str, Any]], work: Path, stem: str) -> None:
    import pandas as pd

    df = pd.DataFrame(records)
    with atomic_path(work / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(work / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _committed(folder: Path) -> int:
    """Frames a render directory holds with the state that continues after them."""
    progress = _read(folder / "progress.json")
    try:
        return len(progress["files"]) if progress["state"] else 0
    except (TypeError, KeyError):
        return 0


def prefix_source(store: Store, version: str, config: dict[str, Any],
                  skip: str) -> tuple[Path, int, str] | None:
    """The longest earlier render of this shot whose frames are the first frames of this one
    (module docstring): (its folder, its frame count, its key), or None. `config`: the canonical
    config of this shot's key; `skip`: this key (its own work dir resumes by itself)."""
    plan = config["plan"]
    frames = plan["frames"]
    rest = {k: v for k, v in config.items() if k != "plan"}
    plan_rest = {k: v for k, v in plan.items() if k != "frames"}
    best: tuple[Path, int, str] | None = None
    root = store.root / NAME
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        work = folder.name.endswith(".work")
        key = folder.name.removesuffix(".work")
        if key == skip or not folder.is_dir() or not (work or (folder / MANIFEST).is_file()):
            continue
        record = _read(folder / ("request.json" if work else MANIFEST))
        if not isinstance(record, dict) or record.get("code_version") != version:
            continue
        old = record.get("config")
        if not isinstance(old, dict) or not isinstance(old.get("plan"), dict):
            continue
        if {k: v for k, v in old.items() if k != "plan"} != rest or \
                {k: v for k, v in old["plan"].items() if k != "frames"} != plan_rest:
            continue
        n = _committed(folder)
        old_frames = old["plan"].get("frames") or []
        if not work and n != len(old_frames):
            continue  # a committed render always holds its whole plan
        if not 0 < n <= len(frames) or old_frames[:n] != frames[:n]:
            continue
        if best is None or n > best[1]:
            best = (folder, n, key)
    return best


def seed(sink: DirectorySink, store: Store, version: str, config: dict[str, Any], key: str,
         plan: ShotPlan) -> int:
    """Seed an empty work dir from the best prefix source, if any; returns frames taken."""
    from filelock import Timeout

    found = prefix_source(store, version, config, key)
    if found is None:
        return 0
    folder, n, source_key = found
    lock = store.lock(NAME, source_key) if folder.name.endswith(".work") else None
    try:
        if lock is not None:
            lock.acquire(timeout=0)  # another process renders it: leave it alone
    except Timeout:
        return 0
    try:
        taken = sink.seed_from(folder)
    finally:
        if lock is not None:
            lock.release()
    if taken:
        log.info("%s: reusing %d frames of %s (an earlier render of this shot's first frames)",
                 plan.name, taken, source_key)
    return taken


def _generate(params: dict[str, Any], *, stoppable: bool) -> Artefact:
    plan: ShotPlan = params["plan"]
    engine: EngineSettings = params["engine"]
    models: dict[str, tuple[Prepared, ...]] = params["models"]
    runtime: Runtime = params["runtime"]
    version = version_of(code_version, params)
    config = canonical(split_params(params)[0])

    def build(work: Path) -> dict[str, Any]:
        import contextlib

        import torch

        from engines.core.device import pick_device
        from engines.frames.registry import ENGINES
        from engines.models import loaded
        from tasks.artefacts import artefact_key

        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        device = pick_device(runtime.device)
        module = ENGINES[engine.name]
        started = time.perf_counter()
        write_json(work / "request.json", {"code_version": version, "config": config})

        def progress(i: int, record: dict[str, Any]) -> None:
            if i % runtime.log_every == 0 or i == plan.n_frames - 1:
                # what the engine measured: CLIP engines have iterations and a loss, diffusion
                # engines steps and no loss; absent values are left out, never printed as nan
                measured = "".join(f"  {label} {fmt % record[field]}" for field, label, fmt in (
                    ("iterations", "iterations", "%s"), ("steps", "steps", "%s"),
                    ("loss", "loss", "%.4f")) if record.get(field) is not None)
                log.info("%s: frame %d/%d%s  %.2f s/frame", plan.name, i + 1, plan.n_frames,
                         measured, record.get("seconds", 0.0),
                         extra={"progress": (plan.name, i + 1, plan.n_frames)})  # console bar

        watch = Watch(runtime.cache_dir) if stoppable and open_ended(engine) else None
        sink = DirectorySink(work, on_commit=progress, stop=watch)
        done, _ = sink.resume()
        if not done:
            depends = getattr(module, "depends_on_length", None)
            why = depends(engine) if depends is not None else \
                f"engine {engine.name} does not declare depends_on_length"
            if why is None:
                key = artefact_key(NAME, version, config, split_params(params)[1])
                seed(sink, Store(runtime.cache_dir), version, config, key, plan)
                sink = DirectorySink(work, on_commit=progress, stop=watch)
                done, _ = sink.resume()
        if 0 < done < plan.n_frames:
            log.info("%s: resuming at frame %d of %d", plan.name, done + 1, plan.n_frames)
        if watch is not None:
            log.info("%s: open-ended shot: Ctrl-C or `make stop` ends it after the frame in "
                     "progress (at most %d frames)", plan.name, plan.n_frames)
        loaded_models = {kind: tuple(loaded.load(p.entry, p.folder, device) for p in prepared)
                         for kind, prepared in models.items()}
        with watch if watch is not None else contextlib.nullcontext():
            fitted = render_shot(module, engine, plan, loaded_models, sink, device)
        done, _ = DirectorySink(work).resume()
        if done != plan.n_frames:
            raise RuntimeError(f"{plan.name}: engine committed {done} of {plan.n_frames} frames")
        write_table(sink.records, work, "frames")
        return {"shot": plan.name, "n_frames": plan.n_frames, "fps": plan.fps,
                "width": plan.width, "height": plan.height, "engine": engine.name,
                "render_seconds": round(time.perf_counter() - started, 3),
                **({"memory_fit": fitted} if fitted else {})}

    try:
        return run_cached(NAME, code_version, params, build, resumable=True)
    except ShotStopped as stopped:
        log.info("%s: stopped by the user after %d frames; they make the shot", plan.name,
                 stopped.frames)
        return _generate({**params, "plan": plan.head(stopped.frames)}, stoppable=False)


@task(name=NAME, **prefect_cache(NAME, code_version))
def generate_frames(*, plan: ShotPlan, engine: EngineSettings, models: dict[str, tuple[Prepared, ...]],
                    runtime: Runtime, inputs_sha256: tuple[str, ...] = ()) -> Artefact:
    """`models`: the prepared entries the engine asked for, by kind (keyed by entry only);
    `inputs_sha256`: content hashes of the shot's init image and image prompts (keyed only).
    An open-ended shot stopped by the user returns the artefact of its committed frames."""
    return _generate(dict(plan=plan, engine=engine, models=models, runtime=runtime,
                          inputs_sha256=inputs_sha256), stoppable=True)
