"""The removal monitor: re-checks every notified URL on a schedule and reports time-to-removal per site.

An item moves notified → removed or still_up; a new sighting of the same reference elsewhere marks it
re-uploaded (clients/evidence/writer.enqueue_items does that as it queues the new item). A check fetches the page
and the media: a page or media answering 404/410/451 is removed; media still served is asked of the Matcher
(`Match`), so a replaced picture counts as removed and a re-encoded one as still up. Unreachable sites are not
counted as removed: that is often an outage, and an officer sees the error on the item.

Each check is claimed first (`claim_due_check`: a lease with the worker's id), so workers sharing the database never
run the same check at once, and the checks a dead worker had claimed come due again when its lease ends.

The SQL lives in `clients.evidence.store` (the removal checks' section), beside the other queries on evidence items.
"""

from __future__ import annotations

import csv
import hashlib
import io
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from psycopg import Connection
from psycopg_pool import ConnectionPool

from clients.evidence.store import claim_due_check, record_removal_check, removal_times
from jiwoom.shared.web import Fetcher
from server.storage import chain

GONE_STATUSES = frozenset({404, 410, 451})
DUE_BATCH = 200
# A check is two fetches and perhaps a Match; a worker's claim on it lapses after this (a worker that died).
CHECK_LEASE_S = 600.0

# Media bytes -> ids of the references they match (the Matcher's Match, in-process or over gRPC).
MatchReferences = Callable[[bytes], set[int]]


@dataclass(frozen=True)
class CheckResult:
    state: str  # "removed" or "still_up", or "" when the check could not decide (unreachable)
    page_status: int | None
    media_status: int | None
    how: str


async def check_item(fetcher: Fetcher, match_references: MatchReferences, *, page_url: str, media_url: str,
                     reference_id: int | None, content_sha256: bytes | None) -> CheckResult:
    """Is this item's media still up? (pure over the web and the Matcher: no database)"""
    try:
        page = await fetcher.fetch(page_url)
    except Exception as error:  # refused, network errors: undecided, not removed
        return CheckResult("", None, None, f"page unreachable: {type(error).__name__}: {error}")
    if page.status in GONE_STATUSES:
        return CheckResult("removed", page.status, None, f"page answers {page.status}")
    try:
        media = await fetcher.fetch(media_url)
    except Exception as error:
        return CheckResult("", page.status, None, f"media unreachable: {type(error).__name__}: {error}")
    if media.status in GONE_STATUSES:
        return CheckResult("removed", page.status, media.status, f"media answers {media.status}")
    if not 200 <= media.status < 300:
        return CheckResult("", page.status, media.status, f"media answers {media.status}")
    if content_sha256 is not None and hashlib.sha256(media.decoded).digest() == content_sha256:
        return CheckResult("still_up", page.status, media.status, "the same bytes are still served")
    if reference_id is None:  # an under-19 item has no reference to match: changed bytes are a change
        return CheckResult("removed", page.status, media.status, "the media was replaced")
    matched = reference_id in match_references(media.decoded)
    return CheckResult("still_up" if matched else "removed", page.status, media.status,
                       "the media still matches the reference" if matched else "the media no longer matches")


async def check_due(pool: ConnectionPool, fetcher: Fetcher, match_references: MatchReferences, *,
                    recheck_after_s: float, claimant: str, lease_s: float = CHECK_LEASE_S,
                    now: datetime | None = None) -> dict[str, int]:
    """Re-check the notified items whose time has come (up to DUE_BATCH, each once), claiming each as `claimant`
    just before its check; counts by outcome."""
    now = now or datetime.now(UTC)
    counts = {"removed": 0, "still_up": 0, "undecided": 0}
    seen: list[int] = []  # checked this pass: `now` may be ahead of the next check it was given
    for _ in range(DUE_BATCH):
        with pool.connection() as conn:  # committed before the check, so other workers see the claim
            item = claim_due_check(conn, claimant=claimant, now=now, lease_s=lease_s, skip=seen)
        if item is None:
            break
        seen.append(item.item_id)
        result = await check_item(fetcher, match_references, page_url=item.page_url or item.url, media_url=item.url,
                                  reference_id=item.reference_id, content_sha256=item.content_sha256)
        checked_at = datetime.now(UTC)
        with pool.connection() as conn:
            record_check(conn, item.item_id, result, checked_at, previous=item.removal_state, claimant=claimant,
                         next_check=None if result.state == "removed"
                         else checked_at + timedelta(seconds=recheck_after_s))
        counts[result.state or "undecided"] += 1
    return counts


