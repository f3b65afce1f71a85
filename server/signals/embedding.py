"""Copy-detection embedding (SSCD by default): survives crops, overlays, borders and pastes into larger pages.

Rows are every region of every frame: the border-trimmed whole frame, content blocks and the grid windows (see
`server.models.image_embed`), on both sides. The best pair of regions decides, so a reference pasted at a
quarter of a page meets the page's content block, and an 80 % crop meets the reference's whole frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jiwoom.api.errors import InvalidInput
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.config import IndexSettings, MatchSettings
from server.index import VectorSearch, vector_index
from server.inference.features import MediaFeatures
from server.signals import Hits, SignalVectors, whole_frames


class EmbeddingSignal:
    name = "embedding"
    family = "embedding"
    dim = 512
    binary = False
    lower_is_closer = False
    proto_value = pb.SIGNAL_EMBEDDING
    proto_threshold_field = "embedding_min_similarity"
    in_negative_bank = True
    verifiable = True
    prior_tail = None  # fitted: server/data/calibration_sscd.npz

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        rows = [(r.embedding, f.timestamp, r.box, f.index) for f in features.frames for r in f.regions]
        return SignalVectors.stack(rows, self.dim)

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self.reference_vectors(features, settings)

    def default_threshold(self, settings: MatchSettings) -> float:
        return settings.embedding_min_similarity

    def check_threshold(self, value: float) -> None:
        if not 0.3 <= value <= 1.0:
            raise InvalidInput("embedding_min_similarity must be 0.3..1")

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return whole_frames(vectors)  # near copies of the whole picture, not a shared logo in one region

    def benign_threshold(self, settings: MatchSettings) -> float:
        return settings.benign_embedding_min_similarity

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> VectorSearch:
        return vector_index(self.dim, "ip", settings, settings.embedding_factory, snapshot)

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        return knn_hits(index, queries, settings.embedding_k, lambda s: s >= threshold)

    def passes(self, score: float, threshold: float) -> bool:
        return score >= threshold


def knn_hits(index: object, queries: SignalVectors, k: int, keep: object) -> Hits:
    """k nearest rows per query, as Hits, keeping those whose score passes `keep` (a vectorised predicate): the
    search of every float signal."""
    assert isinstance(index, VectorSearch)
    if not len(queries) or not len(index):
        return Hits.empty()
    scores, owners, locals_ = index.search(np.ascontiguousarray(queries.vectors, np.float32), k)
    mask = (owners >= 0) & keep(scores)  # type: ignore[operator]
    query_rows = np.nonzero(mask)[0].astype(np.int64)
    return Hits(query_rows, owners[mask], locals_[mask], scores[mask].astype(np.float32))
