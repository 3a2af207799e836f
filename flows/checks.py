"""Checks of user input, before anything heavy runs: overrides, then the typed config's semantics.

`check_overrides` refuses command-line overrides that could run code, read the environment or
change what Hydra runs (before Hydra acts on any of them: `cli`). `hydra_error` turns Hydra's
composition errors (unknown preset, misspelt key, unparsable override) into the one-line
`<key>: bad value <v>; accepted: <...>` form. `check_semantics` runs once the config has its
types: schedules and prompts parse, shot lengths and cross-fades fit, input files exist and are
readable images or audio. Every failure is a ConfigError naming the key, the value and what is
accepted. Nothing here imports Hydra, loads a model or imports torch.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError, PromptreelError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CONF = Path(__file__).resolve().parent.parent / "conf"
# Substrings that make an override able to run code, read the environment or change what Hydra
# runs: instantiation targets, interpolations (${oc.env:...} among them) and callbacks.
FORBIDDEN_OVERRIDES = ("_target_", "${", "hydra.callbacks", "hydra/callbacks")
WHY = {"_target_": "promptreel chooses engines by name, never by _target_",
       "${": "interpolations could read the environment or other keys",
       "hydra.callbacks": "a Hydra callback runs code; the project's are in conf/config.yaml",
       "hydra/callbacks": "a Hydra callback runs code; the project's are in conf/config.yaml"}
# `hydra.` keys a command line may set: where runs go, sweeps, verbosity. Anything else there can
# run code or write files (job_logging handlers, env_set, searchpath, launcher setup lines).
HYDRA_KEYS = ("hydra.run.dir", "hydra.sweep.dir", "hydra.sweep.subdir", "hydra.mode",
              "hydra.job.chdir", "hydra.job.name", "hydra.job.id", "hydra.job.num",
              "hydra.verbose", "hydra.output_subdir", "hydra.job_logging.root.level",
              "hydra.hydra_logging.root.level")
HYDRA_PREFIXES = ("hydra.sweeper.params.",)
# launcher keys that hold shell lines, interpreters or pickle folders: set them in the YAML
LAUNCHER_UNSAFE = ("setup", "srun_args", "python", "additional_parameters", "submitit_folder",
                   "defaults")
LAUNCHER_EXTRA = ("qos", "constraint", "exclude", "comment", "gres", "mem_per_gpu",
                  "mem_per_cpu", "cpus_per_gpu", "gpus_per_task", "name")
MAX_IMAGE_SIDE = 16384  # pixels; a larger init or prompt image is refused as absurd


def project_options(group: str) -> list[str]:
    """The configs this project ships in conf/<group>/ (e.g. hydra/launcher -> ['slurm'])."""
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def project_launchers() -> list[str]:
    """The Hydra launcher configs this project ships (conf/hydra/launcher/<name>.yaml)."""
    return project_options("hydra/launcher")


def launcher_keys() -> list[str]:
    """`hydra.launcher.<key>` a command line may set: the project launchers' plain values."""
    import yaml

    keys = set(LAUNCHER_EXTRA)
    for name in project_launchers():
        keys |= set(yaml.safe_load((CONF / "hydra" / "launcher" / f"{name}.yaml").read_text()) or {})
    return sorted(keys - set(LAUNCHER_UNSAFE))


def _split(item: str) -> tuple[str, str | None]:
    """(key, value) of an override `[+|++|~]key[@package]=value`; value None without '='."""
    key, eq, value = item.lstrip("+~").partition("=")
    return key.strip(), value if eq else None


def _refused(item: str, accepted: str, why: str) -> ConfigError:
    key, value = _split(item)
    return ConfigError(key or item, item if value is None else value, accepted,
                       f"override refused: {why}")


