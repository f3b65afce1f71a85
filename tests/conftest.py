"""Shared fixtures: the dev corpus and one in-process inference per test session (models load once)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.transforms import CORPUS
from server.config import Settings
from server.inference import Inference
from server.inference.inprocess import InProcessInference

ASTRONAUT = "img_0243.jpg"  # scikit-image's astronaut: an adult woman, about 40 in the photo
GRACE_HOPPER = "img_0265.jpg"  # matplotlib's Grace Hopper, about 77


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "images").is_dir():
        pytest.fail(f"dev corpus not found at {CORPUS} (set JIWOOM_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def inference() -> Iterator[Inference]:
    with InProcessInference(Settings()) as engine:
        yield engine
