"""Match signals: one module each (pdq, embedding and embedding_fast, face and face_sface), one interface, one
registry.

A signal turns a media item's features into rows of vectors (each row remembering the frame time and box it came
from), makes the index that holds them (of the backend `IndexSettings` names), searches it, and knows which way
its scores point. It also owns what the rest would otherwise hard-code: its threshold and the bounds a case may
set it to, its name in the API, whether the negative bank holds it, whether geometry can verify it, and the null
tail it is calibrated with when the calibration file has none. The matcher (`server.matching`), the service and
the gRPC layer only talk to this interface and loop over `SIGNALS`, so a new signal is one module and one
`register` call (tests/test_signals.py registers a toy one). Like python-threatexchange's `SignalType`, but over
vectors rather than strings: our signals live in indexes, not in exchange files (PDQ hashes still cross the API
as hex, see `server.models.pdq`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from server.calibration import Tail
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.inference.features import MediaFeatures


@dataclass(frozen=True)
class SignalVectors:
    """One signal's rows for one media item."""

    vectors: np.ndarray  # [N, D] float32, or [N, 32] uint8 for PDQ
    timestamps: np.ndarray  # [N] float32: time of the frame each row came from
    boxes: np.ndarray  # [N, 4] float32: x0, y0, x1, y1 as fractions of the frame
    frames: np.ndarray  # [N] int32: index of the frame in the MediaFeatures (-1 when there is none)

    def __len__(self) -> int:
        return len(self.vectors)

    @classmethod
    def empty(cls, dim: int, dtype: type = np.float32) -> SignalVectors:
        return cls(np.zeros((0, dim), dtype), np.zeros(0, np.float32), np.zeros((0, 4), np.float32),
                   np.zeros(0, np.int32))

    @classmethod
    def stack(cls, rows: list[tuple[np.ndarray, float, tuple[float, ...], int]], dim: int,
              dtype: type = np.float32) -> SignalVectors:
        if not rows:
            return cls.empty(dim, dtype)
        return cls(
            np.stack([r[0] for r in rows]).astype(dtype, copy=False),
            np.array([r[1] for r in rows], np.float32),
            np.array([r[2] for r in rows], np.float32).reshape(-1, 4),
            np.array([r[3] for r in rows], np.int32),
        )


@dataclass(frozen=True)
class Hits:
    """Search results, one row per (query row, stored row) pair within the search threshold."""

    query_rows: np.ndarray  # int64
    owners: np.ndarray  # int64
    locals: np.ndarray  # int64: row within the owner's vectors
    scores: np.ndarray  # float32, in the signal's unit

    def __len__(self) -> int:
        return len(self.owners)

    @classmethod
    def empty(cls) -> Hits:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))


class Signal(Protocol):
    name: str  # as stored in the database and in index snapshot names, and Match.signal_name in the API
    family: str  # the feature family (server.inference.features.FAMILY_OUTPUTS) it needs
    dim: int
    binary: bool
    lower_is_closer: bool
    proto_value: int  # its jiwoom.v1.Signal enum value (0 for one the API has no value for: signal_name says it)
    proto_threshold_field: str  # its typed field in jiwoom.v1.Thresholds ("" if none: Thresholds.by_signal has it)
    in_negative_bank: bool  # a negative-bank entry keeps this signal's rows (its benign_rows)
    verifiable: bool  # geometry can confirm a hit (a copy of the picture); False for faces: another photo matches
    evidence: str  # what a match on it shows: "picture", "face" or "sound" (the last two are weaker evidence)
    prior_tail: Tail | None  # its null tail where the calibration file has none (None: uncalibrated, never kept)

    def model_id(self, models: ModelSettings) -> str:
        """What makes this signal's vectors under `models`: the model's file, its input and preprocessing. It is
        stored with every row; rows of another id are not comparable with this signal's (server.service)."""

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        """Rows to store for media that is searched for later (references, sightings, benign media)."""

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        """Rows to search with (PDQ adds its flipped and rotated variants here)."""

    def default_threshold(self, settings: MatchSettings) -> float: ...

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> object:
        """A fresh index for this signal's rows, or the one saved at `snapshot` (ValueError if unreadable, or of
        another backend than `settings` names)."""

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        """Every stored row within `threshold` of a query row (the loosest threshold any case uses)."""

    def passes(self, score: float, threshold: float) -> bool: ...

    def check_threshold(self, value: float) -> None:
        """InvalidInput unless `value` is a threshold a case may set (the index must still answer it exactly)."""

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        """The rows a negative-bank entry keeps of an item's rows, and a query is checked with (if in the bank)."""

    def benign_threshold(self, settings: MatchSettings) -> float:
        """How close a query must come to a negative-bank entry to be suppressed by it."""


SIGNALS: dict[str, Signal] = {}


def register(signal: Signal) -> Signal:
    """Add a signal to the registry that the libraries, the matcher, the service and the API read. Names are
    unique: they are stored in the database and name index snapshots."""
    if not signal.name or not signal.name.isidentifier():
        raise ValueError(f"a signal name must be an identifier, not {signal.name!r}")
    if signal.name in SIGNALS:
        raise ValueError(f"a signal named {signal.name!r} is already registered")
    if signal.proto_value and any(s.proto_value == signal.proto_value for s in SIGNALS.values()):
        raise ValueError(f"signal {signal.name!r}: its API enum value {signal.proto_value} is taken")
    SIGNALS[signal.name] = signal
    return signal


def unregister(name: str) -> None:
    """Remove a signal (a test's toy one); services made afterwards no longer know it."""
    SIGNALS.pop(name, None)


def negative_bank_signals() -> dict[str, Signal]:
    return {name: signal for name, signal in SIGNALS.items() if signal.in_negative_bank}


def configured_signals(settings: MatchSettings) -> dict[str, Signal]:
    """The signals new media gets (`MatchSettings.signals`), in registry order."""
    names = [n.strip() for n in settings.signals.split(",") if n.strip()]
    unknown = sorted(set(names) - set(SIGNALS))
    if unknown:
        raise ValueError(f"MatchSettings.signals names unknown signals {unknown}; registered: {sorted(SIGNALS)}")
    if not names:
        raise ValueError("MatchSettings.signals names no signal")
    return {name: signal for name, signal in SIGNALS.items() if name in names}


def signal_models(models: ModelSettings) -> dict[str, str]:
    """Each registered signal's model id under `models` (what the store records with its rows)."""
    return {name: signal.model_id(models) for name, signal in SIGNALS.items()}


def signal_families(signals: Iterable[Signal]) -> frozenset[str]:
    """The feature families these signals need."""
    return frozenset(signal.family for signal in signals)


def _register_built_ins() -> None:
    from server.signals.audio import AudioSignal
    from server.signals.embedding import EmbeddingSignal
    from server.signals.face import FaceSignal
    from server.signals.pdq import PdqSignal

    for signal in (PdqSignal(), EmbeddingSignal.full(), EmbeddingSignal.fast(), FaceSignal.dlib(),
                   FaceSignal.sface(), AudioSignal()):
        register(signal)



def whole_frames(vectors: SignalVectors) -> SignalVectors:
    """The first row of each frame: for embeddings the border-trimmed whole frame (unless it was too flat to embed)."""
    if not len(vectors):
        return vectors
    _, first = np.unique(vectors.frames, return_index=True)
    first = np.sort(first)
    return SignalVectors(vectors.vectors[first], vectors.timestamps[first], vectors.boxes[first],
                         vectors.frames[first])


_register_built_ins()  # last: the built-in modules import this one's names
