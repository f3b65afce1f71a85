"""What the model ensemble says about one image or video: plain dataclasses, assembled from named tensors.

Assembly is pure (no models, no I/O), so it is shared by every inference backend and tested without servers.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# Which ensemble outputs each feature family needs. Callers ask for families; the in-process runner then skips
# the models nobody asked for (OCR and age cost the most, and are needed only on some items).
FAMILY_OUTPUTS: dict[str, tuple[str, ...]] = {
    "pdq": ("pdq_hash", "pdq_dihedral", "pdq_quality"),
    "embedding": ("embeddings", "region_boxes", "region_frame"),
    "embedding_fast": ("fast_embeddings", "fast_region_boxes", "fast_region_frame"),
    "faces": ("face_boxes", "face_scores", "face_landmarks", "face_frame", "face_embeddings"),
    "faces_sface": ("face_boxes", "face_scores", "face_landmarks", "face_frame", "sface_embeddings"),
    "age": ("face_boxes", "face_frame", "age_mean", "age_std", "age_p_under19", "gender_p_female"),
    "ocr": ("ocr_text",),
    "local": ("local_keypoints", "local_descriptors", "local_frame", "local_mirrored"),
    "audio": ("audio_codes",),
}
# Families of the whole media item, not of its frames: computed from the sampler's tensors, never from frames alone
MEDIA_FAMILY_MODELS: dict[str, str] = {"audio": "audio_fingerprint"}
ALL_FAMILIES = frozenset(FAMILY_OUTPUTS)
# The FrameFeatures fields each family fills (`merged` copies them from a later stage's features)
FAMILY_FIELDS: dict[str, tuple[str, ...]] = {
    "pdq": ("pdq_hash", "pdq_dihedral", "pdq_quality"),
    "embedding": ("regions",),
    "embedding_fast": ("fast_regions",),
    "faces": ("faces",),
    "faces_sface": ("faces",),
    "age": ("faces",),
    "ocr": ("ocr_text",),
    "local": ("local",),
    "audio": (),
}
MEDIA_OUTPUTS = ("timestamps", "scene_cut", "frame_size", "duration_s")


def outputs_for(families: frozenset[str] | set[str]) -> list[str]:
    unknown = set(families) - ALL_FAMILIES
    if unknown:
        raise ValueError(f"unknown feature families {sorted(unknown)}; known: {sorted(ALL_FAMILIES)}")
    return sorted({name for family in families for name in FAMILY_OUTPUTS[family]})


@dataclass(frozen=True)
class Region:
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as fractions of the frame
    embedding: np.ndarray  # [D] float32, L2-normalised


@dataclass(frozen=True)
class Face:
    box: tuple[float, float, float, float]  # pixels of the working-resolution frame
    score: float | None = None
    landmarks: np.ndarray | None = None  # [5, 2]
    embedding: np.ndarray | None = None  # [128] dlib
    sface_embedding: np.ndarray | None = None  # [128] SFace, L2-normalised
    age_mean: float | None = None
    age_std: float | None = None
    age_p_under19: float | None = None
    gender_p_female: float | None = None


@dataclass(frozen=True)
class LocalFeatures:
    """ORB keypoints of one frame (`server.models.local_features`), for geometric verification."""

    keypoints: np.ndarray  # [P, 4] float32: x, y, size, response in units of the frame scaled to 640 px
    descriptors: np.ndarray  # [P, 32] uint8
    mirrored: np.ndarray  # [P] bool: found on the mirrored frame (x counts from the mirrored frame's left)

    def __len__(self) -> int:
        return len(self.keypoints)

    def side(self, mirrored: bool) -> LocalFeatures:
        keep = self.mirrored == mirrored
        return LocalFeatures(self.keypoints[keep], self.descriptors[keep], self.mirrored[keep])


@dataclass(frozen=True)
class FrameFeatures:
    index: int
    timestamp: float
    scene_cut: bool = False
    pdq_hash: bytes | None = None  # 32 bytes, ThreatExchange bit order
    pdq_dihedral: tuple[bytes, ...] = ()  # 8 variants, server.models.pdq.DIHEDRAL order
    pdq_quality: int | None = None
    regions: list[Region] = field(default_factory=list)  # regions[0]: the trimmed whole frame (flat regions dropped)
    fast_regions: list[Region] = field(default_factory=list)  # the same regions, by the fast embedding
    faces: list[Face] = field(default_factory=list)
    ocr_text: str | None = None
    local: LocalFeatures | None = None


@dataclass(frozen=True)
class MediaFeatures:
    frame_size: tuple[int, int]  # working (height, width)
    duration_s: float
    frames: list[FrameFeatures]
    # Chromaprint codes of the sound (uint32 [N], one per CODE_SECONDS); empty for images, silence, bare frames
    audio_codes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint32))


def _rows(tensors: dict[str, np.ndarray], owner: str, frame: int) -> np.ndarray:
    return np.nonzero(tensors[owner] == frame)[0] if owner in tensors else np.zeros(0, np.int64)


def _optional(tensors: dict[str, np.ndarray], name: str, row: int) -> float | None:
    return float(tensors[name][row]) if name in tensors else None


def _regions(tensors: dict[str, np.ndarray], prefix: str, frame: int) -> list[Region]:
    boxes, embeddings = tensors.get(f"{prefix}region_boxes"), tensors.get(f"{prefix}embeddings")
    return [Region(tuple(float(v) for v in boxes[r]), embeddings[r])  # type: ignore[index]
            for r in _rows(tensors, f"{prefix}region_frame", frame)]


def local_features(tensors: dict[str, np.ndarray], owner: int) -> LocalFeatures:
    """The `local` family's rows of one frame (or, from `local_features` given boxes, of one box)."""
    rows = _rows(tensors, "local_frame", owner)
    return LocalFeatures(tensors["local_keypoints"][rows].astype(np.float32),
                         tensors["local_descriptors"][rows].astype(np.uint8),
                         tensors["local_mirrored"][rows].astype(bool))


