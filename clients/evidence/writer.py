"""The evidence writer: turns matches into captured, encrypted, hash-chained evidence items.

1. `enqueue_items` makes an item for each (sighting, reference) match, for each suspected sighting with a face
   flagged under 19, and for each (sighting, case) whose post exposes personal information (case None: generic
   patterns), and marks earlier items of the same reference as re-uploaded (a new sighting reopens them).
2. `capture_item` fetches the page and the media (guarded fetcher), screenshots the page in headless Chromium
   (behind its guard proxy), writes a WARC of the exchanges, and stores screenshot, WARC, media and a metadata
   record encrypted with the item's key, with one 'capture' entry in the evidence log, in one transaction.
   Workers sharing the database claim items first (`claim_items`, a lease) and open each capture with
   `still_claimed`, which locks the item, so an item is captured once however many workers run.
3. The notice drafter (clients/notices/drafts.py) then adds the item to its site's draft notice.

The SQL lives in `clients.evidence.store`; this module decides what to store (keys, hashes, encryption, the log
entry) and runs no query itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urljoin

from psycopg import Connection

from clients.evidence.capture import Browser, build_warc
from clients.evidence.reports import MatchExplanation, ReportItem
from clients.evidence.store import (
    MatchRecord,
    PendingItem,
    artefact_hashes,
    artefact_kinds,
    capture_log_payloads,
    captured_log_entry,
    case_identifier_digests,
    claim_captures,
    exposed_kinds,
    exposures_to_queue,
    insert_item,
    item_matches,
    lock_claimed_capture,
    mark_reuploaded,
    matches_to_queue,
    pending_captures,
    record_capture,
    record_capture_failure,
    sealed_artefact,
    store_artefact,
    try_lock_enqueueing,
    youth_sightings_to_queue,
)
from clients.evidence.vault import Vault, artefact_context, decrypt, encrypt
from jiwoom.shared.times import KST
from jiwoom.shared.web import Fetched, Fetcher, FetchRefused, site_of, url_allowed
from server.matching.identifiers import IdentifierKey, generic_found, redacted
from server.storage import chain

PRIORITY_UNDER_19 = 100  # Korean law lets the centre act on these without a victim's request: they go first
# A post showing a victim's name or phone number invites contact and harassment now, on top of the imagery: ahead
# of plain matches, but behind the under-19 items, which the law lets the centre act on alone.
PRIORITY_PERSONAL_INFO = 50
PRIORITY_MATCH = 10
ENQUEUE_BATCH = 500
TOOL = "jiwoom-evidence/0.1"


# -- items ---------------------------------------------------------------------------------------------------------


def enqueue_items(conn: Connection, vault: Vault) -> int:
    """Create evidence items for new sighting matches and under-19 flags; returns how many were created."""
    created = 0
    for match in matches_to_queue(conn, ENQUEUE_BATCH):
        created += _insert_item(conn, vault, sighting_id=match.sighting_id, reference_id=match.reference_id,
                                case_id=match.case_id, reason="match", under_19=match.under_19,
                                site=site_of(match.page_url or match.url))
        # A copy of this reference turned up again: its earlier items are re-uploads now, open again.
        mark_reuploaded(conn, match.reference_id, match.sighting_id)
    # Suspected posts with a face estimated under 19: triage for an officer, no victim's request needed.
    for sighting in youth_sightings_to_queue(conn, ENQUEUE_BATCH):
        created += _insert_item(conn, vault, sighting_id=sighting.sighting_id, reference_id=None, case_id=None,
                                reason="under_19", under_19=True, site=site_of(sighting.page_url or sighting.url))
    # Posts that expose personal information (the service recorded the kinds, never the values): one item per
    # case, beside any match item of the same sighting, so the notice asks for that removal too.
    for exposure in exposures_to_queue(conn, ENQUEUE_BATCH):
        created += _insert_item(conn, vault, sighting_id=exposure.sighting_id, reference_id=None,
                                case_id=exposure.case_id, reason="personal_info", under_19=False,
                                site=site_of(exposure.page_url or exposure.url))
    return created


def enqueue_unless_busy(conn: Connection, vault: Vault) -> int:
    """`enqueue_items`, unless another worker is queueing right now (0 then: its scan finds the same items)."""
    return enqueue_items(conn, vault) if try_lock_enqueueing(conn) else 0


def _priority(reason: str, under_19: bool) -> int:
    if under_19:
        return PRIORITY_UNDER_19
    return PRIORITY_PERSONAL_INFO if reason == "personal_info" else PRIORITY_MATCH


def _insert_item(conn: Connection, vault: Vault, *, sighting_id: int, reference_id: int | None,
                 case_id: str | None, reason: str, under_19: bool, site: str) -> int:
    _, wrapped = vault.new_item_key()
    return int(insert_item(conn, case_id=case_id, reference_id=reference_id, sighting_id=sighting_id, reason=reason,
                           under_19=under_19, site=site, priority=_priority(reason, under_19), wrapped_key=wrapped))


def pending_items(conn: Connection, limit: int) -> list[PendingItem]:
    """The items waiting for capture, most urgent first, claimed or not (a read: workers use `claim_items`)."""
    return pending_captures(conn, limit)


def claim_items(conn: Connection, *, claimant: str, limit: int, lease_s: float) -> list[PendingItem]:
    """The items waiting for capture that no other worker holds, most urgent first, now `claimant`'s until
    `lease_s` from now (the worker's next pass). Commit before capturing, so that other workers see the claim."""
    return claim_captures(conn, claimant=claimant, limit=limit, lease_s=lease_s)


def still_claimed(conn: Connection, item: PendingItem, claimant: str) -> bool:
    """Call first in the capture's transaction: whether `claimant` may capture the item. The item stays locked until
    the transaction ends, so no other worker can capture it meanwhile, whatever the lease."""
    return lock_claimed_capture(conn, item.id, claimant)


def match_explanations(conn: Connection, sighting_id: int, reference_id: int | None) -> list[MatchRecord]:
    """The stored matches behind an item, as plain data for the metadata record and the reports."""
    if reference_id is None:  # under-19 and personal-information items have no reference, so no matches
        return []
    return item_matches(conn, sighting_id, reference_id)


# -- capture -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exposure:
    """What an item's page exposes (kinds only) and how to find it in the page's text to blur it."""

    kinds: list[str]  # sorted, the item's case's and generic ones
    find: Callable[[str], list[tuple[int, int]]] | None  # None: nothing exposed, nothing to blur
    case_blurred: bool  # False when the case's identifiers could not be looked for (no identifier key)


def item_exposure(conn: Connection, item: PendingItem, identifier_key: IdentifierKey | None) -> Exposure:
    """The item's sighting's exposures and a finder of their spans. Once a sighting exposes anything, generic
    patterns are blurred whatever the kinds recorded: a phone number beside a victim's name is hers until shown
    otherwise, and blurring too much costs the evidence nothing (the WARC keeps the page as served)."""
    case_kinds, generic_kinds = exposed_kinds(conn, item.sighting_id, item.case_id)
    kinds = sorted(set(case_kinds) | set(generic_kinds))
    if not kinds:
        return Exposure([], None, True)
    recorded = case_identifier_digests(conn, item.case_id) if case_kinds and item.case_id else {}
    key = identifier_key if recorded else None

    def find(text: str) -> list[tuple[int, int]]:
        spans = [span for _, span in generic_found(text)]
        if key is not None:
            spans += [span for _, span in key.find(text, recorded)]
        return spans

    return Exposure(kinds, find, case_blurred=not case_kinds or key is not None)


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
                       security_txts: dict[str, str | None] | None = None,
                       identifier_key: IdentifierKey | None = None) -> Captured:
    """Capture one item and store it (encrypted, logged) in the caller's transaction. `security_txts` caches each
    site's security.txt across the items of one pass, so a burst from one site asks for it once. When the item's
    sighting exposes personal information, the screenshot hides it (the case's identifiers need
    `identifier_key`; without it only generic patterns are hidden)."""
    page_url = item.page_url or item.url
    errors: list[str] = []
    page, media = await asyncio.gather(_fetch(fetcher, page_url, errors), _fetch(fetcher, item.url, errors))
    # The browser's guard proxy would refuse it too, but then the evidence would be a blank 403 page: fail clearly.
    if not await url_allowed(page_url, fetcher.policy):
        raise FetchRefused(f"page address not allowed, not opened in the browser: {page_url}")
    exposure = item_exposure(conn, item, identifier_key)
    shot = await asyncio.to_thread(browser.screenshot, page_url, timeout_s=page_timeout_s,
                                   max_height_px=max_height_px, blur=exposure.find)
    # The browser's title is the page's own, not the service's redacted one: never record a value from it.
    browser_title = redacted(shot.title, [("hidden", s) for s in exposure.find(shot.title)]) if exposure.find \
        else shot.title
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
        "browser_title": browser_title, "browser_final_url": shot.final_url,
        "screenshot_truncated": shot.truncated, "page_load_complete": shot.load_complete,
        "exposed": exposure.kinds, "screenshot_blurred": bool(shot.blurred),
        "blurred_spans": len(shot.blurred), "case_identifiers_blurred": exposure.case_blurred,
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
        store_artefact(conn, item.id, kind, media_type=media_type, sha256=digest, size=len(data), nonce=nonce,
                       ciphertext=ciphertext)
        hashes[kind] = {"sha256": digest.hex(), "size": len(data), "media_type": media_type}
    entry = chain.append(conn, "capture", {
        "item": item.id, "page_url": page_url, "media_url": item.url,
        "captured_at_utc": metadata["captured_at_utc"], "artefacts": hashes}, item_id=item.id)
    record_capture(conn, item.id, captured_at=captured_at, log_seq=entry.seq, error="; ".join(errors)[:2000])
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


