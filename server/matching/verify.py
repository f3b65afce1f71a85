"""Geometric verification of a candidate match: do the two frames share many small patches in one arrangement?

An embedding says two regions look alike; so do two drawings in one style, two app screenshots with the same
chrome, or two photographs of sky. A copy, cropped, scaled, rotated, stretched, captioned or mirrored, keeps its
patches where an affine map puts them. So: ORB descriptors of the query (inside the region that matched, where
the region is known) are matched to the candidate's by Hamming distance with Lowe's ratio test, and RANSAC fits
one affine map to the matched points. A candidate is *verified* when enough matches agree with the map and they
cover the part of the candidate the map says is visible; shared chrome, a logo or a caption bar agree over a
small part only. Mirrored copies are tried with the query's mirrored keypoints.

A picture pasted small into a page or a screenshot holds few of the frame's keypoints, and those at a coarser
scale than the reference's: a true copy there matched a dozen keypoints and was rejected. So where the matched box
is a small part of the frame and the frame's keypoints do not verify, the caller's `zoom` gives keypoints of the
box's crop scaled on its own (`server.models.local_features`), and the pair is verified again on those.

Pure code over `server.inference.features.LocalFeatures` (OpenCV for the matcher and RANSAC; no models, no I/O).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum

import cv2
import numpy as np

from server.inference.features import LocalFeatures
from server.models.local_features import LOCAL_SIDE

RATIO = 0.8  # Lowe's ratio test: the best match clearly better than the second
RANSAC_PIXELS = 8.0  # reprojection error in keypoint units (the frame at 640 px on its long side)
MIN_KEYPOINTS = 24  # fewer on either side: too little texture to tell (unverifiable, not rejected)
# Verified: at least MIN_INLIERS matches agree with one map and cover MIN_COVERAGE of the textured, visible cells,
# or, where a small paste leaves few keypoints, FEW_INLIERS agree and cover WIDE_COVERAGE.
MIN_INLIERS = 24
MIN_COVERAGE = 0.3
FEW_INLIERS = 16
WIDE_COVERAGE = 0.5
COVERAGE_GRID = 8  # cells per side over the candidate frame
BOX_MARGIN = 0.05  # query keypoints are taken from the matched box grown by this fraction of the frame
MAX_SCALE = 8.0  # the map may shrink or grow the picture by at most this much, and stretch it by MAX_STRETCH
MAX_STRETCH = 3.0
ZOOM_BELOW = 0.6  # a matched box under this share of the frame's area gets the closer look when it fails

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the frame
# Keypoints of a box's crop (fractions of the query frame) and the crop's size in keypoint units, or None
Zoom = Callable[[Box], "tuple[LocalFeatures, tuple[float, float]] | None"]


class Outcome(StrEnum):
    VERIFIED = "verified"
    REJECTED = "rejected"
    UNVERIFIABLE = "unverifiable"  # too few keypoints on one side: flat, blurred or tiny


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    inliers: int = 0
    coverage: float = 0.0
    mirrored: bool = False
    zoomed: bool = False  # decided on the keypoints of the matched box's crop


def local_size(frame_size: tuple[int, int]) -> tuple[float, float]:
    """(width, height) of a frame in keypoint units, from its working (height, width)."""
    height, width = frame_size
    scale = LOCAL_SIDE / max(height, width, 1)
    return width * scale, height * scale


def verify(query: LocalFeatures, query_size: tuple[float, float], target: LocalFeatures,
           target_size: tuple[float, float], query_box: Box | None = None, zoom: Zoom | None = None) -> Verdict:
    """Verify one (query frame, candidate frame) pair. Sizes are (width, height) in keypoint units; `query_box`
    (fractions of the query frame) limits the query's keypoints to the region that matched; `zoom`, where the
    box is small and that does not verify, gives the box crop's own keypoints to verify again on."""
    verdict = _frames(query, query_size, target, target_size, query_box)
    if verdict.outcome is Outcome.VERIFIED or zoom is None or query_box is None:
        return verdict
    x0, y0, x1, y1 = query_box
    if (x1 - x0) * (y1 - y0) >= ZOOM_BELOW:
        return verdict
    closer = zoom(grown(query_box))
    if closer is None:
        return verdict
    zoomed = replace(_frames(closer[0], closer[1], target, target_size, None), zoomed=True)
    return zoomed if _better(zoomed, verdict) else verdict


