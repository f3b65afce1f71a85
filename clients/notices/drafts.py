"""Notices in the database: drafting from captured items, officers' edits and approval, and sending.

A draft collects the captured items of one site, case and kind (an officer-edited draft is left as written and a
new one is started). It is rendered in every language we have; `language` picks the one it goes out in. Nothing
is sent before an officer approves it; a notice is claimed for sending in its own transaction ('sending'), so two
senders never mail it twice, and one that a crash left in 'sending' is not retried blindly: an officer looks.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from psycopg import Connection
from psycopg_pool import ConnectionPool

from clients.evidence.writer import Captured
from clients.notices.contacts import choose_contact
from clients.notices.language import guess_language
from clients.notices.mail import Sender, SmtpSettings, new_message_id, send_mail
from clients.notices.render import NoticeItem, render_notice
from clients.notices.sites import Site, jurisdiction, site_for
from clients.notices.template_files import LANGUAGES
from server.storage import chain
from server.storage.store import Principal, audit

log = logging.getLogger(__name__)


class NoticeError(Exception):
    """An action the notice's state does not allow (approving a sent notice, approving with no recipient...)."""


@dataclass(frozen=True)
class Drafting:
    sites: dict[str, Site]
    sender: Sender


def draft_for_item(conn: Connection, captured: Captured, drafting: Drafting) -> int | None:
    """Add a captured item to its site's open draft (or a new one) and re-render the draft; the notice id. An item
    an officer rejected is never drafted (None)."""
    case_id, under_19, page_url, url, priority, item_site, review_state = conn.execute(
        "select e.case_id, e.under_19, s.page_url, s.url, e.priority, e.site, e.review_state from evidence_items e"
        " join sightings s on s.id = e.sighting_id where e.id = %s", (captured.item_id,)).fetchone()
    if review_state == "rejected":
        return None
    site = site_for(page_url or url, drafting.sites)
    kind = "youth" if under_19 else "ncii"
    recipient, how = choose_contact(site, captured.security_txt, captured.page_html)
    row = conn.execute(
        "select id, recipient from notices n where state = 'draft' and site = %s and kind = %s"
        " and case_id is not distinct from %s and not exists (select 1 from notice_texts t"
        "   where t.notice_id = n.id and t.edited_by is not null) order by id desc limit 1 for update",
        (item_site, kind, case_id)).fetchone()
    if row is None:
        language = site.language or guess_language(captured.page_html, site.host)
        notice_id = conn.execute(
            "insert into notices (reference, case_id, kind, site, jurisdiction, language, recipient,"
            " recipient_source, priority) values ('', %s, %s, %s, %s, %s, %s, %s, %s) returning id",
            (case_id, kind, item_site, jurisdiction(site, captured.page_html), language, recipient, how, priority),
        ).fetchone()[0]
        conn.execute("update notices set reference = %s where id = %s",
                     (f"JW-{datetime.now(UTC):%Y%m%d}-{notice_id:06d}", notice_id))
    else:
        notice_id = row[0]
        conn.execute("update notices set priority = greatest(priority, %s) where id = %s", (priority, notice_id))
        if row[1] is None and recipient:
            conn.execute("update notices set recipient = %s, recipient_source = %s where id = %s",
                         (recipient, how, notice_id))
    conn.execute("insert into notice_items (notice_id, item_id) values (%s, %s) on conflict do nothing",
                 (notice_id, captured.item_id))
    render_texts(conn, notice_id, drafting)
    return notice_id


