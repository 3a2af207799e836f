"""The sample input videos of the presets `pose_dance` and `restyle` (conf/film/), generated
here so that anyone can make them again: `python -m samples.make_samples`.

- `pose_dance.mp4`: pose maps of a dancing figure, drawn in the OpenPose convention that
  OpenPose ControlNets were trained on (18 COCO keypoints, limbs in the colours of OpenPose's
  renderer; see the OpenPose README, https://github.com/CMU-Perceptual-Computing-Lab/openpose,
  and ControlNet's annotator, https://github.com/lllyasviel/ControlNet): the kind of maps a pose
  detector gives, used as they are (`engine.control: maps`).
- `restyle.mp4`: a simple scene (a kite drifting over fields under a sky) to restyle.

The tests call the same functions for small videos of their own.
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (keypoint a, keypoint b) per limb, COCO-18 order: 0 nose, 1 neck, 2-4 right arm, 5-7 left arm,
# 8-10 right leg, 11-13 left leg, 14-17 eyes and ears
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
         (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
# one colour per keypoint/limb, stepping round the hue circle from red (OpenPose's renderer)
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
           (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
           (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


def keypoints(t: float) -> list[tuple[float, float]]:
    """The 18 keypoints (x, y in 0..1) of the dancer at phase t (radians): arms wave, hips sway."""
    s, c = math.sin(t), math.cos(t)
    sway = 0.04 * s
    neck = (0.5 + sway, 0.28)
    nose = (neck[0], 0.2)
    r_sh, l_sh = (neck[0] - 0.1, 0.29), (neck[0] + 0.1, 0.29)
    r_el = (r_sh[0] - 0.08, 0.38 - 0.12 * s)
    r_wr = (r_el[0] - 0.04, 0.3 - 0.2 * s)
    l_el = (l_sh[0] + 0.08, 0.38 + 0.12 * s)
    l_wr = (l_el[0] + 0.04, 0.3 + 0.2 * s)
    r_hip, l_hip = (0.5 - 0.07 + 2 * sway, 0.56), (0.5 + 0.07 + 2 * sway, 0.56)
    r_kn = (r_hip[0] - 0.03 - 0.04 * c, 0.72)
    l_kn = (l_hip[0] + 0.03 - 0.04 * c, 0.72)
    r_an, l_an = (r_kn[0] - 0.01, 0.88), (l_kn[0] + 0.01, 0.88)
    eyes = ((nose[0] - 0.02, 0.185), (nose[0] + 0.02, 0.185))
    ears = ((nose[0] - 0.045, 0.195), (nose[0] + 0.045, 0.195))
    return [nose, neck, r_sh, r_el, r_wr, l_sh, l_el, l_wr, r_hip, r_kn, r_an, l_hip, l_kn, l_an,
            eyes[0], eyes[1], ears[0], ears[1]]


def pose_frames(n: int, width: int = 512, height: int = 512) -> list:
    """uint8 RGB pose maps of a dancing figure on black, one per frame (a full wave per 16)."""
    import cv2
    import numpy as np

    out = []
    scale = min(width, height) / 512
    for i in range(n):
        pts = [(int(x * width), int(y * height)) for x, y in keypoints(2 * math.pi * i / 16)]
        img = np.zeros((height, width, 3), np.uint8)
        for k, (a, b) in enumerate(LIMBS):
            colour = tuple(int(v * 0.6) for v in COLOURS[k])
            cv2.line(img, pts[a], pts[b], colour, max(1, round(8 * scale)), cv2.LINE_AA)
        for k, p in enumerate(pts):
            cv2.circle(img, p, max(1, round(4 * scale)), COLOURS[k], -1, cv2.LINE_AA)
        out.append(img)
    return out


def scene_frames(n: int, width: int = 512, height: int = 512) -> list:
    """uint8 RGB frames of a red kite drifting right over striped fields under a blue sky."""
    import cv2
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    sky = np.stack([120 + 60 * yy / height, 170 + 40 * yy / height, np.full_like(yy, 235.0)], 2)
    field = np.stack([70 + 30 * ((xx + 2 * yy) // max(1, width // 8) % 2), 150 + 0 * xx, 60 + 0 * xx], 2)
    base = np.where((yy > 0.65 * height)[..., None], field, sky).astype(np.uint8)
    out = []
    for i in range(n):
        img = base.copy()
        cx, cy = int(width * (0.3 + 0.02 * i)), int(height * (0.35 + 0.02 * math.sin(i / 2)))
        r = max(2, width // 12)
        kite = np.array([(cx, cy - r), (cx + r // 2, cy), (cx, cy + r), (cx - r // 2, cy)], np.int32)
        cv2.fillPoly(img, [kite], (220, 40, 50), cv2.LINE_AA)
        cv2.line(img, (cx, cy + r), (cx - r, height - 1), (60, 60, 60), 1, cv2.LINE_AA)
        out.append(img)
    return out


def write_mp4(frames: list, path: Path, fps: float = 8.0) -> Path:
    """An H.264 mp4 (lossless, yuv444p) of the frames, with the bundled ffmpeg."""
    from PIL import Image

    from engines.media.ffmpeg import ffmpeg_exe

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for i, f in enumerate(frames):
            Image.fromarray(f).save(Path(tmp) / f"{i:06d}.png")
        subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", "-framerate",
                        str(fps), "-i", str(Path(tmp) / "%06d.png"), "-c:v", "libx264", "-qp",
                        "0", "-pix_fmt", "yuv444p", str(path)], check=True)
    return path


def main() -> None:
    write_mp4(pose_frames(16), HERE / "pose_dance.mp4")
    write_mp4(scene_frames(16), HERE / "restyle.mp4")


if __name__ == "__main__":
    main()
