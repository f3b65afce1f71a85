"""From a match to a sent notice and a removal, end to end: a real gRPC service with real models, PostgreSQL,
headless Chromium, loopback fixture sites standing for two hosts, and a loopback SMTP server.

The steps build on each other (one case's life), so they run as one module in order, sharing `flow`.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import io
import subprocess
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import psycopg
import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from bench import transforms
from bench.fixture_site import FixtureSite
from clients.evidence.reports import hwpx_report, pdf_report
from clients.evidence.writer import read_artefact, report_items, verify_artefacts
from clients.monitor import removal_chart_svg, removal_csv, removal_report
from clients.worker import Worker
from jiwoom.api.client import MatcherClient
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from jiwoom.cli import main as jiwoom
from server.storage import chain
from tests.conftest import ASTRONAUT, POST_TITLE, Mailbox, action_desk
from tests.conftest import publish_post as post

CASE = "case-evidence"
TITLE = POST_TITLE


@dataclass
class Flow:
    url: str
    worker: Worker
    tokens: dict[str, str]
    clients: dict[str, MatcherClient]
    site_a: FixtureSite
    site_b: FixtureSite
    mailbox: Mailbox
    data_dir: Path
    state: dict[str, Any] = field(default_factory=dict)

    def run_worker(self) -> dict[str, int]:
        return asyncio.run(self.worker.run_once())

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []


@pytest.fixture(scope="module")
def flow(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    data_dir = tmp_path_factory.mktemp("evidence")
    with action_desk(postgres_server, data_dir) as desk, FixtureSite() as site_a, FixtureSite() as site_b:
        yield Flow(desk.database_url, desk.worker, desk.tokens, desk.clients, site_a, site_b, desk.mailbox, data_dir)


def crawl(flow: Flow, site: FixtureSite, page: str, media: str, title: str = TITLE) -> pb.MatchResponse:
    """What the crawler does for one post: Match with the page's metadata, so a sighting is recorded."""
    source = pb.Source(url=site.url(media), page_url=site.url(page), site=site.origin, title=title, author="익명123")
    source.posted_at.FromDatetime(datetime(2026, 11, 21, 5, 3, tzinfo=UTC))
    return flow.clients["crawler"].match(site.get(media), source=source)


def test_match_is_captured_as_encrypted_chained_evidence(flow: Flow, corpus: Path) -> None:
    reference = flow.clients["case_system"].register_reference(CASE, (corpus / "images" / ASTRONAUT).read_bytes())
    flow.state["reference"] = reference.reference_id
    copy = transforms.encode(transforms.resize(transforms.load(corpus / "images" / ASTRONAUT), 0.6), "JPEG", 80)
    post(flow.site_a, "/board/1", "/img/post1.jpg", copy)
    response = crawl(flow, flow.site_a, "/board/1", "/img/post1.jpg")
    assert reference.reference_id in {m.reference_id for m in response.matches}
    flow.state["sighting"] = response.sighting_id
    # A suspected post with a face flagged under 19 (as the service records one): no case, first in the queue.
    post(flow.site_a, "/board/2", "/img/post2.jpg", transforms.encode(transforms.load(corpus / "images" /
                                                                                      "img_0010.jpg")))
    flow.sql("insert into sightings (url, page_url, site, title, suspected, kind, youth_faces, seen_by)"
             " values (%s, %s, %s, '교복 사진', true, 'image', 1, 'test')",
             (flow.site_a.url("/img/post2.jpg"), flow.site_a.url("/board/2"), flow.site_a.origin))

    counts = flow.run_worker()
    assert (counts["queued"], counts["captured"], counts["failed"]) == (2, 2, 0)
    assert flow.mailbox.messages == []  # nothing goes out before an officer approves

    items = flow.sql("select id, reason, priority, capture_state, site from evidence_items order by priority desc")
    assert [(r[1], r[3]) for r in items] == [("under_19", "captured"), ("match", "captured")]
    assert items[0][2] > items[1][2]
    item_id = items[1][0]
    flow.state["item"] = item_id
    assert items[1][4] == f"127.0.0.1:{flow.site_a.port}"

    # Stored encrypted: the bytes in the table are not the artefact; decrypted they are, and match their hashes.
    stored = dict((k, (bytes(c), bytes(h))) for k, c, h in flow.sql(
        "select kind, ciphertext, sha256 from evidence_artefacts where item_id = %s", (item_id,)))
    assert set(stored) == {"screenshot", "warc", "media", "metadata"}
    vault = flow.worker.vault
    with psycopg.connect(flow.url) as conn:
        png = read_artefact(conn, vault, item_id, "screenshot")
        warc = read_artefact(conn, vault, item_id, "warc")
        media = read_artefact(conn, vault, item_id, "media")
    assert png is not None and warc is not None and media is not None
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[:64] not in stored["screenshot"][0]
    shot = Image.open(io.BytesIO(png))
    assert shot.width >= 1000 and shot.height > 300
    assert media == copy and hashlib.sha256(media).digest() == stored["media"][1]
    records = {(r.rec_type, r.rec_headers.get_header("WARC-Target-URI")): r.content_stream().read()
               for r in ArchiveIterator(io.BytesIO(warc)) if r.rec_type in ("request", "response")}
    assert records[("response", flow.site_a.url("/img/post1.jpg"))] == copy
    assert TITLE.encode() in records[("response", flow.site_a.url("/board/1"))]
    assert gzip.decompress(warc)[:8] == b"WARC/1.1"

    with psycopg.connect(flow.url) as conn:
        verification = chain.verify(conn)
        checked, problems = verify_artefacts(conn, vault)
    assert verification.ok and verification.entries == 2, verification.problems
    assert checked == 8 and problems == []  # four artefacts for each of the two items
    metadata = flow.sql("select payload from evidence_log_payloads where item_id = %s", (item_id,))[0][0]
    assert stored["screenshot"][1].hex() in metadata
    assert jiwoom(["evidence", "verify", "--database-url", flow.url, "--data-dir", str(flow.data_dir)]) == 0


