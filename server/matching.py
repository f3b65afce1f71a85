"""From index hits to matches: per-case thresholds, the negative bank, and video segments. Pure code.

Hits arrive per signal as (query row, stored owner, stored row, score). A match is one (owner, signal,
segment): for video, frames whose hits keep a steady offset between query time and target time (temporal
voting) are merged into one segment, with start and end in both videos. Images are one-frame videos at t = 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Protocol

import numpy as np

from server.calibration import Calibration, p_false
from server.config import MatchSettings
from server.features import MediaFeatures
from server.signals import SIGNALS, Hits, SignalVectors
from server.signals.face import face_box_fraction
from server.verify import Outcome, Verdict

MAX_SEGMENTS_PER_TARGET = 8  # per (owner, signal); more would be noise from look-alike scenes
MAX_FACES_PER_MATCH = 16


@dataclass(frozen=True)
class Thresholds:
    pdq: float
    embedding: float
    face: float

    @classmethod
    def defaults(cls, settings: MatchSettings) -> Thresholds:
        return cls(*(SIGNALS[n].default_threshold(settings) for n in ("pdq", "embedding", "face")))

    def with_overrides(self, overrides: dict[str, float]) -> Thresholds:
        return Thresholds(**{**self.__dict__, **{k: v for k, v in overrides.items() if v is not None}})

    def of(self, signal: str) -> float:
        return float(getattr(self, signal))

    def loosest(self, others: list[Thresholds]) -> dict[str, float]:
        """Per signal, the threshold that admits the most hits among self and others (the search radius)."""
        out = {}
        for name, signal in SIGNALS.items():
            values = [t.of(name) for t in [self, *others]]
            out[name] = max(values) if signal.lower_is_closer else min(values)
        return out


@dataclass(frozen=True)
class FaceReport:
    timestamp: float
    box: tuple[float, float, float, float]  # fractions of the frame
    age_mean: float
    age_std: float
    p_under19: float
    under_19: bool


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
    verification: str = ""  # server.verify.Outcome, or "" where it did not run
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
        embedding = queries.get("embedding")
        return {} if embedding is None else {"embedding": self.calibration.offsets(embedding.vectors)}

    def __call__(self, results: list[MatchResult]) -> list[MatchResult]:
        kept = []
        for result in results:
            score = result.normalised if result.normalised is not None else result.score
            expected = self.calibration.expected_false(result.signal, score, max(self.references, 1))
            verdict = ""
            if result.signal == "face":  # not verified by geometry: another photo of the same person is a match
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


def face_reports(features: MediaFeatures, settings: MatchSettings, frames: set[int] | None = None,
                 only_under_19: bool = False) -> list[FaceReport]:
    """Faces with an age estimate, in the given frames (all frames when None)."""
    reports = []
    for frame in features.frames:
        if frames is not None and frame.index not in frames:
            continue
        for face in frame.faces:
            if face.age_p_under19 is None:
                continue
            under = face.age_p_under19 >= settings.youth_p_under19
            if only_under_19 and not under:
                continue
            reports.append(FaceReport(frame.timestamp, face_box_fraction(face.box, features.frame_size),
                                      float(face.age_mean or 0.0), float(face.age_std or 0.0),
                                      float(face.age_p_under19), under))
    return reports


def benign_frames(hits: dict[str, Hits], queries: dict[str, SignalVectors]) -> set[int]:
    """Query frames that are near copies of negative-bank media (hits were searched at the benign thresholds)."""
    frames: set[int] = set()
    for name, found in hits.items():
        frames.update(queries[name].frames[found.query_rows].tolist())
    return frames


def benign_frames_by_case(hits: dict[str, Hits], queries: dict[str, SignalVectors],
                          case_of: Callable[[int], str | None]) -> dict[str | None, set[int]]:
    """`benign_frames` grouped by the case each hit's bank entry applies to (None: every case)."""
    out: dict[str | None, set[int]] = defaultdict(set)
    for name, found in hits.items():
        frames = queries[name].frames[found.query_rows].tolist()
        for owner, frame in zip(found.owners.tolist(), frames, strict=True):
            out[case_of(owner)].add(frame)
    return dict(out)


class Searchable(Protocol):
    """What `match_library` needs of a library (server.library.Library)."""

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


@dataclass(frozen=True)
class SegmentRows:
    rows: np.ndarray  # positions (into the arrays given to `segments`) of the best hit per query frame
    best: int  # position of the closest hit
    query: tuple[float, float]
    target: tuple[float, float]


def segments(query_times: np.ndarray, target_times: np.ndarray, scores: np.ndarray, frames: np.ndarray,
             lower_is_closer: bool, settings: MatchSettings) -> list[SegmentRows]:
    """Group one target's hits into segments by temporal voting.

    Hits are clustered by offset (target time minus query time), allowing `segment_offset_tolerance_s` of
    drift between neighbours (speed changes, sampling jitter); within a cluster each query frame keeps its
    closest hit, and a gap longer than `segment_max_gap_s` in query time starts a new segment."""
    order = np.argsort(target_times - query_times, kind="stable")
    offsets = (target_times - query_times)[order]
    clusters = np.split(order, np.nonzero(np.diff(offsets) > settings.segment_offset_tolerance_s)[0] + 1)
    out: list[SegmentRows] = []
    for cluster in clusters:
        best_per_frame: dict[int, int] = {}
        for position in cluster.tolist():
            frame = int(frames[position])
            kept = best_per_frame.get(frame)
            if kept is None or better_score(scores[position], scores[kept], lower_is_closer):
                best_per_frame[frame] = position
        kept_rows = sorted(best_per_frame.values(), key=lambda p: (query_times[p], p))
        start = 0
        for i in range(1, len(kept_rows) + 1):
            if i == len(kept_rows) or query_times[kept_rows[i]] - query_times[kept_rows[i - 1]] > \
                    settings.segment_max_gap_s:
                piece = np.array(kept_rows[start:i])
                best = min(piece.tolist(), key=lambda p: scores[p] if lower_is_closer else -scores[p])
                out.append(SegmentRows(
                    rows=piece, best=best,
                    query=(float(query_times[piece].min()), float(query_times[piece].max())),
                    target=(float(target_times[piece].min()), float(target_times[piece].max())),
                ))
                start = i
    out.sort(key=lambda s: (-len(s.rows), scores[s.best] if lower_is_closer else -scores[s.best]))
    return out[:MAX_SEGMENTS_PER_TARGET]


def better_score(a: float, b: float, lower_is_closer: bool) -> bool:
    return a < b if lower_is_closer else a > b
