"""Every query the action side runs on the notice tables (`notices`, `notice_items`, `notice_texts`), one narrow
function each: drafting, the texts, listing, officers' edits and approval, claiming and sending, and the evidence
items a notice changes (confirmed when it is approved, notified when it is sent).

The drafter (`clients.notices.drafts`) calls these and runs no SQL itself; it keeps the decisions (which draft, whom
to write to, which state allows what). Each function takes the caller's connection rather than the pool, so that
one action's lock-check-write shares a transaction; none commits. Results are plain typed data (dataclasses,
tuples, ints).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from psycopg import Connection

# -- drafting ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DraftTarget:
    """What drafting needs of a captured item: which notice it goes in, and whether it may."""

    case_id: str | None
    under_19: bool
    page_url: str
    url: str
    priority: int
    site: str
    review_state: str


def draft_target(conn: Connection, item_id: int) -> DraftTarget:
    """The item with its sighting's addresses (the item must exist)."""
    row = conn.execute(
        "select e.case_id, e.under_19, s.page_url, s.url, e.priority, e.site, e.review_state from evidence_items e"
        " join sightings s on s.id = e.sighting_id where e.id = %s", (item_id,)).fetchone()
    return DraftTarget(*row)


# Advisory lock classes (two-key form: never the schema's one-key migration lock). Values fit a signed int4.
_DRAFTING_LOCK = 0x6A770001
_SENDING_LOCK = 0x6A770002


def lock_drafting(conn: Connection, *, site: str, kind: str, case_id: str | None) -> None:
    """Drafting for this site, kind and case is the caller's alone until its transaction ends: two workers drafting
    items of one site at once would each find no open draft and start one each. The hash may join unrelated
    drafts into one lock now and then; that only makes one wait."""
    conn.execute("select pg_advisory_xact_lock(%s, hashtext(%s))",
                 (_DRAFTING_LOCK, "\x1f".join((site, kind, case_id or ""))))


def lock_open_draft(conn: Connection, *, site: str, kind: str, case_id: str | None) -> tuple[int, str | None] | None:
    """(id, recipient) of the newest draft of this site, kind and case that no officer has edited, locked for the rest
    of the caller's transaction; None when there is none. An edited draft is left as the officer wrote it."""
    row = conn.execute(
        "select id, recipient from notices n where state = 'draft' and site = %s and kind = %s"
        " and case_id is not distinct from %s and not exists (select 1 from notice_texts t"
        "   where t.notice_id = n.id and t.edited_by is not null) order by id desc limit 1 for update",
        (site, kind, case_id)).fetchone()
    return None if row is None else (row[0], row[1])


def insert_notice(conn: Connection, *, case_id: str | None, kind: str, site: str, jurisdiction: str, language: str,
                  recipient: str | None, recipient_source: str, priority: int) -> int:
    """A new draft, with no reference yet (`set_reference` gives it one made from its id); its id."""
    return conn.execute(
        "insert into notices (reference, case_id, kind, site, jurisdiction, language, recipient,"
        " recipient_source, priority) values ('', %s, %s, %s, %s, %s, %s, %s, %s) returning id",
        (case_id, kind, site, jurisdiction, language, recipient, recipient_source, priority)).fetchone()[0]


def set_reference(conn: Connection, notice_id: int, reference: str) -> None:
    conn.execute("update notices set reference = %s where id = %s", (reference, notice_id))


def raise_priority(conn: Connection, notice_id: int, priority: int) -> None:
    """The notice is at least as urgent as `priority` (its most urgent item)."""
    conn.execute("update notices set priority = greatest(priority, %s) where id = %s", (priority, notice_id))


def set_recipient(conn: Connection, notice_id: int, recipient: str, source: str) -> None:
    """Whom the notice goes to, and where that address came from (a contact source, or 'officer')."""
    conn.execute("update notices set recipient = %s, recipient_source = %s where id = %s",
                 (recipient, source, notice_id))


