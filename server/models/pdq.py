"""PDQ: Meta's 256-bit perceptual hash, the format StopNCII and ThreatExchange exchange."""

from __future__ import annotations

import cv2
import numpy as np
import pdqhash

from server.config import Settings

PDQ_BYTES = 32
QUALITY_FLOOR = 50  # below this PDQ's own authors say the hash is not worth matching (flat or tiny images)
# PDQ's Jarosz box filters size their windows from the input size, so one picture at two sizes can drift past
# the match radius (we measured up to 76 bits for a half-size copy). Area-averaging every frame to one canonical
# size first brings resized copies to ~2.5 bits on average; hashes of the original file (e.g. hashed on a
# victim's device) stay within a few bits of ours.
CANONICAL_SIDE = 512
# The eight dihedral variants pdqhash.compute_dihedral returns, in its order. Indexing a reference under all
# eight lets the cheap PDQ stage also catch mirrored and quarter-turned copies, where plain PDQ fails.
DIHEDRAL = ("original", "rot90", "rot180", "rot270", "flip_v", "flip_h", "rot90_flip_v", "rot90_flip_h")


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """pdqhash returns bit 255 first; packing MSB-first gives bytes whose hex is ThreatExchange's format."""
    return np.packbits(bits.astype(np.uint8))


def hash_to_hex(packed: np.ndarray | bytes) -> str:
    return bytes(packed).hex()


def hex_to_hash(text: str) -> np.ndarray:
    raw = bytes.fromhex(text.strip())
    if len(raw) != PDQ_BYTES:
        raise ValueError(f"a PDQ hash is {PDQ_BYTES * 2} hex digits, got {len(text.strip())}")
    return np.frombuffer(raw, dtype=np.uint8).copy()


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.unpackbits(np.bitwise_xor(a, b)).sum())


def canonical(frame: np.ndarray) -> np.ndarray:
    shrinking = min(frame.shape[:2]) >= CANONICAL_SIDE
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    return cv2.resize(frame, (CANONICAL_SIDE, CANONICAL_SIDE), interpolation=interpolation)


class PdqModel:
    def __init__(self, settings: Settings) -> None:
        del settings  # PDQ has no parameters

    def __call__(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        count = len(frames)
        hashes = np.zeros((count, PDQ_BYTES), np.uint8)
        dihedral = np.zeros((count, len(DIHEDRAL), PDQ_BYTES), np.uint8)
        quality = np.zeros(count, np.int32)
        for i, frame in enumerate(frames):
            variants, quality[i] = pdqhash.compute_dihedral(canonical(frame))
            dihedral[i] = [pack_bits(v) for v in variants]
            hashes[i] = dihedral[i, 0]
        return {"pdq_hash": hashes, "pdq_dihedral": dihedral, "pdq_quality": quality}
