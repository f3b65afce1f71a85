"""Face descriptors (dlib 128-d): the victim's face in content that is not a copy (other shots, deepfakes).

Distances are Euclidean; dlib calls < 0.6 the same person, we default stricter (MatchSettings). Boxes are
stored as fractions of the frame so they mean the same at any resolution.
"""

from __future__ import annotations

from pathlib import Path

from jiwoom.api.errors import InvalidInput
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.calibration import FACE_PRIOR
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.index import VectorSearch, vector_index
from server.inference.features import MediaFeatures
from server.signals import Hits, SignalVectors
from server.signals.embedding import knn_hits


def face_box_fraction(box: tuple[float, ...], frame_size: tuple[int, int]) -> tuple[float, float, float, float]:
    height, width = frame_size
    if not height or not width:
        return (0.0, 0.0, 1.0, 1.0)
    x0, y0, x1, y1 = box
    return (x0 / width, y0 / height, x1 / width, y1 / height)


class FaceSignal:
    name = "face"
    family = "faces"
    dim = 128
    binary = False
    lower_is_closer = True
    proto_value = pb.SIGNAL_FACE
    proto_threshold_field = "face_max_distance"
    in_negative_bank = False  # the bank holds pictures judged benign: a face in one says nothing elsewhere
    verifiable = False  # another photo of the same person is a match: there is no copy to align
    prior_tail = FACE_PRIOR

    def model_id(self, models: ModelSettings) -> str:
        return "dlib_face_recognition_resnet_model_v1:5pt"  # on dlib's 5-point alignment, whatever the detector

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        rows = [
            (face.embedding, f.timestamp, face_box_fraction(face.box, features.frame_size), f.index)
            for f in features.frames
            for face in f.faces
            if face.embedding is not None and (face.score is None or face.score >= settings.face_min_score)
        ]
        return SignalVectors.stack(rows, self.dim)

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self.reference_vectors(features, settings)

    def default_threshold(self, settings: MatchSettings) -> float:
        return settings.face_max_distance

    def check_threshold(self, value: float) -> None:
        if not 0.0 < value <= 0.8:
            raise InvalidInput("face_max_distance must be in (0, 0.8]")

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return vectors  # unused: not in the negative bank

    def benign_threshold(self, settings: MatchSettings) -> float:
        return self.default_threshold(settings)

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> VectorSearch:
        return vector_index(self.dim, "l2", settings, "Flat", snapshot)  # 128-d: exact stays cheap

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        return knn_hits(index, queries, settings.face_k, lambda d: d <= threshold)

    def passes(self, score: float, threshold: float) -> bool:
        return score <= threshold
