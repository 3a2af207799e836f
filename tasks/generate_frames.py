"""Production: render one shot's frames with its engine, committing each frame as it is made.

The artefact key covers the shot's plan (prompts and camera motion of every frame, size, fps,
seed: engines/planning/plan.py), its engine settings, the registry entries of the models the
engine uses and the content of its input files, nothing else: editing another shot, the
soundtrack, the speed or the export never re-renders this one. A killed render resumes from the
engine's last durable state when the same command runs again.
Writes `frames/%06d.png` and `frames.parquet` / `frames.csv` (per-frame metrics).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import task

from engines.core.files import atomic_path
from engines.frames.base import EngineSettings
from engines.models.registry import Prepared
from engines.planning.plan import ShotPlan
from tasks.artefacts import Artefact
from tasks.cache import prefect_cache, run_cached
from tasks.frame_sink import DirectorySink
from tasks.runtime import Runtime

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


@task(name=NAME, **prefect_cache(NAME, code_version))
def generate_frames(*, plan: ShotPlan, engine: EngineSettings, models: dict[str, tuple[Prepared, ...]],
                    runtime: Runtime, inputs_sha256: tuple[str, ...] = ()) -> Artefact:
    """`models`: the prepared entries the engine asked for, by kind (keyed by entry only);
    `inputs_sha256`: content hashes of the shot's init image and image prompts (keyed only)."""
    def build(work: Path) -> dict[str, Any]:
        import torch

        from engines.core.device import pick_device
        from engines.frames.registry import ENGINES
        from engines.models import loaded

        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        device = pick_device(runtime.device)
        module = ENGINES[engine.name]
        started = time.perf_counter()

        def progress(i: int, record: dict[str, Any]) -> None:
            if i % runtime.log_every == 0 or i == plan.n_frames - 1:
                log.info("%s: frame %d/%d  iterations %s  loss %.4f  %.2f s/frame", plan.name,
                         i + 1, plan.n_frames, record.get("iterations"),
                         record.get("loss", float("nan")), record.get("seconds", 0.0))

        sink = DirectorySink(work, on_commit=progress)
        done, _ = sink.resume()
        if done:
            log.info("%s: resuming at frame %d of %d", plan.name, done + 1, plan.n_frames)
        loaded_models = {kind: tuple(loaded.load(p.entry, p.folder, device) for p in prepared)
                         for kind, prepared in models.items()}
        fitted = render_shot(module, engine, plan, loaded_models, sink, device)
        done, _ = DirectorySink(work).resume()
        if done != plan.n_frames:
            raise RuntimeError(f"{plan.name}: engine committed {done} of {plan.n_frames} frames")
        write_table(sink.records, work, "frames")
        return {"shot": plan.name, "n_frames": plan.n_frames, "fps": plan.fps,
                "width": plan.width, "height": plan.height, "engine": engine.name,
                "render_seconds": round(time.perf_counter() - started, 3),
                **({"memory_fit": fitted} if fitted else {})}

    return run_cached(NAME, code_version, locals(), build, resumable=True)
