"""OpenPose-style pose maps from COCO keypoints: what ControlNet's OpenPose models were trained
to follow (Zhang et al. 2023, arXiv:2302.05543, conditioned on OpenPose's 18-keypoint body model,
Cao et al. 2017, arXiv:1611.08050), drawn from the 17 keypoints a COCO pose model finds.

The 18 keypoints are OpenPose's body order: nose, neck, right shoulder, elbow, wrist, left
shoulder, elbow, wrist, right hip, knee, ankle, left hip, knee, ankle, right eye, left eye,
right ear, left ear. The neck, which COCO lacks, is the middle of the shoulders. The 17 limbs are
drawn on black as coloured sticks, then each keypoint as a dot, in OpenPose's colour per limb and
per keypoint. A keypoint whose score is under the threshold is left out, with its limbs.
"""

from __future__ import annotations

from typing import Any

# OpenPose's order -> COCO's (nose 0, eyes 1-2, ears 3-4, shoulders 5-6, elbows 7-8, wrists 9-10,
# hips 11-12, knees 13-14, ankles 15-16; left before right). None: the neck (two shoulders).
FROM_COCO = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
LIMBS = ((1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11),
         (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17))
COLOURS = ((255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
           (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
           (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85))


def openpose_keypoints(coco: Any, scores: Any, threshold: float) -> list[tuple[float, float] | None]:
    """The 18 OpenPose keypoints (x, y) from 17 COCO ones, None where not found."""
    found = [tuple(map(float, coco[i])) if float(scores[i]) >= threshold else None
             for i in range(len(coco))]
    out: list[tuple[float, float] | None] = []
    for c in FROM_COCO:
        if c is not None:
            out.append(found[c])
        elif found[5] is not None and found[6] is not None:
            out.append(((found[5][0] + found[6][0]) / 2, (found[5][1] + found[6][1]) / 2))
        else:
            out.append(None)
    return out


def draw(points: list[tuple[float, float] | None], width: int, height: int) -> Any:
    """The pose map (uint8 H x W x 3 RGB): limbs, then keypoints, on black."""
    import cv2
    import numpy as np

    canvas = np.zeros((height, width, 3), np.uint8)
    stick = max(1, round(4 * max(width, height) / 512))  # OpenPose's 4 px at 512
    for k, (a, b) in enumerate(LIMBS):
        if points[a] is None or points[b] is None:
            continue
        pa = (round(points[a][0]), round(points[a][1]))
        pb = (round(points[b][0]), round(points[b][1]))
        cv2.line(canvas, pa, pb, tuple(int(v * 0.6) for v in COLOURS[k]), stick, cv2.LINE_AA)
    for k, p in enumerate(points):
        if p is not None:
            cv2.circle(canvas, (round(p[0]), round(p[1])), stick, COLOURS[k], -1, cv2.LINE_AA)
    return canvas


def pose_map(model: Any, frame: Any, threshold: float) -> Any:
    """The pose map of one uint8 RGB frame, keypoints found by `model` (engines/models/pose.py)."""
    keypoints, scores = model(frame)
    h, w = frame.shape[:2]
    return draw(openpose_keypoints(keypoints, scores, threshold), w, h)
