"""The sound of a video: Chromaprint codes (`server.models.audio_fingerprint`), searched by `server.index.audio`.

A copy whose picture was replaced, blacked out or cropped beyond recognition often keeps the victim's sound. Rows
are the codes themselves, one per 0.124 s, each remembering its time; a row's score is the agreement of the window
of `audio_window` codes around it with the aligned stored window. Evidence rules, like stop words:
- codes stored more than `audio_max_postings` times in an index propose no alignment (hum, silence, a jingle);
- a match needs `audio_min_seconds` of aligned sound in one stretch, so a shared intro jingle or a sound logo
  of a few seconds matches nothing, while a stolen recording matches over its length;
- a match on sound alone is labelled so (`Confidence.audio_only`): weaker than the picture or a face.
Rows carry frame numbers -2, -3, ... so that they never meet a video frame's (the negative bank and the segments
count frames per signal).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.calibration import Tail
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.index.audio import AudioIndex
from server.inference.features import MediaFeatures
from server.models.audio_fingerprint import CODE_CENTRE_S, CODE_SECONDS
from server.signals import Hits, SignalVectors
from server.signals.float_vectors import FloatVectorSignal

WHOLE_FRAME = (0.0, 0.0, 1.0, 1.0)
# Not fitted at scale yet: unrelated sound scores 0.15 ± 0.1 per window (tests/test_audio.py measures it), and
# this prior gives 1e-4 per reference at 0.5 and 1e-8 at 0.75.
AUDIO_PRIOR = Tail(intercept=4.0, slope=-16.0, start=0.3, lower_is_closer=False)


class AudioSignal(FloatVectorSignal):  # its threshold rules and queries are the float signals'; search its own
    name = family = "audio"
    dim = 1
    binary = True
    lower_is_closer = False
    proto_value = pb.SIGNAL_AUDIO
    proto_threshold_field = ""
    threshold_setting = "audio_min_similarity"
    k_setting = ""
    bounds = (0.3, 1.0)
    in_negative_bank = True  # a jingle marked benign stops matching
    verifiable = False  # no picture to align
    evidence = "sound"
    prior_tail = AUDIO_PRIOR

    def model_id(self, models: ModelSettings) -> str:
        return "chromaprint:2@11025"  # libchromaprint's algorithm 2 (AcoustID's), fed mono 11025 Hz

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        codes = np.asarray(features.audio_codes, np.uint32)
        n = len(codes)
        return SignalVectors(codes.reshape(n, 1), (np.arange(n) * CODE_SECONDS + CODE_CENTRE_S).astype(np.float32),
                             np.tile(np.asarray(WHOLE_FRAME, np.float32), (n, 1)), -2 - np.arange(n, dtype=np.int32))

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return vectors

    def benign_threshold(self, settings: MatchSettings) -> float:
        return self.default_threshold(settings)

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> AudioIndex:
        return AudioIndex.load(snapshot) if snapshot is not None else AudioIndex()

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        assert isinstance(index, AudioIndex)
        if not len(queries) or not len(index):
            return Hits.empty()
        rows, owners, locals_, scores = index.search(queries.vectors, threshold, settings.audio_window,
                                                     settings.audio_max_postings, settings.audio_max_alignments)
        keep = long_stretches(rows, owners, locals_ - rows, round(settings.audio_min_seconds / CODE_SECONDS))
        return Hits(rows[keep], owners[keep], locals_[keep], scores[keep])


def long_stretches(rows: np.ndarray, owners: np.ndarray, offsets: np.ndarray, min_rows: int) -> np.ndarray:
    """Indexes of the hits that lie in a run of at least `min_rows` consecutive rows of one alignment (owner,
    offset), allowing a gap of a second within a run (a burst of noise over the copy)."""
    if not len(rows):
        return np.zeros(0, np.int64)
    order = np.lexsort((rows, offsets, owners))
    o, f, r = owners[order], offsets[order], rows[order]
    gap = round(1.0 / CODE_SECONDS)
    new_run = np.ones(len(r), bool)
    new_run[1:] = (o[1:] != o[:-1]) | (f[1:] != f[:-1]) | (r[1:] - r[:-1] > gap)
    run = np.cumsum(new_run) - 1
    first = r[new_run][run]
    last = np.maximum.reduceat(r, np.nonzero(new_run)[0])[run]
    return np.sort(order[last - first + 1 >= min_rows])
