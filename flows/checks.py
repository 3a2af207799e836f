"""Semantic checks run once the config has its types: everything a render would trip on later.

Schedules and prompts parse, shot lengths and cross-fades fit, input files exist and are readable
images or audio, the engine can render the requested size. Every failure is a ConfigError naming
the key, the value and what is accepted. Nothing here loads a model or imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.errors import ConfigError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CONF = Path(__file__).resolve().parent.parent / "conf"
# Substrings that make an override able to run code, read the environment or change what Hydra
# runs: instantiation targets, interpolations (${oc.env:...} among them) and callbacks.
FORBIDDEN_OVERRIDES = ("_target_", "${", "hydra.callbacks", "hydra/callbacks")


def project_launchers() -> list[str]:
    """The Hydra launcher configs this project ships (conf/hydra/launcher/<name>.yaml)."""
    return sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml"))


def check_overrides(overrides: list[str]) -> None:
    """Refuse command-line overrides that could run code or read the environment.

    A launcher may be swapped only for one of the project's own (`hydra/launcher=slurm`); its
    keys (`hydra.launcher.partition=gpu`) are plain values, checked like any other override.
    """
    from engines.errors import PromptreelError

    for item in overrides:
        for bad in FORBIDDEN_OVERRIDES:
            if bad in item:
                raise PromptreelError(
                    f"override {item!r} refused: {bad!r} is not accepted on the command line "
                    "(promptreel chooses engines by name, never by _target_, and does not "
                    "interpolate the environment)")
        name = item.lstrip("+~").split("=", 1)
        if name[0] in ("hydra/launcher", "hydra.launcher") and len(name) == 2:
            if name[0] == "hydra.launcher" or name[1] not in project_launchers():
                raise PromptreelError(
                    f"override {item!r} refused: launchers are chosen by name from the project's "
                    f"own configs: hydra/launcher={'|'.join(project_launchers())} "
                    "(conf/hydra/launcher/)")


def check_image_file(path: str, key: str) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(key, path, "an existing image file", f"not found: {p.resolve()}")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(key, path, f"an image with suffix {', '.join(IMAGE_SUFFIXES)}")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(p) as im:
            im.verify()
    except (OSError, UnidentifiedImageError) as exc:
        raise ConfigError(key, path, "a readable image file", f"cannot decode it: {exc}") from None


def check_semantics(cfg: Any) -> None:
    from engines.prompts import parse_image_prompt
    from engines.timeline import shot_plan, timeline

    film = cfg.film
    for i, shot in enumerate(film.shots):
        key = f"film.shots.{i}"
        choice = cfg.shot_engine(shot)  # validates engine overrides
        plan = shot_plan(shot, fps=film.fps, width=cfg.resolution.width,
                         height=cfg.resolution.height, seed=cfg.shot_seed(i), key=key)
        if not any(p.weight != 0 for f in plan.frames for p in f.prompts) and not shot.image_prompts:
            raise ConfigError(f"{key}.prompts", shot.prompts, "at least one prompt with a non-zero weight")
        if shot.init_image:
            check_image_file(shot.init_image, f"{key}.init_image")
        for j, spec in enumerate(shot.image_prompts):
            path, _w, _s = parse_image_prompt(spec, key=f"{key}.image_prompts.{j}")
            check_image_file(path, f"{key}.image_prompts.{j}")
        if choice.name == "vqgan_clip" and cfg.vqgan.source == "dead" and i == 0:
            raise ConfigError("vqgan", cfg.vqgan.name, "a model whose download is alive",
                              cfg.vqgan.notes or "its host is gone")
    tl = timeline([(s, cfg.shot_speed(s)) for s in film.shots], film.fps)
    for t in tl.shots[:-1]:
        nxt = tl.shots[tl.shots.index(t) + 1]
        if t.join_frames > min(t.after_speed, nxt.after_speed) - 1:
            raise ConfigError(f"film.shots.{t.name}.join.seconds", t.join_frames / film.fps,
                              f"an overlap shorter than both shots ({t.after_speed} and "
                              f"{nxt.after_speed} frames at {film.fps} fps)")
    st = cfg.soundtrack
    if st.source in ("file", "musicgen_melody"):
        from engines.audio import check_audio_file

        path = st.file if st.source == "file" else st.melody
        check_audio_file(path, f"soundtrack.{'file' if st.source == 'file' else 'melody'}")