def notice_items(conn: Connection, notice_id: int) -> list[NoticeItem]:
    rows = conn.execute(
        "select e.id, s.page_url, s.url, s.title, s.posted_at, e.captured_at from notice_items ni"
        " join evidence_items e on e.id = ni.item_id join sightings s on s.id = e.sighting_id"
        " where ni.notice_id = %s order by e.id", (notice_id,)).fetchall()
    hashes: dict[int, dict[str, str]] = {}
    for item_id, kind, sha256 in conn.execute(
            "select item_id, kind, sha256 from evidence_artefacts where item_id = any(%s) and kind <> 'metadata'",
            ([r[0] for r in rows],)):
        hashes.setdefault(item_id, {})[kind] = bytes(sha256).hex()
    return [NoticeItem(page_url=page_url or url, media_url=url, title=title, posted_at=posted_at,
                       captured_at=captured_at, hashes=hashes.get(item_id, {}))
            for item_id, page_url, url, title, posted_at, captured_at in rows]


def render_texts(conn: Connection, notice_id: int, drafting: Drafting) -> None:
    """(Re)write the generated text in every language; texts an officer edited are kept."""
    reference, site_host, kind, juris = conn.execute(
        "select reference, site, kind, jurisdiction from notices where id = %s", (notice_id,)).fetchone()
    site = site_for(f"http://{site_host}/", drafting.sites)
    items = notice_items(conn, notice_id)
    for language in LANGUAGES:
        subject, body = render_notice(language, site, items, kind=kind, sender=drafting.sender,
                                      reference=reference, jurisdiction=juris)
        conn.execute(
            "insert into notice_texts (notice_id, language, subject, body) values (%s, %s, %s, %s)"
            " on conflict (notice_id, language) do update set subject = excluded.subject, body = excluded.body"
            " where notice_texts.edited_by is null", (notice_id, language, subject, body))


# -- reading -----------------------------------------------------------------------------------------------------


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


def list_notices(conn: Connection, *, state: str = "", notice_id: int | None = None,
                 limit: int = 500) -> list[NoticeSummary]:
    """Notices, most urgent first (youth before the rest, then oldest first); one state or one notice."""
    rows = conn.execute(
        "select n.id, n.reference, n.state, n.kind, n.case_id, n.site, n.language, n.recipient, n.recipient_source,"
        " n.priority, count(ni.item_id), n.attempts, n.error, n.created_at, n.approved_by, n.approved_at, n.sent_at"
        " from notices n left join notice_items ni on ni.notice_id = n.id"
        " where (%s = '' or n.state = %s) and (%s::bigint is null or n.id = %s)"
        " group by n.id order by n.priority desc, n.id limit %s",
        (state, state, notice_id, notice_id, limit)).fetchall()
    return [NoticeSummary(*row) for row in rows]


def notice_texts(conn: Connection, notice_id: int) -> dict[str, tuple[str, str, str | None]]:
    """Every language's (subject, body, edited_by) of a notice."""
    return {language: (subject, body, edited_by) for language, subject, body, edited_by in conn.execute(
        "select language, subject, body, edited_by from notice_texts where notice_id = %s", (notice_id,))}


# -- officers' actions -------------------------------------------------------------------------------------------


def _state(conn: Connection, notice_id: int) -> str:
    row = conn.execute("select state from notices where id = %s for update", (notice_id,)).fetchone()
    if row is None:
        raise NoticeError(f"no notice {notice_id}")
    return row[0]


def edit(conn: Connection, who: Principal, notice_id: int, *, language: str | None = None,
         subject: str | None = None, body: str | None = None, recipient: str | None = None,
         send_language: str | None = None) -> None:
    """An officer's changes to a draft: a language's text, the recipient, the language it goes out in."""
    if _state(conn, notice_id) != "draft":
        raise NoticeError(f"notice {notice_id} is no longer a draft")
    if (subject is not None or body is not None) and language is not None:
        if language not in LANGUAGES:
            raise NoticeError(f"no such language {language!r}")
        conn.execute(
            "update notice_texts set subject = coalesce(%s, subject), body = coalesce(%s, body), edited_by = %s,"
            " edited_at = now() where notice_id = %s and language = %s",
            (subject, body, who.name, notice_id, language))
    if recipient is not None:
        if "@" not in recipient or any(c.isspace() for c in recipient.strip()):
            raise NoticeError(f"not an e-mail address: {recipient!r}")
        conn.execute("update notices set recipient = %s, recipient_source = 'officer' where id = %s",
                     (recipient.strip(), notice_id))
    if send_language is not None:
        if send_language not in LANGUAGES:
            raise NoticeError(f"no such language {send_language!r}")
        conn.execute("update notices set language = %s where id = %s", (send_language, notice_id))
    audit(conn, who, "EditNotice", f"notice:{notice_id}",
          {"language": language, "recipient": recipient is not None, "send_language": send_language})


