"""Shared fixtures: the dev corpus and one in-process inference per test session (models load once)."""

from __future__ import annotations

import email
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from bench.fixture_site import FixtureSite, korean_post_page
from bench.serve_process import free_port
from bench.transforms import CORPUS
from server.config import Settings
from server.inference import Inference
from server.inference.inprocess import InProcessInference

ASTRONAUT = "img_0243.jpg"  # scikit-image's astronaut: an adult woman, about 40 in the photo
GRACE_HOPPER = "img_0265.jpg"  # matplotlib's Grace Hopper, about 77


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not (CORPUS / "images").is_dir():
        pytest.fail(f"dev corpus not found at {CORPUS} (set JIWOOM_CORPUS)")
    return CORPUS


@pytest.fixture(scope="session")
def inference() -> Iterator[Inference]:
    with InProcessInference(Settings()) as engine:
        yield engine


# --- PostgreSQL -------------------------------------------------------------------------------------------------
# One throwaway cluster per session (initdb costs about a second), one fresh database per test.


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from server.storage.db import local_postgres

    with local_postgres(tmp_path_factory.mktemp("postgres"), binaries="system") as conninfo:
        yield conninfo


@contextmanager
def fresh_database(postgres_server: str) -> Iterator[str]:
    """A new empty database in the session's cluster, dropped afterwards (open connections are ended first)."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server, autocommit=True) as admin:
        admin.execute(sql.SQL("create database {}").format(sql.Identifier(name)))
    try:
        yield make_conninfo(postgres_server, dbname=name)
    finally:
        with psycopg.connect(postgres_server, autocommit=True) as admin:
            # A test may leave connections (or a pool) open: end them so the drop cannot fail or hang.
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                (name,),
            )
            admin.execute(sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(name)))


@dataclass
class Served:
    """A real service on loopback over a fresh database, and an admin's client of it."""

    client: Any  # jiwoom.api.client.MatcherClient
    database_url: str


@contextmanager
def serving(postgres_server: str, data_dir: Path, match: Any = None) -> Iterator[Served]:
    """`Served` with `match` (MatchSettings; the defaults if None), two media workers."""
    from jiwoom.api.client import MatcherClient, open_channel
    from server.app import running_service
    from server.config import MatchSettings, ServiceSettings

    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir), max_workers=2),
                        match=match or MatchSettings())
    with fresh_database(postgres_server) as url, running_service(settings, url) as running:
        channel = open_channel(f"127.0.0.1:{running.port}")
        try:
            yield Served(MatcherClient(channel, running.store.create_token("test-admin", "admin")), url)
        finally:
            channel.close()


@pytest.fixture
def database_url(postgres_server: str) -> Iterator[str]:
    with fresh_database(postgres_server) as url:
        yield url


# --- the browsers' guard proxy ------------------------------------------------------------------------------------


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def guard_lines() -> Iterator[list[str]]:
    """The lines the guard proxy logs (`jiwoom.guard`: one per refusal) while the block runs, from any thread."""
    guard, handler = logging.getLogger("jiwoom.guard"), _Lines()
    level = guard.level
    guard.addHandler(handler)
    guard.setLevel(logging.INFO)
    try:
        yield handler.lines
    finally:
        guard.removeHandler(handler)
        guard.setLevel(level)


# --- Milvus ---------------------------------------------------------------------------------------------------------
# Embedded Milvus (the `milvus` package): a real Milvus 2.3.5 standalone server, started once per session for the
# tests that need one (about 10 s); each test uses collections of its own prefix.


@pytest.fixture(scope="session")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from bench.milvus_server import start_milvus

    server = start_milvus(tmp_path_factory.mktemp("milvus"))
    try:
        yield f"http://127.0.0.1:{server.listen_port}"
    finally:
        from server.index.milvus import forget_clients

        forget_clients()
        server.stop()


def milvus_prefix() -> str:
    """Collection names of one test's own: tests share the session's Milvus."""
    return f"t{uuid.uuid4().hex[:12]}"


