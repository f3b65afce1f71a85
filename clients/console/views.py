"""What the console's pages show, read from the database: the review queue, items, cases, removals. Plain data; the
pages (clients/console/app.py) only format it."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from PIL import Image
from psycopg import Connection

from clients.evidence.reports import screenshot_view
from clients.evidence.vault import Vault
from clients.evidence.writer import read_artefact
from server.config import MediaLimits
from server.media import decode_media

QUEUE_STATES = {"open": ("new", "escalated"), "confirmed": ("confirmed",), "rejected": ("rejected",),
                "all": ("new", "escalated", "confirmed", "rejected")}
THUMBNAIL_PX = 360

_ITEM_COLUMNS = (
    "e.id, e.reason, e.under_19, e.case_id, e.reference_id, e.sighting_id, e.site, e.priority, e.capture_state,"
    " e.capture_error, e.removal_state, e.review_state, e.reviewed_by, e.reviewed_at, e.review_note, e.created_at,"
    " e.notified_at, e.removed_at, e.last_checked_at, s.url, s.page_url, s.title, s.author, s.posted_at, s.kind,"
    " s.youth_faces, s.suspected, s.seen_at")


@dataclass
class ItemView:
    id: int
    reason: str
    under_19: bool
    case_id: str | None
    reference_id: int | None
    sighting_id: int
    site: str
    priority: int
    capture_state: str
    capture_error: str
    removal_state: str
    review_state: str
    reviewed_by: str | None
    reviewed_at: datetime | None
    review_note: str
    created_at: datetime
    notified_at: datetime | None
    removed_at: datetime | None
    last_checked_at: datetime | None
    url: str
    page_url: str
    title: str
    author: str
    posted_at: datetime | None
    media_kind: str
    youth_faces: int
    suspected: bool
    seen_at: datetime
    matches: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)  # id, reference, state


def _attach(conn: Connection, items: list[ItemView]) -> list[ItemView]:
    """Each item's matches (the explanation) and notices (the evidence status)."""
    by_id = {item.id: item for item in items}
    if not by_id:
        return items
    for row in conn.execute(
            "select e.id, m.signal, m.score, m.threshold, m.reference_id, m.reference_start_s, m.reference_end_s,"
            " m.other_start_s, m.other_end_s, m.matched_frames, m.under_19, m.faces, m.found_by, m.p_false,"
            " m.verification, m.face_only from evidence_items e"
            " join matches m on m.sighting_id = e.sighting_id and m.reference_id = e.reference_id"
            " where e.id = any(%s) order by e.id, m.face_only, m.p_false nulls last, m.id", (list(by_id),)):
        keys = ("signal", "score", "threshold", "reference_id", "reference_start_s", "reference_end_s",
                "sighting_start_s", "sighting_end_s", "matched_frames", "under_19", "faces", "found_by", "p_false",
                "verification", "face_only")
        by_id[row[0]].matches.append(dict(zip(keys, row[1:], strict=True)))
    for item_id, notice_id, reference, state in conn.execute(
            "select ni.item_id, n.id, n.reference, n.state from notice_items ni join notices n on n.id = ni.notice_id"
            " where ni.item_id = any(%s) order by n.id", (list(by_id),)):
        by_id[item_id].notices.append({"id": notice_id, "reference": reference, "state": state})
    return items


# An item's confidence: its best match's calibrated p_false; an item whose matches are all face-only comes after
# every item matched on the picture itself (a face is weaker evidence), and uncalibrated matches come last.
_CONFIDENCE = ("left join lateral (select min(m.p_false) as p_false, bool_and(m.face_only) as face_only"
               " from matches m where m.sighting_id = e.sighting_id and m.reference_id = e.reference_id) c on true")
QUEUE_ORDERS = {
    "urgency": "e.priority desc, (e.review_state = 'escalated') desc, coalesce(c.face_only, false),"
               " c.p_false nulls last, e.id",
    "confidence": "coalesce(c.face_only, false), c.p_false nulls last, e.priority desc, e.id",
    "oldest": "e.id",
}


def queue(conn: Connection, states: tuple[str, ...], *, limit: int = 50, offset: int = 0,
          case_id: str | None = None, order: str = "urgency") -> tuple[list[ItemView], int]:
    """Items in the given review states. "urgency": flagged under 19, then escalated, then the surest match
    first (`_CONFIDENCE`); "confidence": the surest first whatever the flags; "oldest": in arrival order."""
    where = "e.review_state = any(%s) and (%s::text is null or e.case_id = %s)"
    params = (list(states), case_id, case_id)
    total = conn.execute(f"select count(*) from evidence_items e where {where}", params).fetchone()[0]
    rows = conn.execute(
        f"select {_ITEM_COLUMNS} from evidence_items e join sightings s on s.id = e.sighting_id {_CONFIDENCE}"
        f" where {where} order by {QUEUE_ORDERS[order]} limit %s offset %s",
        (*params, limit, offset)).fetchall()
    return _attach(conn, [ItemView(*row) for row in rows]), int(total)


