"""From index hits to matches: per-case thresholds, the calibrated decision, and the one decision path.

Hits arrive per signal as (query row, stored owner, stored row, score). A match is one (owner, signal,
segment); its segments come from `segments`, its faces from `youth`. Pure code.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from server.calibration import Calibration, p_false
from server.config import MatchSettings
from server.inference.features import MediaFeatures
from server.matching.segments import segments
from server.matching.verify import Outcome, Verdict
from server.matching.youth import MAX_FACES_PER_MATCH, FaceReport, face_reports
from server.signals import SIGNALS, Hits, SignalVectors


@dataclass(frozen=True)
class Thresholds:
    """Per signal, the score a hit must pass, in the signal's unit: the service's defaults with a case's overrides.
    Keyed by the registered signals' names, so a new signal is thresholded per case like the built-in ones."""

    values: Mapping[str, float]

    @classmethod
    def defaults(cls, settings: MatchSettings) -> Thresholds:
        return cls({name: float(signal.default_threshold(settings)) for name, signal in SIGNALS.items()})

    def with_overrides(self, overrides: Mapping[str, float | None]) -> Thresholds:
        """Overrides of signals no longer registered are ignored (they stay stored with the case)."""
        return Thresholds({**self.values, **{k: float(v) for k, v in overrides.items()
                                              if v is not None and k in self.values}})

    def of(self, signal: str) -> float:
        return self.values[signal]

    def loosest(self, others: list[Thresholds]) -> dict[str, float]:
        """Per signal, the threshold that admits the most hits among self and others (the search radius)."""
        out = {}
        for name in self.values:
            values = [t.of(name) for t in [self, *others]]
            out[name] = max(values) if SIGNALS[name].lower_is_closer else min(values)
        return out


@dataclass(frozen=True)
class MatchResult:
    owner: int  # the reference or sighting id matched
    signal: str
    score: float
    threshold: float
    query_segment: tuple[float, float]
    target_segment: tuple[float, float]
    matched_frames: int
    query_box: tuple[float, float, float, float]
    faces: tuple[FaceReport, ...]
    query_frame: int = -1  # the query frame of the best hit, and its time in the target: what verification checks
    target_time: float = 0.0
    normalised: float | None = None  # the best hit's score less its query row's background offset (embeddings)
    expected_false: float | None = None  # false matches a score like this brings per query, at this library's size
    verification: str = ""  # server.matching.verify.Outcome, or "" where it did not run
    p_false: float | None = None  # calibrated probability that the match is false; None without a calibration

    @property
    def under_19(self) -> bool:
        return any(face.under_19 for face in self.faces)


Verifier = Callable[[MatchResult], Verdict]


@dataclass(frozen=True)
class Assessor:
    """Turns a library's matches into calibrated ones (`server.calibration`): keeps those whose expected false
    matches per query are low enough, or low enough and geometrically verified, and gives each its p_false."""

    calibration: Calibration
    references: int  # how many owners the library holds: the chances an unrelated query has
    settings: MatchSettings
    verifier: Verifier | None = None

    def offsets(self, queries: dict[str, SignalVectors]) -> dict[str, np.ndarray]:
        return {name: self.calibration.offsets(name, query.vectors) for name, query in queries.items()
                if name in self.calibration.banks}

    def __call__(self, results: list[MatchResult]) -> list[MatchResult]:
        kept = []
        for result in results:
            score = result.normalised if result.normalised is not None else result.score
            signal = SIGNALS[result.signal]
            expected = self.calibration.expected_false(result.signal, score, max(self.references, 1),
                                                       prior=signal.prior_tail)
            verdict = ""
            if not signal.verifiable:  # faces: another photo of the same person is a match, with nothing to align
                if expected > self.settings.face_up_to:
                    continue
            elif expected > self.settings.false_matches_per_query:
                if expected > self.settings.verify_up_to or self.verifier is None:
                    continue
                outcome = self.verifier(result).outcome
                verdict = str(outcome)
                if outcome is not Outcome.VERIFIED:
                    continue
                expected *= self.calibration.verify_false_pass
            kept.append(replace(result, expected_false=expected, verification=verdict, p_false=p_false(expected)))
        return kept


class Searchable(Protocol):
    """What `match_library` needs of a library (server.matching.library.Library)."""

    def search(self, queries: dict[str, SignalVectors], thresholds: dict[str, float],
               settings: MatchSettings) -> dict[str, Hits]: ...

    def target_times(self, signal: str, owners: np.ndarray, locals_: np.ndarray) -> np.ndarray: ...


