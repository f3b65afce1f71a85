"""The console's own queries on the service's tables, one narrow function each: the review queue, an item and its
evidence, cases and their references, removals, and the database side of a review decision.

The pages (the blueprints) and the decision logic (`clients.console.review`) call these and run no SQL themselves.
Queries the console shares with the worker live with the worker's: an item's artefact hashes in
`clients.evidence.store`, a notice's items in `clients.notices.store`.
Each function takes the caller's connection rather than the pool, so that one page's reads, or one decision's
lock-check-write, share a transaction; none commits. Results are plain typed data (dataclasses, or TypedDicts
where the templates read them as dicts), which the pages only format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict, cast

from psycopg import Connection

from clients.evidence.store import items_exposed_kinds

# The queue's tabs and the review states each shows.
QUEUE_STATES: dict[str, tuple[str, ...]] = {
    "open": ("new", "escalated"), "confirmed": ("confirmed",), "rejected": ("rejected",),
    "all": ("new", "escalated", "confirmed", "rejected")}

_ITEM_COLUMNS = (
    "e.id, e.reason, e.under_19, e.case_id, e.reference_id, e.sighting_id, e.site, e.priority, e.capture_state,"
    " e.capture_error, e.removal_state, e.review_state, e.reviewed_by, e.reviewed_at, e.review_note, e.created_at,"
    " e.notified_at, e.removed_at, e.last_checked_at, s.url, s.page_url, s.title, s.author, s.posted_at, s.kind,"
    " s.youth_faces, s.suspected, s.seen_at")


class MatchView(TypedDict):
    """One match of an item's sighting with its reference: the explanation the officer reads."""

    signal: str
    score: float
    threshold: float
    reference_id: int
    reference_start_s: float
    reference_end_s: float
    sighting_start_s: float
    sighting_end_s: float
    matched_frames: int
    under_19: bool
    faces: list[Any]  # the faces compared, as the service stored them (jsonb)
    found_by: str  # "match" or "retro_hunt"
    p_false: float | None  # None: not calibrated
    verification: str
    face_only: bool
    audio_only: bool


class ItemNotice(TypedDict):
    """A notice an item is in (its evidence status)."""

    id: int
    reference: str
    state: str


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
    matches: list[MatchView] = field(default_factory=list)
    notices: list[ItemNotice] = field(default_factory=list)
    exposed: list[str] = field(default_factory=list)  # kinds of personal information the post shows, no values


_MATCH_KEYS = ("signal", "score", "threshold", "reference_id", "reference_start_s", "reference_end_s",
               "sighting_start_s", "sighting_end_s", "matched_frames", "under_19", "faces", "found_by", "p_false",
               "verification", "face_only", "audio_only")


def _attach(conn: Connection, items: list[ItemView]) -> list[ItemView]:
    """Each item's matches (the explanation), notices (the evidence status) and exposed personal information."""
    by_id = {item.id: item for item in items}
    if not by_id:
        return items
    for row in conn.execute(
            "select e.id, m.signal, m.score, m.threshold, m.reference_id, m.reference_start_s, m.reference_end_s,"
            " m.other_start_s, m.other_end_s, m.matched_frames, m.under_19, m.faces, m.found_by, m.p_false,"
            " m.verification, m.face_only, m.audio_only from evidence_items e"
            " join matches m on m.sighting_id = e.sighting_id and m.reference_id = e.reference_id"
            " where e.id = any(%s) order by e.id, m.face_only, m.audio_only, m.p_false nulls last, m.id",
            (list(by_id),)):
        by_id[row[0]].matches.append(cast(MatchView, dict(zip(_MATCH_KEYS, row[1:], strict=True))))
    for item_id, notice_id, reference, state in conn.execute(
            "select ni.item_id, n.id, n.reference, n.state from notice_items ni join notices n on n.id = ni.notice_id"
            " where ni.item_id = any(%s) order by n.id", (list(by_id),)):
        by_id[item_id].notices.append(ItemNotice(id=notice_id, reference=reference, state=state))
    for item_id, kinds in items_exposed_kinds(conn, list(by_id)).items():
        by_id[item_id].exposed = kinds
    return items


