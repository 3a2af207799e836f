"""Stage 2, production: imagery per shot, extraction to image and video files, music."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks.artefacts import Artefact
from tasks.compose_soundtrack import compose_soundtrack
from tasks.extract_frames import extract_frames
from tasks.generate_frames import generate_frames


def soundtrack_prompt(cfg: Any) -> str | None:
    """The music prompt: the soundtrack's own, or one derived from the film's visual prompts."""
    st = cfg.soundtrack
    if not st.source.startswith("musicgen"):
        return None
    if st.prompt:
        return st.prompt
    from engines.musicgen import derive_prompt
    from engines.prompts import parse_prompt_schedule

    texts: list[str] = []  # what the film shows: positive prompts, story phrases split
    for shot in cfg.film.shots:
        schedule = parse_prompt_schedule(shot.prompts, key=f"film.shots.{shot.name}.prompts",
                                         fps=cfg.film.fps)
        for prompts in schedule.prompts:
            for p in prompts:
                if p.weight > 0:
                    texts += [t.strip() for t in p.text.split("^") if t.strip() not in texts]
    return derive_prompt([t for t in texts if t], st.mood)


def input_hash(cfg: Any) -> str | None:
    """Content hash of a user audio file, so editing the file re-runs the soundtrack."""
    st = cfg.soundtrack
    path = st.file if st.source == "file" else st.melody if st.source == "musicgen_melody" else None
    if not path:
        return None
    from pathlib import Path

    from tasks.artefacts import sha256_file

    return sha256_file(Path(path))


def file_hashes(paths: list[str | None]) -> tuple[str, ...]:
    """Content hashes of input files, so editing a file in place re-renders what used it."""
    from pathlib import Path

    from tasks.artefacts import sha256_file

    return tuple(sha256_file(Path(p).expanduser()) for p in paths if p)


def shot_inputs(shot: Any) -> tuple[str, ...]:
    """Content hashes of a shot's init image and image prompts."""
    from engines.prompts import parse_image_prompt

    paths = [shot.init_image, *(parse_image_prompt(spec, key=f"film.shots.{shot.name}")[0]
                                for spec in shot.image_prompts)]
    return file_hashes(paths)


def shot_params(cfg: Any, i: int) -> dict[str, Any]:
    """The parameters of shot i's generate_frames call (also what its artefact key hashes): the
    shot without its speed and join (they act after rendering), plus its input files' hashes."""
    from flows.config import ShotJoin

    shot = cfg.film.shots[i]
    engine = cfg.shot_engine(shot)
    frames_only = shot.model_copy(update={"speed": None, "join": ShotJoin()})
    return {"shot": frames_only, "inputs_sha256": shot_inputs(shot), "engine": engine,
            "width": cfg.resolution.width,
            "height": cfg.resolution.height, "fps": cfg.film.fps, "seed": cfg.shot_seed(i),
            "index": i, "vqgan": cfg.vqgan if engine.name == "vqgan_clip" else None,
            "clips": (cfg.clip, *cfg.extra_clip), "runtime": cfg.runtime}


def busy_elsewhere(params: dict[str, Any]) -> bool:
    """True while another process (or box, on a shared cache) holds this shot's build lock."""
    from filelock import Timeout

    from tasks import generate_frames as gf
    from tasks.artefacts import Store
    from tasks.cache import key_for

    store = Store(params["runtime"].cache_dir)
    key = key_for(gf.NAME, gf.code_version, params)
    if store.load(gf.NAME, key) is not None:
        return False
    lock = store.lock(gf.NAME, key)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return True
    lock.release()
    return False


def next_shot(cfg: Any, remaining: list[int]) -> int:
    """The first remaining shot that no other process is rendering (else the first remaining):
    renders of one film on several boxes then work on different shots instead of queueing on
    one lock. Asked again before every shot, as other renders move on."""
    return next((i for i in remaining if not busy_elsewhere(shot_params(cfg, i))), remaining[0])


def shot_order(cfg: Any) -> list[int]:
    """The order next_shot would take the shots in, were the locks to stay as they are now."""
    remaining, order = list(range(len(cfg.film.shots))), []
    while remaining:
        order.append(next_shot(cfg, remaining))
        remaining.remove(order[-1])
    return order


@flow(name="production")
def production(cfg: Any, timeline: Artefact) -> tuple[list[Artefact], Artefact | None]:
    done: dict[int, Artefact] = {}
    remaining = list(range(len(cfg.film.shots)))
    while remaining:
        i = next_shot(cfg, remaining)
        remaining.remove(i)
        frames = generate_frames(**shot_params(cfg, i))
        done[i] = extract_frames(frames=frames, contact_columns=8, runtime=cfg.runtime)
    shots = [done[i] for i in range(len(cfg.film.shots))]
    soundtrack = None
    if cfg.soundtrack.source != "none":
        soundtrack = compose_soundtrack(
            settings=cfg.soundtrack, prompt=soundtrack_prompt(cfg),
            total_frames=timeline.meta["total_frames"], fps=cfg.film.fps,
            seed=cfg.soundtrack.seed if cfg.soundtrack.seed is not None else cfg.seed,
            model=cfg.music_model, input_sha256=input_hash(cfg), runtime=cfg.runtime)
    return shots, soundtrack