def test_reports_render_with_korean_text(flow: Flow, tmp_path: Path) -> None:
    with psycopg.connect(flow.url) as conn:
        items = report_items(conn, flow.worker.vault, [flow.state["item"]])
    assert items[0].title == TITLE and items[0].matches and items[0].media_sha256_matches is True
    pdf = pdf_report(items, title="증거 보고서", generated_at=datetime.now(UTC), generated_by="test-officer")
    (tmp_path / "report.pdf").write_bytes(pdf)
    subprocess.run(["pdftoppm", "-png", "-r", "40", str(tmp_path / "report.pdf"), str(tmp_path / "page")],
                   check=True, timeout=60)
    pages = sorted(tmp_path.glob("page*.png"))
    assert pages and all(Image.open(p).size[0] > 100 for p in pages)
    text = subprocess.run(["pdftotext", str(tmp_path / "report.pdf"), "-"], capture_output=True, text=True,
                          check=True, timeout=60).stdout
    assert "테스트 게시물 제목" in text
    hwpx = hwpx_report(items, title="증거 보고서", generated_at=datetime.now(UTC), generated_by="test-officer")
    with zipfile.ZipFile(io.BytesIO(hwpx)) as archive:
        assert archive.infolist()[0].filename == "mimetype"
        assert archive.read("mimetype") == b"application/hwp+zip"
        section = archive.read("Contents/section0.xml").decode()
    ElementTree.fromstring(section)
    assert "테스트 게시물 제목" in section


