"""Long shots as chained chunks: a shot longer than one generation is made of chunks of allowed
lengths that overlap by `overlap` frames; the overlap is cross-faded (and, where the model takes
an image, the next chunk starts from the frame the overlap begins with). Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass

from engines.core.errors import ConfigError


@dataclass(frozen=True)
class Chunk:
    index: int
    start: int  # first shot frame it covers
    length: int  # frames it generates (an allowed count)
    keep: int  # frames of it the shot uses (the last chunk may generate more than it needs)


def plan_chunks(n_frames: int, clip_frames: int, overlap: int, rule: object,
                key: str = "engine") -> tuple[Chunk, ...]:
    """Chunks covering `n_frames`: each `clip_frames` long (an allowed count), the next one
    starting `clip_frames - overlap` frames later; the last one the shortest allowed length that
    covers what is left (at least `overlap + 1` frames), cut to what the shot needs."""
    if not 0 <= overlap < clip_frames:
        raise ConfigError(f"{key}.overlap", overlap, f"0 <= overlap < clip_frames ({clip_frames})")
    chunks, start, i = [], 0, 0
    while True:
        left = n_frames - start
        if left <= clip_frames:
            need = max(left, overlap + 1) if i else left
            length = rule.at_least(need) or clip_frames
            chunks.append(Chunk(i, start, length, left))
            return tuple(chunks)
        chunks.append(Chunk(i, start, clip_frames, clip_frames))
        start += clip_frames - overlap
        i += 1


def blend_weights(overlap: int) -> list[float]:
    """Weight of the new chunk at each overlap frame: (j + 1) / (overlap + 1), a linear
    cross-fade that never shows either chunk alone inside the overlap."""
    return [(j + 1) / (overlap + 1) for j in range(overlap)]
