"""What the float-vector signals (the copy-detection embeddings and the face descriptors) share: k-nearest search
of their index, a threshold that a case may set within the signal's bounds, and queries that are the stored rows."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jiwoom.api.errors import InvalidInput
from server.config import MatchSettings
from server.index import VectorSearch
from server.inference.features import MediaFeatures
from server.signals import Hits, SignalVectors


def knn_hits(index: object, queries: SignalVectors, k: int, keep: Callable[[np.ndarray], np.ndarray]) -> Hits:
    """k nearest rows per query, as Hits, keeping those whose score passes `keep` (a vectorised predicate)."""
    assert isinstance(index, VectorSearch)
    if not len(queries) or not len(index):
        return Hits.empty()
    scores, owners, locals_ = index.search(np.ascontiguousarray(queries.vectors, np.float32), k)
    mask = (owners >= 0) & keep(scores)
    query_rows = np.nonzero(mask)[0].astype(np.int64)
    return Hits(query_rows, owners[mask], locals_[mask], scores[mask].astype(np.float32))


class FloatVectorSignal:
    """A base for signals over float vectors in a `VectorSearch` index. Subclasses set `name`, `lower_is_closer`,
    `threshold_setting` (the MatchSettings field of the default threshold), `k_setting` (of how many neighbours a
    query row asks for) and `bounds` (what a case may set the threshold to), and define `reference_vectors`."""

    name: str
    lower_is_closer: bool
    threshold_setting: str
    k_setting: str
    bounds: tuple[float, float]

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        raise NotImplementedError

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self.reference_vectors(features, settings)

    def default_threshold(self, settings: MatchSettings) -> float:
        return float(getattr(settings, self.threshold_setting))

    def check_threshold(self, value: float) -> None:
        low, high = self.bounds
        if not low <= value <= high:
            raise InvalidInput(f"{self.name} threshold ({self.threshold_setting}) must be in [{low}, {high}]")

    def passes(self, score: float, threshold: float) -> bool:
        return score <= threshold if self.lower_is_closer else score >= threshold

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        k = int(getattr(settings, self.k_setting))
        if self.lower_is_closer:
            return knn_hits(index, queries, k, lambda distances: distances <= threshold)
        return knn_hits(index, queries, k, lambda scores: scores >= threshold)
