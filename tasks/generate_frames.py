"""Production: render one shot's frames with its engine, committing each frame as it is made.

The artefact key covers the shot, its engine settings, size, fps, seed and the model entries the
engine uses, nothing else: editing another shot, the soundtrack or the export never re-renders
this one. A killed render resumes at the first uncommitted frame when the same command runs again.
Writes `frames/%06d.png` and `frames.parquet` / `frames.csv` (per-frame metrics).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from prefect import task

from tasks.artefacts import Artefact, atomic_path
from tasks.cache import prefect_cache, run_cached
from tasks.frame_sink import DirectorySink

NAME = "generate_frames"


def code_version(params: Any) -> str:
    """This task's version joined with the version of the engine that renders the shot, so
    changing one engine's output invalidates only that engine's shots."""
    from engines import pixel_clip, vqgan_clip

    engines = {vqgan_clip.NAME: vqgan_clip.CODE_VERSION, pixel_clip.NAME: pixel_clip.CODE_VERSION}
    return f"1+{params['engine'].name}{engines[params['engine'].name]}"

log = logging.getLogger("promptreel")


def pick_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        from engines.errors import PromptreelError

        raise PromptreelError(f"runtime.device={requested} but no CUDA device is visible; "
                              "use runtime.device=cpu or auto")
    return requested


def render_shot(engine: Any, plan: Any, vqgan: Any, perceptors: list, sink: Any, device: str,
                shot: str) -> str | None:
    """Memory preflight (engines/memory.py: on CUDA, the estimate against the free memory, which
    stops with the size and cutouts that would fit, or applies engine.auto_fit), then the
    engine's render. A CUDA out-of-memory error mid-render becomes the same clear error. Returns
    what auto_fit changed, or None."""
    import torch

    from engines import memory, pixel_clip, vqgan_clip

    kw = {"perceptors": perceptors, "vqgan": vqgan, "device": device, "shot": shot}
    settings, fitted = memory.preflight(engine.name, engine.settings, plan.width, plan.height,
                                        **kw)
    out_of_memory = False
    try:
        if engine.name == vqgan_clip.NAME:
            vqgan_clip.render(settings, plan, vqgan=vqgan, perceptors=perceptors, sink=sink,
                              device=device)
        else:
            pixel_clip.render(settings, plan, perceptors=perceptors, sink=sink, device=device)
    except torch.cuda.OutOfMemoryError:
        out_of_memory = True  # leave the handler first: its traceback holds the tensors
    if out_of_memory:
        raise memory.out_of_memory(engine.name, settings, plan.width, plan.height, **kw)
    return fitted


def write_table(records: list[dict[str, Any]], work: Path, stem: str) -> None:
    import pandas as pd

    df = pd.DataFrame(records)
    with atomic_path(work / f"{stem}.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    with atomic_path(work / f"{stem}.csv") as tmp:
        df.to_csv(tmp, index=False)


@task(name=NAME, **prefect_cache(NAME, code_version))
def generate_frames(*, shot: Any, engine: Any, width: int, height: int, fps: float, seed: int,
                    index: int, vqgan: Any, clips: tuple[Any, ...], runtime: Any,
                    inputs_sha256: tuple[str, ...] = ()) -> Artefact:
    """`inputs_sha256`: content hashes of the shot's init image and image prompts (keyed only)."""
    def build(work: Path) -> dict[str, Any]:
        import torch

        from engines import perceptor, weights
        from engines.timeline import shot_plan

        if runtime.threads:
            torch.set_num_threads(runtime.threads)
        device = pick_device(runtime.device)
        plan = shot_plan(shot, fps=fps, width=width, height=height, seed=seed,
                         key=f"film.shots.{index}")
        started = time.perf_counter()

        def progress(i: int, record: dict[str, Any]) -> None:
            if i % runtime.log_every == 0 or i == plan.n_frames - 1:
                log.info("%s: frame %d/%d  iterations %s  loss %.4f  %.2f s/frame", shot.name,
                         i + 1, plan.n_frames, record.get("iterations"), record.get("loss", float("nan")),
                         record.get("seconds", 0.0),
                         extra={"progress": (shot.name, i + 1, plan.n_frames)})  # console bar

        sink = DirectorySink(work, on_commit=progress)
        done, _ = sink.resume()
        if done:
            log.info("%s: resuming at frame %d of %d", shot.name, done + 1, plan.n_frames)
        perceptors = [perceptor.load_clip(c, runtime.models_dir, device) for c in clips]
        model = (weights.load_vqgan(vqgan, runtime.models_dir, device)
                 if engine.name == "vqgan_clip" else None)
        fitted = render_shot(engine, plan, model, perceptors, sink, device, shot.name)
        done, _ = DirectorySink(work).resume()
        if done != plan.n_frames:
            raise RuntimeError(f"{shot.name}: engine committed {done} of {plan.n_frames} frames")
        write_table(sink.records, work, "frames")
        return {"shot": shot.name, "n_frames": plan.n_frames, "fps": fps, "width": width,
                "height": height, "engine": engine.name,
                "render_seconds": round(time.perf_counter() - started, 3),
                **({"memory_fit": fitted} if fitted else {})}

    return run_cached(NAME, code_version, locals(), build, resumable=True)
