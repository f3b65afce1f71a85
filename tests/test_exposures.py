"""A victim's personal information in crawled posts (issue 16), through gRPC on a real service over a real
PostgreSQL: identifiers stored as keyed digests only, found in obfuscated titles, texts and OCR'd captions,
redacted before they are stored, never in clear anywhere, and forgotten with the case."""

from __future__ import annotations

import io
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest
from PIL import Image, ImageDraw, ImageFont

from bench.transforms import load
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.storage.db import SYSTEM_BINARIES
from tests.conftest import Served, serving

FONT = Path("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf")
CASE = "case-exposed"
NAME, PHONE, HANDLE = "김지영", "010-1234-5678", "@jiyoung_k"
# every form a value could leak in: as recorded, normalised, and its digits alone
CLEAR_FORMS = (NAME, PHONE, "01012345678", "jiyoung_k", "12345678", "공일공")


@pytest.fixture(scope="module")
def served(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    with serving(postgres_server, tmp_path_factory.mktemp("exposures")) as s:
        stored = s.client.record_identifiers(CASE, [("name", NAME), ("phone", PHONE), ("handle", HANDLE)])
        assert stored == 3
        yield s


def jpeg(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.convert("RGB").save(out, "JPEG", quality=92)
    return out.getvalue()


def photo(corpus: Path, name: str = "img_0010.jpg") -> Image.Image:
    return load(corpus / "images" / name)


def captioned(corpus: Path, text: str) -> bytes:
    """A corpus photo with `text` on a white band across its lower third, as uploaders caption a frame."""
    image = photo(corpus).copy()
    draw = ImageDraw.Draw(image)
    size = max(18, image.height // 12)
    font = ImageFont.truetype(str(FONT), size)
    top = round(image.height * 0.62)
    draw.rectangle((0, top - size * 0.4, image.width, top + size * 1.6), fill="white")
    draw.text(((image.width - draw.textlength(text, font=font)) / 2, top), text, font=font, fill="black")
    return jpeg(image)


def post(served: Served, media: bytes, *, title: str = "", text: str = "", suspected: bool = False,
         url: str = "https://board.example/p/1.jpg") -> pb.MatchResponse:
    return served.client.match(media, pb.Source(url=url, page_url=url + ".html", site="board.example", title=title,
                                                text=text, suspected=suspected))


def found(response: pb.MatchResponse) -> set[tuple[str, str, str]]:
    return {(e.case_id, e.kind, e.field) for e in response.exposures}


@pytest.mark.parametrize(("title", "text", "expected"), [
    ("김 지 영 풀버전", "", {(CASE, "name", "title")}),  # spaced
    ("ㄱㅣㅁ지영 누군지 앎", "연락 공일공-1234-5678", {(CASE, "name", "title"), (CASE, "phone", "text")}),
    ("", "번호 010 1234 5678 인스타 @jiyoung_k", {(CASE, "phone", "text"), (CASE, "handle", "text")}),
])
def test_a_cases_identifiers_are_found_in_titles_and_texts_and_redacted(
        served: Served, corpus: Path, title: str, text: str, expected: set[tuple[str, str, str]]) -> None:
    response = post(served, jpeg(photo(corpus, "img_0012.jpg")), title=title, text=text,
                    url=f"https://board.example/{abs(hash(title + text))}.jpg")
    assert found(response) == expected
    redacted = response.redacted_title + " " + response.redacted_text
    for kind in {kind for _, kind, _ in expected}:
        assert f"[{kind}]" in redacted
    for clear in ("김 지 영", "ㄱㅣㅁ지영", "1234", "jiyoung_k"):
        assert clear not in redacted
    with psycopg.connect(served.database_url) as conn:
        stored = conn.execute("select title, post_text from sightings where id = %s",
                              (response.sighting_id,)).fetchone()
    assert stored == (response.redacted_title, response.redacted_text)


def test_a_name_and_phone_in_an_ocrd_caption_are_found(served: Served, corpus: Path) -> None:
    response = post(served, captioned(corpus, f"{NAME} {PHONE}"), title="오늘 올라온 영상",
                    url="https://board.example/caption.jpg")
    assert found(response) == {(CASE, "name", "ocr"), (CASE, "phone", "ocr")}
    assert response.redacted_title == "오늘 올라온 영상"  # the post's own text held nothing


@pytest.mark.parametrize(("title", "text"), [
    ("김지연 영상", "이지영 010-9999-8888"),  # other people's names and numbers
    ("김지 영화 봤음", "kim jiyeon @jiyoung_kk"),  # spaced words that only run together into the name
])
def test_other_peoples_identifiers_are_not_found(served: Served, corpus: Path, title: str, text: str) -> None:
    response = post(served, jpeg(photo(corpus, "img_0012.jpg")), title=title, text=text,
                    url=f"https://board.example/other-{abs(hash(title))}.jpg")
    assert list(response.exposures) == []
    with psycopg.connect(served.database_url) as conn:
        stored = conn.execute("select title, post_text from sightings where id = %s",
                              (response.sighting_id,)).fetchone()
    assert stored == (title, text)  # nothing redacted that was not someone's


def test_generic_patterns_are_flagged_on_suspected_posts_only(served: Served, corpus: Path) -> None:
    text = "카톡 ID: neighbour77 번호 010-5555-6666"
    quiet = post(served, jpeg(photo(corpus, "img_0012.jpg")), text=text, url="https://board.example/g1.jpg")
    assert list(quiet.exposures) == []
    flagged = post(served, jpeg(photo(corpus, "img_0012.jpg")), text=text, suspected=True,
                   url="https://board.example/g2.jpg")
    assert found(flagged) == {("", "messenger", "text"), ("", "phone", "text")}
    assert "neighbour77" not in flagged.redacted_text and "5555" not in flagged.redacted_text


@pytest.mark.parametrize(("kind", "value", "says"), [
    ("shoe_size", "235", "unknown kind"),
    ("phone", "12-34", "nothing that can be searched for"),
    ("name", "김" * 300, "over 200 characters"),
])
def test_bad_identifiers_are_refused_without_echoing_the_value(served: Served, kind: str, value: str,
                                                                says: str) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        served.client.record_identifiers(CASE, [("name", "박서준"), (kind, value)])
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert says in raised.value.details() and "identifier 1" in raised.value.details()
    assert value[:10] not in raised.value.details()


def test_no_identifier_is_in_clear_text_in_the_database_or_the_logs(postgres_server: str, tmp_path: Path,
                                                                     corpus: Path,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with serving(postgres_server, tmp_path) as s:  # a database of its own: the others hold lookalikes
        s.client.record_identifiers(CASE, [("name", NAME), ("phone", PHONE), ("handle", HANDLE),
                                           ("email", "JiYoung.K@example.com")])
        response = post(s, captioned(corpus, f"{NAME} {PHONE}"), title=f"{NAME} {PHONE}",
                        text="ㄱㅣㅁ지영 공일공-1234-5678 @jiyoung_k JiYoung.K@example.com",
                        url="https://board.example/dump.jpg")
        assert {kind for _, kind, _ in found(response)} == {"name", "phone", "handle", "email"}
        dump = subprocess.run([str(SYSTEM_BINARIES / "pg_dump"), "--data-only", s.database_url],
                              capture_output=True, text=True, check=True, timeout=120).stdout
    assert "case_identifiers" in dump and "sighting_exposures" in dump  # the dump holds the rows
    logs = caplog.text
    for clear in (*CLEAR_FORMS, "jiyoung.k@example.com", "JiYoung.K"):
        assert clear not in dump, clear
        assert clear not in logs, clear


def test_forgetting_the_case_deletes_its_identifiers_and_exposures(postgres_server: str, tmp_path: Path,
                                                                   corpus: Path) -> None:
    with serving(postgres_server, tmp_path) as s:
        s.client.record_identifiers("to-forget", [("phone", PHONE)])
        s.client.record_identifiers("kept", [("name", "박서준")])
        before = post(s, jpeg(photo(corpus)), text=f"{PHONE} 박서준", url="https://board.example/f1.jpg")
        assert found(before) == {("to-forget", "phone", "text"), ("kept", "name", "text")}
        s.client.forget_case("to-forget", reason="withdrawn")
        with psycopg.connect(s.database_url) as conn:
            left = conn.execute("select case_id, kind from case_identifiers").fetchall()
            exposed = conn.execute("select case_id, kind from sighting_exposures").fetchall()
        assert left == [("kept", "name")] and exposed == [("kept", "name")]
        after = post(s, jpeg(photo(corpus, "img_0012.jpg")), text=f"{PHONE} 박서준", url="https://board.example/f2.jpg")
        assert found(after) == {("kept", "name", "text")}  # the service forgot them too, not only the database


def test_identifiers_recorded_later_find_the_posts_crawled_before(postgres_server: str, tmp_path: Path,
                                                                   corpus: Path) -> None:
    with serving(postgres_server, tmp_path) as s:
        earlier = post(s, jpeg(photo(corpus)), title="박 서 준 영상 풀버전", text="연락 공일공-9876-5432",
                       url="https://board.example/early.jpg")
        unrelated = post(s, jpeg(photo(corpus, "img_0012.jpg")), title="박서연 사진", url="https://board.example/u.jpg")
        assert list(earlier.exposures) == []  # nobody had recorded them yet
        s.client.record_identifiers("later", [("name", "박서준"), ("phone", "010-9876-5432")])
        deadline = time.monotonic() + 60
        with psycopg.connect(s.database_url, autocommit=True) as conn:
            while True:  # the stored sightings are examined in the background
                exposed = set(conn.execute("select sighting_id, case_id, kind, field from sighting_exposures"))
                if len(exposed) >= 2 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            stored = conn.execute("select id, title, post_text from sightings order by id").fetchall()
        assert exposed == {(earlier.sighting_id, "later", "name", "title"),
                           (earlier.sighting_id, "later", "phone", "text")}
        assert stored == [(earlier.sighting_id, "[name] 영상 풀버전", "연락 [phone]"),
                          (unrelated.sighting_id, "박서연 사진", "")]
