"""Calibrated scores: how many false matches a score would bring per query, given how many references there are.

A fixed cosine threshold is a fixed false-match rate per *pair*; with N references an unrelated query meets N
chances, so the same threshold that is safe at 300 references matches something at 10,000. Three steps fix that:

1. **Score normalisation** (both embeddings, each against a bank of its own). Some pictures are close to
   everything of their kind: a page screenshot to every other screenshot, a flat drawing to every drawing. Each
   query row's score is taken relative to how close it comes to unrelated pictures: its k-th best cosine in a
   *background bank* of region embeddings of images that are nobody's (`normalised = cosine - kth_background`).
2. **A null tail per signal**: P(one unrelated reference's best score >= s), fitted with background images as
   queries against the filler references (`bench.accuracy --filler ... --refit`, `bench.precision.fit`) as
   log10 P = intercept + slope * s from where one unrelated reference in a thousand scores that close. The
   expected number of false matches of a score is then `E = references * P(s)`.
3. **A target per query**: a match is kept when E <= `false_matches_per_query`, or when E <= `verify_up_to` and
   geometric verification (`server.matching.verify`) passes; a verified match's E is multiplied by the verifier's
   measured false-pass rate. Faces cannot be verified by geometry (another photo of the same person is a
   match): they are kept up to `face_up_to`, with a tail from dlib's published figures (`FACE_PRIOR`).
   `p_false = 1 - exp(-E)` is the confidence the API, the console and reports show.

The banks and the tails are one file fitted for one pair of embedding models (the full and the distilled SSCD)
and region layout (`server/data/calibration_sscd.npz`). Other models get no normalisation and the fixed thresholds
alone, with a warning at start: a calibration from another space would be wrong, not just loose.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_PATH = Path(__file__).resolve().parent / "data" / "calibration_sscd.npz"


@dataclass(frozen=True)
class Tail:
    """log10 P(an unrelated reference scores at least as close as `score`) as a line in the score's closeness
    (the score, or minus the score for distances), for scores at least as close as `start`; P = 1 short of it."""

    intercept: float
    slope: float  # per unit of score towards "closer"
    start: float
    lower_is_closer: bool

    def p_one(self, score: float) -> float:
        closeness = -score if self.lower_is_closer else score
        if closeness < (-self.start if self.lower_is_closer else self.start):
            return 1.0  # outside the fitted tail: too common to count as evidence
        return float(min(1.0, 10 ** (self.intercept + self.slope * closeness)))


@dataclass(frozen=True)
class Calibration:
    """Everything the matcher needs to turn scores into expected false matches, for one embedding space."""

    model: str  # what the embeddings came from: "sscd@288/grid3+sscd_distilled@224" (`embedding_space`)
    background_k: int
    tails: dict[str, Tail]  # signal name -> tail
    verify_false_pass: float  # share of unrelated pairs that geometric verification passes
    fitted_on: str  # a line on the data it was fitted on
    # signal name -> its background bank: region vectors of images that are nobody's (the embeddings)
    banks: dict[str, np.ndarray] = field(repr=False, default_factory=dict)

    def offsets(self, signal: str, vectors: np.ndarray) -> np.ndarray:
        """Per row, its k-th best cosine in the signal's background bank (0 where it has none)."""
        bank = self.banks.get(signal)
        if bank is None or not len(vectors) or len(bank) < self.background_k or self.background_k <= 0:
            return np.zeros(len(vectors), np.float32)
        similarity = vectors.astype(np.float32, copy=False) @ bank.T
        kth = np.partition(similarity, -self.background_k, axis=1)[:, -self.background_k]
        return kth.astype(np.float32)

    def expected_false(self, signal: str, score: float, references: int, prior: Tail | None = None) -> float:
        """`prior`: the signal's own tail, where this file has none fitted (a signal without either never passes).
        A signal this file normalises is scored normalised: its prior, in raw units, does not apply."""
        tail = self.tails.get(signal, None if signal in self.banks else prior)
        if tail is None:
            return math.inf
        return references * tail.p_one(score)

    def save(self, path: Path) -> None:
        meta = {k: v for k, v in asdict(self).items() if k != "banks"}
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.savez_compressed(handle, meta=np.array(json.dumps(meta)),
                                **{f"bank_{name}": bank.astype(np.float16) for name, bank in self.banks.items()})

    @classmethod
    def load(cls, path: Path) -> Calibration:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            # stored as float16; searched as float32, once converted. "bank": a file of one bank, the embedding's
            banks = {("embedding" if key == "bank" else key.removeprefix("bank_")): data[key].astype(np.float32)
                     for key in data.files if key == "bank" or key.startswith("bank_")}
        meta["tails"] = {name: Tail(**tail) for name, tail in meta["tails"].items()}
        return cls(**meta, banks=banks)


