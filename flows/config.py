"""The typed configuration: one boundary between Hydra's YAML and everything else.

`flows/render.py` turns the composed Hydra config into a plain dict and calls `build_config`, which
returns a frozen `RenderConfig` (pydantic, extra="forbid") or raises `ConfigError` naming the key,
the bad value and what is accepted. Everything after that sees only these models. Validation
covers the semantics too (schedules parse, files exist, model names resolve) so bad input fails in
seconds, before any model loads. Nothing here imports torch.
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.core.errors import ConfigError
from engines.frames.base import EngineSettings
from engines.frames.registry import ENGINES, EngineConfig
from engines.media.editing import ExportSettings
from engines.models.registry import ModelEntry
from engines.music.musicgen import SoundtrackSettings
from engines.planning.film import Film, Shot
from engines.planning.plan import ShotPlan
from engines.planning.speed import SpeedSettings
from engines.post.refine import RefineSettings
from tasks.runtime import Runtime

MAX_SIDE = 8192  # pixels; larger is refused as absurd
MAX_SEED = 2**32 - 1  # seeds are 0..MAX_SEED (NumPy's range; torch takes them all)


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Resolution(Frozen):
    name: str = ""
    width: int = Field(gt=0, le=MAX_SIDE)  # output pixels
    height: int = Field(gt=0, le=MAX_SIDE)


class RenderConfig(Frozen):
    seed: int  # explicit; -1 was replaced by a drawn seed (recorded in the run report)
    seed_drawn: bool = False
    film: Film
    engine: EngineConfig  # the film's engine and its settings (conf/engine/<name>.yaml)
    engines: dict[str, dict[str, Any]] = {}  # engine name -> settings for every shot using it
    vqgan: ModelEntry
    clip: ModelEntry
    extra_clip: tuple[ModelEntry, ...] = ()
    resolution: Resolution
    export: ExportSettings
    speed: SpeedSettings
    refine: RefineSettings
    soundtrack: SoundtrackSettings
    music_model: ModelEntry | None = None
    cyclegan: ModelEntry | None = None
    runtime: Runtime

    def shot_key(self, shot: Shot) -> str:
        """`film.shots.<index>`: the key a user writes to override this shot."""
        names = [s.name for s in self.film.shots]
        return f"film.shots.{names.index(shot.name) if shot.name in names else shot.name}"

    def shot_engine(self, shot: Shot) -> EngineSettings:
        """The engine settings of one shot: the film's `engine` (when the shot uses that
        engine), then `engines.<name>`, then the shot's own `engine_overrides`."""
        name = shot.engine or self.engine.name
        key = self.shot_key(shot)
        if name not in ENGINES:
            raise ConfigError(f"{key}.engine", name, ", ".join(sorted(ENGINES)))
        base = self.engine.model_dump() if name == self.engine.name else {}
        return engine_settings({**base, **self.engines.get(name, {}), **shot.engine_overrides,
                                "name": name}, key=f"{key}.engine_overrides")

    def film_models(self) -> dict[str, tuple[ModelEntry, ...]]:
        """The models chosen film-wide, by kind: what engines pick from (engines/frames/base.py)."""
        return {"vqgan": (self.vqgan,), "clip": (self.clip, *self.extra_clip)}

    def shot_models(self, shot: Shot) -> dict[str, tuple[ModelEntry, ...]]:
        """The registry entries the shot's engine needs, by kind."""
        settings = self.shot_engine(shot)
        return ENGINES[settings.name].models(settings, self.film_models())

    def shot_plans(self) -> tuple[ShotPlan, ...]:
        """Every shot's plan (engines/planning/plan.py): what its engine renders, frame by frame.
        Pre-production makes them once and hands them on; validation reads the same ones."""
        from engines.planning.timeline import shot_plan

        return tuple(shot_plan(s, fps=self.film.fps, width=self.resolution.width,
                               height=self.resolution.height, seed=self.shot_seed(i),
                               key=f"film.shots.{i}") for i, s in enumerate(self.film.shots))

    def shot_seed(self, index: int) -> int:
        shot = self.film.shots[index]
        return shot.seed if shot.seed is not None else self.seed + index

    def shot_speed(self, shot: Shot) -> SpeedSettings:
        if shot.speed is None:
            return self.speed
        from engines.planning.speed import merged

        return _validated(SpeedSettings, merged(self.speed, shot.speed),
                          f"{self.shot_key(shot)}.speed")