def record_failure(conn: Connection, item: PendingItem, error: BaseException, max_attempts: int, *,
                   claimant: str) -> None:
    """A failed capture of a claimed item: retried on a later pass (by any worker), failed after `max_attempts`."""
    record_capture_failure(conn, item.id, error=f"{type(error).__name__}: {error}"[:2000], max_attempts=max_attempts,
                           claimant=claimant)


# -- reading back ------------------------------------------------------------------------------------------------


def read_artefact(conn: Connection, vault: Vault, item_id: int, kind: str) -> bytes | None:
    """An artefact decrypted, and checked against its stored hash."""
    sealed = sealed_artefact(conn, item_id, kind)
    if sealed is None:
        return None
    data = decrypt(vault.unwrap(sealed.wrapped_key), sealed.nonce, sealed.ciphertext, artefact_context(item_id, kind))
    if hashlib.sha256(data).digest() != sealed.sha256:
        raise ValueError(f"artefact {kind} of item {item_id} does not match its stored hash")
    return data


def verify_artefacts(conn: Connection, vault: Vault) -> tuple[int, list[str]]:
    """Decrypt every stored artefact and check it against its own hash and its item's capture log entry."""
    problems: list[str] = []
    checked = 0
    logged: dict[tuple[int, str], str] = {}
    for item_id, payload in capture_log_payloads(conn):
        for kind, info in json.loads(payload).get("artefacts", {}).items():
            logged[(item_id, kind)] = info["sha256"]
    for item_id, kind in artefact_kinds(conn):
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
        logged = captured_log_entry(conn, item_id)
        if logged is None:
            raise LookupError(f"evidence item {item_id} does not exist or is not captured yet")
        meta = item_metadata(conn, vault, item_id) or {}
        artefacts = artefact_hashes(conn, item_id)
        matches = [MatchExplanation(
            signal=m["signal"], score=m["score"], threshold=m["threshold"], reference_id=m["reference_id"],
            case_id=m["case_id"], reference_segment=(m["reference_start_s"], m["reference_end_s"]),
            sighting_segment=(m["sighting_start_s"], m["sighting_end_s"]), matched_frames=m["matched_frames"],
            faces=m["faces"], p_false=m.get("p_false"), verified=m.get("verification") == "verified",
            face_only=bool(m.get("face_only")), audio_only=bool(m.get("audio_only")))
            for m in meta.get("matches", [])]
        posted = meta.get("posted_at")
        items.append(ReportItem(
            item_id=item_id, reason=logged.reason, case_id=logged.case_id, site=logged.site,
            page_url=meta.get("page_url", ""),
            media_url=meta.get("media_url", ""), title=meta.get("title", ""), author=meta.get("author", ""),
            posted_at=datetime.fromisoformat(posted) if posted else None,
            captured_at=datetime.fromisoformat(meta["captured_at_utc"]), page_status=meta.get("page_status") or 0,
            media_sha256_matches=meta.get("media_sha256_matches"),
            screenshot_png=read_artefact(conn, vault, item_id, "screenshot"), artefacts=artefacts, matches=matches,
            log_seq=logged.log_seq, log_entry_hash=logged.log_entry_hash.hex(),
            exposed=tuple(meta.get("exposed", ())), screenshot_blurred=bool(meta.get("screenshot_blurred"))))
    return items
