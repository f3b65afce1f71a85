"""The evidence writer: turns matches into captured, encrypted, hash-chained evidence items.

1. `enqueue_items` makes an item for each (sighting, reference) match and for each suspected sighting with a face
   flagged under 19, and marks earlier items of the same reference as re-uploaded (a new sighting reopens them).
2. `capture_item` fetches the page and the media (guarded fetcher), screenshots the page in headless Chromium,
   writes a WARC of the exchanges, and stores screenshot, WARC, media and a metadata record encrypted with the
   item's key, with one 'capture' entry in the evidence log, in one transaction.
3. The notice drafter (clients/notices/drafts.py) then adds the item to its site's draft notice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from psycopg import Connection

from clients.evidence.capture import Browser, build_warc
from clients.evidence.reports import ArtefactHash, MatchExplanation, ReportItem
from clients.evidence.vault import Vault, artefact_context, decrypt, encrypt
from jiwoom.shared.times import KST
from jiwoom.shared.web import Fetched, Fetcher, FetchRefused, site_of, url_allowed
from server.storage import chain

PRIORITY_UNDER_19 = 100  # Korean law lets the centre act on these without a victim's request: they go first
PRIORITY_MATCH = 10
ENQUEUE_BATCH = 500
TOOL = "jiwoom-evidence/0.1"


# -- items ---------------------------------------------------------------------------------------------------------


def enqueue_items(conn: Connection, vault: Vault) -> int:
    """Create evidence items for new sighting matches and under-19 flags; returns how many were created."""
    created = 0
    rows = conn.execute(
        "select m.sighting_id, m.reference_id, r.case_id, bool_or(m.under_19), s.page_url, s.url"
        " from matches m join reference_media r on r.id = m.reference_id join sightings s on s.id = m.sighting_id"
        " where m.sighting_id is not null and not exists (select 1 from evidence_items e"
        "   where e.sighting_id = m.sighting_id and e.reference_id = m.reference_id)"
        " group by m.sighting_id, m.reference_id, r.case_id, s.page_url, s.url order by m.sighting_id limit %s",
        (ENQUEUE_BATCH,)).fetchall()
    for sighting_id, reference_id, case_id, under_19, page_url, url in rows:
        created += _insert_item(conn, vault, sighting_id=sighting_id, reference_id=reference_id, case_id=case_id,
                                reason="match", under_19=under_19, site=site_of(page_url or url))
        # A copy of this reference turned up again: its earlier items are re-uploads now, open again.
        conn.execute(
            "update evidence_items set removal_state = 'reuploaded', reopened_by = %s where reference_id = %s"
            " and sighting_id <> %s and removal_state in ('notified', 'still_up', 'removed')",
            (sighting_id, reference_id, sighting_id))
    # Suspected posts with a face estimated under 19: triage for an officer, no victim's request needed.
    rows = conn.execute(
        "select s.id, s.page_url, s.url from sightings s where s.youth_faces > 0 and s.suspected"
        " and not exists (select 1 from evidence_items e where e.sighting_id = s.id and e.reference_id is null)"
        " order by s.id limit %s", (ENQUEUE_BATCH,)).fetchall()
    for sighting_id, page_url, url in rows:
        created += _insert_item(conn, vault, sighting_id=sighting_id, reference_id=None, case_id=None,
                                reason="under_19", under_19=True, site=site_of(page_url or url))
    return created


def _insert_item(conn: Connection, vault: Vault, *, sighting_id: int, reference_id: int | None,
                 case_id: str | None, reason: str, under_19: bool, site: str) -> int:
    _, wrapped = vault.new_item_key()
    row = conn.execute(
        "insert into evidence_items (case_id, reference_id, sighting_id, reason, under_19, site, priority,"
        " wrapped_key) values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing returning id",
        (case_id, reference_id, sighting_id, reason, under_19, site,
         PRIORITY_UNDER_19 if under_19 else PRIORITY_MATCH, wrapped)).fetchone()
    return 1 if row else 0


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


def pending_items(conn: Connection, limit: int) -> list[PendingItem]:
    rows = conn.execute(
        "select e.id, e.case_id, e.reference_id, e.sighting_id, e.reason, e.under_19, e.site, e.wrapped_key,"
        " s.url, s.page_url, s.title, s.author, s.posted_at, s.content_sha256, e.capture_attempts"
        " from evidence_items e join sightings s on s.id = e.sighting_id"
        " where e.capture_state = 'pending' and e.review_state <> 'rejected'"
        " order by e.priority desc, e.id limit %s", (limit,)).fetchall()
    return [PendingItem(*r[:7], bytes(r[7]), *r[8:13], None if r[13] is None else bytes(r[13]), r[14])
            for r in rows]


def match_explanations(conn: Connection, sighting_id: int, reference_id: int | None) -> list[dict[str, Any]]:
    """The stored matches behind an item, as plain data for the metadata record and the reports."""
    if reference_id is None:
        return []
    rows = conn.execute(
        "select m.signal, m.score, m.threshold, m.reference_id, r.case_id, m.reference_start_s, m.reference_end_s,"
        " m.other_start_s, m.other_end_s, m.matched_frames, m.faces, m.p_false, m.verification, m.face_only"
        " from matches m join reference_media r on r.id = m.reference_id"
        " where m.sighting_id = %s and m.reference_id = %s order by m.id", (sighting_id, reference_id)).fetchall()
    keys = ("signal", "score", "threshold", "reference_id", "case_id", "reference_start_s", "reference_end_s",
            "sighting_start_s", "sighting_end_s", "matched_frames", "faces", "p_false", "verification", "face_only")
    return [dict(zip(keys, row, strict=True)) for row in rows]


# -- capture -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Captured:
    """What a capture found out about the page, for the notice drafter."""

    item_id: int
    page_html: str | None
    security_txt: str | None


async def _fetch(fetcher: Fetcher, url: str, errors: list[str]) -> Fetched | None:
    if not url:
        return None
    try:
        return await fetcher.fetch(url)
    except FetchRefused as error:
        errors.append(f"{url}: {error}")
    except Exception as error:  # network and aiohttp client errors: recorded, the capture goes on
        errors.append(f"{url}: {type(error).__name__}: {error}")
    return None


async def capture_item(item: PendingItem, *, conn: Connection, vault: Vault, fetcher: Fetcher, browser: Browser,
                       page_timeout_s: float, max_height_px: int,
                       security_txts: dict[str, str | None] | None = None) -> Captured:
    """Capture one item and store it (encrypted, logged) in the caller's transaction. `security_txts` caches each
    site's security.txt across the items of one pass, so a burst from one site asks for it once."""
    page_url = item.page_url or item.url
    errors: list[str] = []
    page, media = await asyncio.gather(_fetch(fetcher, page_url, errors), _fetch(fetcher, item.url, errors))
    # Chromium does its own networking, past the fetcher's guard: never hand it an address the policy refuses.
    if not await url_allowed(page_url, fetcher.policy):
        raise FetchRefused(f"page address not allowed, not opened in the browser: {page_url}")
    shot = await asyncio.to_thread(browser.screenshot, page_url, timeout_s=page_timeout_s,
                                   max_height_px=max_height_px)
    captured_at = datetime.now(UTC)
    exchanges = [f for f in (page, media) if f is not None]
    warc = build_warc(exchanges, warcinfo={"software": TOOL, "description": f"jiwoom evidence item {item.id}"})
    media_bytes = media.decoded if media is not None and 200 <= media.status < 300 else b""
    media_sha256 = hashlib.sha256(media_bytes).hexdigest() if media_bytes else None
    metadata = {
        "item": item.id, "case": item.case_id, "reference": item.reference_id, "sighting": item.sighting_id,
        "reason": item.reason, "under_19": item.under_19, "site": item.site,
        "page_url": page_url, "media_url": item.url, "title": item.title, "author": item.author,
        "posted_at": item.posted_at.isoformat() if item.posted_at else None,
        "captured_at_utc": captured_at.isoformat(timespec="seconds"),
        "captured_at_kst": captured_at.astimezone(KST).isoformat(timespec="seconds"),
        "page_status": page.status if page else None, "page_final_url": page.final_url if page else None,
        "media_status": media.status if media else None,
        "media_sha256": media_sha256,
        "media_sha256_matches": (media_sha256 == item.content_sha256.hex()) if media_sha256 and
        item.content_sha256 else None,
        "browser_title": shot.title, "browser_final_url": shot.final_url,
        "screenshot_truncated": shot.truncated, "page_load_complete": shot.load_complete,
        "fetch_errors": errors, "matches": match_explanations(conn, item.sighting_id, item.reference_id),
        "tool": TOOL,
    }
    artefacts = {
        "screenshot": ("image/png", shot.png),
        "warc": ("application/warc+gzip", warc),
        "metadata": ("application/json", chain.canonical_json(metadata).encode()),
    }
    if media_bytes:
        content_type = (media.header("content-type") or "") if media else ""
        artefacts["media"] = (content_type.split(";")[0].strip() or "application/octet-stream", media_bytes)
    key = vault.unwrap(item.wrapped_key)
    hashes: dict[str, dict[str, Any]] = {}
    for kind, (media_type, data) in artefacts.items():
        digest = hashlib.sha256(data).digest()
        nonce, ciphertext = encrypt(key, data, artefact_context(item.id, kind))
        conn.execute(
            "insert into evidence_artefacts (item_id, kind, media_type, sha256, size, nonce, ciphertext)"
            " values (%s, %s, %s, %s, %s, %s, %s) on conflict (item_id, kind) do update set"
            " media_type = excluded.media_type, sha256 = excluded.sha256, size = excluded.size,"
            " nonce = excluded.nonce, ciphertext = excluded.ciphertext, created_at = now()",
            (item.id, kind, media_type, digest, len(data), nonce, ciphertext))
        hashes[kind] = {"sha256": digest.hex(), "size": len(data), "media_type": media_type}
    entry = chain.append(conn, "capture", {
        "item": item.id, "page_url": page_url, "media_url": item.url,
        "captured_at_utc": metadata["captured_at_utc"], "artefacts": hashes}, item_id=item.id)
    conn.execute(
        "update evidence_items set capture_state = 'captured', captured_at = %s, log_seq = %s,"
        " capture_attempts = capture_attempts + 1, capture_error = %s where id = %s",
        (captured_at, entry.seq, "; ".join(errors)[:2000], item.id))
    page_html = page.decoded.decode(_charset(page), errors="replace") if page and page.status < 400 else None
    cache = {} if security_txts is None else security_txts
    if item.site not in cache:
        security = await _fetch(fetcher, urljoin(page_url, "/.well-known/security.txt"), [])
        cache[item.site] = (security.decoded.decode("utf-8", errors="replace")
                            if security and security.status == 200 else None)
    return Captured(item.id, page_html, cache[item.site])