# -- the review queue ----------------------------------------------------------------------------------------------

# An item's confidence: its best match's calibrated p_false; an item whose matches are all face-only or sound-only
# comes after every item matched on the picture itself (weaker evidence), and uncalibrated matches come last.
_CONFIDENCE = ("left join lateral (select min(m.p_false) as p_false, bool_and(m.face_only or m.audio_only) as weak"
               " from matches m where m.sighting_id = e.sighting_id and m.reference_id = e.reference_id) c on true")
_ORDER_BY = {
    "urgency": "e.priority desc, (e.review_state = 'escalated') desc, coalesce(c.weak, false),"
               " c.p_false nulls last, e.id",
    "confidence": "coalesce(c.weak, false), c.p_false nulls last, e.priority desc, e.id",
    "oldest": "e.id",
}
QUEUE_ORDERS: tuple[str, ...] = tuple(_ORDER_BY)  # the orders `queue_page` takes, the default first


def queue_page(conn: Connection, states: tuple[str, ...], *, limit: int = 50, offset: int = 0,
               case_id: str | None = None, order: str = "urgency") -> tuple[list[ItemView], int]:
    """One page of the items in the given review states (of one case, or all), and how many there are in all.
    "urgency": flagged under 19, then escalated, then the surest match first (`_CONFIDENCE`); "confidence": the
    surest first whatever the flags; "oldest": in arrival order."""
    where = "e.review_state = any(%s) and (%s::text is null or e.case_id = %s)"
    params = (list(states), case_id, case_id)
    total = conn.execute(f"select count(*) from evidence_items e where {where}", params).fetchone()[0]
    rows = conn.execute(
        f"select {_ITEM_COLUMNS} from evidence_items e join sightings s on s.id = e.sighting_id {_CONFIDENCE}"
        f" where {where} order by {_ORDER_BY[order]} limit %s offset %s",
        (*params, limit, offset)).fetchall()
    return _attach(conn, [ItemView(*row) for row in rows]), int(total)


def queue_counts(conn: Connection) -> dict[str, int]:
    """How many items each queue tab (`QUEUE_STATES`) holds."""
    counts = dict(conn.execute("select review_state, count(*) from evidence_items group by review_state").fetchall())
    return {name: sum(counts.get(s, 0) for s in states) for name, states in QUEUE_STATES.items()}


# -- one item and its evidence -------------------------------------------------------------------------------------


class LogEntry(TypedDict):
    """The item's entry in the evidence log's hash chain."""

    seq: int
    at: datetime
    hash: str  # hex


def item_detail(conn: Connection, item_id: int) -> ItemView | None:
    """One item with its matches and notices; None when there is no such item."""
    row = conn.execute(f"select {_ITEM_COLUMNS} from evidence_items e join sightings s on s.id = e.sighting_id"
                       " where e.id = %s", (item_id,)).fetchone()
    return None if row is None else _attach(conn, [ItemView(*row)])[0]


def item_exists(conn: Connection, item_id: int) -> bool:
    return conn.execute("select 1 from evidence_items where id = %s", (item_id,)).fetchone() is not None


def item_log_entry(conn: Connection, item_id: int) -> LogEntry | None:
    row = conn.execute("select l.seq, l.at, l.entry_hash from evidence_items e join evidence_log l"
                       " on l.seq = e.log_seq where e.id = %s", (item_id,)).fetchone()
    return None if row is None else LogEntry(seq=row[0], at=row[1], hash=bytes(row[2]).hex())


def review_states(conn: Connection, item_ids: list[int]) -> dict[int, str]:
    """The review state of each of these items (those that exist)."""
    return dict(conn.execute("select id, review_state from evidence_items where id = any(%s)",
                             (item_ids,)).fetchall())


# -- review decisions (in the caller's transaction) ----------------------------------------------------------------


@dataclass(frozen=True)
class ReviewTarget:
    id: int
    case_id: str | None
    sighting_id: int
    reason: str
    review_state: str
    capture_state: str


