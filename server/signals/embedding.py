"""Copy-detection embedding (SSCD by default): survives crops, overlays, borders and pastes into larger pages.

Rows are every region of every frame: the border-trimmed whole frame, content blocks and the grid windows (see
`server.models.image_embed`), on both sides. The best pair of regions decides, so a reference pasted at a
quarter of a page meets the page's content block, and an 80 % crop meets the reference's whole frame.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.calibration import FAST_EMBEDDING_PRIOR, Tail
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.index import VectorSearch, vector_index
from server.inference.features import FrameFeatures, MediaFeatures, Region
from server.models.versions import EmbedderConfig, model_id
from server.signals import SignalVectors, whole_frames
from server.signals.float_vectors import FloatVectorSignal


class EmbeddingSignal(FloatVectorSignal):
    """One copy-detection embedding model over the regions: `full` (SSCD, the `embedding` signal) or `fast` (the
    distilled SSCD, `embedding_fast`). Their vectors live in separate indexes and never meet."""

    family: str
    dim = 512
    binary = False
    lower_is_closer = False
    k_setting = "embedding_k"
    bounds = (0.3, 1.0)
    in_negative_bank = True
    verifiable = True
    evidence = "picture"

    def __init__(self, name: str, proto_value: int, proto_threshold_field: str, threshold_setting: str,
                 embedder: Callable[[ModelSettings], EmbedderConfig], regions: Callable[[FrameFeatures], list[Region]],
                 prior_tail: Tail | None = None) -> None:
        self.name = self.family = name
        self.prior_tail = prior_tail
        self.proto_value = proto_value
        self.proto_threshold_field = proto_threshold_field
        self.threshold_setting = threshold_setting  # the MatchSettings field of its default threshold
        self.embedder = embedder
        self.regions = regions

    @classmethod
    def full(cls) -> EmbeddingSignal:
        # its tail is fitted at scale: server/data/calibration_sscd.npz
        return cls("embedding", pb.SIGNAL_EMBEDDING, "embedding_min_similarity", "embedding_min_similarity",
                   EmbedderConfig.full, lambda frame: frame.regions)

    @classmethod
    def fast(cls) -> EmbeddingSignal:
        return cls("embedding_fast", 0, "", "fast_embedding_min_similarity", EmbedderConfig.fast,
                   lambda frame: frame.fast_regions, FAST_EMBEDDING_PRIOR)

    def model_id(self, models: ModelSettings) -> str:
        return model_id(self.embedder(models))

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        rows = [(r.embedding, f.timestamp, r.box, f.index) for f in features.frames for r in self.regions(f)]
        return SignalVectors.stack(rows, self.dim)

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return whole_frames(vectors)  # near copies of the whole picture, not a shared logo in one region

    def benign_threshold(self, settings: MatchSettings) -> float:
        return settings.benign_embedding_min_similarity

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> VectorSearch:
        return vector_index(self.dim, "ip", settings, settings.embedding_factory, snapshot)