def record_check(conn: Connection, item_id: int, result: CheckResult, checked_at: datetime, *, previous: str,
                 next_check: datetime | None, claimant: str) -> bool:
    """Store a check's outcome (and log a change of state); False when it was not stored: the item was re-uploaded
    meanwhile, or its claim was no longer `claimant`'s."""
    state = result.state or previous
    check = {"at": checked_at.isoformat(timespec="seconds"), "page_status": result.page_status,
             "media_status": result.media_status, "how": result.how}
    if not record_removal_check(conn, item_id, state=state, previous=previous, checked_at=checked_at, check=check,
                                next_check=next_check, claimant=claimant):
        return False
    if state != previous:  # the moment of removal is evidence too
        chain.append(conn, "removal_check", {"item": item_id, "state": state, **check}, item_id=item_id)
    return True


# -- reports -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiteRemovals:
    site: str
    notified: int
    removed: int
    still_up: int
    reuploaded: int
    median_hours: float | None  # time from notice to removal, removed items only
    p90_hours: float | None
    max_hours: float | None


def removal_report(conn: Connection) -> list[SiteRemovals]:
    by_site: dict[str, list[tuple[str, float | None]]] = {}
    for site, state, seconds in removal_times(conn):
        by_site.setdefault(site, []).append((state, seconds))
    report = []
    for site, items in sorted(by_site.items()):
        hours = sorted(s / 3600 for state, s in items if state == "removed" and s is not None)
        report.append(SiteRemovals(
            site=site, notified=len(items), removed=sum(state == "removed" for state, _ in items),
            still_up=sum(state in ("notified", "still_up") for state, _ in items),
            reuploaded=sum(state == "reuploaded" for state, _ in items),
            median_hours=statistics.median(hours) if hours else None,
            p90_hours=hours[min(len(hours) - 1, int(0.9 * len(hours)))] if hours else None,
            max_hours=hours[-1] if hours else None))
    return report


def removal_csv(report: list[SiteRemovals]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["site", "notified", "removed", "still_up", "reuploaded", "median_hours_to_removal",
                     "p90_hours_to_removal", "max_hours_to_removal"])
    for r in report:
        writer.writerow([r.site, r.notified, r.removed, r.still_up, r.reuploaded,
                         *("" if h is None else f"{h:.2f}" for h in (r.median_hours, r.p90_hours, r.max_hours))])
    return out.getvalue()


CHART_LABELS = {
    "none": "no notified items yet",
    "not_removed": "not removed yet",
    "hours": "{hours:.1f} h",
    "counts": "removed {removed}/{notified} · still up {still_up} · re-uploaded {reuploaded}",
}


def removal_chart_svg(report: list[SiteRemovals], *, title: str = "Time to removal per site (median hours)",
                      labels: dict[str, str] | None = None) -> str:
    """A horizontal bar chart as standalone SVG (no scripts, no outside resources): the median time to removal
    per site, with the removed / still-up / re-uploaded counts beside each bar. `labels` translates CHART_LABELS."""
    words = {**CHART_LABELS, **(labels or {})}
    row_h, label_w, bar_w, pad = 28, 220, 420, 12
    width = label_w + bar_w + 260
    height = pad * 3 + 24 + row_h * max(1, len(report))
    longest = max((r.max_hours or 0 for r in report), default=0) or 1.0
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}"'
        ' font-family="NanumGothic, sans-serif" font-size="13">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{pad}" y="{pad + 14}" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    if not report:
        parts.append(f'<text x="{pad}" y="{pad * 2 + 30}">{escape(words["none"])}</text>')
    for i, r in enumerate(report):
        y = pad * 2 + 24 + i * row_h
        parts.append(f'<text x="{pad}" y="{y + 17}">{escape(r.site)}</text>')
        if r.median_hours is not None:
            w = max(2.0, bar_w * r.median_hours / longest)
            label = words["hours"].format(hours=r.median_hours)
            parts.append(f'<rect class="median" x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 10}"'
                         f' fill="#3b6ea5"><title>{escape(r.site)}: {escape(label)}</title></rect>')
        else:
            label = words["not_removed"]
        counts = f"{label} · " + words["counts"].format(removed=r.removed, notified=r.notified,
                                                         still_up=r.still_up, reuploaded=r.reuploaded)
        parts.append(f'<text x="{label_w + bar_w + 8}" y="{y + 17}" fill="#333">{escape(counts)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
