"""Posts that expose a victim's personal information (issue 16, "What follows"): the evidence item, the blurred
screenshot, the notice, the report and the console, against a real PostgreSQL, a real Chromium and a loopback
site. The sightings, their exposures and the case's identifier digests are inserted as the service would store
them; every name and number here is made up.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import numpy as np
import psycopg
import pytest
from PIL import Image
from psycopg_pool import ConnectionPool

from bench.fixture_site import FixtureSite
from clients.console.app import Console, create_app
from clients.console.context import OfficerSession
from clients.console.session import SESSION_COOKIE
from clients.evidence.capture import Browser, Screenshot
from clients.evidence.reports import pdf_report
from clients.evidence.store import items_exposed_kinds
from clients.evidence.vault import Vault
from clients.evidence.writer import (
    PRIORITY_MATCH,
    PRIORITY_PERSONAL_INFO,
    PRIORITY_UNDER_19,
    capture_item,
    enqueue_items,
    item_metadata,
    pending_items,
    read_artefact,
    report_items,
)
from clients.notices.drafts import Drafting, draft_for_item, notice_texts
from clients.notices.mail import Sender
from clients.notices.render import NoticeItem, render_notice
from clients.notices.sites import Site
from jiwoom.shared.web import Fetcher, FetchPolicy
from server.config import Settings
from server.matching.identifiers import IdentifierKey
from server.storage.db import migrate, open_pool
from server.storage.store import Principal
from tests.conftest import fresh_database

KEY = IdentifierKey(b"test identifier key, 32 bytes ok")
CASE = "2026-TEST-7"
NAME = "김지영"  # made up
PHONE = "010-1234-5678"  # the conventional example number
VALUES = (NAME, PHONE, "01012345678", "1234-5678")
SENDER = Sender(organisation="테스트 지원센터", name="김담당", email="takedown@centre.example")
# A page whose every text sits at a known place, far enough apart that one box's blur cannot reach the next.
PAGE = f"""<!doctype html><html><head><meta charset="utf-8"><title>{NAME} {PHONE} 게시물</title></head>
<body style="margin:0;background:#fff;color:#000;font:32px sans-serif">
<p style="position:absolute;left:20px;top:40px;margin:0"><span id="label">연락처</span><span id="num"
 style="margin-left:80px">{PHONE}</span></p>
<p id="namep" style="position:absolute;left:20px;top:160px;margin:0">{NAME}\u2003\u2003\u2003사진</p>
<p id="other" style="position:absolute;left:20px;top:280px;margin:0">오늘 날씨가 좋네요 123</p>
</body></html>"""
_RECTS_JS = """
const rect = (r) => [r.left + window.scrollX, r.top + window.scrollY, r.width, r.height];
const text = document.getElementById("namep").firstChild;
const part = (s, e) => { const r = document.createRange(); r.setStart(text, s); r.setEnd(text, e);
  return rect(r.getBoundingClientRect()); };
return {num: rect(document.getElementById("num").getBoundingClientRect()),
        label: rect(document.getElementById("label").getBoundingClientRect()),
        other: rect(document.getElementById("other").getBoundingClientRect()),
        name: part(0, 3), after: part(text.data.length - 2, text.data.length)};
