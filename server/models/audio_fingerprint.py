"""Chromaprint sub-fingerprints of a video's sound (the `audio` signal's feature).

Chromaprint (libchromaprint1, LGPL-2.1; called through pyacoustid's ctypes binding, MIT) turns 11025 Hz mono
sound into one 32-bit code per 1365 samples (0.124 s), each code 32 filters over a 12-band chroma image of the
last 0.37 s. Codes of the same sound agree in most bits after re-encoding, resampling or a change of volume;
codes of unrelated sound differ in about 40 % of their bits. No model weights: the filters are fixed in the
library (the defaults of its algorithm 2, the one AcoustID uses).
"""

from __future__ import annotations

import numpy as np

from server.config import Settings
from server.media import AUDIO_RATE

CODE_SECONDS = 1365 / AUDIO_RATE  # one code per hop of chromaprint's 4096-sample frames, overlapped by 2/3
# chromaprint's first code needs 2.7 s of sound (its 4096-sample frame and 16 frames of filters): a code tells of
# the sound around 1.33 s after its hop starts
CODE_CENTRE_S = 1.33
MIN_SAMPLES = AUDIO_RATE * 3  # shorter sound gives chromaprint too few frames to say anything


def _chromaprint():  # type: ignore[no-untyped-def]
    try:
        import chromaprint
    except OSError as exc:  # the binding loads libchromaprint.so.1 when imported
        raise RuntimeError("libchromaprint1 is not installed (scripts/setup installs it)") from exc
    return chromaprint


class AudioFingerprintModel:
    def __init__(self, settings: Settings) -> None:
        self.chromaprint = _chromaprint()

    def __call__(self, audio: np.ndarray) -> dict[str, np.ndarray]:
        return {"audio_codes": fingerprint(self.chromaprint, np.asarray(audio, np.int16).reshape(-1))}


def fingerprint(chromaprint: object, samples: np.ndarray) -> np.ndarray:
    """The codes of mono int16 samples at AUDIO_RATE, as int32 holding each code's 32 bits (empty when the sound
    is too short or silent: silence has no chroma)."""
    if len(samples) < MIN_SAMPLES or not np.any(samples):
        return np.zeros(0, np.int32)
    printer = chromaprint.Fingerprinter()  # type: ignore[attr-defined]
    printer.start(AUDIO_RATE, 1)
    printer.feed(np.ascontiguousarray(samples, "<i2").tobytes())
    codes, _ = chromaprint.decode_fingerprint(printer.finish())  # type: ignore[attr-defined]
    return np.asarray(codes, np.int64).astype(np.uint32).view(np.int32)
