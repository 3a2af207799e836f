"""The seam functions every diffusers video engine shares (engines/frames/wan.py, ltx.py,
cogvideox.py, hunyuan.py, mochi.py, zeroscope.py): the registry entry its settings name, its
rules, the render loop and the memory estimate, each bound to the engine module, which keeps
what differs between the families (`call_kwargs`, `decode`, `transformer_inputs`, ...).

    models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips = (
        seam.hooks(__name__, FAMILY))
"""

from __future__ import annotations

import sys
from typing import Any

from engines.frames.diffusion import memory as diffusion_memory
from engines.frames.diffusion import render as diffusion_render
from engines.frames.diffusion import rules as diffusion_rules


def hooks(module: str, family: str) -> tuple:
    """(models, check, size_multiple, render, meta_models, memory_step, fit, memory_tips) for
    engine module `module` (its name; looked up when called) of model family `family`."""

    def models(settings: Any, film_models: dict[str, tuple]) -> dict[str, tuple]:
        return {"diffusers": (diffusion_rules.entry_for(settings, family, "engine"),)}

    def check(settings: Any, plan: Any, key: str) -> None:
        diffusion_rules.check(settings, plan, key, family)

    def size_multiple(settings: Any) -> int:
        """Frame sides must be multiples of this for the settings' model."""
        return diffusion_rules.size_multiple(settings, family)

    def render(settings: Any, plan: Any, models: dict[str, tuple], sink: Any, device: Any,
               progress: Any = None) -> None:
        diffusion_render.render(sys.modules[module], settings, plan, models, sink, device,
                                progress)

    def meta_models(models: dict[str, tuple], settings: Any, device: Any) -> tuple:
        return diffusion_memory.meta_models(sys.modules[module], models, settings, device)

    return (models, check, size_multiple, render, meta_models, diffusion_memory.memory_step,
            diffusion_memory.fit, diffusion_memory.memory_tips)
