"""Video segments by temporal voting: one target's hits grouped by the offset between query time and target
time. Images are one-frame videos at t = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.config import MatchSettings

MAX_SEGMENTS_PER_TARGET = 8  # per (owner, signal); more would be noise from look-alike scenes


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
