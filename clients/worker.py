"""The action worker: evidence capture, notice drafting, sending approved notices, removal checks, in a loop.

`jiwoom serve` runs it in a thread beside the gRPC service (asking the service in-process for re-check matches);
`jiwoom worker` runs it alone against the same database, asking a running service over gRPC.

Any number of workers may share one database (beside several `jiwoom serve` replicas): every piece of work is
claimed in the database first, under the worker's `claimant` id (captures and removal checks with a lease, notices
with their 'sending' state), so no item is captured, drafted or sent twice, nor checked twice at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from psycopg_pool import ConnectionPool

from clients.evidence.capture import Browser
from clients.evidence.store import release_claims
from clients.evidence.vault import Vault, load_master_key
from clients.evidence.writer import capture_item, claim_items, enqueue_unless_busy, record_failure, still_claimed
from clients.monitor import MatchReferences, check_due
from clients.notices.drafts import Drafting, draft_for_item, send_approved
from clients.notices.mail import Sender, SmtpSettings
from clients.notices.sites import load_sites
from jiwoom.shared.web import Fetcher, FetchPolicy
from server.config import Settings
from server.matching.identifiers import IdentifierKey
from server.service import MatchingService
from server.service.identifiers import identifier_key
from server.storage.db import open_pool
from server.storage.keys import KeyFileError
from server.storage.store import Principal

log = logging.getLogger(__name__)
CAPTURE_BATCH = 20
# How long other workers leave this worker's claims alone: after that, they take over what a dead worker held. A
# capture in progress is never taken over (its row stays locked), so this only delays recovery, never doubles work.


def new_claimant() -> str:
    """A worker's id in its claims: where it runs, and unique per worker (several may share one process)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def master_key_path(settings: Settings) -> Path:
    configured = settings.evidence.key_file
    return Path(configured).expanduser() if configured else Path(settings.service.data_dir).expanduser() / \
        "evidence.key"


def open_vault(settings: Settings, *, create: bool = True) -> Vault:
    return Vault(load_master_key(master_key_path(settings), create=create))


def fetch_policy(settings: Settings) -> FetchPolicy:
    networks = tuple(n.strip() for n in settings.evidence.allow_networks.split(",") if n.strip())
    return FetchPolicy(max_bytes=settings.evidence.fetch_max_bytes, timeout_s=settings.evidence.fetch_timeout_s,
                       allow_networks=networks)


def load_identifier_key(settings: Settings, *, warn: bool = True) -> IdentifierKey | None:
    """The key of the cases' identifier digests, or None (logged, the path only) when there is none yet: the
    service makes it with the first identifier recorded, and the worker never makes one itself."""
    try:
        return identifier_key(settings, create=False)
    except (KeyFileError, OSError, ValueError) as error:
        if warn:
            log.warning("no identifier key, so screenshots hide only generic personal information: %s", error)
        return None


def sender(settings: Settings) -> Sender:
    n = settings.notices
    return Sender(organisation=n.sender_organisation, name=n.sender_name, email=n.sender_email, phone=n.sender_phone)


def smtp_settings(settings: Settings) -> SmtpSettings | None:
    n = settings.notices
    if not n.smtp_host:
        return None
    return SmtpSettings(host=n.smtp_host, port=n.smtp_port, starttls=n.smtp_starttls, ssl=n.smtp_ssl,
                        username=n.smtp_username or None, password=n.smtp_password or None)


def drafting(settings: Settings) -> Drafting:
    sites = load_sites(Path(settings.notices.sites_file)) if settings.notices.sites_file else {}
    return Drafting(sites=sites, sender=sender(settings))


