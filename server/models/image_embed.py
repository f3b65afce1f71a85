"""Copy-detection embedding (SSCD) of each frame and of regions of it.

A re-upload is often the reference pasted small into a page, a collage or a screenshot, or framed by borders and
caption bars. So each frame is embedded as: the whole frame with uniform borders trimmed; the content blocks that
stand out from the page background (a photo pasted into a page or a screenshot); then a grid of windows of half
the side (stride a quarter) for content on a busy background. The reference side embeds the same way; matching
takes the best pair.
"""

from __future__ import annotations

import cv2
import numpy as np

from jiwoom.api.errors import InvalidInput
from server.config import ModelSettings, Settings
from server.models.onnx_session import open_network
from server.models.versions import EmbedderConfig, resolve_model_path

BORDER_TOLERANCE = 12.0  # grey levels: a border row/column is flat within this
MIN_TRIMMED_FRACTION = 0.3  # never trim away more than 70 % of a side: then it was content, not a border


def _flat_run(profile: np.ndarray, reference: np.ndarray) -> int:
    """How many leading rows of `profile` ([n, w, 3]) stay within tolerance of `reference` colour."""
    deviation = np.abs(profile.astype(np.int16) - reference.astype(np.int16)).max(axis=(1, 2))
    over = np.nonzero(deviation > BORDER_TOLERANCE)[0]
    return int(over[0]) if len(over) else len(profile)


