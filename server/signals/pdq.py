"""PDQ: the cheap first stage. Exact for re-encodes, resizes, colour and text changes; blind to crops.

Stored rows are each frame's hash; queries add the 7 flipped and rotated variants, so a mirrored copy is found
without storing 8 hashes per reference. Hashes below PDQ's quality floor are skipped on both sides: flat frames
(black title cards, blank pages) all hash alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np

from jiwoom.api.errors import InvalidInput
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.index import binary_index
from server.inference.features import MediaFeatures
from server.models.pdq import PDQ_BYTES
from server.signals import Hits, SignalVectors

if TYPE_CHECKING:
    from server.index.faiss_index import BinaryIndex

WHOLE_FRAME = (0.0, 0.0, 1.0, 1.0)


class PdqSignal:
    name = "pdq"
    family = "pdq"
    dim = PDQ_BYTES
    binary = True
    lower_is_closer = True
    proto_value = pb.SIGNAL_PDQ
    proto_threshold_field = "pdq_max_distance"
    in_negative_bank = True
    verifiable = True
    evidence = "picture"
    prior_tail = None

    def model_id(self, models: ModelSettings) -> str:
        return "pdq:1"  # the published algorithm (pdqhash), which has no settings

    def _rows(self, features: MediaFeatures, settings: MatchSettings, variants: bool) -> SignalVectors:
        rows = []
        for frame in features.frames:
            if frame.pdq_hash is None or (frame.pdq_quality or 0) < settings.pdq_min_quality:
                continue
            hashes = frame.pdq_dihedral if variants and frame.pdq_dihedral else (frame.pdq_hash,)
            rows += [(np.frombuffer(h, np.uint8), frame.timestamp, WHOLE_FRAME, frame.index) for h in hashes]
        return SignalVectors.stack(rows, PDQ_BYTES, np.uint8)

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self._rows(features, settings, variants=False)

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self._rows(features, settings, variants=True)

    def default_threshold(self, settings: MatchSettings) -> float:
        return float(settings.pdq_max_distance)

    def check_threshold(self, value: float) -> None:
        if not 0 <= value <= 31:  # the PDQ index is exact up to 31 (16 bands, 1 flip)
            raise InvalidInput("pdq_max_distance must be 0..31")

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return vectors

    def benign_threshold(self, settings: MatchSettings) -> float:
        return self.default_threshold(settings)

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> BinaryIndex:
        return binary_index(settings, snapshot)

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        index = cast("BinaryIndex", index)
        if not len(queries) or not len(index):
            return Hits.empty()
        rows, owners, locals_, distances = index.search(queries.vectors, max_distance=int(threshold))
        return Hits(rows.astype(np.int64), owners, locals_, distances.astype(np.float32))

    def passes(self, score: float, threshold: float) -> bool:
        return score <= threshold


def hashes_only_vectors(hashes: list[bytes]) -> SignalVectors:
    """Rows for a reference given as PDQ hashes alone (hashed on the victim's device): no frames, no quality."""
    rows = [(np.frombuffer(h, np.uint8), 0.0, WHOLE_FRAME, -1) for h in hashes]
    return SignalVectors.stack(rows, PDQ_BYTES, np.uint8)
