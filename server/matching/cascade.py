"""The cascade: a query's full copy-detection embedding runs only where the cheap signals cannot rule a match out.

The full SSCD costs about 90 % of a query's features (bench/RESULTS.md, "fast path"), and almost everything
crawled matches nothing. So a query first gets its cheap features: PDQ, the distilled SSCD over the same regions
(the screen), faces. The full embedding (and the keypoints that verify a match) then runs only where
- a picture signal (PDQ, or the screen within its lower, recall-keeping `screen_min_similarity`) found a
  candidate in a library the query is matched against, or
- that library holds items with full-embedding rows but no screen rows (stored before the screen model was),
  which the screen cannot rule out.
And it runs only on the regions that found a candidate, the `screen_max_regions` closest (and the whole frame, for
a PDQ candidate): three of a picture's ten to fourteen, where the screen's false candidates at scale would
otherwise cost every region. A sighting keeps the full vectors of those regions only.
Faces need neither: a face match is not a copy of the picture, and has its own signal.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from server.config import MatchSettings
from server.matching.decisions import MatchResult
from server.signals import SIGNALS, Hits, SignalVectors


class Screenable(Protocol):
    """What the cascade needs of a library (server.matching.library.Library)."""

    def search(self, queries: dict[str, SignalVectors], thresholds: dict[str, float],
               settings: MatchSettings) -> dict[str, Hits]: ...

    def unscreened(self, screened: str, screen: str) -> int: ...


@dataclass(frozen=True)
class FullPlan:
    """The regions of a query that get the screened (full) embedding: all of them, or these boxes (fractions of
    the frame) of these frames; none when the screen ruled every candidate out."""

    everything: bool = False
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))

    @property
    def needed(self) -> bool:
        return self.everything or len(self.frames) > 0


@dataclass(frozen=True)
class Cascade:
    screen: str  # the cheap signal that stands in for `screened` (MatchSettings.screen_signal)
    screened: str  # the costly one (MatchSettings.screened_signal)
    min_similarity: float  # the screen's candidate line: below its own threshold, so the screen loses no match
    regions_only: bool = True  # the full embedding of the flagged regions only (MatchSettings.screen_regions_only)
    max_regions: int = 3  # of those, the closest (MatchSettings.screen_max_regions)

    @classmethod
    def of(cls, settings: MatchSettings, signals: Container[str]) -> Cascade | None:
        """The cascade `settings` ask for, if both its signals are in use (`signals`); None: every query gets
        every feature."""
        if not settings.screen_signal or settings.screen_signal not in signals \
                or settings.screened_signal not in signals:
            return None
        # Regions can be asked of the full copy-detection embedding only (Inference.embed_regions)
        regions_only = settings.screen_regions_only and SIGNALS[settings.screened_signal].family == "embedding"
        return cls(settings.screen_signal, settings.screened_signal, settings.screen_min_similarity, regions_only,
                   max(1, settings.screen_max_regions))

    def stage_one(self, families: frozenset[str]) -> frozenset[str]:
        """The families a query gets first: all it needs but the screened signal's and the keypoints."""
        return families - self.stage_two()

    def stage_two(self) -> frozenset[str]:
        return frozenset({SIGNALS[self.screened].family, "local"})

    def plan(self, libraries: Iterable[Screenable], queries: dict[str, SignalVectors], radius: dict[str, float],
             settings: MatchSettings) -> FullPlan:
        """Which of the query's regions need the screened signal before it is matched against `libraries`: the
        `max_regions` regions the screen found the closest candidates for, and the whole frame where PDQ found one
        (a whole-frame hash); every region where a library holds items the screen cannot rule out, or where
        `screen_regions_only` is off."""
        cheap = {name: rows for name, rows in queries.items()
                 if name != self.screened and name in SIGNALS and SIGNALS[name].verifiable and len(rows)}
        lines = {name: radius[name] for name in cheap if name in radius} | {self.screen: self.min_similarity}
        flagged: dict[int, float] = {}  # rows of the screen's query vectors: their best screen score
        whole: set[int] = set()  # frames
        for library in libraries:
            if library.unscreened(self.screened, self.screen):
                return FullPlan(everything=True)
            for name, hits in library.search(cheap, lines, settings).items():
                if not len(hits):
                    continue
                if not self.regions_only:
                    return FullPlan(everything=True)
                if name == self.screen:
                    for row, score in zip(hits.query_rows.tolist(), hits.scores.tolist(), strict=True):
                        flagged[row] = max(score, flagged.get(row, score))
                else:
                    whole.update(cheap[name].frames[hits.query_rows].tolist())
        screen = queries.get(self.screen)
        if screen is None or not len(screen):
            return FullPlan(everything=bool(flagged or whole))
        # The closest regions: a copy's best full-model pair is among them, an unrelated screen's weak ones are not
        chosen_rows = set(sorted(flagged, key=lambda row: -flagged[row])[:self.max_regions])
        for frame in whole:  # a frame's first region is the trimmed whole frame (server.models.image_embed)
            rows = np.nonzero(screen.frames == frame)[0]
            if len(rows):
                chosen_rows.add(int(rows[0]))
        chosen = np.asarray(sorted(chosen_rows), np.int64)
        return FullPlan(boxes=screen.boxes[chosen], frames=screen.frames[chosen])

    def without_screen_duplicates(self, results: list[MatchResult]) -> list[MatchResult]:
        """Matches less the screen's where the same target also matched on the screened signal: one picture
        signal's evidence, the stronger one, not two."""
        confirmed = {r.owner for r in results if r.signal == self.screened}
        return [r for r in results if not (r.signal == self.screen and r.owner in confirmed)]
