"""Match signals: one module each (pdq, embedding, face), one interface, one registry.

A signal turns a media item's features into rows of vectors (each row remembering the frame time and box it came
from), makes the index that holds them (of the backend `IndexSettings` names), searches it, and knows which way
its scores point. The matcher (`server.matching`) and the service only talk to this interface, so a new signal
plugs in here without touching them. Like python-threatexchange's `SignalType`, but over vectors rather than
strings: our signals live in indexes, not in exchange files (PDQ hashes still cross the API as hex, see
`server.models.pdq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from server.config import IndexSettings, MatchSettings
from server.features import MediaFeatures


@dataclass(frozen=True)
class SignalVectors:
    """One signal's rows for one media item."""

    vectors: np.ndarray  # [N, D] float32, or [N, 32] uint8 for PDQ
    timestamps: np.ndarray  # [N] float32: time of the frame each row came from
    boxes: np.ndarray  # [N, 4] float32: x0, y0, x1, y1 as fractions of the frame
    frames: np.ndarray  # [N] int32: index of the frame in the MediaFeatures (-1 when there is none)

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def empty(cls, dim: int, dtype: type = np.float32) -> SignalVectors:
        return cls(np.zeros((0, dim), dtype), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.int32))

    @classmethod
    def stack(cls, rows: list[tuple[np.ndarray, float, tuple[float, ...], int]], dim: int,
              dtype: type = np.float32) -> SignalVectors:
        if not rows:
            return cls.empty(dim, dtype)
        return cls(
            np.stack([r[0] for r in rows]).astype(dtype, copy=False),
            np.array([r[1] for r in rows], np.float32),
            np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
            np.array([r[3] for r in rows], np.int32),
        )


@dataclass(frozen=True)
class Hits:
    """Search results, one row per (query row, stored row) pair within the search threshold."""

    query_rows: np.ndarray  # int64
    owners: np.ndarray  # int64
    locals: np.ndarray  # int64: row within the owner's vectors
    scores: np.ndarray  # float32, in the signal's unit

    def __len__(self) -> int:
        return len(self.owners)

    @classmethod
    def empty(cls) -> Hits:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


class Signal(Protocol):
    name: str  # as stored in the database and in index snapshot names
    family: str  # the feature family (server.features.FAMILY_OUTPUTS) it needs
    dim: int
    binary: bool
    lower_is_closer: bool

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        """Rows to store for media that is searched for later (references, sightings, benign media)."""

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        """Rows to search with (PDQ adds its flipped and rotated variants here)."""

    def default_threshold(self, settings: MatchSettings) -> float: ...

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> object:
        """A fresh index for this signal's rows, or the one saved at `snapshot` (ValueError if unreadable, or of
        another backend than `settings` names)."""

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        """Every stored row within `threshold` of a query row (the loosest threshold any case uses)."""

    def passes(self, score: float, threshold: float) -> bool: ...


def _registry() -> dict[str, Signal]:
    from server.signals.embedding import EmbeddingSignal
    from server.signals.face import FaceSignal
    from server.signals.pdq import PdqSignal

    return {s.name: s for s in (PdqSignal(), EmbeddingSignal(), FaceSignal())}


SIGNALS: dict[str, Signal] = _registry()


def whole_frames(vectors: SignalVectors) -> SignalVectors:
    """The first row of each frame: for embeddings the border-trimmed whole frame (unless it was too flat to embed)."""
    if not len(vectors):
        return vectors
    _, first = np.unique(vectors.frames, return_index=True)
    first = np.sort(first)
    return SignalVectors(vectors.vectors[first], vectors.timestamps[first], vectors.boxes[first],
                         vectors.frames[first])