def _charset(fetched: Fetched) -> str:
    content_type = fetched.header("content-type") or ""
    for part in content_type.split(";")[1:]:
        name, _, value = part.strip().partition("=")
        if name.lower() == "charset" and value:
            return value.strip('"')
    return "utf-8"


def record_failure(conn: Connection, item: PendingItem, error: BaseException, max_attempts: int) -> None:
    state = "failed" if item.attempts + 1 >= max_attempts else "pending"
    conn.execute(
        "update evidence_items set capture_attempts = capture_attempts + 1, capture_error = %s,"
        " capture_state = %s where id = %s", (f"{type(error).__name__}: {error}"[:2000], state, item.id))


# -- reading back ------------------------------------------------------------------------------------------------


def read_artefact(conn: Connection, vault: Vault, item_id: int, kind: str) -> bytes | None:
    """An artefact decrypted, and checked against its stored hash."""
    row = conn.execute(
        "select e.wrapped_key, a.nonce, a.ciphertext, a.sha256 from evidence_artefacts a"
        " join evidence_items e on e.id = a.item_id where a.item_id = %s and a.kind = %s",
        (item_id, kind)).fetchone()
    if row is None:
        return None
    data = decrypt(vault.unwrap(bytes(row[0])), bytes(row[1]), bytes(row[2]), artefact_context(item_id, kind))
    if hashlib.sha256(data).digest() != bytes(row[3]):
        raise ValueError(f"artefact {kind} of item {item_id} does not match its stored hash")
    return data