def test_notices_are_drafted_in_every_language_and_sent_once_after_approval(flow: Flow) -> None:
    notices = flow.sql("select id, kind, state, recipient, recipient_source, priority, language from notices"
                       " order by priority desc, id")
    assert [(n[1], n[2]) for n in notices] == [("youth", "draft"), ("ncii", "draft")]
    assert {n[3] for n in notices} == {"abuse@site.example"} and notices[1][4] == "security.txt"
    assert notices[1][6] == "ko"  # the page is Korean
    ncii = notices[1][0]
    screenshot_sha = flow.sql("select encode(sha256, 'hex') from evidence_artefacts where item_id = %s"
                              " and kind = 'screenshot'", (flow.state["item"],))[0][0]
    texts = dict(flow.sql("select language, body from notice_texts where notice_id = %s", (ncii,)))
    assert set(texts) == {"ko", "en", "zh", "ja", "ru", "vi", "es"}
    for body in texts.values():
        assert flow.site_a.url("/board/1") in body and screenshot_sha in body

    flow.run_worker()
    assert flow.mailbox.messages == []  # still a draft
    with pytest.raises(SystemExit, match="officer"):  # a crawler's token may not approve
        jiwoom(["notice", "approve", str(ncii), "--database-url", flow.url, "--token", flow.tokens["crawler"]])
    assert jiwoom(["notice", "approve", str(ncii), "--database-url", flow.url, "--token", flow.tokens["officer"]]) == 0
    flow.run_worker()
    flow.run_worker()  # a second pass sends nothing again
    assert len(flow.mailbox.messages) == 1
    recipients, message = flow.mailbox.messages[0]
    assert recipients == ["abuse@site.example"]
    assert "제22조의5" in message.get_payload(decode=True).decode("utf-8")
    reference = flow.sql("select reference, state, message_id from notices where id = %s", (ncii,))[0]
    assert reference[1] == "sent" and reference[0] in str(make_header(decode_header(message["Subject"])))
    assert message["Message-ID"] == reference[2]
    state = flow.sql("select removal_state, notified_at is not null from evidence_items where id = %s",
                     (flow.state["item"],))[0]
    assert state == ("notified", True)
    audit = flow.sql("select actor, action from audit_log where action = 'ApproveNotice'")
    assert audit == [("test-officer", "ApproveNotice")]


def test_removal_is_detected_and_reported(flow: Flow) -> None:
    item = flow.state["item"]
    due = "update evidence_items set next_check_at = now() - interval '1 second' where id = %s"
    flow.sql(due, (item,))
    assert flow.run_worker()["check_still_up"] == 1
    assert flow.sql("select removal_state from evidence_items where id = %s", (item,))[0][0] == "still_up"

    flow.site_a.remove("/board/1")
    flow.site_a.remove("/img/post1.jpg")
    flow.sql(due, (item,))
    assert flow.run_worker()["check_removed"] == 1
    state, removed_at, notified_at = flow.sql(
        "select removal_state, removed_at, notified_at from evidence_items where id = %s", (item,))[0]
    assert state == "removed" and removed_at >= notified_at
    with psycopg.connect(flow.url) as conn:
        report = removal_report(conn)
    site = next(r for r in report if r.site == f"127.0.0.1:{flow.site_a.port}")
    assert (site.notified, site.removed, site.still_up) == (1, 1, 0) and site.median_hours is not None
    assert site.site in removal_csv(report)
    svg = ElementTree.fromstring(removal_chart_svg(report))
    assert any(el.get("class") == "median" for el in svg.iter())


def test_reupload_elsewhere_reopens_the_item(flow: Flow, corpus: Path) -> None:
    copy = transforms.encode(transforms.text_overlay(transforms.load(corpus / "images" / ASTRONAUT)), "JPEG", 85)
    post(flow.site_b, "/p/9", "/p/9.jpg", copy, title="재업로드 (benign fixture)")
    crawl(flow, flow.site_b, "/p/9", "/p/9.jpg", title="재업로드 (benign fixture)")
    counts = flow.run_worker()
    assert counts["captured"] == 1
    state, reopened_by = flow.sql("select removal_state, reopened_by from evidence_items where id = %s",
                                  (flow.state["item"],))[0]
    new_sighting = flow.sql("select id from sightings where page_url = %s", (flow.site_b.url("/p/9"),))[0][0]
    assert (state, reopened_by) == ("reuploaded", new_sighting)
    drafts = flow.sql("select site from notices where state = 'draft' and kind = 'ncii'")
    assert drafts == [(f"127.0.0.1:{flow.site_b.port}",)]


def test_forget_case_removes_its_evidence_and_keeps_the_chain_valid(flow: Flow) -> None:
    flow.clients["officer"].forget_case(CASE, reason="victim withdrew")
    assert flow.sql("select count(*) from evidence_items where case_id = %s", (CASE,)) == [(0,)]
    assert flow.sql("select count(*) from notices where case_id = %s", (CASE,)) == [(0,)]
    remaining = flow.sql("select reason from evidence_items")
    assert remaining == [("under_19",)]  # not the case's
    assert flow.sql("select count(*) from evidence_artefacts a join evidence_items e on e.id = a.item_id"
                    " where e.case_id is not null") == [(0,)]
    with psycopg.connect(flow.url) as conn:
        verification = chain.verify(conn)
    assert verification.ok, verification.problems
    assert verification.forgotten_payloads >= 3  # two captures and a removal entry of the case's items