def approve(conn: Connection, who: Principal, notice_id: int) -> None:
    """An officer's explicit approval: only now may the notice be sent."""
    if who.role not in ("officer", "admin"):
        raise NoticeError(f"role {who.role!r} may not approve notices")
    state = _state(conn, notice_id)
    if state != "draft":
        raise NoticeError(f"notice {notice_id} is {state}, not a draft")
    recipient = conn.execute("select recipient from notices where id = %s", (notice_id,)).fetchone()[0]
    if not recipient:
        raise NoticeError(f"notice {notice_id} has no recipient: set the site's abuse contact first")
    conn.execute("update notices set state = 'approved', approved_by = %s, approved_at = now() where id = %s",
                 (who.name, notice_id))
    # Approving a notice is the officer's decision on every item in it (rejected items were taken out).
    confirmed = [r[0] for r in conn.execute(
        "update evidence_items e set review_state = 'confirmed', reviewed_by = %s, reviewed_at = now()"
        " from notice_items ni where ni.item_id = e.id and ni.notice_id = %s"
        " and e.review_state in ('new', 'escalated') returning e.id", (who.name, notice_id))]
    audit(conn, who, "ApproveNotice", f"notice:{notice_id}",
          {"recipient_domain": recipient.rsplit("@", 1)[-1], "confirmed_items": confirmed})


def withdrawal_blocked_by(conn: Connection, item_id: int) -> str | None:
    """The approved notice (not yet sent) an item is in, if any: it goes out as approved or not at all."""
    row = conn.execute("select n.reference from notice_items ni join notices n on n.id = ni.notice_id"
                       " where ni.item_id = %s and n.state in ('approved', 'sending') limit 1", (item_id,)).fetchone()
    return None if row is None else row[0]


def withdraw_item(conn: Connection, who: Principal, item_id: int, drafting: Drafting) -> list[int]:
    """Take a rejected item out of the drafts it is in (a draft left empty is cancelled, the others re-rendered);
    the notices changed. An approved notice not yet sent must be cancelled by an officer first: it went out as
    approved or not at all."""
    blocked = withdrawal_blocked_by(conn, item_id)
    if blocked is not None:
        raise NoticeError(f"item {item_id} is in notice {blocked}, already approved: cancel that notice first")
    rows = conn.execute(
        "select n.id, n.state, n.reference from notice_items ni join notices n on n.id = ni.notice_id"
        " where ni.item_id = %s order by n.id for update of n", (item_id,)).fetchall()
    changed = []
    for notice_id, state, _ in rows:
        if state != "draft":  # sent, failed or cancelled notices keep their history
            continue
        conn.execute("delete from notice_items where notice_id = %s and item_id = %s", (notice_id, item_id))
        left = conn.execute("select count(*) from notice_items where notice_id = %s", (notice_id,)).fetchone()[0]
        if left:
            render_texts(conn, notice_id, drafting)
        else:
            conn.execute("update notices set state = 'cancelled' where id = %s", (notice_id,))
        audit(conn, who, "WithdrawItem", f"notice:{notice_id}", {"item": item_id, "cancelled": not left})
        changed.append(notice_id)
    return changed