def trim_borders(frame: np.ndarray) -> tuple[int, int, int, int]:
    """Box (x0, y0, x1, y1) without flat borders, letterboxes and pillarboxes of any single colour."""
    height, width = frame.shape[:2]
    top = _flat_run(frame, frame[0, width // 2])
    bottom = height - _flat_run(frame[::-1], frame[-1, width // 2])
    left = _flat_run(frame.transpose(1, 0, 2), frame[height // 2, 0])
    right = width - _flat_run(frame.transpose(1, 0, 2)[::-1], frame[height // 2, -1])
    if bottom - top < MIN_TRIMMED_FRACTION * height or right - left < MIN_TRIMMED_FRACTION * width:
        return 0, 0, width, height
    return left, top, right, bottom


CONTENT_ANALYSIS_SIDE = 256  # content blocks are found on a thumbnail: cheap, and fine enough for boxes
BACKGROUND_TOLERANCE = 24  # grey levels from the page colour that still count as page
MIN_BLOCK_AREA = 0.04  # a block smaller than this share of the frame is not worth an embedding
MAX_BLOCK_AREA = 0.8  # a block this large is the whole frame again
MIN_BLOCK_FILL = 0.6  # share of the block's box it fills: photos are solid, scattered text is not
MAX_BLOCKS = 3


def content_boxes(frame: np.ndarray) -> list[tuple[float, float, float, float]]:
    """Boxes of solid blocks that differ from the page colour (the most common colour on the frame's edge)."""
    height, width = frame.shape[:2]
    scale = CONTENT_ANALYSIS_SIDE / max(height, width)
    small = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                       interpolation=cv2.INTER_AREA)
    edge = np.concatenate([small[0], small[-1], small[:, 0], small[:, -1]]).astype(np.int16)
    colours, counts = np.unique(edge // 8, axis=0, return_counts=True)
    page = colours[counts.argmax()] * 8 + 4
    mask = (np.abs(small.astype(np.int16) - page).max(axis=2) > BACKGROUND_TOLERANCE).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))  # drop thin text strokes
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    area = float(mask.shape[0] * mask.shape[1])
    blocks = []
    for left, top, w, h, filled in stats[1:count]:
        if MIN_BLOCK_AREA <= w * h / area <= MAX_BLOCK_AREA and filled >= MIN_BLOCK_FILL * w * h:
            blocks.append((w * h, (left / scale, top / scale, (left + w) / scale, (top + h) / scale)))
    blocks.sort(reverse=True)
    return [box for _, box in blocks[:MAX_BLOCKS]]


def region_boxes(frame: np.ndarray, grid: int) -> np.ndarray:
    """[R, 4] boxes in pixels: the trimmed whole frame, content blocks, then grid x grid half-side windows."""
    x0, y0, x1, y1 = trim_borders(frame)
    boxes: list[tuple[float, float, float, float]] = [(x0, y0, x1, y1)]
    boxes += content_boxes(frame)
    if grid >= 2:
        width, height = x1 - x0, y1 - y0
        window_w, window_h = width / 2, height / 2
        for gy in range(grid):
            for gx in range(grid):
                left = x0 + gx * (width - window_w) / (grid - 1)
                top = y0 + gy * (height - window_h) / (grid - 1)
                boxes.append((left, top, left + window_w, top + window_h))
    return np.asarray(boxes, dtype=np.float32)


def given_crops(model: str, frames: np.ndarray, boxes: np.ndarray | None, box_frame: np.ndarray | None
                ) -> tuple[list[np.ndarray], list[int]]:
    """The crops of `boxes` (fractions of the frame, [N, 4]) of the frames `box_frame` names ([N]), checked as
    input from outside, and the positions of the boxes that were not empty."""
    if boxes is None or box_frame is None or len(boxes) != len(box_frame):
        raise InvalidInput(f"{model}: boxes and box_frame go together, one frame index per box")
    if len(box_frame) and (box_frame.min() < 0 or box_frame.max() >= len(frames)):
        raise InvalidInput(f"{model}: box_frame must index the {len(frames)} frames")
    if len(boxes) and not (np.isfinite(boxes).all() and (boxes >= 0).all() and (boxes <= 1).all()):
        raise InvalidInput(f"{model}: boxes must be fractions of the frame, in [0, 1]")
    crops, kept = [], []
    for n, (box, index) in enumerate(zip(boxes, box_frame.tolist(), strict=True)):
        height, width = frames[index].shape[:2]
        x0, y0, x1, y1 = (box * np.array([width, height, width, height], np.float32)).round().astype(int)
        crop = frames[index][y0:y1, x0:x1]
        if crop.size:
            crops.append(crop)
            kept.append(n)
    return crops, kept


# Regions flatter than this (mean absolute grey-level step on a 64x64 thumbnail) are not embedded: a blank or
# flat-colour window embeds the same whatever image it came from, so it matched unrelated media at cosine up to
# 1.0 (bench/accuracy.py on the full corpus). Photos measure 15-40, flat vector art 3-10, blank 0-2.
MIN_REGION_DETAIL = 3.0


def region_detail(crop: np.ndarray) -> float:
    grey = cv2.cvtColor(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2GRAY)
    grey = grey.astype(np.float32)
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


class ImageEmbedModel:
    """The full copy-detection embedding (`ModelSettings.embed_*`): the `embedding` signal."""

    @staticmethod
    def embedder(models: ModelSettings) -> EmbedderConfig:
        return EmbedderConfig.full(models)

    def __init__(self, settings: Settings) -> None:
        config = settings.models
        embedder = self.embedder(config)
        self.size = embedder.size
        self.grid = embedder.grid
        # Crops per network call: a capped video holds thousands of regions, and one batch of all of them would
        # need gigabytes of input and activations; 32 keeps each call's memory small at no measurable CPU cost.
        self.batch = max(1, config.embed_batch)
        self.network = open_network(resolve_model_path(embedder.model), config, self.batch)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        """The embedding's width, from the network itself (some exports leave it symbolic)."""
        if self._dim is None:
            self._dim = int(self.network(np.zeros((1, self.size, self.size, 3), np.uint8)).shape[1])
        return self._dim

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        """Square-resize each RGB crop to the model's side and embed them, a batch at a time."""
        if not crops:
            return np.zeros((0, self.dim), np.float32)
        chunks = []
        for start in range(0, len(crops), self.batch):
            batch = np.stack([cv2.resize(c, (self.size, self.size), interpolation=cv2.INTER_AREA)
                              for c in crops[start:start + self.batch]])
            chunks.append(self.network(batch))
        return np.concatenate(chunks)

    def __call__(self, frames: np.ndarray, boxes: np.ndarray | None = None,
                 box_frame: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Every region of every frame; or, given `boxes` (fractions of the frame, [N, 4]) with the frame each is
        of (`box_frame`, [N]), only those (the cascade's second stage embeds only the regions its screen
        flagged)."""
        if boxes is not None or box_frame is not None:
            return self._given(frames, boxes, box_frame)
        crops: list[np.ndarray] = []
        boxes: list[np.ndarray] = []
        owners: list[int] = []
        for index, frame in enumerate(frames):
            height, width = frame.shape[:2]
            frame_boxes = region_boxes(frame, self.grid)
            kept = []
            for x0, y0, x1, y1 in frame_boxes.round().astype(int):
                crop = frame[y0:y1, x0:x1]
                kept.append(crop.size > 0 and region_detail(crop) >= MIN_REGION_DETAIL)
                if kept[-1]:
                    crops.append(crop)
            frame_boxes = frame_boxes[np.asarray(kept, bool)]
            boxes.append(frame_boxes / np.array([width, height, width, height], np.float32))
            owners += [index] * len(frame_boxes)
        return {
            "embeddings": self.embed_crops(crops),
            "region_boxes": np.concatenate(boxes) if boxes else np.zeros((0, 4), np.float32),
            "region_frame": np.asarray(owners, np.int32),
        }


    def _given(self, frames: np.ndarray, boxes: np.ndarray | None, box_frame: np.ndarray | None
               ) -> dict[str, np.ndarray]:
        # the screen's boxes passed region_detail already: the same regions, the same frames
        crops, kept = given_crops("image_embed", frames, boxes, box_frame)
        assert boxes is not None and box_frame is not None
        return {"embeddings": self.embed_crops(crops), "region_boxes": boxes[kept].astype(np.float32),
                "region_frame": box_frame[kept].astype(np.int32)}


class FastImageEmbedModel(ImageEmbedModel):
    """The distilled embedding (`ModelSettings.fast_embed_*`), same regions: the `embedding_fast` signal."""

    @staticmethod
    def embedder(models: ModelSettings) -> EmbedderConfig:
        return EmbedderConfig.fast(models)
