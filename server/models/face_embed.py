"""128-d face embedding (dlib ResNet): the same person stays within 0.6 L2 across shots."""

from __future__ import annotations

import dlib
import numpy as np

from server.config import Settings
from server.models.dlib_faces import faces_by_frame, to_shape, weight_file

FACE_EMBEDDING_DIM = 128


class FaceEmbedModel:
    def __init__(self, settings: Settings) -> None:
        del settings
        self.encoder = dlib.face_recognition_model_v1(str(weight_file("dlib_face_recognition_resnet_model_v1.dat")))

    def __call__(self, frames: np.ndarray, face_boxes: np.ndarray, face_landmarks: np.ndarray,
                 face_frame: np.ndarray) -> dict[str, np.ndarray]:
        out = np.zeros((len(face_frame), FACE_EMBEDDING_DIM), np.float32)
        for frame_index, rows in faces_by_frame(face_frame).items():
            image = np.ascontiguousarray(frames[frame_index])
            shapes = dlib.full_object_detections([to_shape(face_boxes[r], face_landmarks[r]) for r in rows])
            descriptors = self.encoder.compute_face_descriptor(image, shapes, 0)
            out[rows] = np.asarray([np.asarray(d) for d in descriptors], np.float32)
        return {"face_embeddings": out}