def add_notice_item(conn: Connection, notice_id: int, item_id: int) -> None:
    """The item is in the notice (once: adding it again changes nothing)."""
    conn.execute("insert into notice_items (notice_id, item_id) values (%s, %s) on conflict do nothing",
                 (notice_id, item_id))


# -- the texts -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderTarget:
    """What rendering a notice's texts needs of the notice."""

    reference: str
    site: str  # the host
    kind: str
    jurisdiction: str


def render_target(conn: Connection, notice_id: int) -> RenderTarget:
    """The notice's reference, site, kind and jurisdiction (the notice must exist)."""
    return RenderTarget(*conn.execute(
        "select reference, site, kind, jurisdiction from notices where id = %s", (notice_id,)).fetchone())


@dataclass(frozen=True)
class ItemSighting:
    """A notice's item and where it was found."""

    item_id: int
    page_url: str
    url: str
    title: str
    posted_at: datetime | None
    captured_at: datetime | None
    reason: str
    sighting_id: int


def item_sightings(conn: Connection, notice_id: int) -> list[ItemSighting]:
    """The notice's items with their sightings, in id order."""
    rows = conn.execute(
        "select e.id, s.page_url, s.url, s.title, s.posted_at, e.captured_at, e.reason, e.sighting_id"
        " from notice_items ni"
        " join evidence_items e on e.id = ni.item_id join sightings s on s.id = e.sighting_id"
        " where ni.notice_id = %s order by e.id", (notice_id,)).fetchall()
    return [ItemSighting(*row) for row in rows]


def quoted_hashes(conn: Connection, item_ids: list[int]) -> dict[int, dict[str, str]]:
    """item id -> artefact kind -> SHA-256 (hex) of the artefacts a notice quotes: all but the metadata record,
    which is ours, not what the site served."""
    hashes: dict[int, dict[str, str]] = {}
    for item_id, kind, sha256 in conn.execute(
            "select item_id, kind, sha256 from evidence_artefacts where item_id = any(%s) and kind <> 'metadata'",
            (item_ids,)):
        hashes.setdefault(item_id, {})[kind] = bytes(sha256).hex()
    return hashes


def write_generated_text(conn: Connection, notice_id: int, language: str, subject: str, body: str) -> None:
    """The generated text of one language, unless an officer edited that language's text (then it is kept)."""
    conn.execute(
        "insert into notice_texts (notice_id, language, subject, body) values (%s, %s, %s, %s)"
        " on conflict (notice_id, language) do update set subject = excluded.subject, body = excluded.body"
        " where notice_texts.edited_by is null", (notice_id, language, subject, body))


def language_texts(conn: Connection, notice_id: int) -> dict[str, tuple[str, str, str | None]]:
    """Every language's (subject, body, edited_by) of a notice."""
    return {language: (subject, body, edited_by) for language, subject, body, edited_by in conn.execute(
        "select language, subject, body, edited_by from notice_texts where notice_id = %s", (notice_id,))}


def language_text(conn: Connection, notice_id: int, language: str) -> tuple[str, str]:
    """(subject, body) of one language's text (it must exist)."""
    subject, body = conn.execute("select subject, body from notice_texts where notice_id = %s and language = %s",
                                 (notice_id, language)).fetchone()
    return subject, body


def edit_text(conn: Connection, notice_id: int, language: str, *, subject: str | None, body: str | None,
              editor: str) -> None:
    """An officer's subject and/or body (None: kept) of one language; drafting no longer rewrites that text."""
    conn.execute(
        "update notice_texts set subject = coalesce(%s, subject), body = coalesce(%s, body), edited_by = %s,"
        " edited_at = now() where notice_id = %s and language = %s",
        (subject, body, editor, notice_id, language))


