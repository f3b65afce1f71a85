"""Every query the action side runs on the evidence tables (`evidence_items`, `evidence_artefacts`), one narrow
function each: queueing items, the capture's reads and writes, reading artefacts back, and the removal monitor's
checks.

The evidence writer (`clients.evidence.writer`) and the removal monitor (`clients.monitor`) call these and run no SQL
themselves; the console reads artefact hashes through `artefact_hashes` too. Each function takes the caller's
connection rather than the pool, so that a capture's artefacts, its log entry and its item's new state share one
transaction; none commits. Results are plain typed data (dataclasses, tuples), which the callers only use.
The monitor's queries are here rather than in a module of their own: they read and write the same `evidence_items`
columns (`removal_state`, `notified_at`) that queueing re-opens and sending a notice sets.

Several workers may share the database (issue 20): a capture or a removal check is taken with `claim_captures` /
`claim_due_check`, which pick with `for update skip locked` and write the claimant and a lease end in the same
statement. Another worker skips a claimed item until the lease ends (a worker that died loses its items then).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypedDict, cast

from psycopg import Connection
from psycopg.types.json import Jsonb

from clients.evidence.reports import ArtefactHash

# -- queueing items ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MatchToQueue:
    """A (sighting, reference) pair the service matched and no evidence item covers yet."""

    sighting_id: int
    reference_id: int
    case_id: str | None
    under_19: bool  # any of the pair's matches flagged a face under 19
    page_url: str
    url: str


@dataclass(frozen=True)
class SightingToQueue:
    """A suspected sighting with a face estimated under 19 and no under-19 item yet."""

    sighting_id: int
    page_url: str
    url: str


def matches_to_queue(conn: Connection, limit: int) -> list[MatchToQueue]:
    """Up to `limit` matched pairs without an item, in sighting order."""
    rows = conn.execute(
        "select m.sighting_id, m.reference_id, r.case_id, bool_or(m.under_19), s.page_url, s.url"
        " from matches m join reference_media r on r.id = m.reference_id join sightings s on s.id = m.sighting_id"
        " where m.sighting_id is not null and not exists (select 1 from evidence_items e"
        "   where e.sighting_id = m.sighting_id and e.reference_id = m.reference_id and e.reason = 'match')"
        " group by m.sighting_id, m.reference_id, r.case_id, s.page_url, s.url order by m.sighting_id limit %s",
        (limit,)).fetchall()
    return [MatchToQueue(*row) for row in rows]


def youth_sightings_to_queue(conn: Connection, limit: int) -> list[SightingToQueue]:
    """Up to `limit` suspected sightings flagged under 19 without an under-19 item, in id order."""
    rows = conn.execute(
        "select s.id, s.page_url, s.url from sightings s where s.youth_faces > 0 and s.suspected"
        " and not exists (select 1 from evidence_items e where e.sighting_id = s.id and e.reason = 'under_19')"
        " order by s.id limit %s", (limit,)).fetchall()
    return [SightingToQueue(*row) for row in rows]


@dataclass(frozen=True)
class ExposureToQueue:
    """A sighting that exposes personal information of one case (or, `case_id` None, generic patterns such as
    anyone's phone number) and no personal-information item for that case yet."""

    sighting_id: int
    case_id: str | None
    kinds: tuple[str, ...]
    page_url: str
    url: str


def exposures_to_queue(conn: Connection, limit: int) -> list[ExposureToQueue]:
    """Up to `limit` (sighting, case) exposures without a personal_info item, in sighting order."""
    rows = conn.execute(
        "select x.sighting_id, x.case_id, array_agg(distinct x.kind order by x.kind), s.page_url, s.url"
        " from sighting_exposures x join sightings s on s.id = x.sighting_id"
        " where not exists (select 1 from evidence_items e where e.sighting_id = x.sighting_id"
        "   and e.reason = 'personal_info' and e.case_id is not distinct from x.case_id)"
        " group by x.sighting_id, x.case_id, s.page_url, s.url order by x.sighting_id, x.case_id nulls last"
        " limit %s", (limit,)).fetchall()
    return [ExposureToQueue(sighting_id, case_id, tuple(kinds), page_url, url)
            for sighting_id, case_id, kinds, page_url, url in rows]


def exposed_kinds(conn: Connection, sighting_id: int, case_id: str | None) -> tuple[list[str], list[str]]:
    """(kinds of `case_id`'s identifiers, kinds of generic patterns) a sighting exposes, each sorted. Another
    case's identifiers are not this item's business."""
    rows = conn.execute(
        "select distinct case_id is null, kind from sighting_exposures where sighting_id = %s"
        " and (case_id is null or case_id = %s) order by 1, 2", (sighting_id, case_id)).fetchall()
    return [k for generic, k in rows if not generic], [k for generic, k in rows if generic]


def items_exposed_kinds(conn: Connection, item_ids: list[int]) -> dict[int, list[str]]:
    """item id -> the kinds its sighting exposes (the item's case's and generic ones), sorted; items whose
    sighting exposes nothing are left out."""
    rows = conn.execute(
        "select e.id, array_agg(distinct x.kind order by x.kind) from evidence_items e"
        " join sighting_exposures x on x.sighting_id = e.sighting_id"
        " and (x.case_id is null or x.case_id = e.case_id) where e.id = any(%s) group by e.id",
        (item_ids,)).fetchall()
    return {item_id: list(kinds) for item_id, kinds in rows}


def case_identifier_digests(conn: Connection, case_id: str) -> dict[bytes, str]:
    """A case's recorded identifiers: digest -> kind (the values themselves are never stored)."""
    rows = conn.execute("select digest, kind from case_identifiers where case_id = %s", (case_id,)).fetchall()
    return {bytes(digest): kind for digest, kind in rows}


def insert_item(conn: Connection, *, case_id: str | None, reference_id: int | None, sighting_id: int, reason: str,
                under_19: bool, site: str, priority: int, wrapped_key: bytes) -> bool:
    """A new evidence item; False when one for the same sighting, reference, reason and case exists already (left
    as it is)."""
    row = conn.execute(
        "insert into evidence_items (case_id, reference_id, sighting_id, reason, under_19, site, priority,"
        " wrapped_key) values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing returning id",
        (case_id, reference_id, sighting_id, reason, under_19, site, priority, wrapped_key)).fetchone()
    return row is not None


def mark_reuploaded(conn: Connection, reference_id: int, sighting_id: int) -> None:
    """The reference's items on other sightings that a notice went out for are re-uploads now, open again."""
    conn.execute(
        "update evidence_items set removal_state = 'reuploaded', reopened_by = %s where reference_id = %s"
        " and sighting_id <> %s and removal_state in ('notified', 'still_up', 'removed')",
        (sighting_id, reference_id, sighting_id))


# -- capture -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PendingItem:
    id: int
    case_id: str | None
    reference_id: int | None
    sighting_id: int
    reason: str
    under_19: bool
    site: str
    wrapped_key: bytes
    url: str
    page_url: str
    title: str
    author: str
    posted_at: datetime | None
    content_sha256: bytes | None
    attempts: int


_ENQUEUE_LOCK = (0x6A770003, 0)  # advisory lock (class, key): one worker at a time scans for new items


def try_lock_enqueueing(conn: Connection) -> bool:
    """Whether this transaction is now the only one queueing items (the lock lasts until it ends); False when another
    worker is at it. Two scans at once would insert the same items (one wins, the other waits on the unique index),
    so the second one is skipped, not queued behind the first."""
    return bool(conn.execute("select pg_try_advisory_xact_lock(%s, %s)", _ENQUEUE_LOCK).fetchone()[0])


def claim_captures(conn: Connection, *, claimant: str, limit: int, lease_s: float) -> list[PendingItem]:
    """Up to `limit` items waiting for capture (none an officer rejected, none another worker's lease holds), most
    urgent first, now claimed by `claimant` until `lease_s` from now. Locked rows are skipped, not waited for: a
    worker capturing an item holds its row lock (`lock_claimed_capture`)."""
    rows = conn.execute(
        "with claimed as (update evidence_items e set capture_claimed_by = %s,"
        " capture_claimed_until = now() + make_interval(secs => %s)"
        " where e.id in (select id from evidence_items where capture_state = 'pending' and review_state <> 'rejected'"
        "   and (capture_claimed_until is null or capture_claimed_until < now())"
        "   order by priority desc, id limit %s for update skip locked)"
        " returning e.id, e.case_id, e.reference_id, e.sighting_id, e.reason, e.under_19, e.site, e.wrapped_key,"
        " e.capture_attempts, e.priority)"
        " select c.id, c.case_id, c.reference_id, c.sighting_id, c.reason, c.under_19, c.site, c.wrapped_key,"
        " s.url, s.page_url, s.title, s.author, s.posted_at, s.content_sha256, c.capture_attempts"
        " from claimed c join sightings s on s.id = c.sighting_id order by c.priority desc, c.id",
        (claimant, lease_s, limit)).fetchall()
    return [PendingItem(*r[:7], bytes(r[7]), *r[8:13], None if r[13] is None else bytes(r[13]), r[14])
            for r in rows]


def lock_claimed_capture(conn: Connection, item_id: int, claimant: str) -> bool:
    """Whether the item still waits for capture under `claimant`'s claim, the item locked for the rest of the caller's
    transaction (the capture): a claim whose lease ran out may have been taken over, and a worker that took it over
    waits here until this capture commits, then finds it captured."""
    return conn.execute(
        "select 1 from evidence_items where id = %s and capture_state = 'pending' and capture_claimed_by = %s"
        " for update", (item_id, claimant)).fetchone() is not None


def release_claims(conn: Connection, claimant: str) -> int:
    """Give up every capture and check `claimant` still holds (a worker stopping cleanly mid-pass), so that other
    workers need not wait for the leases to end; how many items."""
    return conn.execute(
        "update evidence_items set"
        " capture_claimed_by = case when capture_claimed_by = %s then null else capture_claimed_by end,"
        " capture_claimed_until = case when capture_claimed_by = %s then null else capture_claimed_until end,"
        " check_claimed_by = case when check_claimed_by = %s then null else check_claimed_by end,"
        " check_claimed_until = case when check_claimed_by = %s then null else check_claimed_until end"
        " where capture_claimed_by = %s or check_claimed_by = %s", (claimant,) * 6).rowcount


def pending_captures(conn: Connection, limit: int) -> list[PendingItem]:
    """Up to `limit` items waiting for capture (none an officer rejected), most urgent first, with their sightings."""
    rows = conn.execute(
        "select e.id, e.case_id, e.reference_id, e.sighting_id, e.reason, e.under_19, e.site, e.wrapped_key,"
        " s.url, s.page_url, s.title, s.author, s.posted_at, s.content_sha256, e.capture_attempts"
        " from evidence_items e join sightings s on s.id = e.sighting_id"
        " where e.capture_state = 'pending' and e.review_state <> 'rejected'"
        " order by e.priority desc, e.id limit %s", (limit,)).fetchall()
    return [PendingItem(*r[:7], bytes(r[7]), *r[8:13], None if r[13] is None else bytes(r[13]), r[14])
            for r in rows]


class MatchRecord(TypedDict):
    """One stored match behind an item, keyed as the metadata record and the reports have it."""

    signal: str
    score: float
    threshold: float
    reference_id: int
    case_id: str | None
    reference_start_s: float
    reference_end_s: float
    sighting_start_s: float
    sighting_end_s: float
    matched_frames: int
    faces: Any  # the faces compared, as the service stored them (jsonb)
    p_false: float | None  # None: not calibrated
    verification: str
    face_only: bool
    audio_only: bool


_MATCH_RECORD_KEYS = ("signal", "score", "threshold", "reference_id", "case_id", "reference_start_s",
                      "reference_end_s", "sighting_start_s", "sighting_end_s", "matched_frames", "faces", "p_false",
                      "verification", "face_only", "audio_only")


def item_matches(conn: Connection, sighting_id: int, reference_id: int) -> list[MatchRecord]:
    """The matches of a sighting with a reference, in the order the service stored them."""
    rows = conn.execute(
        "select m.signal, m.score, m.threshold, m.reference_id, r.case_id, m.reference_start_s, m.reference_end_s,"
        " m.other_start_s, m.other_end_s, m.matched_frames, m.faces, m.p_false, m.verification, m.face_only,"
        " m.audio_only from matches m join reference_media r on r.id = m.reference_id"
        " where m.sighting_id = %s and m.reference_id = %s order by m.id", (sighting_id, reference_id)).fetchall()
    return [cast(MatchRecord, dict(zip(_MATCH_RECORD_KEYS, row, strict=True))) for row in rows]


def store_artefact(conn: Connection, item_id: int, kind: str, *, media_type: str, sha256: bytes, size: int,
                   nonce: bytes, ciphertext: bytes) -> None:
    """An item's encrypted artefact of one kind; a recapture replaces the one stored before."""
    conn.execute(
        "insert into evidence_artefacts (item_id, kind, media_type, sha256, size, nonce, ciphertext)"
        " values (%s, %s, %s, %s, %s, %s, %s) on conflict (item_id, kind) do update set"
        " media_type = excluded.media_type, sha256 = excluded.sha256, size = excluded.size,"
        " nonce = excluded.nonce, ciphertext = excluded.ciphertext, created_at = now()",
        (item_id, kind, media_type, sha256, size, nonce, ciphertext))


def record_capture(conn: Connection, item_id: int, *, captured_at: datetime, log_seq: int, error: str) -> None:
    """The item is captured: when, its 'capture' log entry, and what could not be fetched (`error`)."""
    conn.execute(
        "update evidence_items set capture_state = 'captured', captured_at = %s, log_seq = %s,"
        " capture_attempts = capture_attempts + 1, capture_error = %s, capture_claimed_by = null,"
        " capture_claimed_until = null where id = %s",
        (captured_at, log_seq, error, item_id))


def record_capture_failure(conn: Connection, item_id: int, *, error: str, max_attempts: int, claimant: str) -> bool:
    """A capture attempt failed: counted, its error kept, the claim released, and the item left 'pending' for the
    next pass or 'failed' after `max_attempts`. Only while `claimant` still holds the claim (False otherwise):
    another worker that took over a lapsed lease owns the item now."""
    return conn.execute(
        "update evidence_items set capture_attempts = capture_attempts + 1, capture_error = %s,"
        " capture_state = case when capture_attempts + 1 >= %s then 'failed' else 'pending' end,"
        " capture_claimed_by = null, capture_claimed_until = null"
        " where id = %s and capture_state = 'pending' and capture_claimed_by = %s",
        (error, max_attempts, item_id, claimant)).rowcount == 1


# -- reading back ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SealedArtefact:
    """An artefact as stored: encrypted under its item's key, with the hash of the plaintext."""

    wrapped_key: bytes  # the item's key, wrapped by the vault's master key
    nonce: bytes
    ciphertext: bytes
    sha256: bytes


def sealed_artefact(conn: Connection, item_id: int, kind: str) -> SealedArtefact | None:
    """An item's artefact of one kind with its item's wrapped key; None when there is none."""
    row = conn.execute(
        "select e.wrapped_key, a.nonce, a.ciphertext, a.sha256 from evidence_artefacts a"
        " join evidence_items e on e.id = a.item_id where a.item_id = %s and a.kind = %s",
        (item_id, kind)).fetchone()
    return None if row is None else SealedArtefact(*(bytes(value) for value in row))


def capture_log_payloads(conn: Connection) -> list[tuple[int, str]]:
    """(item id, payload) of each item's current 'capture' log entry; the payload is the canonical JSON logged."""
    return conn.execute(
        "select p.item_id, p.payload from evidence_log l join evidence_log_payloads p using (seq)"
        " join evidence_items e on e.id = p.item_id and e.log_seq = l.seq where l.event = 'capture'").fetchall()


def artefact_kinds(conn: Connection) -> list[tuple[int, str]]:
    """(item id, kind) of every stored artefact, in that order."""
    return conn.execute("select item_id, kind from evidence_artefacts order by item_id, kind").fetchall()


def artefact_hashes(conn: Connection, item_id: int) -> list[ArtefactHash]:
    """What the capture stored for the item (not the bytes): kind, hash, size, media type, by kind."""
    return [ArtefactHash(kind, bytes(sha).hex(), size, media_type) for kind, sha, size, media_type in conn.execute(
        "select kind, sha256, size, media_type from evidence_artefacts where item_id = %s order by kind",
        (item_id,))]


@dataclass(frozen=True)
class CapturedLogEntry:
    """A captured item's facts the reports take from the database (the rest is in its metadata record)."""

    reason: str
    case_id: str | None
    site: str
    log_seq: int
    log_entry_hash: bytes


def captured_log_entry(conn: Connection, item_id: int) -> CapturedLogEntry | None:
    """A captured item with its 'capture' log entry; None when there is no such item or it is not captured."""
    row = conn.execute(
        "select e.reason, e.case_id, e.site, l.seq, l.entry_hash from evidence_items e"
        " join evidence_log l on l.seq = e.log_seq where e.id = %s and e.capture_state = 'captured'",
        (item_id,)).fetchone()
    return None if row is None else CapturedLogEntry(*row[:4], bytes(row[4]))


def captured_items_of_case(conn: Connection, case_id: str) -> list[int]:
    """A case's captured items, in id order (what `jiwoom evidence report --case` reports)."""
    return [r[0] for r in conn.execute(
        "select id from evidence_items where case_id = %s and capture_state = 'captured' order by id", (case_id,))]


# -- removal checks ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DueCheck:
    """A notified item whose re-check is due, with where to look."""

    item_id: int
    page_url: str
    url: str
    reference_id: int | None
    content_sha256: bytes | None
    removal_state: str  # 'notified' or 'still_up'


def claim_due_check(conn: Connection, *, claimant: str, now: datetime, lease_s: float,
                    skip: list[int]) -> DueCheck | None:
    """The notified or still-up item whose check is the longest due by `now` (none in `skip`, none another worker's
    lease holds), now claimed by `claimant` until `lease_s` from now; None when there is none. The check runs outside
    any transaction, so the lease is what keeps a second worker from running it at the same time."""
    row = conn.execute(
        "with claimed as (update evidence_items e set check_claimed_by = %s,"
        " check_claimed_until = now() + make_interval(secs => %s)"
        " where e.id = (select id from evidence_items where removal_state in ('notified', 'still_up')"
        "   and next_check_at <= %s and (check_claimed_until is null or check_claimed_until < now())"
        "   and id <> all(%s::bigint[]) order by next_check_at, id limit 1 for update skip locked)"
        " returning e.id, e.sighting_id, e.reference_id, e.removal_state)"
        " select c.id, s.page_url, s.url, c.reference_id, s.content_sha256, c.removal_state"
        " from claimed c join sightings s on s.id = c.sighting_id", (claimant, lease_s, now, skip)).fetchone()
    return None if row is None else DueCheck(*row[:4], None if row[4] is None else bytes(row[4]), row[5])


def record_removal_check(conn: Connection, item_id: int, *, state: str, previous: str, checked_at: datetime,
                         check: dict[str, Any], next_check: datetime | None, claimant: str) -> bool:
    """A re-check's outcome: the item's removal state (and when it came down), the check, the next one; whether it
    was recorded. Only while the item is still in `previous` and `claimant`'s claim: the check ran outside any
    transaction, a new sighting may have marked the item re-uploaded meanwhile, and another worker may have taken
    over a lapsed lease. The claim is released either way."""
    recorded = conn.execute(
        "update evidence_items set removal_state = %s, removed_at = case when %s = 'removed' then %s"
        " else removed_at end, last_checked_at = %s, last_check = %s, checks = checks + 1, next_check_at = %s,"
        " check_claimed_by = null, check_claimed_until = null"
        " where id = %s and removal_state = %s and check_claimed_by = %s",
        (state, state, checked_at, checked_at, Jsonb(check), next_check, item_id, previous, claimant)).rowcount == 1
    if not recorded:  # re-uploaded meanwhile: a stale claim would hold up its checks once it is notified again
        conn.execute("update evidence_items set check_claimed_by = null, check_claimed_until = null"
                     " where id = %s and check_claimed_by = %s", (item_id, claimant))
    return recorded


def removal_times(conn: Connection) -> list[tuple[str, str, float | None]]:
    """(site, removal state, seconds from notice to removal or None) of every notified item, by site."""
    rows = conn.execute(
        "select site, removal_state, extract(epoch from removed_at - notified_at) from evidence_items"
        " where notified_at is not null order by site").fetchall()
    return [(site, state, None if seconds is None else float(seconds)) for site, state, seconds in rows]
