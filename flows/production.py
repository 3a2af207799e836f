"""Stage 2, production: imagery per shot, extraction to image and video files, music."""

from __future__ import annotations

import logging
from typing import Any

from prefect import flow

from engines.models.registry import Prepared
from engines.planning.film import Shot
from engines.planning.plan import ShotPlan, ShotPlans
from flows.config import RenderConfig
from tasks.artefacts import Artefact
from tasks.cache import held_elsewhere
from tasks.compose_soundtrack import compose_soundtrack
from tasks.extract_frames import extract_frames
from tasks.generate_frames import NAME as generate_frames_name
from tasks.generate_frames import code_version, generate_frames
from tasks.plan_timeline import plan_timeline

log = logging.getLogger("promptreel")


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


def chains(cfg: RenderConfig) -> list[list[int]]:
    """The shots in chains: a shot and the shots after it that `continue: previous` from it.
    A chain renders in order; different chains are independent."""
    out: list[list[int]] = []
    for i, shot in enumerate(cfg.film.shots):
        if shot.continues and out:
            out[-1].append(i)
        else:
            out.append([i])
    return out


def continued(params: dict[str, Any], previous: Artefact) -> dict[str, Any]:
    """A `continue: previous` shot's parameters once the shot before it is rendered: its plan
    starts from that shot's last frame (hashed by content, like any input image)."""
    import dataclasses

    from engines.core.files import sha256_file

    last = previous.file(f"frames/{previous.meta['n_frames'] - 1:06d}.png")
    plan = dataclasses.replace(params["plan"], init_image=str(last))
    return {**params, "plan": plan, "inputs_sha256": (*params["inputs_sha256"], sha256_file(last))}


def next_shot(params: list[dict[str, Any]], remaining: list[int]) -> int:
    """The first remaining shot (a chain's first) that no other process is rendering, else
    the first remaining. The cache's lock alone would make a second render of the same film
    wait on the first's shot and then follow it shot by shot; asking before every chain lets
    renders on several boxes (or processes) work on different shots."""
    return next((i for i in remaining if not held_elsewhere(generate_frames_name, code_version,
                                                            params[i])), remaining[0])


def shot_order(params: list[dict[str, Any]]) -> list[int]:
    """The order next_shot would take the shots in, were the locks to stay as they are now."""
    remaining, order = list(range(len(params))), []
    while remaining:
        order.append(next_shot(params, remaining))
        remaining.remove(order[-1])
    return order


def replanned(cfg: RenderConfig, plans: tuple[ShotPlan, ...], counts: list[int]) -> tuple:
    """(film, plans) as rendered: each shot cut to the frames it committed (an open-ended shot
    stopped by the user), a join into or out of a shortened shot clamped to fit it."""
    from engines.planning.speed import planned_frames

    film = cfg.film
    shots = []
    for shot, n in zip(film.shots, counts, strict=True):
        shots.append(shot.model_copy(update={"frames": n, "seconds": None}))
    after = [planned_frames(n, cfg.shot_speed(s), film.fps) for s, n in zip(film.shots, counts,
                                                                            strict=True)]
    for i, shot in enumerate(shots[:-1]):
        most = max(0, min(after[i], after[i + 1]) - 1) / film.fps
        if shot.join.kind != "cut" and shot.join.seconds > most:
            log.warning("%s: the cross-fade into the next shot is cut to %.3f s to fit the "
                        "frames rendered", shot.name, most)
            shots[i] = shot.model_copy(update={"join": shot.join.model_copy(
                update={"seconds": most})})
    film = film.model_copy(update={"shots": tuple(shots)})
    return film, tuple(p.head(n) for p, n in zip(plans, counts, strict=True))


@flow(name="production")
def production(cfg: RenderConfig, timeline: Artefact, plans: ShotPlans,
               models: dict[str, Prepared]) -> tuple[list[Artefact], Artefact | None, Artefact]:
    """(each shot's extracted frames, the soundtrack or None, the timeline). The timeline is the
    pre-production one, or, when an open-ended shot was stopped, one re-planned from the frames
    committed, which the soundtrack and post-production follow."""
    params = [shot_params(cfg, plans, models, i) for i in range(len(cfg.film.shots))]
    links = {chain[0]: chain for chain in chains(cfg)}
    done: dict[int, Artefact] = {}
    rendered: dict[int, Artefact] = {}
    remaining = list(links)
    while remaining:
        head = next_shot(params, remaining)
        remaining.remove(head)
        previous = None
        for i in links[head]:
            p = continued(params[i], previous) if previous is not None else params[i]
            previous = rendered[i] = generate_frames(**p)
            done[i] = extract_frames(frames=previous, contact_columns=8, runtime=cfg.runtime)
    shots = [done[i] for i in range(len(params))]
    counts = [rendered[i].meta["n_frames"] for i in range(len(params))]
    if counts != [p.n_frames for p in plans.plans]:
        film, cut = replanned(cfg, plans.plans, counts)
        timeline = plan_timeline(film=film, plans=cut,
                                 speeds=tuple(cfg.shot_speed(s) for s in cfg.film.shots),
                                 runtime=cfg.runtime)
        log.info("timeline re-planned from the frames rendered: %d frames, %.2f s",
                 timeline.meta["total_frames"], timeline.meta["duration_s"])
    soundtrack = None
    if cfg.soundtrack.source != "none":
        soundtrack = compose_soundtrack(
            settings=cfg.soundtrack, prompt=soundtrack_prompt(cfg),
            total_frames=timeline.meta["total_frames"], fps=timeline.meta["fps"],
            seed=cfg.soundtrack.seed if cfg.soundtrack.seed is not None else cfg.seed,
            model=models[cfg.music_model.name] if cfg.music_model else None,
            input_sha256=input_hash(cfg), runtime=cfg.runtime)
    return shots, soundtrack, timeline
