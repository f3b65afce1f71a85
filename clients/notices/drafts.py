"""Notices in the database: drafting from captured items, officers' edits and approval, and sending.

A draft collects the captured items of one site, case and kind (an officer-edited draft is left as written and a
new one is started). It is rendered in every language we have; `language` picks the one it goes out in. Nothing
is sent before an officer approves it; a notice is claimed for sending in its own transaction ('sending'), so two
senders never mail it twice, and one that a crash left in 'sending' is not retried blindly: an officer looks. The
sender holds an advisory lock on the notice while it sends, so an officer cannot mistake a send in progress for a
crashed one; drafting takes a lock per site, kind and case, so two workers never start two drafts for one site.

The SQL lives in `clients.notices.store`; this module decides (which draft, whom to write to, what each state
allows) and runs no query itself.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import Connection
from psycopg_pool import ConnectionPool

from clients.evidence.store import items_exposed_kinds
from clients.evidence.writer import Captured
from clients.notices.contacts import choose_contact
from clients.notices.language import guess_language
from clients.notices.mail import Sender, SmtpSettings, new_message_id, send_mail
from clients.notices.render import NoticeItem, render_notice
from clients.notices.sites import Site, jurisdiction, site_for
from clients.notices.store import (
    Claimed,
    NoticeSummary,
    add_notice_item,
    approved_notice_of,
    claim_next_to_send,
    confirm_items,
    draft_target,
    edit_text,
    hold_sending,
    insert_notice,
    item_sightings,
    language_text,
    language_texts,
    lock_drafting,
    lock_item_notices,
    lock_notice_state,
    lock_open_draft,
    mark_approved,
    mark_items_notified,
    mark_sent,
    notice_item_count,
    notice_item_ids,
    notice_recipient,
    notice_summaries,
    quoted_hashes,
    raise_priority,
    record_send_failure,
    release_sending,
    remove_notice_item,
    render_target,
    sending_held_elsewhere,
    set_language,
    set_message_id,
    set_notice_state,
    set_recipient,
    set_reference,
    write_generated_text,
)
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
    item = draft_target(conn, captured.item_id)
    if item.review_state == "rejected":
        return None
    site = site_for(item.page_url or item.url, drafting.sites)
    kind = "youth" if item.under_19 else "ncii"
    recipient, how = choose_contact(site, captured.security_txt, captured.page_html)
    lock_drafting(conn, site=item.site, kind=kind, case_id=item.case_id)  # another worker may draft this site now
    draft = lock_open_draft(conn, site=item.site, kind=kind, case_id=item.case_id)
    if draft is None:
        language = site.language or guess_language(captured.page_html, site.host)
        notice_id = insert_notice(conn, case_id=item.case_id, kind=kind, site=item.site,
                                  jurisdiction=jurisdiction(site, captured.page_html), language=language,
                                  recipient=recipient, recipient_source=how, priority=item.priority)
        set_reference(conn, notice_id, f"JW-{datetime.now(UTC):%Y%m%d}-{notice_id:06d}")
    else:
        notice_id, draft_recipient = draft
        raise_priority(conn, notice_id, item.priority)
        if draft_recipient is None and recipient:
            set_recipient(conn, notice_id, recipient, how)
    add_notice_item(conn, notice_id, captured.item_id)
    render_texts(conn, notice_id, drafting)
    return notice_id


def notice_items(conn: Connection, notice_id: int) -> list[NoticeItem]:
    """The notice's items as the notice text quotes them, in id order. A post that is both a match and an
    exposure of personal information has two items (one per reason) but is one post to take down: quoted once,
    as a match (the stronger ground), with the kinds it exposes and the first captured item's hashes."""
    rows = item_sightings(conn, notice_id)
    ids = [r.item_id for r in rows]
    hashes = quoted_hashes(conn, ids)
    exposed = items_exposed_kinds(conn, ids)
    by_sighting: dict[int, NoticeItem] = {}
    for r in rows:
        item = NoticeItem(page_url=r.page_url or r.url, media_url=r.url, title=r.title, posted_at=r.posted_at,
                          captured_at=r.captured_at, hashes=hashes.get(r.item_id, {}), reason=r.reason,
                          exposed=tuple(exposed.get(r.item_id, ())))
        seen = by_sighting.get(r.sighting_id)
        if seen is None:
            by_sighting[r.sighting_id] = item
            continue
        by_sighting[r.sighting_id] = replace(
            seen, reason=seen.reason if seen.reason != "personal_info" else item.reason,
            exposed=tuple(sorted(set(seen.exposed) | set(item.exposed))), hashes=seen.hashes or item.hashes)
    return list(by_sighting.values())


