"""The model ensemble: one module per Triton model role, one class per module.

Each class is built once from `ModelSettings` and called with numpy tensors named as in
`model_repo/<role>/config.pbtxt`, returning a dict of named numpy tensors. Triton's python backend
(`model_repo/<role>/1/model.py`) and the in-process runner (`server/inference/inprocess.py`) both call
exactly these classes, which is why both give the same results.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import numpy as np

from server.config import Settings


class Model(Protocol):
    def __call__(self, **inputs: np.ndarray) -> dict[str, np.ndarray]: ...


# role -> "module:Class"; imported lazily so a process only loads the weights it runs.
MODEL_CLASSES: dict[str, str] = {
    "frame_sampler": "server.models.frame_sampler:FrameSampler",
    "pdq": "server.models.pdq:PdqModel",
    "image_embed": "server.models.image_embed:ImageEmbedModel",
    "image_embed_fast": "server.models.image_embed:FastImageEmbedModel",
    "face_detect": "server.models.face_detect:FaceDetectModel",
    "face_embed": "server.models.face_embed:FaceEmbedModel",
    "face_embed_sface": "server.models.face_embed:SFaceEmbedModel",
    "age_head": "server.models.age_head:AgeHeadModel",
    "ocr": "server.models.ocr:OcrModel",
    "local_features": "server.models.local_features:LocalFeaturesModel",
    "audio_fingerprint": "server.models.audio_fingerprint:AudioFingerprintModel",
}


def load_model(role: str, settings: Settings) -> Model:
    try:
        module_name, class_name = MODEL_CLASSES[role].split(":")
    except KeyError:
        raise ValueError(f"unknown model role {role!r}; known: {sorted(MODEL_CLASSES)}") from None
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(settings)
