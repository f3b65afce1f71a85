"""Several action workers over one database (issue 20, stateless replicas): every item is captured, drafted and
sent once, no removal check runs twice, and what a dead worker had claimed is taken over when its lease ends.

Real PostgreSQL, a loopback fixture site, a loopback SMTP server, headless Chromium (a browser a worker) and the
real worker passes (`Worker.run_once`) in threads, started together.
"""

from __future__ import annotations

import asyncio
import email
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from bench.fixture_site import FixtureSite
from clients.evidence.capture import Browser, Screenshot
from clients.notices.drafts import NoticeError, approve, resolve_sending, send_approved
from clients.worker import Worker, fetch_policy, smtp_settings
from jiwoom.shared.web import FetchPolicy
from server.config import EvidenceSettings, MonitorSettings, NoticeSettings, ServiceSettings, Settings
from server.storage.db import migrate, open_pool
from server.storage.store import Principal
from tests.conftest import free_port, fresh_database, publish_post

POSTS = 6
OFFICER = Principal("officer-kim", "officer")
RECHECK_S = 3600.0


class CountedBrowser:
    """The real headless Chromium, each page it captures counted: two workers must never capture one twice."""

    def __init__(self, shots: Counter[str], lock: threading.Lock, policy: FetchPolicy) -> None:
        self.shots, self.lock = shots, lock
        self.real = Browser(policy=policy).__enter__()

    def screenshot(self, url: str, **options: Any) -> Screenshot:
        with self.lock:
            self.shots[url] += 1
        return self.real.screenshot(url, **options)

    def __exit__(self, *exc: object) -> None:
        self.real.__exit__(*exc)


class SlowMailbox:
    """aiosmtpd handler keeping every message. The first one waits for `gate` once `entered` is set (a send in
    progress, held open by the test); later ones take `delay_s`, so racing senders overlap."""

    def __init__(self, delay_s: float = 0.3) -> None:
        self.messages: list[email.message.Message] = []
        self.delay_s = delay_s
        self.hold_first = False
        self.entered, self.gate = threading.Event(), threading.Event()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.hold_first and not self.entered.is_set():
            self.entered.set()
            await asyncio.to_thread(self.gate.wait, 20)
        else:
            await asyncio.sleep(self.delay_s)
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


@dataclass
class Desk:
    url: str
    settings: Settings
    site: FixtureSite
    mailbox: SlowMailbox
    shots: Counter[str]
    pools: list[ConnectionPool]
    workers: list[Worker]
    pages: list[str]

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def log_events(self, event: str) -> Counter[int | None]:
        """item id -> how many evidence-log entries of `event` name it."""
        return Counter(r[0] for r in self.sql("select item_id from evidence_log where event = %s", (event,)))


@pytest.fixture
def desk(postgres_server: str, tmp_path: Path) -> Iterator[Desk]:
    from aiosmtpd.controller import Controller

    mailbox = SlowMailbox()
    smtp_port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    settings = Settings(
        service=ServiceSettings(data_dir=str(tmp_path)),
        evidence=EvidenceSettings(allow_networks="127.0.0.0/8", page_timeout_s=10, fetch_timeout_s=10),
        notices=NoticeSettings(smtp_host="127.0.0.1", smtp_port=smtp_port, sender_email="takedown@centre.example",
                               sender_name="김담당"),
        monitor=MonitorSettings(recheck_interval_s=RECHECK_S))
    shots: Counter[str] = Counter()
    lock = threading.Lock()
    pools: list[ConnectionPool] = []
    workers: list[Worker] = []
    try:
        with fresh_database(postgres_server) as url, FixtureSite() as site:
            migrate(url)
            pages = _posts(url, site)
            for _ in range(2):  # two replicas: a pool and a worker each, as two `jiwoom worker` processes have
                pool = open_pool(url, max_size=3)
                pools.append(pool)
                worker = Worker(settings, pool, lambda data: set())
                worker._browser = CountedBrowser(  # type: ignore[assignment]
                    shots, lock, fetch_policy(settings))
                workers.append(worker)
            try:
                yield Desk(url, settings, site, mailbox, shots, pools, workers, pages)
            finally:
                for pool in pools:
                    pool.close()
    finally:
        controller.stop()