"""


@dataclass
class Db:
    url: str
    pool: ConnectionPool
    vault: Vault


@pytest.fixture
def db(postgres_server: str) -> Iterator[Db]:
    with fresh_database(postgres_server) as url:
        migrate(url)
        with open_pool(url, max_size=2) as pool:
            yield Db(url, pool, Vault(b"m" * 32))


@pytest.fixture(scope="module")
def site() -> Iterator[FixtureSite]:
    with FixtureSite() as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(policy=FetchPolicy(allow_networks=("127.0.0.0/8",))) as b:
        yield b


def _case(conn: psycopg.Connection, case_id: str = CASE) -> None:
    conn.execute("insert into cases (id, created_by) values (%s, 'test')", (case_id,))
    for kind, value in (("name", NAME), ("phone", PHONE)):
        conn.execute("insert into case_identifiers (case_id, kind, digest, created_by) values (%s, %s, %s, 'test')",
                     (case_id, kind, KEY.record(kind, value)))


def _sighting(conn: psycopg.Connection, page_url: str, *, suspected: bool = False, youth_faces: int = 0) -> int:
    # stored redacted, as the service stores a post that exposes something
    return int(conn.execute(
        "insert into sightings (url, page_url, site, title, post_text, kind, suspected, youth_faces, seen_by)"
        " values (%s, %s, '127.0.0.1', '[name] [phone] 게시물', '연락처 [phone]', 'image', %s, %s, 'test')"
        " returning id", (page_url + ".png", page_url, suspected, youth_faces)).fetchone()[0])


def _expose(conn: psycopg.Connection, sighting_id: int, case_id: str | None, kind: str, field: str = "text") -> None:
    conn.execute("insert into sighting_exposures (sighting_id, case_id, kind, field) values (%s, %s, %s, %s)",
                 (sighting_id, case_id, kind, field))


def _items(conn: psycopg.Connection) -> list[tuple[int, int, str, str | None, int]]:
    return conn.execute("select id, sighting_id, reason, case_id, priority from evidence_items order by id").fetchall()


# -- the item ------------------------------------------------------------------------------------------------------


def test_an_exposing_sighting_is_queued_once_per_case(db: Db) -> None:
    assert PRIORITY_MATCH < PRIORITY_PERSONAL_INFO < PRIORITY_UNDER_19
    with db.pool.connection() as conn:
        _case(conn)
        first = _sighting(conn, "http://127.0.0.1/board/1")
        _expose(conn, first, CASE, "phone")
        _expose(conn, first, CASE, "name", "title")
        _expose(conn, first, None, "phone")
        youth = _sighting(conn, "http://127.0.0.1/board/2", suspected=True)
        _expose(conn, youth, None, "rrn")
        plain = _sighting(conn, "http://127.0.0.1/board/3")
        assert enqueue_items(conn, db.vault) == 3
        assert enqueue_items(conn, db.vault) == 0  # once
        items = _items(conn)
        assert [(s, r, c, p) for _, s, r, c, p in items] == [
            (first, "personal_info", CASE, PRIORITY_PERSONAL_INFO),
            (first, "personal_info", None, PRIORITY_PERSONAL_INFO),
            (youth, "personal_info", None, PRIORITY_PERSONAL_INFO)]
        assert plain not in {s for _, s, *_ in items}
        kinds = items_exposed_kinds(conn, [i for i, *_ in items])
        # the case's item: its own and the generic kinds; the generic item: the generic ones only
        assert [kinds[i] for i, *_ in items] == [["name", "phone"], ["phone"], ["rrn"]]
        # A face flagged under 19 later still gets its own item beside the personal-information one.
        conn.execute("update sightings set youth_faces = 1 where id = %s", (youth,))
        assert enqueue_items(conn, db.vault) == 1
        assert _items(conn)[-1][1:] == (youth, "under_19", None, PRIORITY_UNDER_19)


# -- the capture, the notice, the report ---------------------------------------------------------------------------


def _image(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def _region(pixels: np.ndarray, rect: list[float], pad: int = 0) -> np.ndarray:
    x, y, w, h = (round(v) for v in rect)
    return pixels[max(0, y - pad):y + h + pad, max(0, x - pad):x + w + pad]


def _capture(db: Db, site: FixtureSite, browser: Browser, key: IdentifierKey | None) -> tuple[int, object]:
    site.put("/board/7", PAGE.encode())
    site.put("/board/7.png", b"not really a png", "image/png")
    with db.pool.connection() as conn:
        _case(conn)
        sighting = _sighting(conn, site.url("/board/7"))
        _expose(conn, sighting, CASE, "name")
        _expose(conn, sighting, CASE, "phone")
        enqueue_items(conn, db.vault)
        (item,) = pending_items(conn, 10)

    async def run() -> object:
        async with Fetcher(FetchPolicy(allow_networks=("127.0.0.0/8",))) as fetcher:
            with db.pool.connection() as conn:
                return await capture_item(item, conn=conn, vault=db.vault, fetcher=fetcher, browser=browser,
                                          page_timeout_s=15, max_height_px=2000, identifier_key=key)

    return item.id, asyncio.run(run())


def test_the_screenshot_hides_the_identifiers_and_the_record_names_kinds_only(
        db: Db, site: FixtureSite, browser: Browser) -> None:
    item_id, captured = _capture(db, site, browser, KEY)
    plain: Screenshot = browser.screenshot(site.url("/board/7"), timeout_s=15)
    rects = browser.driver.execute_script(_RECTS_JS)
    with db.pool.connection() as conn:
        blurred = _image(read_artefact(conn, db.vault, item_id, "screenshot") or b"")
        meta = item_metadata(conn, db.vault, item_id) or {}
    clear = _image(plain.png)
    assert blurred.shape == clear.shape
    for hidden in ("num", "name"):
        before, after = _region(clear, rects[hidden]), _region(blurred, rects[hidden])
        assert before.size and np.abs(after - before).mean() > 40, hidden  # covered...
        assert after.mean() < 90, hidden  # ...by a dark box, not merely smudged
    for kept in ("other", "after"):  # the rest of the text is as it was
        assert np.abs(_region(blurred, rects[kept]) - _region(clear, rects[kept])).max() <= 8, kept
    x, y, w, h = rects["label"]  # beside the number: its left part is beyond the box's blur
    assert np.abs(_region(blurred, [x, y, w * 0.6, h]) - _region(clear, [x, y, w * 0.6, h])).max() <= 8

    assert meta["exposed"] == ["name", "phone"]
    assert meta["screenshot_blurred"] is True and meta["blurred_spans"] >= 2
    assert meta["case_identifiers_blurred"] is True
    assert "[hidden]" in meta["browser_title"]
    record = json.dumps(meta, ensure_ascii=False)
    assert not [v for v in VALUES if v in record]

    # The notice: a Korean site, a post that only exposes personal information.
    drafting = Drafting(sites={"127.0.0.1": Site(host="127.0.0.1", jurisdiction="KR")}, sender=SENDER)
    with db.pool.connection() as conn:
        notice_id = draft_for_item(conn, captured, drafting)  # type: ignore[arg-type]
        assert notice_id is not None
        texts = notice_texts(conn, notice_id)
        kind = conn.execute("select kind, jurisdiction from notices where id = %s", (notice_id,)).fetchone()
    assert kind == ("ncii", "KR")
    ko_subject, ko_body, _ = texts["ko"]
    assert "제44조의2" in ko_body and "이름, 전화번호" in ko_body and "개인정보" in ko_subject
    assert "불법촬영물" not in ko_subject and "제22조의5" not in ko_body  # no imagery claimed
    en_subject, en_body, _ = texts["en"]
    assert "Article 44-2" in en_body and "name, phone number" in en_body and "intimate" not in en_subject
    for language, (subject, body, _) in texts.items():
        assert not [v for v in VALUES if v in subject + body], language
        assert "44" in body, language

    # The report lists the item with its kinds, and no value.
    with db.pool.connection() as conn:
        (report,) = report_items(conn, db.vault, [item_id])
    assert report.reason == "personal_info" and report.exposed == ("name", "phone") and report.screenshot_blurred
    if shutil.which("pdftotext"):
        pdf = pdf_report([report], title="사건 보고서", generated_at=datetime.now(UTC), generated_by="officer")
        text = subprocess.run(["pdftotext", "-", "-"], input=pdf, check=True, capture_output=True).stdout.decode()
        assert "개인정보 노출: 이름, 전화번호" in text
        assert not [v for v in VALUES if v in text]


def test_without_the_identifier_key_generic_patterns_are_still_hidden(
        db: Db, site: FixtureSite, browser: Browser) -> None:
    item_id, _ = _capture(db, site, browser, None)
    browser.screenshot(site.url("/board/7"), timeout_s=15)
    plain = browser.capture_page()[0]
    rects = browser.driver.execute_script(_RECTS_JS)
    with db.pool.connection() as conn:
        blurred = _image(read_artefact(conn, db.vault, item_id, "screenshot") or b"")
        meta = item_metadata(conn, db.vault, item_id) or {}
    clear = _image(plain)
    assert np.abs(_region(blurred, rects["num"]) - _region(clear, rects["num"])).mean() > 40  # anyone's number
    assert np.abs(_region(blurred, rects["name"]) - _region(clear, rects["name"])).max() <= 8  # no key, no name
    assert meta["case_identifiers_blurred"] is False and meta["exposed"] == ["name", "phone"]


def test_notice_cites_the_jurisdictions_privacy_ground() -> None:
    at = datetime(2026, 11, 2, 12, 0, tzinfo=UTC)
    match = NoticeItem("https://b.example/1", "https://b.example/1.jpg", "t", None, at, {}, "match",
                       ("phone", "name"))
    only = NoticeItem("https://b.example/2", "https://b.example/2.jpg", "t", None, at, {}, "personal_info",
                      ("messenger",))

    def body(jurisdiction: str, items: list[NoticeItem], language: str = "en") -> str:
        return render_notice(language, Site(host="b.example"), items, kind="ncii", sender=SENDER, reference="JW-1",
                             jurisdiction=jurisdiction)[1]

    kr = body("KR", [match])
    assert "Article 22-5" in kr and "Article 44-2" in kr  # the imagery and the personal information
    assert "Personal information shown: name, phone number" in kr  # in the kinds' order, whatever was given
    assert "Article 17" in body("DE", [match]) and "44-2" not in body("DE", [match])
    us = body("US", [only])
    assert "messenger ID" in us and "Article 17" not in us and "non-consensual intimate imagery" not in us
    assert "Article 22-5" not in body("KR", [only])
    assert "personal information" not in body("KR", [NoticeItem("https://b.example/3", "", "t", None, at, {})])
    with pytest.raises(ValueError, match="unknown kinds"):
        body("KR", [NoticeItem("https://b.example/4", "", "t", None, at, {}, "match", ("shoe size",))])


# -- the console ---------------------------------------------------------------------------------------------------


class _Recorder:
    """Stands for the officer's Matcher client where no service runs: what the console asked it to record."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[tuple[str, str]]]] = []

    def record_identifiers(self, case_id: str, identifiers: list[tuple[str, str]]) -> int:
        self.calls.append((case_id, identifiers))
        return 1


