"""Crawls: each job's state and the figures its crawler last stored (pages, media, matches, errors, rates)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from clients.console.context import current_console
from clients.console.store import crawl_jobs

blueprint = Blueprint("crawls", __name__)


@blueprint.get("/crawls")
def crawls() -> Any:
    with current_console().pool.connection() as conn:
        jobs = crawl_jobs(conn)
    return render_template("crawls.html", jobs=jobs)