def check_overrides(overrides: list[str]) -> None:
    """Refuse command-line overrides that could run code, read the environment or write files.

    A launcher may be swapped only for one of the project's own (`hydra/launcher=slurm`); its
    plain keys (`hydra.launcher.partition=gpu`) may be set, not those holding shell lines.
    Other `hydra.` keys: only those in HYDRA_KEYS / HYDRA_PREFIXES.
    """
    for item in overrides:
        for bad in FORBIDDEN_OVERRIDES:
            if bad in item:
                raise _refused(item, f"plain values without {bad!r}", WHY[bad])
        key, value = _split(item)
        if not key:
            raise ConfigError(item, value, "key=value with a key, e.g. seed=3")
        group, _, package = key.partition("@")
        if package.startswith("hydra") or package.startswith("_global_.hydra"):
            raise _refused(item, "a package outside hydra", "it would write into Hydra's own "
                           "settings")
        if group.startswith("hydra/"):
            options = project_options(group)
            if value is None or value not in options:
                shown = " | ".join(f"{group}={o}" for o in options) or "none"
                raise _refused(item, f"{shown} (the project's own, conf/{group}/)",
                               "Hydra's configs are chosen from the project's own files")
        elif key == "hydra" or key.startswith("hydra."):
            if key.startswith("hydra.launcher.") and key.removeprefix("hydra.launcher.") \
                    in launcher_keys():
                continue
            if key in HYDRA_KEYS or key.startswith(HYDRA_PREFIXES):
                continue
            raise _refused(item, "hydra.run.dir, hydra.sweep.dir, hydra.sweep.subdir, hydra.mode, "
                           "hydra.job.chdir|name|id|num, hydra.verbose, hydra.output_subdir, "
                           "hydra.job_logging.root.level, hydra.sweeper.params.<key>, and the "
                           "resource keys of conf/hydra/launcher/ as hydra.launcher.<key>",
                           "other Hydra settings can run code, set the environment or write "
                           "files; edit conf/ instead")


# Hydra's command-line flags that take a value (`--flag value` or `--flag=value`); `--info`
# takes one only after '='
HYDRA_VALUE_FLAGS = ("--config-dir", "-cd", "--config-path", "-cp", "--config-name", "-cn",
                     "--package", "-p", "--cfg", "-c", "--experimental-rerun")


def cli_flags(argv: list[str]) -> tuple[list[str], dict[str, str | None]]:
    """(overrides, {flag: value}) of a `python -m flows.render` command line: a flag's value
    (`--config-dir DIR` or `--config-dir=DIR`) is never read as an override."""
    overrides: list[str] = []
    flags: dict[str, str | None] = {}
    args = iter(argv)
    for arg in args:
        if not arg.startswith("-"):
            overrides.append(arg)
            continue
        name, eq, value = arg.partition("=")
        if name.startswith("--experimental-rerun"):  # Hydra's flag that unpickles a file
            raise ConfigError("--experimental-rerun", value or next(args, None), "no such flag "
                              "here", "it unpickles a file, which could run code; run the "
                              "render's command again instead")
        if not eq and name in HYDRA_VALUE_FLAGS:
            value = next(args, None)
        flags[name] = value if (eq or name in HYDRA_VALUE_FLAGS) else None
    return overrides, flags


def hydra_argv(argv: list[str]) -> list[str]:
    """`argv` with every override first, then the flags (each with its value): Hydra's parser
    takes no override after a flag, so `--config-dir DIR seed=3` works like `seed=3 --config-dir
    DIR`, as it does for --show."""
    overrides, flags = cli_flags(argv)
    tail: list[str] = []
    for name, value in flags.items():
        tail += [name] if value is None else [name, value]
    return [*overrides, *tail]


def cli_overrides(argv: list[str]) -> list[str]:
    """The overrides of a `python -m flows.render` command line (its arguments minus flags and
    their values)."""
    return cli_flags(argv)[0]


def cli_config_dir(argv: list[str]) -> Path | None:
    """The directory of `--config-dir DIR` / `--config-dir=DIR` / `-cd DIR` (films kept outside
    the repository, in DIR/film/), checked; None without the flag."""
    flags = cli_flags(argv)[1]
    given = [(k, v) for k, v in flags.items() if k in ("--config-dir", "-cd")]
    if not given:
        return None
    key, value = given[-1]
    if not value:
        raise ConfigError(key, value, "a directory holding your presets in <dir>/film/, e.g. "
                          "--config-dir /home/me/films")
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise ConfigError(key, value, "an existing directory holding your presets in "
                          "<dir>/film/", f"not found: {path}")
    return path