# ---------------------------------------------------------------- building
def engine_settings(raw: dict[str, Any], *, key: str = "engine") -> EngineSettings:
    """An engine's typed settings from a mapping with its `name` (ConfigError naming `key`)."""
    raw = dict(raw)
    name = raw.get("name")
    if name not in ENGINES:
        raise ConfigError(f"{key}.name", name, ", ".join(sorted(ENGINES)))
    return _validated(ENGINES[name].Settings, raw, key)


def _engines(raw: Any, film_engine: Any) -> dict[str, dict[str, Any]]:
    """`engines`: {engine name: settings}; every name registered, every value valid for it."""
    if raw in (None, {}):
        return {}
    if not isinstance(raw, dict):
        raise ConfigError("engines", raw, "a mapping {engine name: {setting: value}}")
    for name, settings in raw.items():
        if name not in ENGINES:
            raise ConfigError(f"engines.{name}", settings, f"settings of a registered engine: "
                              f"{', '.join(sorted(ENGINES))}")
        if not isinstance(settings, dict):
            raise ConfigError(f"engines.{name}", settings, "a mapping {setting: value}")
        base = film_engine.model_dump() if name == film_engine.name else {}
        engine_settings({**base, **settings, "name": name}, key=f"engines.{name}")
    return {str(k): dict(v) for k, v in raw.items()}


def _validated(model: type[BaseModel], raw: Any, key: str) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise validation_error(exc, key, model) from None


# loc parts pydantic adds for union members and validators, not keys a user writes
_NOT_A_KEY = re.compile(r"str|int|float|bool|none|function-.*|.*\[.*")
_BOUNDS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _loc(err: dict[str, Any]) -> str:
    return ".".join(str(p) for p in err["loc"] if not _NOT_A_KEY.fullmatch(str(p)))


def _accepted(err: dict[str, Any]) -> tuple[str, str]:
    """(what is accepted, why not) from a pydantic message, without its 'Input should be'."""
    msg = err["msg"].removeprefix("Value error, ").removeprefix("accepted: ")
    if not msg.startswith("Input should be "):
        return msg, ""
    msg = msg.removeprefix("Input should be ")
    if err["type"] in _BOUNDS:
        return f"a value {msg}", ""
    if not msg.startswith("a valid "):
        return msg, ""
    what, _, why = msg.partition(", ")  # "a valid integer, unable to parse string as an integer"
    return what, why


def validation_error(exc: ValidationError, prefix: str = "",
                     model: type[BaseModel] | None = None) -> ConfigError:
    """The first pydantic error as a ConfigError: dotted key, bad value, what is accepted.
    `model`: the model validated (its fields are listed when a key is unknown)."""
    errors = exc.errors()
    err = errors[0]
    # a union (`str | dict[str, str]`) fails once per member: a member that got further in
    # (the dict, at one of its values) says more than "a valid string"
    deeper = [e for e in errors if _loc(e).startswith(_loc(err) + ".")]
    if deeper:
        errors = deeper
        err = max(deeper, key=lambda e: len(_loc(e)))
    loc = _loc(err)
    key = ".".join(p for p in (prefix, loc) if p) or "config"
    if err["type"] == "extra_forbidden":
        known = _known_keys(exc, model, [p for p in err["loc"] if not _NOT_A_KEY.fullmatch(str(p))])
        return ConfigError(key, err.get("input"), "no such key here (misspelt?)",
                           f"known keys: {', '.join(sorted(known))}" if known else "")
    if err["type"] == "missing":
        return ConfigError(key, None, "a value is required")
    # same key, several members failed: accept any of them
    parts = [_accepted(e) for e in errors if _loc(e) == loc]
    accepted = " or ".join(dict.fromkeys(what for what, _ in parts))
    return ConfigError(key, err.get("input"), accepted, parts[0][1])


