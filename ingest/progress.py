"""A long crawl's progress: a live line on a terminal, one summary line a minute in the log, and the figures in the
job's row every few seconds (the officers' console shows them)."""

from __future__ import annotations

import logging
import math
from typing import Any, Protocol, TextIO

from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

log = logging.getLogger(__name__)
LOG_EVERY_S = 60.0
STORE_EVERY_S = 5.0


class Figures(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def progress_line(figures: dict[str, Any], elapsed_s: float) -> str:
    """One line of a crawl's figures (the same words on the terminal, in the log and in the console)."""
    seconds = max(elapsed_s, 1e-9)
    skipped = sum(figures.get("skipped", {}).values())
    minutes, secs = divmod(int(elapsed_s), 60)
    return (f"{figures['pages']} pages, {figures['media']} media, {figures['posts']} posts, "
            f"{figures['matches']} matches, {figures['failed']} errors"
            + (f", {skipped} skipped" if skipped else "")
            + f"; {figures['pages'] / seconds:.2f} pages/s, {figures['media'] / seconds:.2f} media/s; "
            f"{minutes}:{secs:02d} elapsed")


class Progress:
    """Call `tick` as the crawl goes (its loop wakes at least once a second) and `finish` at its end."""

    def __init__(self, job: str, pool: ConnectionPool, terminal: TextIO | None = None,
                 log_every_s: float = LOG_EVERY_S, store_every_s: float = STORE_EVERY_S) -> None:
        self.job = job
        self.pool = pool
        self.terminal = terminal  # a TTY: the line is redrawn in place
        self.log_every_s = log_every_s
        self.store_every_s = store_every_s
        self._logged = self._stored = -math.inf  # the first tick logs and stores

    def tick(self, figures: Figures, elapsed_s: float) -> None:
        current = figures.as_dict()
        line = progress_line(current, elapsed_s)
        if self.terminal is not None:
            self.terminal.write(f"\r\x1b[K{line}")
            self.terminal.flush()
        if elapsed_s - self._logged >= self.log_every_s:
            self._logged = elapsed_s
            log.info("crawl %s: %s", self.job, line)
        if elapsed_s - self._stored >= self.store_every_s:
            self._stored = elapsed_s
            self._store(current, elapsed_s, "running")

    def finish(self, figures: Figures, elapsed_s: float, state: str) -> None:
        current = figures.as_dict()
        if self.terminal is not None:
            self.terminal.write("\n")
            self.terminal.flush()
        log.info("crawl %s %s: %s", self.job, state, progress_line(current, elapsed_s))
        self._store(current, elapsed_s, state)

    def _store(self, figures: dict[str, Any], elapsed_s: float, state: str) -> None:
        kept = {k: v for k, v in figures.items() if k in ("pages", "media", "posts", "matches", "failed", "skipped",
                                                          "rendered")}
        try:
            with self.pool.connection() as conn:
                conn.execute("update crawl_jobs set progress = %s, updated_at = now() where id = %s",
                             (Jsonb({**kept, "elapsed_s": round(elapsed_s, 1), "line": progress_line(
                                 figures, elapsed_s), "state": state}), self.job))
        except Exception:  # the figures are for people watching: a failed write must not stop the crawl
            log.warning("crawl %s: progress not stored", self.job, exc_info=True)
