"""Copy-detection embedding (SSCD by default): survives crops, overlays, borders and pastes into larger pages.

Rows are every region of every frame: the border-trimmed whole frame, content blocks and the grid windows (see
`server.models.image_embed`), on both sides. The best pair of regions decides, so a reference pasted at a
quarter of a page meets the page's content block, and an 80 % crop meets the reference's whole frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.config import IndexSettings, MatchSettings
from server.features import MediaFeatures
from server.index_base import VectorSearch, vector_index
from server.signals import Hits, SignalVectors


class EmbeddingSignal:
    name = "embedding"
    family = "embedding"
    dim = 512
    binary = False
    lower_is_closer = False

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        rows = [(r.embedding, f.timestamp, r.box, f.index) for f in features.frames for r in f.regions]
        return SignalVectors.stack(rows, self.dim)

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self.reference_vectors(features, settings)

    def default_threshold(self, settings: MatchSettings) -> float:
        return settings.embedding_min_similarity

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> VectorSearch:
        return vector_index(self.dim, "ip", settings, settings.embedding_factory, snapshot)

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        assert isinstance(index, VectorSearch)
        if not len(queries) or not len(index):
            return Hits.empty()
        return knn_hits(index, queries.vectors, settings.embedding_k, lambda s: s >= threshold)

    def passes(self, score: float, threshold: float) -> bool:
        return score >= threshold


def knn_hits(index: VectorSearch, queries: np.ndarray, k: int, keep: object) -> Hits:
    """k nearest rows per query, as Hits, keeping those whose score passes `keep` (a vectorised predicate)."""
    scores, owners, locals_ = index.search(np.ascontiguousarray(queries, np.float32), k)
    mask = (owners >= 0) & keep(scores)  # type: ignore[operator]
    query_rows = np.nonzero(mask)[0].astype(np.int64)
    return Hits(query_rows, owners[mask], locals_[mask], scores[mask].astype(np.float32))