def _known_keys(exc: ValidationError, model: type[BaseModel] | None, loc: list[Any]) -> list[str]:
    """Fields of the model that holds the unknown key `loc` (the last part)."""
    if model is None:
        model = next((c for c in Frozen.__subclasses__() if c.__name__ == exc.title), None)
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if model is not None else None
        if field is None:
            if isinstance(part, int):
                continue  # an index into a tuple of models
            return []
        model = next((t for t in _types(field.annotation)
                      if isinstance(t, type) and issubclass(t, BaseModel)), None)
    return [k for k in model.model_fields if k != "hydra"] if model is not None else []


def _types(annotation: Any) -> list[Any]:
    """`annotation` and every type inside it (`tuple[Shot, ...]` -> tuple, Shot, Ellipsis)."""
    from typing import get_args

    out = [annotation]
    for arg in get_args(annotation):
        out += _types(arg)
    return out


def _unique_shot_names(film: Any) -> None:
    """Two shots with one name: ConfigError on the second one's `name` key."""
    shots = film.get("shots") if isinstance(film, dict) else None
    seen: dict[Any, int] = {}
    for i, shot in enumerate(shots if isinstance(shots, list) else []):
        name = shot.get("name") if isinstance(shot, dict) else None
        if name in seen:
            raise ConfigError(f"film.shots.{i}.name", name, "a name no other shot has",
                              f"film.shots.{seen[name]} is also named {name!r}")
        seen.setdefault(name, i)


def build_config(raw: dict[str, Any], runtime: dict[str, Any]) -> RenderConfig:
    """Validate the composed config; raise ConfigError before anything heavy happens."""
    raw = dict(raw)
    known = {"seed", "film", "engine", "engines", "vqgan", "clip", "extra_clip", "resolution",
             "export", "speed", "refine", "soundtrack", "runtime"}
    for k in raw:
        if k not in known:
            raise ConfigError(k, raw[k], "no such top-level key (misspelt?)",
                              f"known keys: {', '.join(sorted(known))}")
    seed = raw.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError("seed", seed, "an integer; -1 draws a random seed")
    drawn = seed == -1
    if drawn:
        seed = random.SystemRandom().randrange(0, 2**31 - 1)
    elif not 0 <= seed <= MAX_SEED:
        raise ConfigError("seed", seed, f"an integer from 0 to {MAX_SEED}, or -1 to draw one")

    conf_dir = Path(__file__).resolve().parent.parent / "conf"
    from engines.models.registry import load_entry

    def entry(kind: str, value: Any, key: str) -> ModelEntry:
        if isinstance(value, str):
            try:
                return load_entry(kind, value, conf_dir)
            except ConfigError as exc:  # name the key the user wrote (extra_clip.0, not clip)
                if exc.value == value and exc.key != key:
                    raise ConfigError(key, exc.value, exc.accepted, exc.hint) from None
                raise
        if isinstance(value, dict) and value.get("source") == "local":
            for k in ("config", "checkpoint"):
                if not value.get(k):
                    raise ConfigError(f"{key}.{k}", value.get(k), "the path of your model's "
                                      f"{'taming yaml' if k == 'config' else 'checkpoint'}",
                                      f"{key}=local needs {key}.config=/abs/model.yaml and "
                                      f"{key}.checkpoint=/abs/last.ckpt")
        checked = _validated(ModelEntry, value, key)
        if checked.source == "local":  # a yaml/ckpt pair by path: files and loader checked now
            from engines.models.taming import local_entry

            return local_entry(checked, key)
        return checked

    engine = engine_settings(dict(raw.get("engine") or {}))
    raw_sound = dict(raw.get("soundtrack") or {"source": "none"})
    raw_refine = dict(raw.get("refine") or {"method": "none"})
    for source, key in (("file", "file"), ("musicgen_melody", "melody")):
        if raw_sound.get("source") == source and not raw_sound.get(key):
            raise ConfigError(f"soundtrack.{key}", raw_sound.get(key), "a path to an audio file",
                              f"soundtrack={source} needs soundtrack.{key}=/abs/path/track.wav")
    _unique_shot_names(raw.get("film"))
    soundtrack = _validated(SoundtrackSettings, raw_sound, "soundtrack")
    refine = _validated(RefineSettings, raw_refine, "refine")
    try:
        cfg = RenderConfig(
            seed=seed, seed_drawn=drawn,
            film=_validated(Film, raw.get("film"), "film"),
            engine=engine,
            engines=_engines(raw.get("engines"), engine),
            vqgan=entry("vqgan", raw.get("vqgan"), "vqgan"),
            clip=entry("clip", raw.get("clip"), "clip"),
            extra_clip=tuple(entry("clip", v, f"extra_clip.{i}")
                             for i, v in enumerate(raw.get("extra_clip") or ())),
            resolution=_validated(Resolution, raw.get("resolution"), "resolution"),
            export=_validated(ExportSettings, raw.get("export"), "export"),
            speed=_validated(SpeedSettings, raw.get("speed"), "speed"),
            refine=refine,
            soundtrack=soundtrack,
            music_model=(entry("musicgen", soundtrack.model, "soundtrack.model")
                         if soundtrack.source.startswith("musicgen") else None),
            cyclegan=(entry("cyclegan", refine.model, "refine.model")
                      if refine.method == "cyclegan" and not refine.checkpoint else None),
            runtime=_validated(Runtime, runtime, "runtime"),
        )
    except ValidationError as exc:
        raise validation_error(exc, model=RenderConfig) from None
    from flows.checks import check_semantics

    cfg = localise_inputs(cfg)
    check_semantics(cfg)
    return cfg


