"""A shot's input video, as pre-production extracted it (tasks/extract_video.py: PNG frames at
the film's fps and the shot's size, `plan.input_frames`), and the control maps made from it:

- `canny`: OpenCV's Canny edge detector on the grey frame (Canny 1986), thresholds in 0..255,
  white edges on black, three channels (the maps ControlNet's Canny models were trained on);
- `pose`: the person's keypoints found by a ViTPose model (engines/models/pose.py), drawn as
  OpenPose skeletons on black (engines/frames/sd/pose_maps.py);
- `maps`: the frames as they are: maps the user made (OpenPose skeletons drawn by any pose tool,
  depth, line art), one per frame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engines.core.errors import ConfigError

MAPS = ("canny", "pose", "maps")


def frame_files(folder: str | Path) -> list[Path]:
    return sorted(Path(folder).glob("*.png"))


def load_frames(plan: Any, indices: range | list[int] | None = None) -> list[Any]:
    """The input frames (uint8 H x W x 3) of `plan`, all or those at `indices`, at the plan's size."""
    import numpy as np
    from PIL import Image

    if not plan.input_frames:
        raise ConfigError(f"film.shots.{plan.name}.input_video", None,
                          "a video for this engine to follow")
    files = frame_files(plan.input_frames)
    out = []
    for i in indices if indices is not None else range(len(files)):
        with Image.open(files[i]) as im:
            im = im.convert("RGB")
            if im.size != (plan.width, plan.height):
                im = im.resize((plan.width, plan.height), Image.LANCZOS)
            out.append(np.asarray(im).copy())
    return out


def canny(frame: Any, low: int, high: int) -> Any:
    """Canny edges of a uint8 RGB frame, as a uint8 RGB map."""
    import cv2
    import numpy as np

    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    edges = cv2.Canny(grey, int(low), int(high))
    return np.repeat(edges[:, :, None], 3, axis=2)


def control_maps(frames: list[Any], kind: str, low: int = 100, high: int = 200,
                 pose: Any = None, pose_threshold: float = 0.3) -> list[Any]:
    """The ControlNet conditioning maps of the frames (uint8 RGB); `pose`: the pose model of
    kind `pose`."""
    if kind == "canny":
        return [canny(f, low, high) for f in frames]
    if kind == "pose":
        from engines.frames.sd.pose_maps import pose_map

        return [pose_map(pose, f, pose_threshold) for f in frames]
    return list(frames)


def as_tensor(frames: list[Any]) -> Any:
    """uint8 frames -> float32 [N, 3, H, W] in 0..1."""
    import numpy as np
    import torch

    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(torch.float32) / 255.0
