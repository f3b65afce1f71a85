"""Officers' decisions on evidence items: confirm, reject as not the victim, escalate.

The database side of a decision, in the caller's transaction. Rejecting a match also puts the sighting into the
case's negative bank, which lives in the service's indexes: the console asks the service for that (MarkBenign with
the officer's own token) before it records the decision here, so a rejection is never recorded without its bank
entry.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import Connection

from clients.evidence.writer import Captured
from clients.notices.drafts import Drafting, draft_for_item, withdraw_item
from server.store import Principal, audit

DECISIONS = {"confirm": "confirmed", "reject": "rejected", "escalate": "escalated"}
MAX_NOTE_CHARS = 2000


class ReviewError(Exception):
    """A decision the item's state does not allow, or an unknown item."""


@dataclass(frozen=True)
class ReviewTarget:
    id: int
    case_id: str | None
    sighting_id: int
    reason: str
    review_state: str
    capture_state: str


def review_target(conn: Connection, item_id: int) -> ReviewTarget:
    row = conn.execute("select id, case_id, sighting_id, reason, review_state, capture_state from evidence_items"
                       " where id = %s for update", (item_id,)).fetchone()
    if row is None:
        raise ReviewError(f"no evidence item {item_id}")
    return ReviewTarget(*row)


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
    conn.execute("update evidence_items set review_state = %s, reviewed_by = %s, reviewed_at = now(),"
                 " review_note = %s where id = %s", (DECISIONS[decision], who.name, note.strip(), item_id))
    if decision == "confirm" and target.capture_state == "captured":
        # Normally drafted at capture; not when it was rejected before, or its draft was cancelled since.
        live = conn.execute("select 1 from notice_items ni join notices n on n.id = ni.notice_id"
                            " where ni.item_id = %s and n.state <> 'cancelled'", (item_id,)).fetchone()
        if live is None:
            notice_id = draft_for_item(conn, Captured(item_id, None, None), drafting)
            changed += [notice_id] if notice_id is not None else []
    # The note may name people: the audit log keeps ids only.
    audit(conn, who, f"{decision.capitalize()}Item", f"item:{item_id}",
          {"from": target.review_state, "case": target.case_id, "notices": changed, "note": bool(note.strip())})
    return changed
