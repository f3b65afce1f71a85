"""The cascade: a query's full copy-detection embedding runs only where the cheap signals cannot rule a match out.

The full SSCD costs about 90 % of a query's features (bench/RESULTS.md, "fast path"), and almost everything
crawled matches nothing. So a query first gets its cheap features: PDQ, the distilled SSCD over the same regions
(the screen), faces. The full embedding (and the keypoints that verify a match) then runs only where
- a picture signal (PDQ, or the screen within its lower, recall-keeping `screen_min_similarity`) found a
  candidate in a library the query is matched against, or
- that library holds items with full-embedding rows but no screen rows (stored before the screen model was),
  which the screen cannot rule out.
Faces need neither: a face match is not a copy of the picture, and has its own signal.
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from dataclasses import dataclass
from typing import Protocol

from server.config import MatchSettings
from server.matching.decisions import MatchResult
from server.signals import SIGNALS, Hits, SignalVectors


class Screenable(Protocol):
    """What the cascade needs of a library (server.matching.library.Library)."""

    def search(self, queries: dict[str, SignalVectors], thresholds: dict[str, float],
               settings: MatchSettings) -> dict[str, Hits]: ...

    def unscreened(self, screened: str, screen: str) -> int: ...


@dataclass(frozen=True)
class Cascade:
    screen: str  # the cheap signal that stands in for `screened` (MatchSettings.screen_signal)
    screened: str  # the costly one (MatchSettings.screened_signal)
    min_similarity: float  # the screen's candidate line: below its own threshold, so the screen loses no match

    @classmethod
    def of(cls, settings: MatchSettings, signals: Container[str]) -> Cascade | None:
        """The cascade `settings` ask for, if both its signals are in use (`signals`); None: every query gets
        every feature."""
        if not settings.screen_signal or settings.screen_signal not in signals \
                or settings.screened_signal not in signals:
            return None
        return cls(settings.screen_signal, settings.screened_signal, settings.screen_min_similarity)

    def stage_one(self, families: frozenset[str]) -> frozenset[str]:
        """The families a query gets first: all it needs but the screened signal's and the keypoints."""
        return families - self.stage_two()

    def stage_two(self) -> frozenset[str]:
        return frozenset({SIGNALS[self.screened].family, "local"})

    def needs_full(self, libraries: Iterable[Screenable], queries: dict[str, SignalVectors],
                   radius: dict[str, float], settings: MatchSettings) -> bool:
        """Whether the query's screened signal must be computed before it is matched against `libraries`."""
        cheap = {name: rows for name, rows in queries.items()
                 if name != self.screened and name in SIGNALS and SIGNALS[name].verifiable and len(rows)}
        lines = {name: radius[name] for name in cheap if name in radius} | {self.screen: self.min_similarity}
        for library in libraries:
            if library.unscreened(self.screened, self.screen):
                return True
            if any(len(hits) for hits in library.search(cheap, lines, settings).values()):
                return True
        return False

    def without_screen_duplicates(self, results: list[MatchResult]) -> list[MatchResult]:
        """Matches less the screen's where the same target also matched on the screened signal: one picture
        signal's evidence, the stronger one, not two."""
        confirmed = {r.owner for r in results if r.signal == self.screened}
        return [r for r in results if not (r.signal == self.screen and r.owner in confirmed)]