def verify_artefacts(conn: Connection, vault: Vault) -> tuple[int, list[str]]:
    """Decrypt every stored artefact and check it against its own hash and its item's capture log entry."""
    problems: list[str] = []
    checked = 0
    logged: dict[tuple[int, str], str] = {}
    for item_id, payload in conn.execute(
            "select p.item_id, p.payload from evidence_log l join evidence_log_payloads p using (seq)"
            " join evidence_items e on e.id = p.item_id and e.log_seq = l.seq where l.event = 'capture'"):
        for kind, info in json.loads(payload).get("artefacts", {}).items():
            logged[(item_id, kind)] = info["sha256"]
    for item_id, kind in conn.execute("select item_id, kind from evidence_artefacts order by item_id, kind"):
        checked += 1
        try:
            data = read_artefact(conn, vault, item_id, kind)
        except Exception as error:
            problems.append(f"item {item_id} {kind}: {error}")
            continue
        if data is not None and logged.get((item_id, kind)) != hashlib.sha256(data).hexdigest():
            problems.append(f"item {item_id} {kind}: differs from the hash in its capture log entry")
    return checked, problems


def item_metadata(conn: Connection, vault: Vault, item_id: int) -> dict[str, Any] | None:
    data = read_artefact(conn, vault, item_id, "metadata")
    return None if data is None else json.loads(data)