def localise_inputs(cfg: RenderConfig) -> RenderConfig:
    """Init images and image prompts given as URLs, fetched once into the cache and replaced by
    their local files (engines/media/remote.py); a failure names the key. Relative paths of
    init images, image prompts and input videos are looked for from the working directory, then
    from the repository (flows/checks.py `resolve_input`): one found only in the repository is
    replaced by its absolute path, so `samples/restyle.mp4` renders from any directory."""
    from engines.media.remote import fetch_input, is_url
    from engines.planning.prompts import parse_image_prompt
    from flows.checks import resolve_input

    shots, changed = [], False
    for i, shot in enumerate(cfg.film.shots):
        update: dict[str, Any] = {}
        if is_url(shot.init_image):
            update["init_image"] = str(fetch_input(shot.init_image, cfg.runtime.cache_dir,
                                                   f"film.shots.{i}.init_image"))
        elif shot.init_image and resolve_input(shot.init_image) != shot.init_image:
            update["init_image"] = resolve_input(shot.init_image)
        if shot.input_video and resolve_input(shot.input_video) != shot.input_video:
            update["input_video"] = resolve_input(shot.input_video)
        specs = []
        for j, spec in enumerate(shot.image_prompts):
            path, weight, stop = parse_image_prompt(spec, key=f"film.shots.{i}.image_prompts")
            if is_url(path):
                local = fetch_input(path, cfg.runtime.cache_dir, f"film.shots.{i}.image_prompts.{j}")
                spec = f"{local}:{weight!r}:{stop!r}"
                update["image_prompts"] = True
            elif resolve_input(path) != path:
                spec = f"{resolve_input(path)}:{weight!r}:{stop!r}"
                update["image_prompts"] = True
            specs.append(spec)
        if "image_prompts" in update:
            update["image_prompts"] = tuple(specs)
        shots.append(shot.model_copy(update=update) if update else shot)
        changed = changed or bool(update)
    if not changed:
        return cfg
    return cfg.model_copy(update={"film": cfg.film.model_copy(update={"shots": tuple(shots)})})