def hydra_error(exc: BaseException) -> PromptreelError:
    """A Hydra or OmegaConf error (found by its type's module, Hydra is not imported here) as
    one line: `<key>: bad value <v>; accepted: <...> (<hint>)`."""
    name, text = type(exc).__name__, str(exc)
    first = text.strip().split("\n")[0]
    if name == "MissingConfigException":
        missing = str(getattr(exc, "missing_cfg_file", "") or "")
        group, _, value = missing.rpartition("/")
        where = re.match(r"In '([^']+)'", text)
        if where and where.group(1) != "config":  # a config's own defaults list is broken
            parent, _, choice = where.group(1).rpartition("/")
            if parent == "hydra/launcher":
                return ConfigError(parent, choice, "a launcher whose Hydra plugin is installed",
                                   f"conf/{where.group(1)}.yaml needs hydra-submitit-launcher: "
                                   ".venv/bin/pip install -e '.[slurm]'")
            return ConfigError(parent, choice, "a config whose defaults list only existing "
                               "configs", f"conf/{where.group(1)}.yaml needs {missing!r}")
        options = list(getattr(exc, "options", None) or project_options(group))
        return ConfigError(group or "config", value, ", ".join(options) or "(none)",
                           f"presets are the files in conf/{group}/")
    if name == "OverrideParseException":
        item = str(getattr(exc, "override", "") or "")
        message = str(getattr(exc, "message", "") or text)
        key, value = _split(item)
        lines = [ln for ln in message.split("\n") if ln.strip() and not ln.startswith("See ")]
        said = lines[1] if len(lines) > 1 and lines[0].startswith("Error parsing") else lines[0]
        caret = re.search(r"\n( *)\^", message)
        if said.startswith("LexerNoViableAltException: ") and caret:
            at = len(caret.group(1)) - len("LexerNoViableAltException: ")
            said = f"unexpected {item[at:at + 1]!r} at character {at + 1}"
        return ConfigError(key or item, value, "key=value in Hydra's override syntax",
                           f"{said.strip()}; quote a value with spaces, quotes, non-ASCII letters "
                           "or any of = , : [ ] { } ( ): key='a value' or key=\"it's\"")
    cause = exc.__cause__
    m = re.match(r"Could not override '([^']+)'\.\nTo append to your config use \+(.*)", text,
                 re.S)
    if m:
        key, value = m.group(1), m.group(2).strip()[len(m.group(1)) + 1:]
        parent = getattr(cause, "parent_node", None)
        known = sorted((k for k in parent.keys() if k not in ("hydra", "_target_")), key=str) \
            if hasattr(parent, "keys") else []
        full = re.sub(r"\[(\d+)\]", r".\1", str(getattr(cause, "full_key", "") or key))
        missing = getattr(cause, "key", None)
        where = full.rpartition(".")[0] or "the config"
        hint = (f"no key {missing!r} in {where}; known keys: {', '.join(map(repr, known))}; "
                if known and missing is not None else "")
        return ConfigError(key, value, "an existing key (misspelt?)",
                           f"{hint}to add a new key write +{key}={value}")
    m = re.match(r"Could not append to config\. An item is already at '([^']+)'", text)
    if m:
        return ConfigError(m.group(1), None, "a new key after '+'",
                           f"{m.group(1)} exists: drop the '+' to change it")
    m = re.match(r"Could not delete from config\. '([^']+)' does not exist", text)
    if m:
        return ConfigError("~" + m.group(1), None, "an existing key to delete")
    m = re.match(r"Error merging override (.+?)=(.*)", first)
    if m and type(cause).__name__ == "ConfigIndexError":
        parent = getattr(cause, "parent_node", None)
        size = len(parent) if parent is not None else 0
        return ConfigError(m.group(1), m.group(2), f"an index from 0 to {size - 1}",
                           "the list is shorter")
    m = re.match(r"(?:Sweep parameters|Ambiguous value for argument) '(.+?)=(.*)'", first)
    if m:
        return ConfigError(m.group(1), m.group(2), "one value; a sweep (a,b or range(...) or "
                           "choice(...)) needs -m (--multirun); a list is [a,b]; a text with "
                           "commas needs quotes")
    full_key = getattr(exc, "full_key", None) or getattr(cause, "full_key", None)
    where = f"{full_key}: " if full_key else ""
    return PromptreelError(f"{where}{first}" + (f" ({str(cause).split(chr(10))[0]})"
                                                 if cause is not None else ""))


