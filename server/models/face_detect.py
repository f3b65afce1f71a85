"""Face detection (dlib HOG or CNN) and 5-point landmarks, per frame."""

from __future__ import annotations

import dlib
import numpy as np

from server.config import Settings
from server.models.dlib_faces import LANDMARKS, weight_file


class FaceDetectModel:
    def __init__(self, settings: Settings) -> None:
        self.upsample = settings.models.face_upsample
        self.small_frame_pixels = settings.models.face_small_frame_pixels
        self.max_faces = settings.models.max_faces
        self.kind = settings.models.face_detector
        if self.kind == "hog":
            self.hog = dlib.get_frontal_face_detector()
        elif self.kind == "cnn":
            self.cnn = dlib.cnn_face_detection_model_v1(str(weight_file("mmod_human_face_detector.dat")))
        else:
            raise ValueError(f"face_detector must be 'hog' or 'cnn', not {self.kind!r}")
        self.predictor = dlib.shape_predictor(str(weight_file("shape_predictor_5_face_landmarks.dat")))

    def detect(self, frame: np.ndarray) -> list[tuple[dlib.rectangle, float]]:
        upsample = self.upsample + (frame.shape[0] * frame.shape[1] < self.small_frame_pixels)
        if self.kind == "hog":
            rects, scores, _ = self.hog.run(frame, upsample, 0.0)
            found = list(zip(rects, scores, strict=True))
        else:
            found = [(d.rect, float(d.confidence)) for d in self.cnn(frame, upsample)]
        found.sort(key=lambda item: -item[1])
        return found[: self.max_faces]

    def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        boxes, scores, landmarks, owners = [], [], [], []
        for index, frame in enumerate(frames):
            image = np.ascontiguousarray(frame)
            height, width = image.shape[:2]
            for rect, score in self.detect(image):
                shape = self.predictor(image, rect)
                boxes.append([max(rect.left(), 0), max(rect.top(), 0),
                              min(rect.right(), width - 1), min(rect.bottom(), height - 1)])
                scores.append(score)
                landmarks.append([[shape.part(i).x, shape.part(i).y] for i in range(LANDMARKS)])
                owners.append(index)
        return {
            "face_boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
            "face_scores": np.asarray(scores, np.float32),
            "face_landmarks": np.asarray(landmarks, np.float32).reshape(-1, LANDMARKS, 2),
            "face_frame": np.asarray(owners, np.int32),
        }
