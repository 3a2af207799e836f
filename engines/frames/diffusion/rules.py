"""The model's rules, checked when the config is read: the model resolves (registry entry of
this engine's family, or a pipeline folder), the chunk length is a frame count the model accepts,
the frame size is a multiple it accepts, the scheduler is one it can use. Every violation is a
ConfigError naming the key and the nearest valid value."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError

CONF = Path(__file__).resolve().parents[3] / "conf"


def entry_for(settings: Any, family: str, key: str) -> Any:
    """The registry entry the settings name (`model`), checked to be of `family`."""
    from engines.models.diffusers import rules_of
    from engines.models.registry import list_entries, load_entry

    if settings.model_path:
        return path_entry(settings, family, key)
    names = [n for n in list_entries("diffusers", CONF)
             if rules_of(load_entry("diffusers", n, CONF)).family == family]
    if settings.model not in names:
        raise ConfigError(f"{key}.model", settings.model, ", ".join(names) or "(none)",
                          f"the {family} entries of conf/diffusers/; or engine.model_path=<a "
                          "diffusers pipeline folder>")
    return load_entry("diffusers", settings.model, CONF)


def path_entry(settings: Any, family: str, key: str) -> Any:
    """A registry-like entry for `model_path` (a pipeline folder on disk): the rules of a hub
    entry of the family with the folder's pipeline class (the engine's default model when it
    has that class, else the first such entry), with the folder's own class as its pipeline."""
    from engines.models.diffusers import check_folder, rules_of
    from engines.models.registry import ModelEntry, load_entry

    hub = [load_entry("diffusers", n, CONF) for n in _family_entries(family)]
    hub = [e for e in hub if e.source == "hub"]
    classes = tuple(dict.fromkeys(c for e in hub for c in (rules_of(e).pipeline,
                                                           rules_of(e).image_pipeline) if c))
    cls = check_folder(Path(settings.model_path), classes, f"{key}.model_path")
    default = type(settings).model_fields["model"].default
    matching = [e for e in hub if cls in (rules_of(e).pipeline, rules_of(e).image_pipeline)]
    base = next((e for e in matching if e.name == default), matching[0])
    folder = Path(settings.model_path).expanduser().resolve()
    return ModelEntry(name=folder.name if _slug(folder.name) else "model_path",
                      kind="diffusers", source="local", path=str(folder),
                      arch={"fingerprint": fingerprint(folder)},
                      rules={**base.rules, "pipeline": cls,
                             "image_pipeline": rules_of(base).image_pipeline
                             if cls == rules_of(base).pipeline else cls},
                      notes=f"a pipeline folder on disk: {folder}")


def needs_image(rules: Any) -> bool:
    """A model that makes video only from a start image (its text pipeline is its image one)."""
    return rules.image_pipeline is not None and rules.pipeline == rules.image_pipeline


def size_multiple(settings: Any, family: str) -> int:
    """What frame sides must be multiples of for the settings' model (its rules)."""
    from engines.models.diffusers import rules_of

    return rules_of(entry_for(settings, family, "engine")).size_multiple


def fingerprint(folder: Path) -> str:
    """What a pipeline folder holds, cheaply: the sha256 of every JSON and tokenizer file, and
    the name and size of every weight file (hashing tens of GB at every render would cost
    minutes; replacing a weight file by one of exactly the same size is not noticed)."""
    import hashlib

    from engines.core.files import sha256_file

    h = hashlib.sha256()
    for p in sorted(q for q in folder.rglob("*") if q.is_file() and not q.name.startswith(".")):
        rel = p.relative_to(folder).as_posix()
        small = p.suffix != ".safetensors"
        h.update(f"{rel}:{sha256_file(p) if small else p.stat().st_size}\n".encode())
    return h.hexdigest()


def _slug(name: str) -> bool:
    from engines.models.registry import SLUG

    return bool(SLUG.match(name))


def check(settings: Any, plan: Any, key: str, family: str) -> None:
    """The model's rules for a shot (`key`: the shot's key, film.shots.<i>). Errors in engine
    settings name `engine.<setting>`; flows/checks.py names where the value was set instead
    (the shot's engine_overrides, engines.<name>, or the film's engine)."""
    from engines.models.diffusers import rules_of

    entry = entry_for(settings, family, "engine")
    rules = rules_of(entry)
    clip = settings.clip_frames or rules.clip_frames
    if not rules.frames.ok(clip):
        raise ConfigError("engine.clip_frames", clip,
                          f"a frame count {entry.name} accepts ({_form(rules.frames)})",
                          f"nearest valid: {rules.frames.nearest(clip)}")
    if settings.overlap >= clip:
        raise ConfigError("engine.overlap", settings.overlap,
                          f"fewer frames than a chunk ({clip})")
    runs = (rules.scheduler, *(s for s in rules.schedulers if s != rules.scheduler))
    if settings.scheduler is not None and settings.scheduler not in runs:
        raise ConfigError("engine.scheduler", settings.scheduler,
                          f"a scheduler {entry.name} runs with: {', '.join(runs)}",
                          f"null = its own, {rules.scheduler}")
    if needs_image(rules) and not (plan.init_image or plan.continues):
        raise ConfigError(f"{key}.init_image", None, "a start image: init_image: <file> or "
                          "continue: previous", f"{entry.name} makes video from an image")
    if (plan.init_image or plan.continues) and not rules.image_pipeline:
        what = "continue" if plan.continues else "init_image"
        takes = [n for n in _family_entries(family) if rules_of_name(n).image_pipeline]
        raise ConfigError(f"{key}.{what}", "previous" if plan.continues else plan.init_image,
                          f"a model that takes a start image: {', '.join(takes) or '(none)'}",
                          f"{entry.name} only makes video from text")
    if rules.sizes and (plan.width, plan.height) not in rules.sizes:
        near = min(rules.sizes, key=lambda wh: abs(wh[0] - plan.width) + abs(wh[1] - plan.height))
        raise ConfigError("resolution", f"{plan.width}x{plan.height}",
                          f"a size {entry.name} takes: "
                          + ", ".join(f"{w}x{h}" for w, h in rules.sizes),
                          f"nearest valid: {near[0]}x{near[1]}")
    m = rules.size_multiple
    for side, value in (("width", plan.width), ("height", plan.height)):
        if value % m:
            near = max(m, round(value / m) * m)
            raise ConfigError(f"resolution.{side}", value, f"a multiple of {m} for {entry.name}",
                              f"nearest valid: {near}")


def _family_entries(family: str) -> list[str]:
    from engines.models.registry import list_entries

    return [n for n in list_entries("diffusers", CONF) if rules_of_name(n).family == family]


def rules_of_name(name: str) -> Any:
    from engines.models.diffusers import rules_of
    from engines.models.registry import load_entry

    return rules_of(load_entry("diffusers", name, CONF))


def _form(rule: Any) -> str:
    form = f"{rule.step}k+{rule.offset}" if rule.step > 1 else "any count"
    return f"{form}, {rule.min} to {rule.max}"