def is_hydra_error(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] in ("hydra", "omegaconf")


def cli(main: Callable[[], Any], argv: list[str]) -> Any:
    """Run Hydra's `main` as `python -m flows.render`: overrides are checked before Hydra acts
    on any of them (it would instantiate callbacks and logging handlers before `main` runs), and
    any bad input ends as `error: <message>` on stderr with exit code 2, never a traceback.
    Returns what `main` returns."""
    try:
        check_overrides(cli_overrides(argv))
        cli_config_dir(argv)  # an existing directory, before Hydra reads it
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises its errors to us (even if set to 0)
        return main()
    except PromptreelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:
        if not is_hydra_error(exc):
            raise
        print(f"error: {hydra_error(exc)}", file=sys.stderr)
        sys.exit(2)


# ---------------------------------------------------------------- files
def input_places(path: str) -> list[Path]:
    """Where a shot's input file (input_video, init_image, an image prompt) is looked for: an
    absolute path (after `~`) where it says; a relative one from the working directory, then
    from the repository (the folder holding conf/), so a preset's `samples/...` works from
    anywhere. One place when the working directory is the repository."""
    p = Path(path).expanduser()
    if p.is_absolute():
        return [p.resolve()]
    places = [(Path.cwd() / p).resolve(), (CONF.parent / p).resolve()]
    return places[:1] if places[0] == places[1] else places


def resolve_input(path: str) -> str:
    """`path` as given where it is found as given (absolute, or relative to the working
    directory: nothing changes for a render run from the repository, and cache keys that hash
    a path keep it); the absolute path where it is found only from the repository; as given
    where it is found nowhere (the checks then name the places looked at)."""
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists():
        return path
    under = CONF.parent / p
    return str(under) if under.exists() else path


def check_input_exists(path: str, key: str, what: str) -> Path:
    """The first of `input_places(path)` that exists; else a ConfigError naming `key`, the
    value and every place looked at."""
    places = input_places(path)
    found = next((p for p in places if p.exists()), None)
    if found is None:
        where = (f"not found: {places[0]}" if len(places) == 1 else
                 f"not found: {places[0]}, then {places[1]}; a relative path is looked for "
                 "from the working directory, then from the repository")
        raise ConfigError(key, path, f"an existing {what}", where)
    return found


def check_image_file(path: str, key: str) -> None:
    """An existing, readable, decodable image of a sane size; ConfigError naming `key`."""
    found = check_input_exists(path, key, "image file")
    p = Path(path).expanduser()
    p = p if p.exists() else found  # as given (the decoder's message quotes it), else found
    if not p.is_file():
        raise ConfigError(key, path, "an image file, not a directory")
    if p.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(key, path, f"an image with suffix {', '.join(IMAGE_SUFFIXES)}")
    if not os.access(p, os.R_OK):
        raise ConfigError(key, path, "a readable image file", "permission denied")
    from PIL import Image

    try:
        with Image.open(p) as im:
            size = im.size
            im.verify()
    except Image.DecompressionBombError as exc:
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ConfigError(key, path, f"an image at most {MAX_IMAGE_SIDE} pixels a side",
                          f"its header says {pixels.group(1) if pixels else 'too many'} "
                          "pixels") from None
    except Exception as exc:  # noqa: BLE001 - any decoder failure is the file's fault
        raise ConfigError(key, path, "a readable image file", f"cannot decode it: {exc}") from None
    if max(size) > MAX_IMAGE_SIDE or min(size) < 1:
        raise ConfigError(key, path, f"an image at most {MAX_IMAGE_SIDE} pixels a side",
                          f"it is {size[0]}x{size[1]}")