def render_texts(conn: Connection, notice_id: int, drafting: Drafting) -> None:
    """(Re)write the generated text in every language; texts an officer edited are kept."""
    notice = render_target(conn, notice_id)
    site = site_for(f"http://{notice.site}/", drafting.sites)
    items = notice_items(conn, notice_id)
    for language in LANGUAGES:
        subject, body = render_notice(language, site, items, kind=notice.kind, sender=drafting.sender,
                                      reference=notice.reference, jurisdiction=notice.jurisdiction)
        write_generated_text(conn, notice_id, language, subject, body)


# -- reading -----------------------------------------------------------------------------------------------------


def list_notices(conn: Connection, *, state: str = "", notice_id: int | None = None,
                 limit: int = 500) -> list[NoticeSummary]:
    """Notices, most urgent first (youth before the rest, then oldest first); one state or one notice."""
    return notice_summaries(conn, state=state, notice_id=notice_id, limit=limit)


def notice_texts(conn: Connection, notice_id: int) -> dict[str, tuple[str, str, str | None]]:
    """Every language's (subject, body, edited_by) of a notice."""
    return language_texts(conn, notice_id)


# -- officers' actions -------------------------------------------------------------------------------------------


def _state(conn: Connection, notice_id: int) -> str:
    """The notice's state, the notice locked for the rest of the caller's transaction."""
    state = lock_notice_state(conn, notice_id)
    if state is None:
        raise NoticeError(f"no notice {notice_id}")
    return state


def edit(conn: Connection, who: Principal, notice_id: int, *, language: str | None = None,
         subject: str | None = None, body: str | None = None, recipient: str | None = None,
         send_language: str | None = None) -> None:
    """An officer's changes to a draft: a language's text, the recipient, the language it goes out in."""
    if _state(conn, notice_id) != "draft":
        raise NoticeError(f"notice {notice_id} is no longer a draft")
    if (subject is not None or body is not None) and language is not None:
        if language not in LANGUAGES:
            raise NoticeError(f"no such language {language!r}")
        edit_text(conn, notice_id, language, subject=subject, body=body, editor=who.name)
    if recipient is not None:
        if "@" not in recipient or any(c.isspace() for c in recipient.strip()):
            raise NoticeError(f"not an e-mail address: {recipient!r}")
        set_recipient(conn, notice_id, recipient.strip(), "officer")
    if send_language is not None:
        if send_language not in LANGUAGES:
            raise NoticeError(f"no such language {send_language!r}")
        set_language(conn, notice_id, send_language)
    audit(conn, who, "EditNotice", f"notice:{notice_id}",
          {"language": language, "recipient": recipient is not None, "send_language": send_language})


def approve(conn: Connection, who: Principal, notice_id: int) -> None:
    """An officer's explicit approval: only now may the notice be sent."""
    if who.role not in ("officer", "admin"):
        raise NoticeError(f"role {who.role!r} may not approve notices")
    state = _state(conn, notice_id)
    if state != "draft":
        raise NoticeError(f"notice {notice_id} is {state}, not a draft")
    recipient = notice_recipient(conn, notice_id)
    if not recipient:
        raise NoticeError(f"notice {notice_id} has no recipient: set the site's abuse contact first")
    mark_approved(conn, notice_id, who.name)
    # Approving a notice is the officer's decision on every item in it (rejected items were taken out).
    confirmed = confirm_items(conn, notice_id, who.name)
    audit(conn, who, "ApproveNotice", f"notice:{notice_id}",
          {"recipient_domain": recipient.rsplit("@", 1)[-1], "confirmed_items": confirmed})


def withdrawal_blocked_by(conn: Connection, item_id: int) -> str | None:
    """The approved notice (not yet sent) an item is in, if any: it goes out as approved or not at all."""
    return approved_notice_of(conn, item_id)


def withdraw_item(conn: Connection, who: Principal, item_id: int, drafting: Drafting) -> list[int]:
    """Take a rejected item out of the drafts it is in (a draft left empty is cancelled, the others re-rendered);
    the notices changed. An approved notice not yet sent must be cancelled by an officer first: it went out as
    approved or not at all."""
    blocked = withdrawal_blocked_by(conn, item_id)
    if blocked is not None:
        raise NoticeError(f"item {item_id} is in notice {blocked}, already approved: cancel that notice first")
    changed = []
    for notice_id, state in lock_item_notices(conn, item_id):
        if state != "draft":  # sent, failed or cancelled notices keep their history
            continue
        remove_notice_item(conn, notice_id, item_id)
        left = notice_item_count(conn, notice_id)
        if left:
            render_texts(conn, notice_id, drafting)
        else:
            set_notice_state(conn, notice_id, "cancelled")
        audit(conn, who, "WithdrawItem", f"notice:{notice_id}", {"item": item_id, "cancelled": not left})
        changed.append(notice_id)
    return changed


