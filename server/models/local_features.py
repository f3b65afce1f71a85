"""Local features for geometric verification: ORB keypoints and binary descriptors (OpenCV).

An embedding says two regions look alike; it cannot tell a copy from another drawing in the same style, or one
app's screenshot from another with the same chrome. A copy, cropped, scaled, rotated or mirrored, keeps many small
patches in the same arrangement; a look-alike does not. So every frame also gets ORB keypoints, for verifying a
candidate by matching them and fitting one affine transform (`server.matching.verify`).
ORB's strongest corners crowd onto text: a caption bar or a page's UI would take most of them and leave the
picture itself with none (a caption in Hangul holds thousands of corners). So ORB finds many more than are kept,
and they are kept spread over a grid of cells, the strongest of each cell first; only the kept are described.

Keypoints are in units of a frame scaled to `LOCAL_SIDE` on its long side, so the two frames of a pair are
compared at one scale whatever their resolution, and aspect ratios stay true. Each frame is also described
mirrored (`local_mirrored`): ORB is rotation-invariant but not mirror-invariant, and mirrored copies are common.
Only the query side uses those rows; stored media keeps its unmirrored rows.
Given boxes, each box's crop is described as a frame of its own: a picture pasted small into a page holds few
of a frame's keypoints, and those at a coarser scale than the reference's, so verification looks closer there.

ORB (OpenCV, Apache-2.0) has no learned weights: nothing to license or download.
"""

from __future__ import annotations

import cv2
import numpy as np

from server.config import Settings
from server.models.image_embed import given_crops

LOCAL_SIDE = 640  # keypoint units: the frame scaled to this long side (also where ORB runs: cheap, and enough)
ORB_EDGE = 15  # pixels at the border ORB leaves out (its patch would fall outside the frame)
ORB_FEATURES = 600  # kept per frame and side: bounds the cost of storing and matching them
ORB_CANDIDATES = 5000  # found before the spread over the grid: text alone can hold thousands of corners
GRID = 6  # cells per side over which the kept keypoints are spread


def spread(points: np.ndarray, width: int, height: int, count: int) -> np.ndarray:
    """Indices of at most `count` keypoints taken round-robin over a GRID x GRID grid: every cell's strongest,
    then every cell's second strongest, and so on."""
    if len(points) <= count:
        return np.arange(len(points))
    column = np.minimum((points[:, 0] * GRID / max(width, 1)).astype(np.int64), GRID - 1)
    row = np.minimum((points[:, 1] * GRID / max(height, 1)).astype(np.int64), GRID - 1)
    cell = row * GRID + column
    order = np.lexsort((-points[:, 3], cell))  # by cell, strongest first within a cell
    ranked = cell[order]
    starts = np.searchsorted(ranked, ranked, side="left")
    rank_in_cell = np.arange(len(order)) - starts
    chosen = order[np.lexsort((-points[order, 3], rank_in_cell))[:count]]
    return np.sort(chosen)


class LocalFeaturesModel:
    def __init__(self, settings: Settings) -> None:
        self.orb = cv2.ORB_create(nfeatures=ORB_CANDIDATES, scaleFactor=1.2, nlevels=8, edgeThreshold=ORB_EDGE,
                                  patchSize=31, fastThreshold=10)

    def describe(self, grey: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[P, 4] (x, y, size, response) and [P, 32] uint8 descriptors of one grey frame."""
        found = self.orb.detect(grey, None)
        if not found:
            return np.zeros((0, 4), np.float32), np.zeros((0, 32), np.uint8)
        points = np.array([(k.pt[0], k.pt[1], k.size, k.response) for k in found], np.float32)
        kept = [found[i] for i in spread(points, grey.shape[1], grey.shape[0], ORB_FEATURES)]
        keypoints, descriptors = self.orb.compute(grey, kept)  # only the kept: describing is the dear part
        if descriptors is None or not keypoints:
            return np.zeros((0, 4), np.float32), np.zeros((0, 32), np.uint8)
        points = np.array([(k.pt[0], k.pt[1], k.size, k.response) for k in keypoints], np.float32)
        return points, descriptors.astype(np.uint8)

    def __call__(self, frames: np.ndarray, boxes: np.ndarray | None = None,
                 box_frame: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every frame's keypoints (`local_frame` names the frame); or, given `boxes` (fractions of the frame,
        [N, 4]) with the frame each is of (`box_frame`, [N]), the keypoints of each box's crop, scaled on its own
        to LOCAL_SIDE (`local_frame` names the box): a closer look at a small matched region, for verification."""
        pictures: list[tuple[int, np.ndarray]] = list(enumerate(frames))
        if boxes is not None or box_frame is not None:
            crops, kept = given_crops("local_features", frames, boxes, box_frame)
            pictures = [(n, np.ascontiguousarray(crop)) for n, crop in zip(kept, crops, strict=True)]
        points, descriptors, owners, mirrored = [], [], [], []
        for index, frame in pictures:
            height, width = frame.shape[:2]
            scale = LOCAL_SIDE / max(height, width, 1)
            grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
            if scale != 1.0:
                size = (max(1, round(width * scale)), max(1, round(height * scale)))
                grey = cv2.resize(grey, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
            for flipped in (False, True):
                found, described = self.describe(cv2.flip(grey, 1) if flipped else grey)
                points.append(found)
                descriptors.append(described)
                owners.append(np.full(len(found), index, np.int32))
                mirrored.append(np.full(len(found), flipped, bool))
        if not points:
            return {"local_keypoints": np.zeros((0, 4), np.float32), "local_descriptors": np.zeros((0, 32), np.uint8),
                    "local_frame": np.zeros(0, np.int32), "local_mirrored": np.zeros(0, bool)}
        return {"local_keypoints": np.concatenate(points), "local_descriptors": np.concatenate(descriptors),
                "local_frame": np.concatenate(owners), "local_mirrored": np.concatenate(mirrored)}
