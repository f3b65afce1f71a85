"""A long crawl's progress: the live terminal line, one log line a minute, and the figures stored in the job's
row for the console (tests/test_console.py shows them there)."""

from __future__ import annotations

import io
import logging

import psycopg
import pytest

from ingest.crawler import CrawlStats
from ingest.progress import Progress
from server.storage.db import migrate, open_pool


def test_the_line_the_log_and_the_stored_figures(database_url: str, caplog: pytest.LogCaptureFixture) -> None:
    migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("insert into crawl_jobs (id, config, created_by) values ('job-1', '{}', 'crawler-1')")
    terminal = io.StringIO()
    stats = CrawlStats()
    with open_pool(database_url, max_size=1) as pool, caplog.at_level(logging.INFO, logger="ingest.progress"):
        progress = Progress("job-1", pool, terminal)
        for second in range(0, 130):  # the crawl's loop wakes about once a second
            stats.pages, stats.media = second, second // 2
            progress.tick(stats, float(second))
            if second == 3:
                with psycopg.connect(database_url) as conn:
                    stored = conn.execute("select progress from crawl_jobs where id = 'job-1'").fetchone()[0]
                assert stored["pages"] == 0 and stored["state"] == "running"  # stored at 0 s, next at 5 s
        progress.finish(stats, 130.0, "finished")
    lines = terminal.getvalue().split("\r\x1b[K")
    assert len(lines) == 131 and lines[-1].endswith("\n")  # redrawn in place, a newline at the end
    assert lines[-1] == "129 pages, 64 media, 0 posts, 0 matches, 0 errors; 1.00 pages/s, 0.50 media/s; 2:09 elapsed\n"
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 4  # at 0, 60 and 120 s, and the end
    assert logged[1].startswith("crawl job-1: 60 pages, 30 media") and "1:00 elapsed" in logged[1]
    assert logged[-1].startswith("crawl job-1 finished: 129 pages")
    with psycopg.connect(database_url) as conn:
        stored = conn.execute("select progress from crawl_jobs where id = 'job-1'").fetchone()[0]
    assert stored["state"] == "finished" and stored["pages"] == 129 and stored["elapsed_s"] == 130.0


def test_no_terminal_no_line(database_url: str) -> None:
    migrate(database_url)
    with open_pool(database_url, max_size=1) as pool:
        Progress("absent-job", pool).tick(CrawlStats(pages=1), 0.0)  # no row: stored nowhere, no error
