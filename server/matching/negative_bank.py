"""The negative bank's side of a decision: which query frames are near copies of media judged benign.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

from server.signals import Hits, SignalVectors


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
