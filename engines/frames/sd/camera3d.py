"""A 3D camera over a depth map: Deforum's 3D animation mode, built from its idea (a monocular
depth estimate lifts the previous frame into 3D, the camera moves, the points are projected
again), nothing of its code.

Conventions (OpenCV's camera: x right, y down, z forward, pixel centres at whole numbers):
- a pinhole camera of horizontal field of view `fov` degrees, focal length
  f = (W / 2) / tan(fov / 2) pixels, principal point (W // 2, H // 2): the centre the 2D warp
  turns and zooms about (engines/planning/motion.py), so a 3D roll equals a 2D angle;
- a frame's move (`Move3D`: translation x, y, z in Deforum's units, rotations x, y, z in degrees)
  is the rigid map of points in the previous camera's coordinates to the new camera's,
  P' = R P + b, with R = Rz Ry Rx and b = (tx, ty, -tz) / 200 depth units. Signs follow what the
  content does on screen, as the 2D keys do: translation_x > 0 moves it right, translation_y > 0
  down, translation_z > 0 brings it closer (the camera moves forward), rotation_3d_x > 0 moves it
  down, rotation_3d_y > 0 right, rotation_3d_z > 0 turns it counter-clockwise;
- depth: the depth model's relative inverse depth (disparity) normalised to 0..1 over the frame
  and mapped to depth units between `near` and `far`, z = 1 / (1/far + d (1/near - 1/far))
  (the nearest pixel at `near`, the farthest at `far`; a flat estimate puts everything at the
  middle disparity).

`warp(image, depth, M, fov, border)` resamples the image as the camera moved by M sees it, once,
bilinearly. Each output pixel o looks along its ray; the point it shows is taken at the depth the
source pixel o has after the move (the source's depth at o, carried by M: exact for a flat
depth), mapped back by M^-1 into the source camera and projected there. For a flat depth, a move
forward by d is a 2D zoom by z / (z - d) and a roll is a 2D rotation (tests/engines/
test_camera3d.py); nearer points move more than far ones (parallax).
"""

from __future__ import annotations

import math
from typing import Any

TRANSLATION_SCALE = 1.0 / 200.0  # Deforum's: a 3D translation of 1 moves the camera 1/200 unit
Move3D = tuple[float, float, float, float, float, float]  # tx, ty, tz, rx, ry, rz (degrees)
STILL: Move3D = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def frame_move(frame: Any) -> Move3D:
    """A FramePlan's 3D move."""
    return (frame.translation_x, frame.translation_y, frame.translation_z,
            frame.rotation_3d_x, frame.rotation_3d_y, frame.rotation_3d_z)


def rigid(move: Move3D) -> Any:
    """The 4x4 float64 matrix of one move (previous camera -> new camera coordinates)."""
    import torch

    tx, ty, tz, rx, ry, rz = move
    ax, ay, az = (math.radians(v) for v in (rx, ry, rz))
    cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                              math.cos(az), math.sin(az))
    rot_x = torch.tensor([[1, 0, 0], [0, cx, sx], [0, -sx, cx]], dtype=torch.float64)
    rot_y = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]], dtype=torch.float64)
    rot_z = torch.tensor([[cz, sz, 0], [-sz, cz, 0], [0, 0, 1]], dtype=torch.float64)
    m = torch.eye(4, dtype=torch.float64)
    m[:3, :3] = rot_z @ rot_y @ rot_x
    m[:3, 3] = torch.tensor([tx, ty, -tz], dtype=torch.float64) * TRANSLATION_SCALE
    return m


def compose(moves: list[Move3D]) -> Any:
    """One 4x4 matrix equal to applying `moves` in order (the first one first)."""
    import torch

    m = torch.eye(4, dtype=torch.float64)
    for mv in moves:
        m = rigid(mv) @ m
    return m


def inverse(moves: list[Move3D]) -> Any:
    """The matrix that undoes `moves` applied in order."""
    import torch

    return torch.linalg.inv(compose(moves))


def depth_units(disparity: Any, near: float, far: float) -> Any:
    """Relative inverse depth [H, W] (any scale) -> depth between near and far (float64)."""
    d = disparity.double()
    lo, hi = d.min(), d.max()
    d = (d - lo) / (hi - lo) if float(hi - lo) > 1e-12 else d.new_full(d.shape, 0.5)
    return 1.0 / (1.0 / far + d * (1.0 / near - 1.0 / far))


def focal(width: int, fov: float) -> float:
    return (width / 2.0) / math.tan(math.radians(fov) / 2.0)


def warp(image: Any, depth: Any, m: Any, fov: float, border: str = "reflect") -> Any:
    """`image` [1, 3, H, W] float (the source frame) as the camera moved by `m` (4x4, source
    camera -> new camera) sees it; `depth` [H, W]: the source frame's depth in depth units."""
    import torch

    from engines.planning.motion import sample

    _, _, h, w = image.shape
    if torch.equal(m, torch.eye(4, dtype=m.dtype)):
        return image
    dev = image.device
    f, cx, cy = focal(w, fov), float(w // 2), float(h // 2)
    m = m.to(dev, torch.float64)
    ys, xs = torch.meshgrid(torch.arange(h, device=dev, dtype=torch.float64),
                            torch.arange(w, device=dev, dtype=torch.float64), indexing="ij")
    ray = torch.stack([(xs - cx) / f, (ys - cy) / f, torch.ones_like(xs)])  # [3, H, W], z = 1
    z_src = depth.to(dev, torch.float64)
    z_new = (m[2, :3, None, None] * ray * z_src).sum(0) + m[2, 3]  # the source point's new depth
    z_new = z_new.clamp_min(1e-6)
    inv = torch.linalg.inv(m)
    p = (inv[:3, :3] @ (ray * z_new).reshape(3, -1)).reshape(3, h, w) + inv[:3, 3, None, None]
    z = p[2].clamp_min(1e-6)
    return sample(image, p[0] / z * f + cx, p[1] / z * f + cy, border)