# -- listing -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoticeSummary:
    id: int
    reference: str
    state: str
    kind: str
    case_id: str | None
    site: str
    language: str
    recipient: str | None
    recipient_source: str
    priority: int
    items: int
    attempts: int
    error: str
    created_at: datetime
    approved_by: str | None
    approved_at: datetime | None
    sent_at: datetime | None


def notice_summaries(conn: Connection, *, state: str, notice_id: int | None, limit: int) -> list[NoticeSummary]:
    """Notices with their item counts, most urgent first, then oldest first; of one state ('' any), or one notice."""
    rows = conn.execute(
        "select n.id, n.reference, n.state, n.kind, n.case_id, n.site, n.language, n.recipient, n.recipient_source,"
        " n.priority, count(ni.item_id), n.attempts, n.error, n.created_at, n.approved_by, n.approved_at, n.sent_at"
        " from notices n left join notice_items ni on ni.notice_id = n.id"
        " where (%s = '' or n.state = %s) and (%s::bigint is null or n.id = %s)"
        " group by n.id order by n.priority desc, n.id limit %s",
        (state, state, notice_id, notice_id, limit)).fetchall()
    return [NoticeSummary(*row) for row in rows]


def notice_item_ids(conn: Connection, notice_id: int) -> list[int]:
    """The items a notice is about, in id order: the order of `item_sightings`, and so of
    `clients.notices.drafts.notice_items`."""
    return [r[0] for r in conn.execute(
        "select ni.item_id from notice_items ni where ni.notice_id = %s order by ni.item_id", (notice_id,))]


# -- officers' actions ---------------------------------------------------------------------------------------------


def lock_notice_state(conn: Connection, notice_id: int) -> str | None:
    """The notice's state, the notice locked for the rest of the caller's transaction; None when there is none."""
    row = conn.execute("select state from notices where id = %s for update", (notice_id,)).fetchone()
    return None if row is None else row[0]


def set_notice_state(conn: Connection, notice_id: int, state: str) -> None:
    conn.execute("update notices set state = %s where id = %s", (state, notice_id))


def set_language(conn: Connection, notice_id: int, language: str) -> None:
    """The language the notice goes out in."""
    conn.execute("update notices set language = %s where id = %s", (language, notice_id))


def notice_recipient(conn: Connection, notice_id: int) -> str | None:
    """Whom the notice goes to (None: nobody found yet); the notice must exist."""
    return conn.execute("select recipient from notices where id = %s", (notice_id,)).fetchone()[0]


def mark_approved(conn: Connection, notice_id: int, approver: str) -> None:
    conn.execute("update notices set state = 'approved', approved_by = %s, approved_at = now() where id = %s",
                 (approver, notice_id))


def confirm_items(conn: Connection, notice_id: int, reviewer: str) -> list[int]:
    """The notice's items still awaiting review ('new', 'escalated') confirmed by `reviewer`; their ids."""
    return [r[0] for r in conn.execute(
        "update evidence_items e set review_state = 'confirmed', reviewed_by = %s, reviewed_at = now()"
        " from notice_items ni where ni.item_id = e.id and ni.notice_id = %s"
        " and e.review_state in ('new', 'escalated') returning e.id", (reviewer, notice_id))]


def approved_notice_of(conn: Connection, item_id: int) -> str | None:
    """The reference of an approved notice not sent yet ('approved' or 'sending') the item is in; None if none."""
    row = conn.execute("select n.reference from notice_items ni join notices n on n.id = ni.notice_id"
                       " where ni.item_id = %s and n.state in ('approved', 'sending') limit 1", (item_id,)).fetchone()
    return None if row is None else row[0]


def lock_item_notices(conn: Connection, item_id: int) -> list[tuple[int, str]]:
    """(id, state) of every notice the item is in, in id order, the notices locked for the rest of the caller's
    transaction."""
    rows = conn.execute(
        "select n.id, n.state from notice_items ni join notices n on n.id = ni.notice_id"
        " where ni.item_id = %s order by n.id for update of n", (item_id,)).fetchall()
    return [(notice_id, state) for notice_id, state in rows]