# Faces: the precision set has too few real, unrelated faces to fit a tail (its filler is mostly drawn), so the
# tail is a prior from dlib's published figures: P(two different people's
# dlib descriptors are within d) put at 0.5 % at dlib's own 0.6 line (LFW: 99.38 % accuracy there), ten times
# rarer for every 0.1 closer. Per pair of faces, so conservative for references without faces.
FACE_PRIOR = Tail(intercept=-2.3 - 0.6 * 10, slope=-10.0, start=0.6, lower_is_closer=True)

# The distilled SSCD (`embedding_fast`, raw cosine, best pair of regions): not yet fitted at scale. This tail is
# `python -m bench.fast_tail` on the dev corpus: 266 images x 2 uploader transforms against every unrelated corpus
# image (137,664 pairs; the closest at 0.697), fitted from 0.41 and doubled. It says P = 1.2e-4 per reference at
# 0.6 and 6.9e-6 at 0.8, extrapolated past 0.70.
# SFace (`face_sface`, cosine of L2-normalised features): built as FACE_PRIOR is, from OpenCV zoo's published
# figures: P(two different people score at least 0.363, its same-person line, LFW 99.40 % there) put at 0.5 %, ten
# times rarer for every 0.14 closer (different people spread about 1.4 times wider in SFace cosine than in dlib
# distance on the dev corpus faces: bench notes in bench/RESULTS.md, "fast path").
SFACE_PRIOR = Tail(intercept=-2.3 + 0.363 / 0.14, slope=-1 / 0.14, start=0.363, lower_is_closer=False)

FAST_EMBEDDING_PRIOR = Tail(intercept=-0.1877, slope=-6.2177, start=0.4121, lower_is_closer=False)


def p_false(expected_false: float) -> float:
    """The probability of at least one false match when E are expected (Poisson)."""
    return 1.0 - math.exp(-expected_false) if math.isfinite(expected_false) else 1.0


class EmbeddingModels(Protocol):
    """What `embedding_space` reads of the model settings (`server.config.ModelSettings`)."""

    embed_model: str
    embed_size: int
    region_grid: int
    fast_embed_model: str
    fast_embed_size: int


def embedding_space(models: EmbeddingModels) -> str:
    """The embedding spaces a calibration file's banks and tails are for: the full model's and the fast one's."""
    return (f"{models.embed_model}@{models.embed_size}/grid{models.region_grid}"
            f"+{models.fast_embed_model}@{models.fast_embed_size}")


@lru_cache(maxsize=4)
def calibration_for(space: str, path: str = "") -> Calibration | None:
    """The calibration of this embedding space, or None (with a warning) where the file is for another."""
    file = Path(path) if path else DEFAULT_PATH
    if not file.exists():
        log.warning("no calibration at %s: fixed thresholds only, no confidence", file)
        return None
    calibration = Calibration.load(file)
    if calibration.model != space:
        log.warning("calibration %s is for %s, not %s: fixed thresholds only, no confidence", file,
                    calibration.model, space)
        return None
    return calibration


def odds(p: float) -> str:
    """A p_false as people read it: "1 in 12,000" for small ones, a percentage from 1 % up."""
    if p >= 0.01:
        return f"{p * 100:.0f} %"
    if p < 1e-6:
        return "< 1 in 1,000,000"
    return f"1 in {round(1 / p, -1 if p > 1e-3 else -2):,.0f}"