def test_console_shows_kinds_and_never_values(db: Db, tmp_path: Path) -> None:
    with db.pool.connection() as conn:
        _case(conn)
        sighting = _sighting(conn, "http://127.0.0.1/board/9")
        _expose(conn, sighting, CASE, "phone")
        _expose(conn, sighting, None, "messenger")
        enqueue_items(conn, db.vault)
        (item_id,) = [i for i, *_ in _items(conn)[:1]]
    channel = grpc.insecure_channel("127.0.0.1:9")  # never called by these pages
    console = Console(Settings(), db.pool, db.vault, Drafting(sites={}, sender=SENDER), channel)
    recorder = _Recorder()
    console.sessions["s"] = OfficerSession("s", Principal("officer kim", "officer"), recorder,  # type: ignore[arg-type]
                                           "csrf-token", 1e18)
    client = create_app(console).test_client()
    client.set_cookie(SESSION_COOKIE, "s")
    page = client.get(f"/items/{item_id}").get_data(as_text=True)
    assert "노출된 개인정보" in page and "전화번호" in page and "메신저 ID" in page
    assert "개인정보 노출" in page  # the item's reason
    client.set_cookie("jiwoom_lang", "en")
    case_page = client.get(f"/cases/{CASE}").get_data(as_text=True)
    assert f'action="/cases/{CASE}/identifiers"' in case_page

    assert client.post(f"/cases/{CASE}/identifiers", data={"kind": "phone", "value": "010-9876-5432"}).status_code \
        == 400  # no CSRF token
    answer = client.post(f"/cases/{CASE}/identifiers", follow_redirects=True,
                         data={"csrf": "csrf-token", "kind": "phone", "value": "010-9876-5432"})
    assert recorder.calls == [(CASE, [("phone", "010-9876-5432")])]
    shown = answer.get_data(as_text=True)
    assert "9876" not in shown and "010-9876-5432" not in shown
    assert client.post(f"/cases/{CASE}/identifiers", data={"csrf": "csrf-token", "kind": "shoe", "value": "x"}
                       ).status_code == 302 and len(recorder.calls) == 1
    channel.close()