def _posts(url: str, site: FixtureSite) -> list[str]:
    """POSTS posts on one site, each showing someone's phone number (a generic exposure: an item each, no case
    needed), stored as the service stores such sightings; their page URLs."""
    pages = []
    with psycopg.connect(url) as conn:
        for i in range(POSTS):
            media = f"img-{i}".encode() * 50
            publish_post(site, f"/p/{i}", f"/p/{i}.jpg", media)
            sighting = conn.execute(
                "insert into sightings (url, page_url, site, title, post_text, kind, suspected, youth_faces,"
                " seen_by, content_sha256) values (%s, %s, 'fixture', '[phone] 게시물', '연락처 [phone]', 'image',"
                " false, 0, 'test', %s) returning id",
                (site.url(f"/p/{i}.jpg"), site.url(f"/p/{i}"), hashlib.sha256(media).digest())).fetchone()[0]
            conn.execute("insert into sighting_exposures (sighting_id, case_id, kind, field)"
                         " values (%s, null, 'phone', 'text')", (sighting,))
            pages.append(site.url(f"/p/{i}"))
    return pages


def together(workers: list[Worker]) -> list[dict[str, int]]:
    """One pass of each worker, all started at the same moment in threads of their own; their counts."""
    barrier = threading.Barrier(len(workers))
    results: list[dict[str, int]] = [{} for _ in workers]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(10)
            results[i] = asyncio.run(workers[i].run_once())
        except BaseException as error:  # surfaced in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    if errors:
        raise errors[0]
    return results


def _total(results: list[dict[str, int]], key: str) -> int:
    return sum(r.get(key, 0) for r in results)


def _notice_id(desk: Desk) -> int:
    ((notice_id,),) = desk.sql("select id from notices")
    return int(notice_id)


def _approve(desk: Desk, notice_id: int) -> None:
    with psycopg.connect(desk.url) as conn:
        approve(conn, OFFICER, notice_id)


def test_two_workers_capture_draft_send_and_check_each_item_once(desk: Desk) -> None:
    # Both workers queue and capture the same pending items at the same moment.
    results = together(desk.workers)
    assert _total(results, "captured") == POSTS and _total(results, "failed") == 0
    items = desk.sql("select id, capture_state, capture_attempts from evidence_items order by id")
    assert len(items) == POSTS  # queued once, though both workers scanned for new items
    assert all(state == "captured" and attempts == 1 for _, state, attempts in items), items
    assert desk.log_events("capture") == Counter({item_id: 1 for item_id, *_ in items})
    assert desk.shots == Counter({page: 1 for page in desk.pages})  # one screenshot per page...
    # ...and one capture's two loads of the page: Chromium's, and the guarded fetcher's for the WARC
    assert all(desk.site.hits(page.split(desk.site.origin, 1)[1]) == 2 for page in desk.pages)
    assert desk.sql("select count(*) from evidence_artefacts where kind = 'warc'") == [(POSTS,)]

    # Drafted once: one notice for the site, every item in it exactly once.
    assert desk.sql("select count(*), min(state) from notices") == [(1, "draft")]
    assert desk.sql("select item_id, count(*) from notice_items group by item_id order by item_id") == [
        (item_id, 1) for item_id, *_ in items]

    # Approved: both workers try to send it at once; the site operator gets one mail.
    notice_id = _notice_id(desk)
    _approve(desk, notice_id)
    results = together(desk.workers)
    assert _total(results, "sent") == 1
    assert len(desk.mailbox.messages) == 1
    assert desk.sql("select state, attempts from notices") == [("sent", 1)]
    assert sum(desk.log_events("notice_sent").values()) == 1

    # The re-checks come due: both workers run them at once, each check runs once.
    desk.sql("update evidence_items set next_check_at = now() - interval '1 second'")
    results = together(desk.workers)
    assert _total(results, "check_still_up") == POSTS and _total(results, "check_undecided") == 0
    assert desk.sql("select removal_state, checks, count(*) from evidence_items group by 1, 2") == [
        ("still_up", 1, POSTS)]
    assert desk.log_events("removal_check") == Counter({item_id: 1 for item_id, *_ in items})
    assert all(desk.site.hits(page.split(desk.site.origin, 1)[1]) == 3 for page in desk.pages)  # capture + check
    assert len(desk.mailbox.messages) == 1


def test_leases_that_lapse_at_once_still_never_capture_twice(desk: Desk) -> None:
    """A lease shorter than a capture: the other worker claims the same items again, and only the item's row lock
    and the claim re-checked under it keep the captures single."""
    for worker in desk.workers:
        worker.lease_s = 0.0
    results = together(desk.workers)
    assert _total(results, "captured") == POSTS
    assert desk.sql("select count(*) from evidence_items where capture_state = 'captured'"
                    " and capture_attempts = 1 and capture_claimed_by is null") == [(POSTS,)]
    assert sum(desk.log_events("capture").values()) == POSTS
    assert desk.shots == Counter({page: 1 for page in desk.pages})
    assert desk.sql("select count(*) from notices") == [(1,)]
    assert desk.sql("select count(*), count(distinct item_id) from notice_items") == [(POSTS, POSTS)]