def resolve_sending(conn: Connection, who: Principal, notice_id: int, *, delivered: bool,
                    recheck_after_s: float) -> None:
    """A notice a crash left in 'sending' (the mail may or may not have gone): the officer checked the mail log
    and says which. Delivered: recorded as sent; not delivered: approved again, resent with the same Message-ID."""
    if _state(conn, notice_id) != "sending":
        raise NoticeError(f"notice {notice_id} is not stuck in sending")
    if sending_held_elsewhere(conn, notice_id):  # not stuck: a live worker is talking to the mail server now
        raise NoticeError(f"notice {notice_id} is being sent right now: look again in a minute")
    if delivered:
        _record_sent(conn, notice_id, recheck_after_s)
    else:
        set_notice_state(conn, notice_id, "approved")
    audit(conn, who, "ResolveSending", f"notice:{notice_id}", {"delivered": delivered})


def cancel(conn: Connection, who: Principal, notice_id: int) -> None:
    state = _state(conn, notice_id)
    if state not in ("draft", "approved", "failed"):
        raise NoticeError(f"notice {notice_id} is {state}: too late to cancel")
    set_notice_state(conn, notice_id, "cancelled")
    audit(conn, who, "CancelNotice", f"notice:{notice_id}", {})


# -- sending -----------------------------------------------------------------------------------------------------


def send_approved(pool: ConnectionPool, smtp: SmtpSettings, sender: Sender, *, max_attempts: int,
                  recheck_after_s: float, limit: int = 100) -> int:
    """Send approved notices (and retry failed ones), most urgent first; returns how many went out. Each notice is
    claimed ('sending', committed) before the mail server is contacted, so at most one worker sends it."""
    sent = 0
    for _ in range(limit):
        with pool.connection() as conn:
            claimed = claim_next_to_send(conn, max_attempts)
            if claimed is None:
                return sent
            hold_sending(conn, claimed.id)  # the session's, past the commits below, until released
            try:
                message_id = claimed.message_id
                if not message_id:  # kept across retries: a resend can be recognised as the same notice
                    message_id = new_message_id(sender.email.rsplit("@", 1)[-1] or "localhost")
                    set_message_id(conn, claimed.id, message_id)
                subject, body = language_text(conn, claimed.id, claimed.language)
                conn.commit()  # the claim is seen by every other worker before the mail goes
                if _send(smtp, sender, claimed, subject, body, message_id, conn):
                    _record_sent(conn, claimed.id, recheck_after_s)
                    sent += 1
                conn.commit()
            finally:
                _release(conn, claimed.id)
    return sent


def _release(conn: Connection, notice_id: int) -> None:
    try:
        conn.rollback()  # a failed transaction would refuse the unlock; a committed one has nothing to undo
        release_sending(conn, notice_id)
        conn.commit()
    except psycopg.Error:
        conn.close()  # ending the session drops its lock; the pool replaces the connection


def _send(smtp: SmtpSettings, sender: Sender, claimed: Claimed, subject: str, body: str, message_id: str,
          conn: Connection) -> bool:
    """Hand the claimed notice to the mail server; False (recorded as failed, retried later) when that fails."""
    try:
        send_mail(smtp, sender=sender, recipient=claimed.recipient, subject=subject, body=body,
                  message_id=message_id)
    except Exception as error:
        log.warning("notice %s to %s failed: %s", claimed.reference, claimed.recipient, error)
        record_send_failure(conn, claimed.id, f"{type(error).__name__}: {error}"[:2000])
        return False
    return True


def _record_sent(conn: Connection, notice_id: int, recheck_after_s: float) -> None:
    """The notice went out: its items are notified (the removal monitor starts), and the log says what was sent."""
    now = datetime.now(UTC)
    sent = mark_sent(conn, notice_id, now)
    _, body = language_text(conn, notice_id, sent.language)
    items = notice_item_ids(conn, notice_id)
    mark_items_notified(conn, items, notified_at=now, next_check_at=now + timedelta(seconds=recheck_after_s))
    chain.append(conn, "notice_sent", {
        "notice": sent.reference, "items": items, "recipient": sent.recipient, "message_id": sent.message_id,
        "language": sent.language, "body_sha256": hashlib.sha256(body.encode()).hexdigest()})
