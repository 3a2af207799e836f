"""The frame engines, by name: one line per engine. Everything that picks, configures, keys or
runs an engine goes through `ENGINES`; nothing in flows/ or tasks/ names one.

Adding an engine: docs/CONTRIBUTING.md, "Add an engine".
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Field

from engines.frames import (
    animatediff,
    cogvideox,
    controlnet,
    deforum,
    flow_restyle,
    hunyuan,
    ltx,
    mochi,
    pix2pix,
    pixel_clip,
    text2video_zero,
    vqgan_clip,
    wan,
    zeroscope,
)

ENGINES: dict[str, Any] = {m.NAME: m for m in (
    vqgan_clip,
    pixel_clip,
    wan,
    ltx,
    cogvideox,
    hunyuan,
    mochi,
    zeroscope,
    deforum,
    animatediff,
    flow_restyle,
    controlnet,
    pix2pix,
    text2video_zero,
)}

# The config's engine settings: one of the engines' Settings, chosen by its `name`.
EngineConfig = Annotated[Union[tuple(m.Settings for m in ENGINES.values())],  # noqa: UP007
                         Field(discriminator="name")]


def engine(name: str) -> Any:
    """The engine module registered under `name` (KeyError if none)."""
    return ENGINES[name]


def code_version(name: str) -> str:
    """`<name><CODE_VERSION>`: the engine part of a shot's artefact key."""
    return f"{name}{ENGINES[name].CODE_VERSION}"
