"""Camera motion of several frames as one warp: the Deforum 2D moves of frames a+1..b (each a
similarity transform about the frame centre, engines/planning/motion.py) composed into one, and
its inverse, expressed again as (zoom, angle, translation) so that `motion.warp` resamples an
image once however many frames the move spans. Used where an engine moves an image over several
frames at once (deforum's cadence in-betweens, text2video_zero's latent motion field)."""

from __future__ import annotations

import math
from typing import Any

Move = tuple[float, float, float, float]  # (zoom, angle degrees, translation x, y pixels)
IDENTITY: Move = (1.0, 0.0, 0.0, 0.0)


def _mat(width: int, height: int, move: Move) -> list[list[float]]:
    from engines.planning.motion import deforum_matrix

    return deforum_matrix(width, height, *move)


def _mul(a: list[list[float]], b: list[list[float]]) -> list[list[float]]:
    return [[sum(a[i][k] * b[k][j] for k in range(3)) for j in range(3)] for i in range(3)]


def _inverse(m: list[list[float]]) -> list[list[float]]:
    det = m[0][0] * m[1][1] - m[0][1] * m[1][0]
    a, b = m[1][1] / det, -m[0][1] / det
    c, d = -m[1][0] / det, m[0][0] / det
    return [[a, b, -(a * m[0][2] + b * m[1][2])], [c, d, -(c * m[0][2] + d * m[1][2])],
            [0.0, 0.0, 1.0]]


def _as_move(width: int, height: int, m: list[list[float]]) -> Move:
    """(zoom, angle, tx, ty) whose Deforum matrix R @ T equals the similarity `m`."""
    alpha, beta = m[0][0], m[0][1]
    zoom = math.hypot(alpha, beta)
    angle = math.degrees(math.atan2(beta, alpha))
    r = _mat(width, height, (zoom, angle, 0.0, 0.0))
    # m = R @ T(t): m's offset = R's offset + A t, A = R's linear part
    ox, oy = m[0][2] - r[0][2], m[1][2] - r[1][2]
    det = alpha * alpha + beta * beta
    tx = (alpha * ox - beta * oy) / det
    ty = (beta * ox + alpha * oy) / det
    return zoom, angle, tx, ty


def compose(width: int, height: int, moves: list[Move]) -> Move:
    """One move equal to applying `moves` in order (the first one first)."""
    m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    for mv in moves:
        m = _mul(_mat(width, height, mv), m)
    return _as_move(width, height, m)


def inverse(width: int, height: int, moves: list[Move]) -> Move:
    """The move that undoes `moves` applied in order."""
    m = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    for mv in moves:
        m = _mul(_mat(width, height, mv), m)
    return _as_move(width, height, _inverse(m))


def frame_move(frame: Any, scale: float = 1.0) -> Move:
    """A FramePlan's move; translations times `scale` (1/8 for a latent grid)."""
    return (frame.zoom, frame.angle, frame.translation_x * scale, frame.translation_y * scale)


def warp_uint8(image: Any, move: Move, border: str) -> Any:
    """A uint8 H x W x 3 image moved by `move` (one bilinear resample; the identity copies it),
    as float32 0..1 [1, 3, H, W]."""
    import torch

    from engines.planning.motion import warp

    x = torch.from_numpy(image).permute(2, 0, 1)[None].to(torch.float32) / 255.0
    if move == IDENTITY:
        return x
    return warp(x, *move, border=border)


def to_uint8(x: Any) -> Any:
    """float 0..1 [1, 3, H, W] (or H x W x 3 numpy) -> uint8 H x W x 3 numpy, rounded."""
    import numpy as np
    import torch

    if isinstance(x, torch.Tensor):
        x = x[0].permute(1, 2, 0).detach().to("cpu", torch.float32).numpy()
    return np.clip(np.rint(np.asarray(x, dtype=np.float64) * 255.0), 0, 255).astype(np.uint8)
