"""The engine seam: what a frame engine declares, and the sink it commits its work to.

A frame engine is one module (or subpackage) under engines/frames/, listed once in
engines/frames/registry.py. It declares:

- `NAME` (= its `conf/engine/<NAME>.yaml` and the config's `engine.name`) and `CODE_VERSION`
  (bump it when its frames for the same inputs would change: it is part of every shot key);
- `Settings`: a frozen pydantic model (subclass of `EngineSettings`) with `name: Literal[NAME]`,
  one field per key of its conf file; the config's engine settings are the union of all of them,
  discriminated by `name`;
- `models(settings, film_models) -> {kind: (ModelEntry, ...)}`: the registry entries it needs,
  by model kind (engines/models/registry.py `KINDS`), from the film-wide choices (`vqgan`,
  `clip` + `extra_clip`) or from its own settings;
- its memory estimate, for engines/frames/memory.py: `meta_models(models, settings, device)`
  and `memory_step(settings, width, height, meta, device)` (one step of its work, run on meta
  tensors), `MEMORY_UNIT` (the setting auto_fit lowers, and its plural noun) and optionally
  `fit(...)`;
- optionally `check(settings, plan, key)`: rules checked when the config is read;
- optionally `depends_on_length(settings) -> str | None`: None when every frame depends only on
  the plan up to it and the frames before it (a render of a plan's first k frames is then the
  first k frames of a render of the whole plan: a longer render of a shot goes on from a shorter
  one, tasks/generate_frames.py), else the reason it does not. An engine without it is never
  continued that way (a diffusion engine denoising a chunk of frames together, for example);
- optionally a `max_iterations` setting: -1 makes a shot open-ended (tasks/stop.py): it renders
  until the user stops it, and the frames committed by then make the shot;
- `render(settings, plan, models, sink, device)`: render the `ShotPlan` into the `FrameSink`,
  resuming from what the sink holds. `models` maps each kind to the loaded models of the entries
  it asked for, in order.

The sink keeps an engine's work durable: committed frames and the engine's state. An engine that
optimises frame by frame commits each frame with the state that continues after it (latent and
optimiser state, RNG states); an engine that makes frames in chunks over many steps saves its
state between commits (`save_state`: latents, scheduler and generator state after step k) and
commits the chunk's frames once decoded. Resume continues from the last durable state and must
produce exactly the frames an uninterrupted render would.
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict


class EngineSettings(BaseModel):
    """Base of every engine's settings: frozen, unknown keys refused; `name` is the engine."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str


class FrameSink(Protocol):
    """Where an engine commits its work. Every call is durable before it returns.

    `resume()` returns the number of frames already committed and the engine's last durable
    state (tensors and numbers by name: what `commit` or `save_state` last stored), or (0, None)
    for a fresh shot.
    """

    def resume(self) -> tuple[int, dict[str, Any] | None]: ...

    def commit(
        self,
        index: int,
        image: Any,  # numpy uint8 array, H x W x 3, RGB
        state: dict[str, Any] | None,  # what continues after this frame; None: keep the last
        record: dict[str, float | int | str],  # per-frame metrics for the shot's table
    ) -> None: ...

    def save_state(self, state: dict[str, Any]) -> None:
        """Durable engine state between frame commits (e.g. after step k of a chunk)."""
        ...