def check_checkpoint_file(path: str, key: str) -> None:
    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(key, path, "an existing checkpoint file (.pth, .ckpt, .safetensors)",
                          f"not found: {p.resolve()}")
    if not os.access(p, os.R_OK):
        raise ConfigError(key, path, "a readable checkpoint file", "permission denied")


# ---------------------------------------------------------------- semantics
def check_semantics(cfg: Any) -> None:
    """`cfg`: the RenderConfig flows/config.py is building (this module is below it)."""
    from engines.frames.registry import ENGINES
    from engines.planning.prompts import parse_image_prompt, parse_prompt_schedule
    from engines.planning.speed import planned_frames
    from engines.planning.timeline import shot_frames, timeline
    from tasks.stop import open_ended

    film = cfg.film
    for i, (shot, plan) in enumerate(zip(film.shots, cfg.shot_plans(), strict=True)):
        key = f"film.shots.{i}"
        settings = cfg.shot_engine(shot)  # validates engine overrides
        if shot.frames is None and shot.seconds is None and not open_ended(settings):
            raise ConfigError(f"{key}.frames", None, "a length: frames or seconds (one of them)",
                              "only an open-ended shot (engine max_iterations: -1) may leave "
                              "both out")
        if not any(p.weight != 0 for f in plan.frames for ph in (f.story or (f.prompts,))
                   for p in ph) and not shot.image_prompts:
            raise ConfigError(f"{key}.prompts", shot.prompts, "at least one prompt with a non-zero weight")
        _check_story(shot, settings, key, film.fps)
        if isinstance(shot.prompts, dict) and shot.transition.kind != "interpolate":
            n = len(plan.frames)
            for label, line in shot.prompts.items():
                frame = parse_prompt_schedule({label: line}, key=f"{key}.prompts", fps=film.fps).keys[0]
                if frame >= n:
                    raise ConfigError(f"{key}.prompts", label, f"keyframes on frames 0-{n - 1}",
                                      f"the shot has {n} frames at {film.fps:g} fps; a key at "
                                      f"frame {frame} is never shown")
        bad_zoom = next((f for f, fr in enumerate(plan.frames) if not fr.zoom > 0), None)
        if bad_zoom is not None:
            raise ConfigError(f"{key}.motion.zoom", shot.motion.zoom, "a scale > 0 at every frame "
                              "(1 = still, 1.02 = 2% closer per frame)",
                              f"frame {bad_zoom} gives {plan.frames[bad_zoom].zoom:g}")
        if shot.continues and i == 0:
            raise ConfigError(f"{key}.continue", shot.continues, "a shot after another one",
                              "the first shot has no shot before it")
        if shot.continues and shot.init_image:
            raise ConfigError(f"{key}.init_image", shot.init_image, "null with continue: "
                              "previous", "the shot starts from the previous shot's last frame")
        if shot.init_image:
            check_image_file(shot.init_image, f"{key}.init_image")
        for j, spec in enumerate(shot.image_prompts):
            path, _w, _s = parse_image_prompt(spec, key=f"{key}.image_prompts.{j}")
            check_image_file(path, f"{key}.image_prompts.{j}")
        engine = ENGINES[settings.name]
        _check_motion_3d(shot, plan, engine, settings, key)
        _check_input_video(shot, plan, engine, settings, key, film.fps)
        with _setting_keys(cfg, shot, key, settings.name):
            if hasattr(engine, "check"):  # the engine's own rules (frame counts, sizes...)
                engine.check(settings, plan, key)
            for kind, entries in engine.models(settings, cfg.film_models()).items():
                for entry in entries:
                    if entry.source == "dead":
                        _check_dead_model(entry, _entry_key(cfg, settings, entry, kind),
                                          cfg.runtime.models_dir)
                    if entry.source == "hub" and not cfg.runtime.download:
                        _check_downloaded(entry, _entry_key(cfg, settings, entry, kind),
                                          cfg.runtime.models_dir)
    after = [planned_frames(shot_frames(s, film.fps), cfg.shot_speed(s), film.fps,
                            key=f"film.shots.{i}.speed" if s.speed is not None else "speed")
             for i, s in enumerate(film.shots)]
    for i, shot in enumerate(film.shots[:-1]):
        join = 0 if shot.join.kind == "cut" else round(shot.join.seconds * film.fps)
        most = min(after[i], after[i + 1]) - 1
        if join > most:
            raise ConfigError(f"film.shots.{i}.join.seconds", shot.join.seconds,
                              f"at most {most / film.fps:g} s ({most} frames at {film.fps:g} fps)",
                              f"a cross-fade must be shorter than both shots: {after[i]} and "
                              f"{after[i + 1]} frames after speed changes")
    timeline([(s, cfg.shot_speed(s)) for s in film.shots], film.fps, film.fit_fps)  # lengths add up
    _check_export_size(cfg)
    st = cfg.soundtrack
    if st.source == "musicgen_melody" and cfg.music_model is not None \
            and not (cfg.music_model.arch or {}).get("melody"):
        why = ("a generated model (debug=smoke puts one here) cannot follow a melody"
               if cfg.music_model.source == "generated" else
               "soundtrack=musicgen_melody follows a melody; this model only reads text")
        raise ConfigError("soundtrack.model", st.model, "a melody model (arch.melody: true in "
                          "conf/soundtrack/models/), e.g. musicgen_melody", why)
    if st.source in ("file", "musicgen_melody"):
        from engines.media.audio import check_audio_file

        path = st.file if st.source == "file" else st.melody
        check_audio_file(path, f"soundtrack.{'file' if st.source == 'file' else 'melody'}")
    if cfg.refine.method == "cyclegan" and cfg.refine.checkpoint:
        check_checkpoint_file(cfg.refine.checkpoint, "refine.checkpoint")


