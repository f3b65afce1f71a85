"""Shared dlib plumbing for the face models: weight paths and landmark shapes across model boundaries.

Face models pass landmarks between each other as plain float tensors (so they cross Triton); this module turns
them back into dlib shapes.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import dlib
import numpy as np

LANDMARKS = 5


def face_recognition_models_dir() -> Path:
    """The folder of the face_recognition_models package, found without importing it (its __init__ imports
    pkg_resources, which newer setuptools removed)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("face_recognition_models is not installed (pip install face_recognition_models==0.3.0)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def weight_file(name: str) -> Path:
    path = face_recognition_models_dir() / name
    if not path.is_file():
        raise RuntimeError(f"face model weights missing: {path}")
    return path


def to_shape(box: np.ndarray, landmarks: np.ndarray) -> dlib.full_object_detection:
    x0, y0, x1, y1 = (round(float(v)) for v in box)
    points = [dlib.point(round(float(x)), round(float(y))) for x, y in landmarks]
    return dlib.full_object_detection(dlib.rectangle(x0, y0, x1, y1), points)


def faces_by_frame(face_frame: np.ndarray) -> dict[int, list[int]]:
    """Face row indices grouped by the frame they were found in, in row order."""
    groups: dict[int, list[int]] = {}
    for row, frame_index in enumerate(face_frame.tolist()):
        groups.setdefault(int(frame_index), []).append(row)
    return groups