def queue_counts(conn: Connection) -> dict[str, int]:
    counts = dict(conn.execute("select review_state, count(*) from evidence_items group by review_state").fetchall())
    return {name: sum(counts.get(s, 0) for s in states) for name, states in QUEUE_STATES.items()}


def item(conn: Connection, item_id: int) -> ItemView | None:
    row = conn.execute(f"select {_ITEM_COLUMNS} from evidence_items e join sightings s on s.id = e.sighting_id"
                       " where e.id = %s", (item_id,)).fetchone()
    return None if row is None else _attach(conn, [ItemView(*row)])[0]


def artefacts(conn: Connection, item_id: int) -> list[dict[str, Any]]:
    return [{"kind": kind, "sha256": bytes(sha).hex(), "size": size, "media_type": media_type}
            for kind, sha, size, media_type in conn.execute(
                "select kind, sha256, size, media_type from evidence_artefacts where item_id = %s order by kind",
                (item_id,))]


def log_entry(conn: Connection, item_id: int) -> dict[str, Any] | None:
    row = conn.execute("select l.seq, l.at, l.entry_hash from evidence_items e join evidence_log l"
                       " on l.seq = e.log_seq where e.id = %s", (item_id,)).fetchone()
    return None if row is None else {"seq": row[0], "at": row[1], "hash": bytes(row[2]).hex()}


# -- pictures ------------------------------------------------------------------------------------------------------


def media_thumbnail(conn: Connection, vault: Vault, item_id: int, at_s: float, limits: MediaLimits
                    ) -> Image.Image | None:
    """A small picture of the item's captured media (for a video: the frame nearest `at_s`, where it matched), or
    of the top of its page screenshot when the media could not be fetched; None before the capture."""
    data = read_artefact(conn, vault, item_id, "media")
    if data is not None:
        try:
            decoded = decode_media(data, limits)
        except Exception:  # the bytes a site serves need not decode: fall back to the screenshot
            decoded = None
        if decoded is not None:
            frame = decoded.frames[int(np.abs(decoded.timestamps - at_s).argmin())]
            picture = Image.fromarray(frame)
            picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
            return picture
    png = read_artefact(conn, vault, item_id, "screenshot")
    if png is None:
        return None
    picture = Image.open(io.BytesIO(screenshot_view(png, reveal=True).png))
    picture.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX * 2))
    return picture.convert("RGB")


# -- cases ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaseSummary:
    id: str
    created_at: datetime
    created_by: str
    references: int
    matches: int
    items_open: int
    items: int
    notices_sent: int


def cases(conn: Connection, case_id: str | None = None) -> list[CaseSummary]:
    rows = conn.execute(
        "select c.id, c.created_at, c.created_by,"
        " (select count(*) from reference_media r where r.case_id = c.id),"
        " (select count(*) from matches m join reference_media r on r.id = m.reference_id where r.case_id = c.id),"
        " (select count(*) from evidence_items e where e.case_id = c.id and e.review_state in ('new', 'escalated')),"
        " (select count(*) from evidence_items e where e.case_id = c.id),"
        " (select count(*) from notices n where n.case_id = c.id and n.state = 'sent')"
        " from cases c where %s::text is null or c.id = %s order by c.created_at desc, c.id",
        (case_id, case_id)).fetchall()
    return [CaseSummary(*row) for row in rows]


def references(conn: Connection, case_id: str) -> list[dict[str, Any]]:
    keys = ("id", "kind", "width", "height", "duration_s", "frame_count", "created_at", "created_by", "matches")
    return [dict(zip(keys, row, strict=True)) for row in conn.execute(
        "select r.id, r.kind, r.width, r.height, r.duration_s, r.frame_count, r.created_at, r.created_by,"
        " (select count(*) from matches m where m.reference_id = r.id) from reference_media r"
        " where r.case_id = %s order by r.id", (case_id,))]


def sightings(conn: Connection, ids: list[int]) -> dict[int, dict[str, Any]]:
    keys = ("url", "page_url", "site", "title", "author", "posted_at", "kind")
    return {row[0]: dict(zip(keys, row[1:], strict=True)) for row in conn.execute(
        "select id, url, page_url, site, title, author, posted_at, kind from sightings where id = any(%s)",
        (ids,))}


# -- removals ------------------------------------------------------------------------------------------------------


def notified_items(conn: Connection) -> list[ItemView]:
    """Every item a notice went out for, by site: what is still up, what came down, what was re-uploaded."""
    rows = conn.execute(
        f"select {_ITEM_COLUMNS} from evidence_items e join sightings s on s.id = e.sighting_id"
        " where e.notified_at is not null order by e.site, e.removal_state, e.id").fetchall()
    return [ItemView(*row) for row in rows]
