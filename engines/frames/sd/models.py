"""Registry entries of kind `sd` an engine's settings name, checked when the config is read:
the entry exists, has the role the setting wants (a pipeline, a motion adapter, a ControlNet...),
and belongs to the same base (SD 1.5 or SDXL) as the checkpoint it is combined with. Each failure
is a ConfigError naming the key and the entries that would do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError

CONF = Path(__file__).resolve().parents[3] / "conf"


def names(role: str, base: str | None = None) -> list[str]:
    """Entries of conf/sd/ with `role` (and `base`, if given)."""
    from engines.models.registry import list_entries, load_entry
    from engines.models.sd import rules_of

    out = []
    for n in list_entries("sd", CONF):
        r = rules_of(load_entry("sd", n, CONF))
        if r.role == role and (base is None or r.base == base):
            out.append(n)
    return out


def entry(name: str, role: str | tuple[str, ...], key: str, base: str | None = None) -> Any:
    """The entry `name`, checked to have `role` (and `base`)."""
    from engines.models.registry import load_entry
    from engines.models.sd import rules_of

    roles = (role,) if isinstance(role, str) else role
    choices = [n for r in roles for n in names(r, base)]
    what = " or ".join(r.replace("_", " ") for r in roles)
    if name not in names_any(roles):
        raise ConfigError(key, name, ", ".join(choices) or "(none)",
                          f"a {what} of conf/sd/")
    e = load_entry("sd", name, CONF)
    rules = rules_of(e)
    if base is not None and rules.base != base:
        raise ConfigError(key, name, ", ".join(choices) or "(none)",
                          f"{name} is a {what} for {_base(rules.base)}; the checkpoint is "
                          f"{_base(base)}: pick one of the same base")
    return e


def names_any(roles: tuple[str, ...]) -> list[str]:
    return [n for r in roles for n in names(r)]


def base_of(entry: Any) -> str:
    from engines.models.sd import rules_of

    return rules_of(entry).base


def _base(base: str) -> str:
    return {"sd15": "SD 1.5", "sdxl": "SDXL"}[base]


def check_size(plan: Any, rules: Any, name: str) -> None:
    """Frame sides are multiples of the VAE's factor (8)."""
    m = rules.size_multiple
    for side, value in (("width", plan.width), ("height", plan.height)):
        if value % m:
            near = max(m, round(value / m) * m)
            raise ConfigError(f"resolution.{side}", value, f"a multiple of {m} for {name}",
                              f"nearest valid: {near}")