def resolve_sending(conn: Connection, who: Principal, notice_id: int, *, delivered: bool,
                    recheck_after_s: float) -> None:
    """A notice a crash left in 'sending' (the mail may or may not have gone): the officer checked the mail log
    and says which. Delivered: recorded as sent; not delivered: approved again, resent with the same Message-ID."""
    if _state(conn, notice_id) != "sending":
        raise NoticeError(f"notice {notice_id} is not stuck in sending")
    if delivered:
        _record_sent(conn, notice_id, recheck_after_s)
    else:
        conn.execute("update notices set state = 'approved' where id = %s", (notice_id,))
    audit(conn, who, "ResolveSending", f"notice:{notice_id}", {"delivered": delivered})


def cancel(conn: Connection, who: Principal, notice_id: int) -> None:
    state = _state(conn, notice_id)
    if state not in ("draft", "approved", "failed"):
        raise NoticeError(f"notice {notice_id} is {state}: too late to cancel")
    conn.execute("update notices set state = 'cancelled' where id = %s", (notice_id,))
    audit(conn, who, "CancelNotice", f"notice:{notice_id}", {})


# -- sending -----------------------------------------------------------------------------------------------------


def send_approved(pool: ConnectionPool, smtp: SmtpSettings, sender: Sender, *, max_attempts: int,
                  recheck_after_s: float, limit: int = 100) -> int:
    """Send approved notices (and retry failed ones), most urgent first; returns how many went out."""
    sent = 0
    for _ in range(limit):
        with pool.connection() as conn:
            claimed = conn.execute(
                "update notices set state = 'sending', attempts = attempts + 1 where id = (select id from notices"
                " where state = 'approved' or (state = 'failed' and attempts < %s)"
                " order by priority desc, id for update skip locked limit 1)"
                " returning id, reference, recipient, language, coalesce(message_id, '')", (max_attempts,),
            ).fetchone()
            if claimed is None:
                return sent
            notice_id, reference, recipient, language, message_id = claimed
            if not message_id:  # kept across retries: a resend can be recognised as the same notice
                message_id = new_message_id(sender.email.rsplit("@", 1)[-1] or "localhost")
                conn.execute("update notices set message_id = %s where id = %s", (message_id, notice_id))
            subject, body = conn.execute("select subject, body from notice_texts where notice_id = %s"
                                         " and language = %s", (notice_id, language)).fetchone()
        try:
            send_mail(smtp, sender=sender, recipient=recipient, subject=subject, body=body, message_id=message_id)
        except Exception as error:
            log.warning("notice %s to %s failed: %s", reference, recipient, error)
            with pool.connection() as conn:
                conn.execute("update notices set state = 'failed', error = %s where id = %s",
                             (f"{type(error).__name__}: {error}"[:2000], notice_id))
            continue
        with pool.connection() as conn:
            _record_sent(conn, notice_id, recheck_after_s)
        sent += 1
    return sent


def _record_sent(conn: Connection, notice_id: int, recheck_after_s: float) -> None:
    """The notice went out: its items are notified (the removal monitor starts), and the log says what was sent."""
    now = datetime.now(UTC)
    reference, recipient, message_id, language = conn.execute(
        "update notices set state = 'sent', sent_at = %s, error = '' where id = %s"
        " returning reference, recipient, message_id, language", (now, notice_id)).fetchone()
    body = conn.execute("select body from notice_texts where notice_id = %s and language = %s",
                        (notice_id, language)).fetchone()[0]
    items = [r[0] for r in conn.execute("select item_id from notice_items where notice_id = %s", (notice_id,))]
    conn.execute(
        "update evidence_items set removal_state = 'notified', notified_at = coalesce(notified_at, %s),"
        " next_check_at = %s where id = any(%s) and removal_state in ('open', 'reuploaded')",
        (now, now + timedelta(seconds=recheck_after_s), items))
    chain.append(conn, "notice_sent", {
        "notice": reference, "items": items, "recipient": recipient, "message_id": message_id,
        "language": language, "body_sha256": hashlib.sha256(body.encode()).hexdigest()})
