"""The tamper-evident evidence log: a hash chain in PostgreSQL (tables in migrations/0002_evidence.sql).

Entry n's hash is SHA-256 over entry n-1's hash and entry n's own fields, so changing, inserting, reordering or
deleting any entry breaks every link after it. An entry holds only the SHA-256 of its payload; the payload (URLs,
titles, artefact hashes: personal data) is a separate row that forgetting a case may delete. A 'forget' entry
names the items whose payloads went, so a deleted payload is told apart from a tampered one.

A database superuser can still rewrite the whole chain from some point on; the head hash (`verify` prints it,
reports quote the entry hash) is what an officer records outside the system to pin the chain down.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from psycopg import Connection

GENESIS = bytes(32)  # the "previous hash" of entry 1
_APPEND_LOCK_KEY = 0x6A77_6C6F67  # "jwlog": appends are serialised so seq and prev_hash never fork


def canonical_json(payload: dict[str, Any]) -> str:
    """The one serialisation that payload hashes cover: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def entry_hash(prev_hash: bytes, seq: int, at: datetime, event: str, item_id: int | None,
               payload_sha256: bytes) -> bytes:
    fields = f"{seq}|{at.astimezone(UTC).isoformat(timespec='microseconds')}|{event}|{item_id or ''}|"
    return hashlib.sha256(prev_hash + fields.encode() + payload_sha256).digest()


@dataclass(frozen=True)
class Entry:
    seq: int
    at: datetime
    entry_hash: bytes


def append(conn: Connection, event: str, payload: dict[str, Any], item_id: int | None = None) -> Entry:
    """Append one entry inside the caller's transaction (so it commits or rolls back with what it records)."""
    conn.execute("select pg_advisory_xact_lock(%s)", (_APPEND_LOCK_KEY,))
    last = conn.execute("select seq, entry_hash from evidence_log order by seq desc limit 1").fetchone()
    seq, prev = (last[0] + 1, bytes(last[1])) if last else (1, GENESIS)
    at = datetime.now(UTC)  # microseconds, as timestamptz stores them
    text = canonical_json(payload)
    payload_sha256 = hashlib.sha256(text.encode()).digest()
    digest = entry_hash(prev, seq, at, event, item_id, payload_sha256)
    conn.execute(
        "insert into evidence_log (seq, at, event, item_id, payload_sha256, prev_hash, entry_hash)"
        " values (%s, %s, %s, %s, %s, %s, %s)", (seq, at, event, item_id, payload_sha256, prev, digest))
    conn.execute("insert into evidence_log_payloads (seq, item_id, payload) values (%s, %s, %s)",
                 (seq, item_id, text))
    return Entry(seq, at, digest)


def record_forget(conn: Connection, item_ids: Iterable[int], target: str) -> Entry | None:
    """Log that these items' evidence is being deleted (call before deleting, in the same transaction)."""
    ids = sorted(set(item_ids))
    return append(conn, "forget", {"items": ids, "target": target}) if ids else None


@dataclass
class Verification:
    entries: int = 0
    head_seq: int = 0
    head_hash: bytes = GENESIS
    forgotten_payloads: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(conn: Connection, batch: int = 5000) -> Verification:
    """Walk the whole chain: contiguous seq, links, entry hashes, payload hashes; missing payloads only where a
    later 'forget' entry names the item."""
    forgotten: set[int] = set()
    for (text,) in conn.execute(
            "select p.payload from evidence_log l join evidence_log_payloads p using (seq) where l.event = 'forget'"):
        forgotten.update(json.loads(text).get("items", []))
    result = Verification()
    prev, expected_seq = GENESIS, 1
    # server-side cursor (the log may be long), which needs a transaction
    with conn.transaction(), conn.cursor(name="evidence_log_walk") as cursor:
        cursor.itersize = batch
        cursor.execute(
            "select l.seq, l.at, l.event, l.item_id, l.payload_sha256, l.prev_hash, l.entry_hash, p.payload"
            " from evidence_log l left join evidence_log_payloads p using (seq) order by l.seq")
        for seq, at, event, item_id, payload_sha256, prev_hash, stored_hash, payload in cursor:
            payload_sha256, prev_hash, stored_hash = bytes(payload_sha256), bytes(prev_hash), bytes(stored_hash)
            if seq != expected_seq:
                result.problems.append(f"entry {seq}: expected entry {expected_seq} (entries missing or inserted)")
            if prev_hash != prev:
                result.problems.append(f"entry {seq}: previous-hash link broken")
            if entry_hash(prev_hash, seq, at, event, item_id, payload_sha256) != stored_hash:
                result.problems.append(f"entry {seq}: entry hash does not match its fields (entry altered)")
            if payload is None:
                if item_id in forgotten:
                    result.forgotten_payloads += 1
                else:
                    result.problems.append(f"entry {seq}: payload missing and no forget entry names item {item_id}")
            elif hashlib.sha256(payload.encode()).digest() != payload_sha256:
                result.problems.append(f"entry {seq}: payload does not match its hash (payload altered)")
            prev, expected_seq = stored_hash, seq + 1
            result.entries += 1
            result.head_seq, result.head_hash = seq, stored_hash
    return result