class Zooms:
    """The closer look at one query's small matched boxes: each box's crop described once (several candidates
    often matched the same region). `frames` gives the query's decoded frames when first needed (None: there
    are none to look at); `describe` is `Inference.local_of_regions`."""

    def __init__(self, frames: Callable[[], np.ndarray | None],
                 describe: Callable[[np.ndarray, np.ndarray, np.ndarray], list[LocalFeatures]]) -> None:
        self.frames, self.describe = frames, describe
        self.crops: dict[tuple[int, Box], tuple[LocalFeatures, tuple[float, float]] | None] = {}

    def of(self, frame: int) -> Zoom:
        def closer(box: Box) -> tuple[LocalFeatures, tuple[float, float]] | None:
            if (frame, box) not in self.crops:
                self.crops[(frame, box)] = self._crop(frame, box)
            return self.crops[(frame, box)]
        return closer

    def _crop(self, frame: int, box: Box) -> tuple[LocalFeatures, tuple[float, float]] | None:
        frames = self.frames()
        if frames is None or not 0 <= frame < len(frames):
            return None
        local = self.describe(frames, np.array([box], np.float32), np.array([frame], np.int32))[0]
        height, width = frames[frame].shape[:2]
        size = local_size((round((box[3] - box[1]) * height), round((box[2] - box[0]) * width)))
        return (local, size) if len(local) else None


def grown(box: Box) -> Box:
    """The matched box grown by BOX_MARGIN of the frame on every side, within the frame."""
    x0, y0, x1, y1 = box
    return (max(0.0, x0 - BOX_MARGIN), max(0.0, y0 - BOX_MARGIN), min(1.0, x1 + BOX_MARGIN),
            min(1.0, y1 + BOX_MARGIN))


def _frames(query: LocalFeatures, query_size: tuple[float, float], target: LocalFeatures,
            target_size: tuple[float, float], query_box: Box | None) -> Verdict:
    stored = target.side(False)
    if len(stored) < MIN_KEYPOINTS:
        return Verdict(Outcome.UNVERIFIABLE)
    best = Verdict(Outcome.UNVERIFIABLE)
    for mirrored in (False, True):
        side = query.side(mirrored)
        points, area = _inside(side, query_size, query_box, mirrored)
        if len(points) < MIN_KEYPOINTS:
            continue
        verdict = _pair(points, area, stored, target_size, mirrored)
        if best.outcome is Outcome.UNVERIFIABLE or _better(verdict, best):
            best = verdict
        if best.outcome is Outcome.VERIFIED:
            break
    return best


def strength(verdict: Verdict) -> tuple[int, int]:
    """How strongly a verdict supports the match: verified over rejected over unverifiable, then inliers."""
    return {Outcome.VERIFIED: 2, Outcome.REJECTED: 1, Outcome.UNVERIFIABLE: 0}[verdict.outcome], verdict.inliers


def _better(a: Verdict, b: Verdict) -> bool:
    return strength(a) > strength(b)


Area = tuple[float, float, float, float]  # x0, y0, x1, y1 in keypoint units


def _inside(side: LocalFeatures, size: tuple[float, float], box: Box | None,
            mirrored: bool) -> tuple[LocalFeatures, Area]:
    """The query keypoints inside the matched box (grown by BOX_MARGIN), and that area in keypoint units."""
    width, height = size
    if box is None:
        return side, (0.0, 0.0, width, height)
    x0, y0, x1, y1 = grown(box)
    if mirrored:  # mirrored keypoints count x from the mirrored frame's left edge
        x0, x1 = 1.0 - x1, 1.0 - x0
    x0, y0, x1, y1 = x0 * width, y0 * height, x1 * width, y1 * height
    x, y = side.keypoints[:, 0], side.keypoints[:, 1]
    keep = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1)
    return LocalFeatures(side.keypoints[keep], side.descriptors[keep], side.mirrored[keep]), (x0, y0, x1, y1)