# --- loopback servers -----------------------------------------------------------------------------------------------


class Mailbox:
    """aiosmtpd handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], email.message.Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"


POST_TITLE = "[유출] 테스트 게시물 제목 (benign fixture)"


def publish_post(site: FixtureSite, page: str, media: str, data: bytes, title: str = POST_TITLE) -> None:
    """A board post on a fixture site: the page, its image, and the site's security.txt (the abuse contact)."""
    site.put(media, data, content_type="image/jpeg")
    site.put(page, korean_post_page(title, "익명123", "2026.11.21 14:03", "원본 글입니다.\n퍼가지 마세요.", [media]))
    site.put("/.well-known/security.txt", b"Contact: mailto:abuse@site.example\nExpires: 2027-12-31T00:00:00Z\n",
             content_type="text/plain")


# --- the service with its action worker, as the evidence and console tests use it --------------------------------


@dataclass
class ActionDesk:
    """A running service (real models, PostgreSQL) with an action worker run by hand, an SMTP mailbox on loopback,
    and one token and client per role."""

    settings: Settings
    database_url: str
    running: Any  # server.app.Running
    channel: Any  # grpc.Channel
    tokens: dict[str, str]
    clients: dict[str, Any]  # role -> jiwoom.api.client.MatcherClient
    worker: Any  # clients.worker.Worker
    mailbox: Mailbox


@contextmanager
def action_desk(postgres_server: str, data_dir: Path) -> Iterator[ActionDesk]:
    from aiosmtpd.controller import Controller

    from clients.worker import Worker
    from jiwoom.api.client import MatcherClient, open_channel
    from server.app import running_service
    from server.config import EvidenceSettings, MonitorSettings, NoticeSettings, ServiceSettings
    from server.storage.store import ROLES

    mailbox = Mailbox()
    smtp_port = free_port()  # aiosmtpd's Controller(port=0) does not work
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    sites = data_dir / "sites.yaml"  # the fixture hosts stand for a Korean community (the law that applies)
    sites.write_text("127.0.0.1:\n  name: 테스트 커뮤니티\n  jurisdiction: KR\n")
    settings = Settings(
        service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir), max_workers=4),
        evidence=EvidenceSettings(allow_networks="127.0.0.0/8", page_timeout_s=15, fetch_timeout_s=15),
        notices=NoticeSettings(sites_file=str(sites), smtp_host="127.0.0.1", smtp_port=smtp_port,
                               sender_email="takedown@centre.example", sender_name="김담당"),
        monitor=MonitorSettings(recheck_interval_s=3600))
    try:
        with fresh_database(postgres_server) as url, running_service(settings, url) as running:
            tokens = {role: running.store.create_token(f"test-{role}", role) for role in ROLES}
            channel = open_channel(f"127.0.0.1:{running.port}")
            clients = {role: MatcherClient(channel, token) for role, token in tokens.items()}

            def match_references(data: bytes) -> set[int]:
                return {m.reference_id for m in clients["officer"].match(data).matches if m.reference_id}

            worker = Worker(settings, running.store.pool, match_references)
            try:
                yield ActionDesk(settings, url, running, channel, tokens, clients, worker, mailbox)
            finally:
                worker.close()
                channel.close()
    finally:
        controller.stop()


def add_remove_search_concurrently(add: Callable[[int], None], remove: Callable[[int], None],
                                   search: Callable[[int], None]) -> None:
    """Four writers add owners 0, 50, ... 3950 (each a block of 50 rows starting at the owner's number) and remove
    every 400th again, while three readers search 60 times each; the first error of any thread is raised here."""
    errors: list[BaseException] = []

    def writer(first: int) -> None:
        try:
            for owner in range(first, 4000, 200):
                add(owner)
                if owner % 400 == 0:
                    remove(owner)
        except BaseException as err:  # surfaced in the main thread
            errors.append(err)

    def reader() -> None:
        try:
            for i in range(60):
                search(i)
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(f,)) for f in (0, 50, 100, 150)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