def report_items(conn: Connection, vault: Vault, item_ids: list[int]) -> list[ReportItem]:
    """Captured items as the reports take them: decrypted metadata and screenshot, artefact hashes, log entry."""
    items = []
    for item_id in item_ids:
        row = conn.execute(
            "select e.reason, e.case_id, e.site, l.seq, l.entry_hash from evidence_items e"
            " join evidence_log l on l.seq = e.log_seq where e.id = %s and e.capture_state = 'captured'",
            (item_id,)).fetchone()
        if row is None:
            raise LookupError(f"evidence item {item_id} does not exist or is not captured yet")
        reason, case_id, site, seq, entry_hash = row
        meta = item_metadata(conn, vault, item_id) or {}
        artefacts = [ArtefactHash(kind, bytes(sha).hex(), size, media_type) for kind, sha, size, media_type in
                     conn.execute("select kind, sha256, size, media_type from evidence_artefacts where item_id = %s"
                                  " order by kind", (item_id,))]
        matches = [MatchExplanation(
            signal=m["signal"], score=m["score"], threshold=m["threshold"], reference_id=m["reference_id"],
            case_id=m["case_id"], reference_segment=(m["reference_start_s"], m["reference_end_s"]),
            sighting_segment=(m["sighting_start_s"], m["sighting_end_s"]), matched_frames=m["matched_frames"],
            faces=m["faces"], p_false=m.get("p_false"), verified=m.get("verification") == "verified",
            face_only=bool(m.get("face_only"))) for m in meta.get("matches", [])]
        posted = meta.get("posted_at")
        items.append(ReportItem(
            item_id=item_id, reason=reason, case_id=case_id, site=site, page_url=meta.get("page_url", ""),
            media_url=meta.get("media_url", ""), title=meta.get("title", ""), author=meta.get("author", ""),
            posted_at=datetime.fromisoformat(posted) if posted else None,
            captured_at=datetime.fromisoformat(meta["captured_at_utc"]), page_status=meta.get("page_status") or 0,
            media_sha256_matches=meta.get("media_sha256_matches"),
            screenshot_png=read_artefact(conn, vault, item_id, "screenshot"), artefacts=artefacts, matches=matches,
            log_seq=seq, log_entry_hash=bytes(entry_hash).hex()))
    return items