def _pair(query: LocalFeatures, area: Area, target: LocalFeatures,
          target_size: tuple[float, float], mirrored: bool) -> Verdict:
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    pairs = matcher.knnMatch(query.descriptors, target.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance]
    if len(good) < FEW_INLIERS:
        return Verdict(Outcome.REJECTED, len(good), 0.0, mirrored)
    source = query.keypoints[[m.queryIdx for m in good], :2].astype(np.float32)
    destination = target.keypoints[[m.trainIdx for m in good], :2].astype(np.float32)
    affine, mask = cv2.estimateAffine2D(source, destination, method=cv2.RANSAC,
                                        ransacReprojThreshold=RANSAC_PIXELS, maxIters=2000, confidence=0.995)
    if affine is None or mask is None or not _plausible(affine):
        return Verdict(Outcome.REJECTED, 0, 0.0, mirrored)
    inlier = mask.ravel().astype(bool)
    # Coverage is read on the sparser side: a picture pasted small into a page has few keypoints, and those
    # bound how many cells of the full-size candidate can hold a match.
    whole: Area = (0.0, 0.0, *target_size)
    if len(query) < len(target):
        coverage = _coverage(query.keypoints[:, :2], source[inlier], area, affine.astype(np.float64), whole)
    else:
        inverse = cv2.invertAffineTransform(affine.astype(np.float64))
        coverage = _coverage(target.keypoints[:, :2], destination[inlier], whole, inverse, area)
    agreeing = int(inlier.sum())
    passed = ((agreeing >= MIN_INLIERS and coverage >= MIN_COVERAGE)
              or (agreeing >= FEW_INLIERS and coverage >= WIDE_COVERAGE))
    return Verdict(Outcome.VERIFIED if passed else Outcome.REJECTED, agreeing, coverage, mirrored)


def _plausible(affine: np.ndarray) -> bool:
    """A copy's map keeps orientation (mirrors are tried separately) and changes scale within bounds."""
    linear = affine[:, :2]
    if np.linalg.det(linear) <= 0:
        return False
    singular = np.linalg.svd(linear, compute_uv=False)
    smallest, largest = singular[1], singular[0]
    return bool(smallest >= 1 / MAX_SCALE and largest <= MAX_SCALE and largest / smallest <= MAX_STRETCH)


def _coverage(points: np.ndarray, inliers: np.ndarray, rect: Area, to_other: np.ndarray, other: Area) -> float:
    """On one side of a pair: the share of the cells of `rect` that hold keypoints (`points`) and that the map
    `to_other` puts inside the other side's `other` rect, that also hold an inlier."""
    x0, y0, x1, y1 = rect
    width, height = max(x1 - x0, 1e-6), max(y1 - y0, 1e-6)

    def cells(at: np.ndarray) -> np.ndarray:
        column = np.clip(((at[:, 0] - x0) * COVERAGE_GRID / width).astype(np.int64), 0, COVERAGE_GRID - 1)
        row = np.clip(((at[:, 1] - y0) * COVERAGE_GRID / height).astype(np.int64), 0, COVERAGE_GRID - 1)
        return row * COVERAGE_GRID + column

    textured, counts = np.unique(cells(points), return_counts=True)
    textured = textured[counts >= 2]
    centres = np.stack([x0 + (textured % COVERAGE_GRID + 0.5) * width / COVERAGE_GRID,
                        y0 + (textured // COVERAGE_GRID + 0.5) * height / COVERAGE_GRID], axis=1)
    mapped = centres @ to_other[:, :2].T + to_other[:, 2]
    ox0, oy0, ox1, oy1 = other
    inside = (mapped[:, 0] >= ox0) & (mapped[:, 0] <= ox1) & (mapped[:, 1] >= oy0) & (mapped[:, 1] <= oy1)
    visible = textured[inside]
    if not len(visible):
        return 0.0
    return float(np.isin(visible, cells(inliers)).mean())
