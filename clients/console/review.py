"""Officers' decisions on evidence items: confirm, reject as not the victim, escalate.

The database side of a decision, in the caller's transaction (its queries are `clients.console.store`'s). Rejecting
a match also puts the sighting into the case's negative bank, which lives in the service's indexes: the console asks
the service for that (MarkBenign with the officer's own token) before it records the decision here, so a rejection
is never recorded without its bank entry.
"""

from __future__ import annotations

from psycopg import Connection

from clients.console.store import ReviewTarget, in_live_notice, lock_review_target, record_review
from clients.evidence.writer import Captured
from clients.notices.drafts import Drafting, draft_for_item, withdraw_item
from server.storage.store import Principal, audit

DECISIONS = {"confirm": "confirmed", "reject": "rejected", "escalate": "escalated"}
MAX_NOTE_CHARS = 2000


class ReviewError(Exception):
    """A decision the item's state does not allow, or an unknown item."""


def review_target(conn: Connection, item_id: int) -> ReviewTarget:
    """The item a decision is about, locked until the caller's transaction ends."""
    target = lock_review_target(conn, item_id)
    if target is None:
        raise ReviewError(f"no evidence item {item_id}")
    return target


def decide(conn: Connection, who: Principal, item_id: int, decision: str, drafting: Drafting, note: str = ""
           ) -> list[int]:
    """Record an officer's decision; returns the notices it changed (drafted into, withdrawn from)."""
    if who.role not in ("officer", "admin"):
        raise ReviewError(f"role {who.role!r} may not review evidence")
    if decision not in DECISIONS:
        raise ReviewError(f"unknown decision {decision!r}")
    if len(note) > MAX_NOTE_CHARS:
        raise ReviewError(f"the note is over {MAX_NOTE_CHARS} characters")
    target = review_target(conn, item_id)
    changed: list[int] = []
    if decision == "reject":
        changed = withdraw_item(conn, who, item_id, drafting)
    record_review(conn, item_id, DECISIONS[decision], who.name, note.strip())
    # Normally drafted at capture; not when it was rejected before, or its draft was cancelled since.
    if decision == "confirm" and target.capture_state == "captured" and not in_live_notice(conn, item_id):
        notice_id = draft_for_item(conn, Captured(item_id, None, None), drafting)
        changed += [notice_id] if notice_id is not None else []
    # The note may name people: the audit log keeps ids only.
    audit(conn, who, f"{decision.capitalize()}Item", f"item:{item_id}",
          {"from": target.review_state, "case": target.case_id, "notices": changed, "note": bool(note.strip())})
    return changed