@dataclass
class Worker:
    settings: Settings
    pool: ConnectionPool
    match_references: MatchReferences
    claimant: str = field(default_factory=new_claimant)
    lease_s: float = field(init=False)
    vault: Vault = field(init=False)
    drafting: Drafting = field(init=False)
    _browser: Browser | None = field(default=None, init=False)
    _identifier_key: IdentifierKey | None = field(default=None, init=False)
    _identifier_key_missed: bool = field(default=False, init=False)  # warned once, not every pass

    def __post_init__(self) -> None:
        self.lease_s = self.settings.evidence.claim_lease_s
        self.vault = open_vault(self.settings)
        self.drafting = drafting(self.settings)

    @property
    def browser(self) -> Browser:
        if self._browser is None:  # started on the first capture: Chromium costs ~1 s and 200 MB
            # Under the fetcher's policy: the browser's own requests get the same address checks.
            self._browser = Browser(policy=fetch_policy(self.settings)).__enter__()
        return self._browser

    def close(self) -> None:
        if self._browser is not None:
            self._browser.__exit__(None, None, None)
            self._browser = None
        self.release_claims()

    def release_claims(self) -> None:
        """Free what a pass cut short still holds, so that the next pass (of any worker) retries it now rather than
        when the leases end: a single worker retries as soon as it did before claims."""
        try:
            with self.pool.connection() as conn:
                release_claims(conn, self.claimant)
        except Exception as error:  # the pool may be closed already, the database gone; the leases still end
            log.warning("could not release the worker's claims: %s", error)

    def identifier_key(self) -> IdentifierKey | None:
        # Looked for again each pass until found: the service may make it after the worker started.
        if self._identifier_key is None:
            self._identifier_key = load_identifier_key(self.settings, warn=not self._identifier_key_missed)
            self._identifier_key_missed = self._identifier_key is None
        return self._identifier_key

    async def capture_pending(self, fetcher: Fetcher) -> dict[str, int]:
        with self.pool.connection() as conn:  # committed here: other workers skip what this pass claimed
            queued = enqueue_unless_busy(conn, self.vault)
            items = claim_items(conn, claimant=self.claimant, limit=CAPTURE_BATCH, lease_s=self.lease_s)
        identifier_key = self.identifier_key() if items else None
        captured = failed = 0
        security_txts: dict[str, str | None] = {}
        for item in items:
            try:
                with self.pool.connection() as conn:  # the capture and its draft commit together or not at all
                    if not still_claimed(conn, item, self.claimant):  # captured meanwhile, or taken over
                        continue
                    result = await capture_item(
                        item, conn=conn, vault=self.vault, fetcher=fetcher, browser=self.browser,
                        page_timeout_s=self.settings.evidence.page_timeout_s,
                        max_height_px=self.settings.evidence.screenshot_max_height, security_txts=security_txts,
                        identifier_key=identifier_key)
                    draft_for_item(conn, result, self.drafting)
                captured += 1
            except Exception as error:
                log.warning("capturing evidence item %d failed: %s", item.id, error, exc_info=True)
                with self.pool.connection() as conn:
                    record_failure(conn, item, error, self.settings.evidence.max_attempts, claimant=self.claimant)
                failed += 1
        return {"queued": queued, "captured": captured, "failed": failed}

    async def run_once(self) -> dict[str, int]:
        """One pass of everything; counts of what happened."""
        try:
            return await self._pass()
        except BaseException:
            self.release_claims()
            raise

    async def _pass(self) -> dict[str, int]:
        async with Fetcher(fetch_policy(self.settings)) as fetcher:
            counts = await self.capture_pending(fetcher)
            smtp = smtp_settings(self.settings)
            if smtp is not None:
                counts["sent"] = await asyncio.to_thread(
                    send_approved, self.pool, smtp, self.drafting.sender,
                    max_attempts=self.settings.notices.max_attempts,
                    recheck_after_s=self.settings.monitor.recheck_interval_s)
            checks = await check_due(self.pool, fetcher, self.match_references,
                                     recheck_after_s=self.settings.monitor.recheck_interval_s,
                                     claimant=self.claimant, lease_s=self.lease_s)
            counts.update({f"check_{k}": v for k, v in checks.items()})
        return counts

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; a failing pass is logged and retried on the next one."""
        try:
            while not stop.is_set():
                try:
                    counts = asyncio.run(self.run_once())
                    if any(counts.values()):
                        log.info("worker pass: %s", counts)
                except Exception:
                    log.exception("worker pass failed")
                stop.wait(self.settings.evidence.poll_interval_s)
        finally:
            self.close()


@contextlib.contextmanager
def worker_thread(worker: Worker):  # type: ignore[no-untyped-def]
    """Run `worker` in a daemon thread for the duration of the block."""
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), name="jiwoom-worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        stop.set()
        thread.join(timeout=60)


@contextlib.contextmanager
def worker_beside_service(settings: Settings, database_url: str, service: MatchingService) -> Iterator[Worker]:
    """The worker in the service's own process (`jiwoom serve`): removal checks ask the service directly, not
    over gRPC, under a principal of their own."""
    monitor = Principal("removal-monitor", "officer")

    def match_references(data: bytes) -> set[int]:
        return {m.reference_id for m in service.match(monitor, data).matches if m.reference_id}

    with open_pool(database_url, max_size=2) as pool, worker_thread(Worker(settings, pool, match_references)) as w:
        yield w