def assemble(tensors: dict[str, np.ndarray], timestamps: np.ndarray | None = None) -> MediaFeatures:
    """Group the ensemble's flat tensors (frames F, regions R, faces K) into per-frame features.

    `timestamps` overrides the sampler's (frames streamed by a crawler carry their own)."""
    counts = [len(tensors[n]) for n in ("timestamps", "pdq_hash", "ocr_text") if n in tensors]
    if timestamps is not None:
        counts.append(len(timestamps))
    frame_count = max(counts, default=0)
    if timestamps is None:
        timestamps = tensors.get("timestamps", np.zeros(frame_count, np.float32))
    cuts = tensors.get("scene_cut", np.zeros(frame_count, bool))
    frames = []
    for i in range(frame_count):
        regions = _regions(tensors, "", i)
        fast_regions = _regions(tensors, "fast_", i)
        faces = [
            Face(
                box=tuple(float(v) for v in tensors["face_boxes"][k]),
                score=_optional(tensors, "face_scores", k),
                landmarks=tensors["face_landmarks"][k] if "face_landmarks" in tensors else None,
                embedding=tensors["face_embeddings"][k] if "face_embeddings" in tensors else None,
                sface_embedding=tensors["sface_embeddings"][k] if "sface_embeddings" in tensors else None,
                age_mean=_optional(tensors, "age_mean", k),
                age_std=_optional(tensors, "age_std", k),
                age_p_under19=_optional(tensors, "age_p_under19", k),
                gender_p_female=_optional(tensors, "gender_p_female", k),
            )
            for k in _rows(tensors, "face_frame", i)
        ]
        local = local_features(tensors, i) if "local_frame" in tensors else None
        frames.append(
            FrameFeatures(
                index=i,
                timestamp=float(timestamps[i]),
                scene_cut=bool(cuts[i]),
                pdq_hash=bytes(tensors["pdq_hash"][i]) if "pdq_hash" in tensors else None,
                pdq_dihedral=tuple(bytes(h) for h in tensors["pdq_dihedral"][i]) if "pdq_dihedral" in tensors else (),
                pdq_quality=int(tensors["pdq_quality"][i]) if "pdq_quality" in tensors else None,
                regions=regions,
                fast_regions=fast_regions,
                faces=faces,
                ocr_text=bytes(tensors["ocr_text"][i]).decode("utf-8") if "ocr_text" in tensors else None,
                local=local,
            )
        )
    size = tensors.get("frame_size")
    return MediaFeatures(
        frame_size=(int(size[0]), int(size[1])) if size is not None else (0, 0),
        duration_s=float(tensors["duration_s"][0]) if "duration_s" in tensors else 0.0,
        frames=frames,
        audio_codes=np.asarray(tensors.get("audio_codes", np.zeros(0, np.int32)), np.int32).view(np.uint32),
    )


def merged(base: MediaFeatures, later: MediaFeatures, families: frozenset[str]) -> MediaFeatures:
    """`base` with the fields of `families` taken from `later`: the same frames, features computed in a second
    stage (the cascade's full embedding)."""
    if len(base.frames) != len(later.frames):
        raise ValueError(f"stages disagree on the frames: {len(base.frames)} and {len(later.frames)}")
    names = {name for family in families for name in FAMILY_FIELDS[family]}
    frames = [replace(frame, **{name: getattr(extra, name) for name in names})
              for frame, extra in zip(base.frames, later.frames, strict=True)]
    audio = later.audio_codes if "audio" in families else base.audio_codes
    return replace(base, frames=frames, audio_codes=audio)


def with_regions(base: MediaFeatures, tensors: dict[str, np.ndarray]) -> MediaFeatures:
    """`base` with its full-embedding regions from `tensors` (image_embed's outputs for some of its frames'
    regions: the cascade's second stage); frames the tensors do not name get none."""
    frames = [replace(frame, regions=_regions(tensors, "", position)) for position, frame in enumerate(base.frames)]
    return replace(base, frames=frames)