def lock_review_target(conn: Connection, item_id: int) -> ReviewTarget | None:
    """The item a decision is about, locked for the rest of the caller's transaction; None when there is none."""
    row = conn.execute("select id, case_id, sighting_id, reason, review_state, capture_state from evidence_items"
                       " where id = %s for update", (item_id,)).fetchone()
    return None if row is None else ReviewTarget(*row)


def record_review(conn: Connection, item_id: int, review_state: str, reviewer: str, note: str) -> None:
    conn.execute("update evidence_items set review_state = %s, reviewed_by = %s, reviewed_at = now(),"
                 " review_note = %s where id = %s", (review_state, reviewer, note, item_id))


def in_live_notice(conn: Connection, item_id: int) -> bool:
    """Whether the item is in a notice that was not cancelled (a draft, approved, or sent)."""
    return conn.execute("select 1 from notice_items ni join notices n on n.id = ni.notice_id"
                        " where ni.item_id = %s and n.state <> 'cancelled'", (item_id,)).fetchone() is not None


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


class ReferenceView(TypedDict):
    id: int
    kind: str
    width: int
    height: int
    duration_s: float
    frame_count: int
    created_at: datetime
    created_by: str
    matches: int


class SightingView(TypedDict):
    url: str
    page_url: str
    site: str
    title: str
    author: str
    posted_at: datetime | None
    kind: str


def case_summaries(conn: Connection, case_id: str | None = None) -> list[CaseSummary]:
    """Every case, newest first (or the one case), with its counts."""
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


def case_references(conn: Connection, case_id: str) -> list[ReferenceView]:
    """A case's reference media (never their bytes) and how many matches each has."""
    keys = ("id", "kind", "width", "height", "duration_s", "frame_count", "created_at", "created_by", "matches")
    return [cast(ReferenceView, dict(zip(keys, row, strict=True))) for row in conn.execute(
        "select r.id, r.kind, r.width, r.height, r.duration_s, r.frame_count, r.created_at, r.created_by,"
        " (select count(*) from matches m where m.reference_id = r.id) from reference_media r"
        " where r.case_id = %s order by r.id", (case_id,))]


def case_item_ids(conn: Connection, case_id: str) -> set[int]:
    """The evidence items of a case (what forgetting it deletes)."""
    return {r[0] for r in conn.execute("select id from evidence_items where case_id = %s", (case_id,))}


def sightings(conn: Connection, ids: list[int]) -> dict[int, SightingView]:
    """Where each of these sightings was found, by id."""
    keys = ("url", "page_url", "site", "title", "author", "posted_at", "kind")
    return {row[0]: cast(SightingView, dict(zip(keys, row[1:], strict=True))) for row in conn.execute(
        "select id, url, page_url, site, title, author, posted_at, kind from sightings where id = any(%s)",
        (ids,))}


# -- removals ------------------------------------------------------------------------------------------------------


def notified_items(conn: Connection) -> list[ItemView]:
    """Every item a notice went out for, by site: what is still up, what came down, what was re-uploaded."""
    rows = conn.execute(
        f"select {_ITEM_COLUMNS} from evidence_items e join sightings s on s.id = e.sighting_id"
        " where e.notified_at is not null order by e.site, e.removal_state, e.id").fetchall()
    return [ItemView(*row) for row in rows]


class CrawlView(TypedDict):
    id: str
    state: str
    created_at: datetime
    created_by: str
    updated_at: datetime
    hosts: int
    progress: dict[str, Any]


def crawl_jobs(conn: Connection, limit: int = 50) -> list[CrawlView]:
    """The crawl jobs, running ones first, with the figures the crawler last stored (its prompt stays out: it
    describes the victim's media)."""
    keys = ("id", "state", "created_at", "created_by", "updated_at", "hosts", "progress")
    return [CrawlView(**dict(zip(keys, row, strict=True))) for row in conn.execute(  # type: ignore[typeddict-item]
        "select id, state, created_at, created_by, updated_at, cardinality(hosts), progress from crawl_jobs"
        " order by state <> 'running', updated_at desc limit %s", (limit,))]
