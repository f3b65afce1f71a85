"""The first step of the ensemble: media bytes in, sampled RGB frames with timestamps out."""

from __future__ import annotations

import numpy as np

from server.config import Settings
from server.media import decode_media


class FrameSampler:
    def __init__(self, settings: Settings) -> None:
        self.limits = settings.limits
        self.gpu = settings.models.gpu_decode  # nvJPEG / NVDEC where the builds allow it, else the CPU

    def __call__(self, media: np.ndarray) -> dict[str, np.ndarray]:
        # Triton hands BYTES tensors over as object arrays of `bytes`; [1] holds the whole file.
        decoded = decode_media(bytes(media.reshape(-1)[0]), self.limits, self.gpu)
        return {
            "frames": decoded.frames,
            "timestamps": decoded.timestamps,
            "scene_cut": decoded.scene_cut,
            "frame_size": np.asarray(decoded.frames.shape[1:3], np.int32),  # working (height, width)
            "duration_s": np.asarray([decoded.duration_s], np.float32),
            "audio": decoded.audio,
        }