def _check_story(shot: Any, settings: Any, key: str, fps: float) -> None:
    """A line with story phrases (`^`) needs an engine with a story mode switched on."""
    from engines.planning.prompts import parse_prompt_schedule

    schedule = parse_prompt_schedule(shot.prompts, key=f"{key}.prompts", fps=fps)
    if not schedule.has_story:
        return
    line = shot.prompts if isinstance(shot.prompts, str) else next(
        v for v in shot.prompts.values() if "^" in v)
    if "story_every" not in type(settings).model_fields:
        raise ConfigError(f"{key}.prompts", line, "a line without '^' (story phrases)",
                          f"engine {settings.name} has no story mode; give the phrases as "
                          "keyframes instead")
    if settings.story_every is None:
        raise ConfigError(f"{key}.prompts", line, "story phrases ('^') with engine.story_every "
                          "set (iterations per phrase)", "with story_every null the phrases "
                          "would never switch: set engine.story_every=N (nerdyrodent's -cpe N), "
                          "or remove '^'")


@contextlib.contextmanager
def _setting_keys(cfg: Any, shot: Any, key: str, name: str) -> Iterator[None]:
    """An engine names a bad setting `engine.<setting>`; re-raised with the key where the value
    was set: the shot's `engine_overrides`, `engines.<name>` (debug=smoke sets those), or the
    film's `engine`."""
    try:
        yield
    except ConfigError as exc:
        if not exc.key.startswith("engine."):
            raise
        field = exc.key.split(".", 1)[1]
        head = field.split(".", 1)[0]  # motion_loras of engine.motion_loras.1
        if head in shot.engine_overrides:
            where = f"{key}.engine_overrides.{field}"
        elif head in cfg.engines.get(name, {}):
            where = f"engines.{name}.{field}"
        else:
            where = exc.key
        if where == exc.key:
            raise
        raise ConfigError(where, exc.value, exc.accepted, exc.hint) from None


def _entry_key(cfg: Any, settings: Any, entry: Any, kind: str) -> str:
    """The config key that named a registry entry an engine asked for: the engine setting that
    holds its name (`engine.motion_adapter`, `engine.motion_loras.1` for an item of a list),
    else the film-wide key (`extra_clip.0`, or the kind's key: `vqgan`, `clip`)."""
    from engines.models.registry import CONFIG_KEYS

    for field in type(settings).model_fields:
        if field == "name":  # the engine's own name, never an entry
            continue
        value = getattr(settings, field)
        if value == entry.name:
            return f"engine.{field}"
        if isinstance(value, (tuple, list)) and entry.name in value:
            return f"engine.{field}.{list(value).index(entry.name)}"
    for i, extra in enumerate(cfg.extra_clip):
        if kind == "clip" and extra.name == entry.name and cfg.clip.name != entry.name:
            return f"extra_clip.{i}"
    return CONFIG_KEYS[kind]


