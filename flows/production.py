"""Stage 2, production: imagery per shot, extraction to image and video files, music."""

from __future__ import annotations

from typing import Any

from prefect import flow

from engines.models.registry import Prepared
from engines.planning.film import Shot
from engines.planning.plan import ShotPlan
from flows.config import RenderConfig
from tasks.artefacts import Artefact
from tasks.cache import held_elsewhere
from tasks.compose_soundtrack import compose_soundtrack
from tasks.extract_frames import extract_frames
from tasks.generate_frames import NAME as generate_frames_name
from tasks.generate_frames import code_version, generate_frames


def soundtrack_prompt(cfg: RenderConfig) -> str | None:
    """The music prompt: the soundtrack's own, or one derived from the film's visual prompts."""
    st = cfg.soundtrack
    if not st.source.startswith("musicgen"):
        return None
    if st.prompt:
        return st.prompt
    from engines.music.musicgen import derive_prompt
    from engines.planning.prompts import parse_prompt_schedule

    texts: list[str] = []  # what the film shows: positive prompts, story phrases split
    for shot in cfg.film.shots:
        schedule = parse_prompt_schedule(shot.prompts, key=f"film.shots.{shot.name}.prompts",
                                         fps=cfg.film.fps)
        for story in schedule.stories:
            for phrase in story:
                texts += [p.text for p in phrase if p.weight > 0 and p.text not in texts]
    return derive_prompt([t for t in texts if t], st.mood)


def input_hash(cfg: RenderConfig) -> str | None:
    """Content hash of a user audio file, so editing the file re-runs the soundtrack."""
    st = cfg.soundtrack
    path = st.file if st.source == "file" else st.melody if st.source == "musicgen_melody" else None
    if not path:
        return None
    from pathlib import Path

    from engines.core.files import sha256_file

    return sha256_file(Path(path))


def file_hashes(paths: list[str | None]) -> tuple[str, ...]:
    """Content hashes of input files, so editing a file in place re-renders what used it."""
    from pathlib import Path

    from engines.core.files import sha256_file

    return tuple(sha256_file(Path(p).expanduser()) for p in paths if p)


def shot_inputs(shot: Shot) -> tuple[str, ...]:
    """Content hashes of a shot's init image and image prompts."""
    from engines.planning.prompts import parse_image_prompt

    paths = [shot.init_image, *(parse_image_prompt(spec, key=f"film.shots.{shot.name}")[0]
                                for spec in shot.image_prompts)]
    return file_hashes(paths)


def shot_params(cfg: RenderConfig, plans: tuple[ShotPlan, ...], models: dict[str, Prepared],
                i: int) -> dict[str, Any]:
    """The parameters of shot i's generate_frames call (also what its artefact key hashes): its
    plan, its engine settings, the prepared models its engine asked for, its input files'
    hashes. Its speed and join act after rendering and are not part of it."""
    shot = cfg.film.shots[i]
    wanted = cfg.shot_models(shot)
    return {"plan": plans[i], "engine": cfg.shot_engine(shot),
            "models": {kind: tuple(models[e.name] for e in entries)
                       for kind, entries in wanted.items()},
            "inputs_sha256": shot_inputs(shot), "runtime": cfg.runtime}


def next_shot(params: list[dict[str, Any]], remaining: list[int]) -> int:
    """The first remaining shot that no other process is rendering (else the first remaining).
    The cache's lock alone would make a second render of the same film wait on the first's
    shot and then follow it shot by shot; asking before every shot lets renders on several
    boxes (or processes) work on different shots."""
    return next((i for i in remaining if not held_elsewhere(generate_frames_name, code_version,
                                                            params[i])), remaining[0])


def shot_order(params: list[dict[str, Any]]) -> list[int]:
    """The order next_shot would take the shots in, were the locks to stay as they are now."""
    remaining, order = list(range(len(params))), []
    while remaining:
        order.append(next_shot(params, remaining))
        remaining.remove(order[-1])
    return order


@flow(name="production")
def production(cfg: RenderConfig, timeline: Artefact, plans: tuple[ShotPlan, ...],
               models: dict[str, Prepared]) -> tuple[list[Artefact], Artefact | None]:
    params = [shot_params(cfg, plans, models, i) for i in range(len(cfg.film.shots))]
    done: dict[int, Artefact] = {}
    remaining = list(range(len(params)))
    while remaining:
        i = next_shot(params, remaining)
        remaining.remove(i)
        frames = generate_frames(**params[i])
        done[i] = extract_frames(frames=frames, contact_columns=8, runtime=cfg.runtime)
    shots = [done[i] for i in range(len(params))]
    soundtrack = None
    if cfg.soundtrack.source != "none":
        soundtrack = compose_soundtrack(
            settings=cfg.soundtrack, prompt=soundtrack_prompt(cfg),
            total_frames=timeline.meta["total_frames"], fps=cfg.film.fps,
            seed=cfg.soundtrack.seed if cfg.soundtrack.seed is not None else cfg.seed,
            model=models[cfg.music_model.name] if cfg.music_model else None,
            input_sha256=input_hash(cfg), runtime=cfg.runtime)
    return shots, soundtrack