def match_library(library: Searchable, queries: dict[str, SignalVectors], radius: dict[str, float],
                  thresholds_of: Callable[[int], Thresholds], features: MediaFeatures | None,
                  settings: MatchSettings, excluded_frames: set[int] | frozenset[int] = frozenset(),
                  case_excluded: Mapping[str, set[int]] | None = None, case_of: Callable[[int], str] | None = None,
                  assess: Assessor | None = None) -> list[MatchResult]:
    """Search a library within `radius` and decide matches: the one path the service and the benchmarks use.

    `excluded_frames` are skipped for every owner; `case_excluded` adds frames skipped only for the owners of one
    case (`case_of` names an owner's case): the per-case negative bank. With `assess`, the hits that pass the
    thresholds are candidates, and `assess` keeps the calibrated ones (the thresholds are then a floor)."""
    hits = library.search(queries, radius, settings)
    offsets = assess.offsets(queries) if assess is not None else {}
    results = decide(queries, hits, library.target_times, thresholds_of, features, settings, excluded_frames,
                     offsets)
    if case_excluded:
        if case_of is None:
            raise ValueError("case_excluded needs case_of")
        results = redecide_cases(results, queries, hits, library.target_times, thresholds_of, features, settings,
                                 excluded_frames, case_excluded, case_of, offsets)
    return assess(results) if assess is not None else results


def redecide_cases(
    results: list[MatchResult],
    queries: dict[str, SignalVectors],
    hits: dict[str, Hits],
    target_times: Callable[[str, np.ndarray, np.ndarray], np.ndarray],
    thresholds_of: Callable[[int], Thresholds],
    features: MediaFeatures | None,
    settings: MatchSettings,
    excluded_frames: set[int] | frozenset[int],
    case_excluded: Mapping[str, set[int]],
    case_of: Callable[[int], str],
    offsets: Mapping[str, np.ndarray] | None = None,
) -> list[MatchResult]:
    """Replace, in `results` (decided with `excluded_frames`), the matches of each case in `case_excluded`: those
    are decided again over the same hits, restricted to the case's owners, with the case's frames excluded too.
    The search is not repeated; cases without frames of their own keep their results."""
    extra = {case: set(frames) - excluded_frames for case, frames in case_excluded.items()}
    extra = {case: frames for case, frames in extra.items() if frames}
    if not extra:
        return results
    kept = [r for r in results if case_of(r.owner) not in extra]
    for case, frames in extra.items():
        own = {}
        for name, found in hits.items():
            mask = np.fromiter((case_of(o) == case for o in found.owners.tolist()), bool, len(found))
            own[name] = Hits(found.query_rows[mask], found.owners[mask], found.locals[mask], found.scores[mask])
        kept += decide(queries, own, target_times, thresholds_of, features, settings, excluded_frames | frames,
                       offsets)
    kept.sort(key=_result_order)
    return kept


def decide(
    queries: dict[str, SignalVectors],
    hits: dict[str, Hits],
    target_times: Callable[[str, np.ndarray, np.ndarray], np.ndarray],
    thresholds_of: Callable[[int], Thresholds],
    features: MediaFeatures | None,
    settings: MatchSettings,
    excluded_frames: set[int] | frozenset[int] = frozenset(),
    offsets: Mapping[str, np.ndarray] | None = None,
) -> list[MatchResult]:
    """Matches from one search: hits passing their owner's thresholds, grouped into segments per target.

    `offsets` (per signal, per query row) are subtracted from scores to rank the hits of a segment and give
    `MatchResult.normalised`; the thresholds apply to the raw scores."""
    results: list[MatchResult] = []
    for name, found in hits.items():
        signal = SIGNALS[name]
        query = queries[name]
        if not len(found):
            continue
        times = target_times(name, found.owners, found.locals)
        offset = (offsets or {}).get(name)
        ranked = found.scores - offset[found.query_rows] if offset is not None else found.scores
        by_owner: dict[int, list[int]] = defaultdict(list)
        for i, owner in enumerate(found.owners.tolist()):
            frame = int(query.frames[found.query_rows[i]])
            if frame in excluded_frames:
                continue
            if signal.passes(float(found.scores[i]), thresholds_of(owner).of(name)):
                by_owner[owner].append(i)
        for owner, rows in by_owner.items():
            picked = np.array(rows)
            query_rows = found.query_rows[picked]
            for segment in segments(
                query.timestamps[query_rows], times[picked], ranked[picked], query.frames[query_rows],
                signal.lower_is_closer, settings,
            ):
                best = picked[segment.best]
                matched = set(query.frames[found.query_rows[picked[segment.rows]]].tolist())
                faces = face_reports(features, settings, matched)[:MAX_FACES_PER_MATCH] if features else []
                results.append(MatchResult(
                    owner=owner, signal=name, score=float(found.scores[best]),
                    threshold=thresholds_of(owner).of(name),
                    query_segment=segment.query, target_segment=segment.target,
                    matched_frames=len(matched),
                    query_box=tuple(float(v) for v in query.boxes[found.query_rows[best]]),  # type: ignore[arg-type]
                    faces=tuple(faces),
                    query_frame=int(query.frames[found.query_rows[best]]),
                    target_time=float(times[best]),
                    normalised=float(ranked[best]) if offset is not None else None,
                ))
    results.sort(key=_result_order)
    return results


def _result_order(m: MatchResult) -> tuple[int, str, float]:
    return m.owner, m.signal, -m.score if not SIGNALS[m.signal].lower_is_closer else m.score