def test_a_dead_workers_claims_are_taken_over_when_the_lease_ends(desk: Desk) -> None:
    # Imported here, not at the top: the other tests run on the code before claims too (to see them fail there).
    from clients.evidence.store import claim_due_check
    from clients.evidence.writer import claim_items, enqueue_items
    from clients.notices.store import claim_next_to_send

    live = desk.workers[0]
    # A worker claims every item and dies before capturing any.
    with desk.pools[1].connection() as conn:
        enqueue_items(conn, live.vault)
        claimed = claim_items(conn, claimant="dead-worker", limit=50, lease_s=3600)
    assert len(claimed) == POSTS
    assert asyncio.run(live.run_once())["captured"] == 0  # its lease still runs: left alone
    assert not desk.shots
    desk.sql("update evidence_items set capture_claimed_until = now() - interval '1 second'")  # the hour is up
    assert asyncio.run(live.run_once())["captured"] == POSTS
    assert desk.sql("select count(*) from evidence_items where capture_state = 'captured'"
                    " and capture_claimed_by is null") == [(POSTS,)]
    assert sum(desk.log_events("capture").values()) == POSTS

    # A sender claims the approved notice and dies: no way to know whether the mail went, so no worker resends it
    # (at most once); the officer checks the mail log, and only then is it sent.
    notice_id = _notice_id(desk)
    _approve(desk, notice_id)
    with desk.pools[1].connection() as conn:
        assert claim_next_to_send(conn, 3) is not None
    together(desk.workers)
    assert desk.mailbox.messages == []
    assert desk.sql("select state from notices") == [("sending",)]
    with psycopg.connect(desk.url) as conn:
        resolve_sending(conn, OFFICER, notice_id, delivered=False, recheck_after_s=RECHECK_S)
    assert _total(together(desk.workers), "sent") == 1
    assert len(desk.mailbox.messages) == 1

    # A worker claims the due re-checks and dies: they are run again once its lease ends, once each.
    desk.sql("update evidence_items set next_check_at = now() - interval '1 second'")

    with desk.pools[1].connection() as conn:
        dead = [claim_due_check(conn, claimant="dead-worker", now=datetime.now(UTC), lease_s=3600, skip=[])
                for _ in range(POSTS)]
    assert all(d is not None for d in dead)
    counts = asyncio.run(live.run_once())
    assert counts["check_still_up"] + counts["check_undecided"] + counts["check_removed"] == 0
    desk.sql("update evidence_items set check_claimed_until = now() - interval '1 second'")
    assert asyncio.run(live.run_once())["check_still_up"] == POSTS
    assert desk.sql("select checks, count(*) from evidence_items where check_claimed_by is null group by 1") == [
        (1, POSTS)]


def test_an_officer_cannot_resolve_a_send_in_progress(desk: Desk) -> None:
    """A notice in 'sending' may be a crash's leftover, or a worker talking to the mail server right now: resolving
    the second as 'not delivered' would let another worker mail it again."""
    asyncio.run(desk.workers[0].run_once())
    notice_id = _notice_id(desk)
    _approve(desk, notice_id)
    smtp = smtp_settings(desk.settings)
    assert smtp is not None
    sender = desk.workers[0].drafting.sender
    desk.mailbox.hold_first = True
    sent: list[int] = []
    first = threading.Thread(target=lambda: sent.append(send_approved(
        desk.pools[0], smtp, sender, max_attempts=3, recheck_after_s=RECHECK_S)))
    first.start()
    try:
        assert desk.mailbox.entered.wait(20)  # the mail is on its way, not yet accepted
        refused = False
        with psycopg.connect(desk.url) as conn:
            try:
                resolve_sending(conn, OFFICER, notice_id, delivered=False, recheck_after_s=RECHECK_S)
            except NoticeError:
                refused = True
        # Another worker's pass meanwhile: nothing to send.
        again = send_approved(desk.pools[1], smtp, sender, max_attempts=3, recheck_after_s=RECHECK_S)
    finally:
        desk.mailbox.gate.set()
        first.join(30)
    assert refused
    assert again == 0 and sent == [1]
    assert len(desk.mailbox.messages) == 1
    assert desk.sql("select state from notices") == [("sent",)]