def test_worker_loads_the_identifier_key_or_warns_without_values(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from clients.worker import load_identifier_key
    from server.config import ServiceSettings

    settings = Settings(service=ServiceSettings(data_dir=str(tmp_path)))
    with caplog.at_level("WARNING"):
        assert load_identifier_key(settings) is None
    assert "generic personal information" in caplog.text
    assert not (tmp_path / "identifier.key").exists()  # the worker never makes one
    key_file = tmp_path / "identifier.key"
    key_file.write_bytes(b"test identifier key, 32 bytes ok")
    key_file.chmod(0o600)
    key = load_identifier_key(settings)
    assert key is not None and key.record("phone", PHONE) == KEY.record("phone", PHONE)


def test_the_identifier_form_records_through_the_matcher(postgres_server: str, tmp_path: Path) -> None:
    from jiwoom.api.client import MatcherClient, open_channel
    from server.app import running_service
    from server.config import ServiceSettings
    from server.storage.keys import load_key_file

    if not hasattr(MatcherClient, "record_identifiers"):
        pytest.skip("MatcherClient.record_identifiers is not there yet (being added in jiwoom/api/client.py)")
    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(tmp_path), max_workers=1))
    with fresh_database(postgres_server) as url, running_service(settings, url) as running, \
            open_pool(url, max_size=2) as pool:
        token = running.store.create_token("officer kim", "officer")
        channel = open_channel(f"127.0.0.1:{running.port}")
        try:
            MatcherClient(channel, token).configure_case(CASE, None)
            console = Console(settings, pool, Vault(b"m" * 32), Drafting(sites={}, sender=SENDER), channel)
            console.sessions["s"] = OfficerSession("s", Principal("officer kim", "officer"),
                                                   console.matcher(token), "csrf-token", 1e18)
            client = create_app(console).test_client()
            client.set_cookie(SESSION_COOKIE, "s")
            try:
                answer = client.post(f"/cases/{CASE}/identifiers", follow_redirects=True,
                                     data={"csrf": "csrf-token", "kind": "phone", "value": PHONE})
            except grpc.RpcError as error:  # pragma: no cover - only while the service side is unfinished
                pytest.skip(f"the service does not record identifiers yet: {error}")
            shown = answer.get_data(as_text=True)
            if "UNIMPLEMENTED" in shown:
                pytest.skip("the service does not implement RecordIdentifiers yet")
            assert PHONE not in shown and "1234-5678" not in shown
            with pool.connection() as conn:
                rows = conn.execute("select kind, digest from case_identifiers where case_id = %s",
                                    (CASE,)).fetchall()
            key = IdentifierKey(load_key_file(tmp_path / "identifier.key", "identifier key", create=False))
            assert [(kind, bytes(digest)) for kind, digest in rows] == [("phone", key.record("phone", PHONE))]
        finally:
            channel.close()
