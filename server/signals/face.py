"""Face descriptors: the victim's face in content that is not a copy (other shots, deepfakes).

Two models, two signals whose vectors never meet: `face` (dlib's ResNet, Euclidean distance; dlib calls < 0.6
the same person, we default stricter) and `face_sface` (SFace, cosine; OpenCV's same-person line is 0.363, we
default stricter). Boxes are stored as fractions of the frame so they mean the same at any resolution. Faces
smaller than `face_min_width` pixels or scored below `face_min_score` by the detector are neither stored nor
searched: below about 20 px both models give one person's faces as far apart as strangers'.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.calibration import FACE_PRIOR, SFACE_PRIOR, Tail
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.index import VectorSearch, vector_index
from server.inference.features import Face, MediaFeatures
from server.signals import SignalVectors
from server.signals.float_vectors import FloatVectorSignal


def face_box_fraction(box: tuple[float, ...], frame_size: tuple[int, int]) -> tuple[float, float, float, float]:
    height, width = frame_size
    if not height or not width:
        return (0.0, 0.0, 1.0, 1.0)
    x0, y0, x1, y1 = box
    return (x0 / width, y0 / height, x1 / width, y1 / height)


def usable_face(face: Face, settings: MatchSettings) -> bool:
    """Big and sure enough to say anything: smaller or fainter detections are neither matched nor read for age."""
    return ((face.score is None or face.score >= settings.face_min_score)
            and face.box[2] - face.box[0] >= settings.face_min_width)


class FaceSignal(FloatVectorSignal):
    family: str
    dim = 128
    binary = False
    k_setting = "face_k"
    in_negative_bank = False  # the bank holds pictures judged benign: a face in one says nothing elsewhere
    verifiable = False  # another photo of the same person is a match: there is no copy to align
    evidence = "face"

    def __init__(self, name: str, family: str, proto_value: int, proto_threshold_field: str, threshold_setting: str,
                 lower_is_closer: bool, bounds: tuple[float, float], model: str,
                 descriptor: Callable[[Face], np.ndarray | None], prior_tail: Tail) -> None:
        self.name, self.family = name, family
        self.proto_value = proto_value
        self.proto_threshold_field = proto_threshold_field
        self.threshold_setting = threshold_setting  # the MatchSettings field of its default threshold
        self.lower_is_closer = lower_is_closer
        self.bounds = bounds  # what a case may set its threshold to
        self.model = model
        self.descriptor = descriptor
        self.prior_tail = prior_tail

    @classmethod
    def dlib(cls) -> FaceSignal:
        return cls("face", "faces", pb.SIGNAL_FACE, "face_max_distance", "face_max_distance", True, (0.05, 0.8),
                   "dlib_face_recognition_resnet_model_v1:5pt", lambda face: face.embedding, FACE_PRIOR)

    @classmethod
    def sface(cls) -> FaceSignal:
        return cls("face_sface", "faces_sface", 0, "", "sface_min_similarity", False, (0.2, 0.95),
                   "face_recognition_sface_2021dec_int8bq:fb143eea0783/yunet5", lambda face: face.sface_embedding,
                   SFACE_PRIOR)

    def model_id(self, models: ModelSettings) -> str:
        return self.model  # dlib's on its 5-point alignment, SFace's on YuNet's keypoints: whatever the detector

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        rows = [
            (vector, f.timestamp, face_box_fraction(face.box, features.frame_size), f.index)
            for f in features.frames
            for face in f.faces
            if (vector := self.descriptor(face)) is not None and usable_face(face, settings)
        ]
        return SignalVectors.stack(rows, self.dim)

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return vectors  # unused: not in the negative bank

    def benign_threshold(self, settings: MatchSettings) -> float:
        return self.default_threshold(settings)

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> VectorSearch:
        metric = "l2" if self.lower_is_closer else "ip"
        return vector_index(self.dim, metric, settings, "Flat", snapshot)  # 128-d: exact stays cheap