def remove_notice_item(conn: Connection, notice_id: int, item_id: int) -> None:
    conn.execute("delete from notice_items where notice_id = %s and item_id = %s", (notice_id, item_id))


def notice_item_count(conn: Connection, notice_id: int) -> int:
    """How many items the notice is about."""
    return conn.execute("select count(*) from notice_items where notice_id = %s", (notice_id,)).fetchone()[0]


# -- sending -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Claimed:
    """A notice claimed for sending."""

    id: int
    reference: str
    recipient: str
    language: str
    message_id: str  # '' until the first attempt sets one


def claim_next_to_send(conn: Connection, max_attempts: int) -> Claimed | None:
    """The most urgent approved notice (or failed one with attempts left), now 'sending' with one attempt more; None
    when there is none. `skip locked`: two senders never claim the same notice, nor wait on each other."""
    row = conn.execute(
        "update notices set state = 'sending', attempts = attempts + 1 where id = (select id from notices"
        " where state = 'approved' or (state = 'failed' and attempts < %s)"
        " order by priority desc, id for update skip locked limit 1)"
        " returning id, reference, recipient, language, coalesce(message_id, '')", (max_attempts,),
    ).fetchone()
    return None if row is None else Claimed(*row)


def hold_sending(conn: Connection, notice_id: int) -> None:
    """Mark the notice as being sent by this connection's session, past commits, until `release_sending` or the
    session ends (a worker that dies mid-send drops it): an officer resolving a notice stuck in 'sending' checks it
    (`sending_held_elsewhere`), so a live send is never taken for a crashed one."""
    conn.execute("select pg_advisory_lock(%s, %s)", (_SENDING_LOCK, notice_id))


def release_sending(conn: Connection, notice_id: int) -> None:
    conn.execute("select pg_advisory_unlock(%s, %s)", (_SENDING_LOCK, notice_id))


def sending_held_elsewhere(conn: Connection, notice_id: int) -> bool:
    """Whether a live worker is sending the notice now (its `hold_sending`). When not, this transaction holds the
    lock until it ends, so no send can start meanwhile."""
    return not conn.execute("select pg_try_advisory_xact_lock(%s, %s)", (_SENDING_LOCK, notice_id)).fetchone()[0]


def set_message_id(conn: Connection, notice_id: int, message_id: str) -> None:
    conn.execute("update notices set message_id = %s where id = %s", (message_id, notice_id))


def record_send_failure(conn: Connection, notice_id: int, error: str) -> None:
    """The mail did not go: 'failed' (retried while attempts last), with the error."""
    conn.execute("update notices set state = 'failed', error = %s where id = %s", (error, notice_id))


@dataclass(frozen=True)
class SentNotice:
    reference: str
    recipient: str
    message_id: str | None  # None if a crash came between claiming the notice and giving it one
    language: str


def mark_sent(conn: Connection, notice_id: int, sent_at: datetime) -> SentNotice:
    """The notice went out at `sent_at` (its error cleared); what was sent, to whom."""
    return SentNotice(*conn.execute(
        "update notices set state = 'sent', sent_at = %s, error = '' where id = %s"
        " returning reference, recipient, message_id, language", (sent_at, notice_id)).fetchone())


def mark_items_notified(conn: Connection, item_ids: list[int], *, notified_at: datetime,
                        next_check_at: datetime) -> None:
    """A notice went out for these items: the removal monitor checks them from `next_check_at`. Items notified
    before keep their first notice's time; items whose removal is already being followed are left alone."""
    conn.execute(
        "update evidence_items set removal_state = 'notified', notified_at = coalesce(notified_at, %s),"
        " next_check_at = %s where id = any(%s) and removal_state in ('open', 'reuploaded')",
        (notified_at, next_check_at, item_ids))
