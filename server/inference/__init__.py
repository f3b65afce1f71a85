"""Inference behind one interface, two implementations over the same model_repo/:

- `InProcessInference` (the embedded default) runs the models in this process;
- `TritonInference` sends the same requests to a Triton server over gRPC.

Both implement `infer(model, inputs, outputs)`; everything above it (`media_features`, `frame_features`) is
shared, so the two can only differ in where the tensors were computed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from server.config import Settings
from server.inference.features import (
    ALL_FAMILIES,
    FAMILY_OUTPUTS,
    MEDIA_FAMILY_MODELS,
    MEDIA_OUTPUTS,
    LocalFeatures,
    MediaFeatures,
    assemble,
    local_features,
    outputs_for,
)


class Inference(ABC):
    @abstractmethod
    def infer(self, model: str, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Run one model or ensemble of model_repo/ and return the named outputs."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections or models."""

    def media_features(self, data: bytes, families: frozenset[str] = ALL_FAMILIES) -> MediaFeatures:
        """Decode image or video bytes, sample frames, and compute the asked feature families."""
        media = np.array([data], dtype=np.object_)
        tensors = self.infer("media_features", {"media": media}, [*MEDIA_OUTPUTS, *outputs_for(families)])
        return assemble(tensors)

    def sample(self, data: bytes) -> dict[str, np.ndarray]:
        """Decode image or video bytes and sample its frames, once, for features asked in stages (the cascade):
        the frame sampler's tensors (`frames`, and MEDIA_OUTPUTS)."""
        return self.infer("frame_sampler", {"media": np.array([data], dtype=np.object_)},
                          ["frames", "audio", *MEDIA_OUTPUTS])

    def sampled_features(self, sampled: dict[str, np.ndarray], families: frozenset[str]) -> MediaFeatures:
        """Features of frames `sample` returned: what `media_features` computes, without decoding again (the
        media families, audio, from the sampler's sound)."""
        per_frame = frozenset(families) - set(MEDIA_FAMILY_MODELS)
        tensors = self.infer("frame_features", {"frames": sampled["frames"]}, outputs_for(per_frame)) if per_frame \
            else {}
        for family in sorted(set(families) & set(MEDIA_FAMILY_MODELS)):
            if "audio" in sampled:
                tensors.update(self.infer(MEDIA_FAMILY_MODELS[family], {"audio": sampled["audio"]},
                                          outputs_for({family})))
        tensors.update({name: sampled[name] for name in MEDIA_OUTPUTS})
        return assemble(tensors)

    def embed_regions(self, frames: np.ndarray, boxes: np.ndarray, box_frame: np.ndarray) -> dict[str, np.ndarray]:
        """The full embedding of the given regions only (fractions of the frame [N, 4], each with its frame's
        index [N]): the `embedding` family's tensors, for `features.with_regions`."""
        return self.infer("image_embed", {"frames": frames, "boxes": boxes.astype(np.float32),
                                          "box_frame": box_frame.astype(np.int32)}, list(FAMILY_OUTPUTS["embedding"]))

    def local_of_regions(self, frames: np.ndarray, boxes: np.ndarray, box_frame: np.ndarray) -> list[LocalFeatures]:
        """ORB keypoints of the given regions' crops (fractions of the frame [N, 4], each with its frame's index
        [N]), each crop scaled on its own to the keypoints' side: verification's closer look, one per box."""
        tensors = self.infer("local_features", {"frames": frames, "boxes": boxes.astype(np.float32),
                                                "box_frame": box_frame.astype(np.int32)}, list(FAMILY_OUTPUTS["local"]))
        return [local_features(tensors, n) for n in range(len(boxes))]

    def frame_features(
        self, frames: np.ndarray, timestamps: np.ndarray | None = None, families: frozenset[str] = ALL_FAMILIES
    ) -> MediaFeatures:
        """Features of frames already decoded: uint8 [F, H, W, 3] RGB, all of one size (no sound: frames alone
        carry none, so the media families are left out)."""
        per_frame = frozenset(families) - set(MEDIA_FAMILY_MODELS)
        tensors = self.infer("frame_features", {"frames": frames}, outputs_for(per_frame))
        tensors["frame_size"] = np.asarray(frames.shape[1:3], np.int32)
        if timestamps is None:
            timestamps = np.arange(len(frames), dtype=np.float32)
        return assemble(tensors, timestamps=timestamps)

    def __enter__(self) -> Inference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_inference(settings: Settings) -> Inference:
    if settings.inference == "inprocess":
        from server.inference.inprocess import InProcessInference

        return InProcessInference(settings)
    if settings.inference == "triton":
        from server.inference.triton import TritonInference

        return TritonInference(settings.triton_url)
    raise ValueError(f"inference must be 'inprocess' or 'triton', not {settings.inference!r}")