def _check_downloaded(entry: Any, key: str, models_dir: Any) -> None:
    """With downloads off (runtime.download=false), a hub model must already be on disk: the
    render stops now, naming the repo, the revision and the command that fetches it."""
    from engines.models import weights
    from engines.models.registry import FETCH_HINT, model_dir

    if weights.missing_files([entry], Path(models_dir)):
        raise ConfigError(key, entry.name, "a model whose files are in "
                          f"{model_dir(entry, Path(models_dir))}",
                          f"runtime.download=false and {entry.repo} at revision {entry.revision} "
                          f"is not downloaded: run `{FETCH_HINT}` on a connected machine")


def _check_motion_3d(shot: Any, plan: Any, engine: Any, settings: Any, key: str) -> None:
    """3D camera schedules (motion.translation_z, rotation_3d_*) need an engine whose settings
    turn its 3D camera on (`motion_3d(settings)`); any other engine would ignore them."""
    from engines.frames.registry import ENGINES
    from engines.planning.plan import MOTION_3D

    frame = next((f for f, fr in enumerate(plan.frames) if fr.moves_3d), None)
    if frame is None or getattr(engine, "motion_3d", lambda s: False)(settings):
        return
    name = next(n for n in MOTION_3D if getattr(plan.frames[frame], n) != 0)
    takers = ", ".join(f"{n} (engine.animation_mode: 3D)" for n, m in ENGINES.items()
                       if hasattr(m, "motion_3d"))
    raise ConfigError(f"{key}.motion.{name}", getattr(shot.motion, name),
                      f"0:(0) with engine {settings.name} in this mode; a 3D camera needs {takers}",
                      f"frame {frame} moves the camera in 3D")


def _check_input_video(shot: Any, plan: Any, engine: Any, settings: Any, key: str,
                       fps: float) -> None:
    """A shot's input video: taken by its engine (`input_video(settings)`: "required",
    "optional" or None), an existing, decodable file whose length at the film's fps is the
    shot's (engines/media/video.py)."""
    wants = getattr(engine, "input_video", lambda s: None)(settings)
    if shot.input_video is None:
        if wants == "required":
            raise ConfigError(f"{key}.input_video", None, "the path of a video for engine "
                              f"{settings.name} to follow", f"{settings.name} works on a video")
        return
    if wants is None:
        from engines.frames.registry import ENGINES

        takers = ", ".join(n for n, m in ENGINES.items() if hasattr(m, "input_video"))
        raise ConfigError(f"{key}.input_video", shot.input_video, f"null with engine "
                          f"{settings.name}", f"it takes no input video; engines that do: {takers}")
    from engines.media.video import check_length, check_video

    check_input_exists(shot.input_video, f"{key}.input_video", "video file")
    check_video(shot.input_video, f"{key}.input_video")
    frames_key = f"{key}.frames"
    check_length(shot.input_video, f"{key}.input_video", fps, plan.n_frames, frames_key)


def _check_dead_model(entry: Any, key: str, models_dir: Any) -> None:
    """A registry entry whose host is gone renders only if its files are already on disk."""
    from engines.models import weights
    from engines.models.registry import model_dir

    problems = weights.missing_files([entry], Path(models_dir))
    if problems:
        raise ConfigError(key, entry.name, "a model whose download is alive, or whose files "
                          f"are already in {model_dir(entry, Path(models_dir))}",
                          entry.notes or "its host is gone")


def _check_export_size(cfg: Any) -> None:
    """The export's pixel format fits its size (4:2:0 needs even sides), before any rendering."""
    from engines.media.editing import check_even

    ex, res = cfg.export, cfg.resolution
    check_even(ex, ex.width or res.width, ex.height or res.height,
               keys=("export.width" if ex.width else "resolution.width",
                     "export.height" if ex.height else "resolution.height"))
