"""The crawler's fixture boards (bench/fixture_boards.py), checked with plain urllib: the lists paginate, the posts
carry the planted media, the hostile routes misbehave as planned, and every planted copy's metadata is on its page.
"""

from __future__ import annotations

import http.client
import io
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from html import unescape
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import av
import pytest
from PIL import Image

from bench.fixture_boards import HUGE_BYTES, MANY_LINKS, Planted, PlantedCopy, plant_boards
from bench.fixture_site import FixtureSite
from jiwoom.shared.times import KST

NOW = datetime(2026, 11, 21, 5, 33, 17, 250_000, tzinfo=UTC)


@dataclass
class Boards:
    site: FixtureSite
    planted: Planted
    seconds: float  # how long planting took


@pytest.fixture(scope="module")
def boards(corpus: Path) -> Iterator[Boards]:
    with FixtureSite() as site:
        started = time.perf_counter()
        planted = plant_boards(site, corpus, now=NOW)
        yield Boards(site, planted, time.perf_counter() - started)


def fetch(url: str, timeout: float = 5.0) -> tuple[bytes, str]:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read(), response.headers.get_content_type()


def text(url: str) -> str:
    return fetch(url)[0].decode("utf-8")


class Refs(HTMLParser):
    """Every address a page refers to, resolved against the page: links, and media (src, srcset, data-src)."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = base
        self.links: list[str] = []
        self.media: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "a" and a.get("href") and not a["href"].startswith("#"):
            self.links.append(urljoin(self.base, a["href"]))
        if tag in ("img", "source"):
            candidates = [a.get("src", ""), a.get("data-src", "")]
            candidates += [part.split()[0] for part in a.get("srcset", "").split(",") if part.strip()]
            self.media += [urljoin(self.base, c) for c in candidates if c and not c.startswith("data:")]

    @classmethod
    def of(cls, url: str, page: str) -> Refs:
        parser = cls(url)
        parser.feed(page)
        return parser


def hrefs(pattern: str, page: str, base: str) -> list[str]:
    return [urljoin(base, unescape(h)) for h in re.findall(pattern, page)]


def list_links(url: str, page: str) -> tuple[list[str], list[str]]:
    """(post or topic links, pagination links) of a board list page or a topic page."""
    posts = hrefs(r'<div class="bo_tit"><a href="([^"]+)"', page, url)
    posts += hrefs(r'<a href="([^"]+)" class="topictitle"', page, url)
    pager = hrefs(r'<a href="([^"]+)" class="pg_page', page, url)
    pager += hrefs(r'<a class="button[^"]*" href="([^"]+)"', page, url)
    return posts, pager


# --- structure ------------------------------------------------------------------------------------------------------


def test_planting_is_quick_and_complete(boards: Boards) -> None:
    planted = boards.planted
    assert boards.seconds < 10
    assert len(planted.seeds) == 2
    kinds = {(c.board, c.kind) for c in planted.copies}
    assert kinds == {("ko", "image"), ("ko", "video"), ("en", "image")}
    assert sum(c.kind == "video" for c in planted.copies) == 1
    assert {c.reference for c in planted.copies} == set(planted.references)
    assert all(path.is_file() for path in planted.references.values())
    assert len({c.transform for c in planted.copies if c.kind == "image"}) >= 6
    assert planted.obfuscated_titles and all(any(t == c.title for c in planted.copies)
                                             for t in planted.obfuscated_titles)
    assert planted.pages == len(set(planted.page_urls)) and planted.media == len(set(planted.media_urls))
    assert not set(planted.chrome_urls) & set(planted.media_urls)
    assert {c.media_url for c in planted.copies} <= set(planted.media_urls)
    assert {"huge_image", "truncated_jpeg", "redirect_loop", "hanging_page", "private_page", "many_links_page",
            "garbage_page"} <= set(planted.hostile)
    assert all(c.posted_at.tzinfo is not None and c.posted_at <= NOW for c in planted.copies)
    # Relative times are in play: a copy "N분 전" and one "N시간 전".
    assert any(c.posted_text.endswith("분 전") for c in planted.copies)
    assert any(c.posted_text.endswith("시간 전") for c in planted.copies)


def test_same_seed_same_boards_other_seed_other_boards(boards: Boards, corpus: Path) -> None:
    def portable(planted: Planted, origin: str) -> list[PlantedCopy]:
        strip = lambda url: url.removeprefix(origin)  # noqa: E731
        return [replace(c, page_url=strip(c.page_url), media_url=strip(c.media_url),
                        also_at=tuple(map(strip, c.also_at))) for c in planted.copies]

    with FixtureSite() as other:
        again = plant_boards(other, corpus, now=NOW)
        assert portable(again, other.origin) == portable(boards.planted, boards.site.origin)
        first = boards.planted.copies[0].media_url
        assert fetch(first)[0] == fetch(other.origin + first.removeprefix(boards.site.origin))[0]
    with FixtureSite() as third:
        assert portable(plant_boards(third, corpus, now=NOW, seed=1), third.origin) \
            != portable(boards.planted, boards.site.origin)


def test_naive_now_is_refused(corpus: Path) -> None:
    with FixtureSite() as site, pytest.raises(ValueError, match="aware"):
        plant_boards(site, corpus, now=datetime(2026, 11, 21, 12, 0))


def test_routes_with_a_query_and_the_request_log() -> None:
    with FixtureSite() as site:
        site.put("/bbs/board.php?bo_table=free&wr_id=7", b"seven")
        site.put("/bbs/board.php", b"any other")
        assert site.get("/bbs/board.php?wr_id=7&bo_table=free") == b"seven"  # parameter order does not matter
        assert site.get("/bbs/board.php?bo_table=free&wr_id=8") == b"any other"
        site.remove("/bbs/board.php?bo_table=free&wr_id=7")
        assert site.get("/bbs/board.php?bo_table=free&wr_id=7") == b"any other"
        assert site.hits("/bbs/board.php") == 3
        assert site.requests() == ["/bbs/board.php?wr_id=7&bo_table=free", "/bbs/board.php?bo_table=free&wr_id=8",
                                   "/bbs/board.php?bo_table=free&wr_id=7"]


# --- a walk over the boards ---------------------------------------------------------------------------------------


def test_lists_paginate_and_a_walk_reaches_every_page(boards: Boards) -> None:
    """Lists -> pagination -> posts and topic pages, as a crawler walks them: exactly `planted.page_urls`."""
    planted = boards.planted
    queue, seen, fetched, failed = list(planted.seeds), set(planted.seeds), [], {}
    list_pages = {"ko": 0, "en": 0}
    while queue:
        url = queue.pop(0)
        try:
            body, content_type = fetch(url, timeout=0.5)
        except (urllib.error.HTTPError, TimeoutError) as error:
            failed[url] = type(error).__name__
            continue
        assert content_type == "text/html", url
        fetched.append(url)
        try:
            page = body.decode("utf-8")
        except UnicodeDecodeError:
            continue  # the garbage page
        posts, pager = list_links(url, page)
        if "page=" in url or "viewforum" in url:
            list_pages["ko" if "/bbs/" in url else "en"] += 1
            assert posts, url
        for link in posts + pager:
            if link not in seen:
                seen.add(link)
                queue.append(link)
    assert sorted(fetched) == sorted(planted.page_urls)
    assert list_pages == {"ko": 3, "en": 3}
    assert failed == {planted.hostile["redirect_loop"]: "HTTPError", planted.hostile["hanging_page"]: "TimeoutError"}
    for copy in planted.copies:
        assert copy.page_url in fetched


def test_pages_and_media_answer_with_their_types(boards: Boards) -> None:
    planted = boards.planted
    for url in planted.media_urls:
        body, content_type = fetch(url)
        assert content_type in ("image/jpeg", "video/mp4"), url
        assert body
    for url in planted.chrome_urls:
        assert fetch(url)[1] in ("image/png", "image/gif")
    referenced: set[str] = set()
    for url in planted.page_urls:
        if url != planted.hostile["garbage_page"]:
            referenced |= set(Refs.of(url, text(url)).media)
    # Every content file is on some page; what else pages show is chrome, the 200 MB file or the private address.
    assert set(planted.media_urls) <= referenced
    extra = referenced - set(planted.media_urls) - set(planted.chrome_urls)
    assert extra == {planted.private_urls[0], planted.hostile["private_image_redirect"], planted.hostile["huge_image"]}


# --- planted media --------------------------------------------------------------------------------------------------


def test_planted_copies_decode(boards: Boards) -> None:
    for copy in boards.planted.copies:
        data, content_type = fetch(copy.media_url)
        if copy.kind == "video":
            assert content_type == "video/mp4"
            with av.open(io.BytesIO(data)) as container:
                stream = container.streams.video[0]
                assert stream.codec_context.name == "h264"
                frames = sum(1 for _ in container.decode(stream))
            assert frames >= 25 and stream.width == 480
            continue
        assert content_type == "image/jpeg"
        for url in (copy.media_url, *copy.also_at):
            with Image.open(io.BytesIO(fetch(url)[0])) as image:
                image.load()
                assert min(image.size) >= 100, (copy.transform, image.size)
        if copy.also_at:  # a srcset thumbnail is the smaller rendition
            with Image.open(io.BytesIO(fetch(copy.also_at[0])[0])) as thumb, Image.open(io.BytesIO(data)) as full:
                assert thumb.width < full.width


def test_truncated_jpeg_does_not_decode(boards: Boards) -> None:
    data, content_type = fetch(boards.planted.hostile["truncated_jpeg"])
    assert content_type == "image/jpeg" and data[:3] == b"\xff\xd8\xff"
    with pytest.raises(OSError), Image.open(io.BytesIO(data)) as image:
        image.load()


# --- hostile routes -------------------------------------------------------------------------------------------------


def raw(url: str, method: str = "GET", timeout: float = 5.0) -> http.client.HTTPResponse:
    """One request, redirects not followed (so nothing here ever goes near the private address)."""
    parts = urlsplit(url)
    assert parts.hostname == "127.0.0.1", url
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""))
    return connection.getresponse()


def test_redirect_loop(boards: Boards) -> None:
    hostile = boards.planted.hostile
    first, second = raw(hostile["redirect_loop"]), raw(hostile["redirect_loop_2"])
    assert (first.status, urljoin(hostile["redirect_loop"], first.headers["Location"])) == \
        (302, hostile["redirect_loop_2"])
    assert (second.status, second.headers["Location"]) == (302, hostile["redirect_loop"])
    with pytest.raises(urllib.error.HTTPError, match="infinite loop"):
        fetch(hostile["redirect_loop"])


def test_huge_image_declares_its_length(boards: Boards) -> None:
    url = boards.planted.hostile["huge_image"]
    response = raw(url)
    assert response.status == 200 and int(response.headers["Content-Length"]) == HUGE_BYTES == 200 * 1024 * 1024
    assert response.headers.get_content_type() == "image/jpeg"
    assert len(response.read(65536)) == 65536  # it streams; the test hangs up after the first piece
    response.close()
    assert url in Refs.of(boards.planted.hostile["huge_image_page"], text(boards.planted.hostile["huge_image_page"])
                          ).media


def test_hanging_page_never_finishes(boards: Boards) -> None:
    started = time.monotonic()
    response = raw(boards.planted.hostile["hanging_page"], timeout=0.5)
    assert response.status == 200
    with pytest.raises(TimeoutError):
        response.read()
    assert time.monotonic() - started < 3


def test_private_address_is_only_referred_to(boards: Boards) -> None:
    planted = boards.planted
    page = text(planted.hostile["private_page"])
    refs = Refs.of(planted.hostile["private_page"], page)
    leak, admin = planted.private_urls
    assert urlsplit(leak).hostname == urlsplit(admin).hostname == "10.0.0.1"
    assert leak in refs.media and admin in refs.links
    for name, target in (("private_image_redirect", leak), ("private_link_redirect", admin)):
        response = raw(planted.hostile[name])
        assert (response.status, response.headers["Location"]) == (302, target)


def test_many_links_and_garbage(boards: Boards) -> None:
    planted = boards.planted
    links = Refs.of(planted.hostile["many_links_page"], text(planted.hostile["many_links_page"])).links
    assert sum("/out/" in link for link in links) == MANY_LINKS
    body, content_type = fetch(planted.hostile["garbage_page"])
    assert content_type == "text/html" and len(body) >= 32 * 1024
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")


# --- metadata -------------------------------------------------------------------------------------------------------


def ko_time(posted_text: str) -> datetime:
    """What a gnuboard time means at NOW (the reading the crawler must make)."""
    if m := re.fullmatch(r"(\d+)분 전", posted_text):
        return NOW - timedelta(minutes=int(m[1]))
    if m := re.fullmatch(r"(\d+)시간 전", posted_text):
        return NOW - timedelta(hours=int(m[1]))
    return datetime.strptime(posted_text, "%y-%m-%d %H:%M").replace(tzinfo=KST).astimezone(UTC)


def test_every_copys_metadata_is_on_its_page(boards: Boards) -> None:
    for copy in boards.planted.copies:
        page = text(copy.page_url)
        assert copy.media_url in Refs.of(copy.page_url, page).media, copy
        if copy.board == "ko":
            assert f'<span class="bo_v_tit">{copy.title}</span>' in page, copy
            info = page[page.index('<section id="bo_v_info">'):page.index('<section id="bo_v_atc">')]
            assert f'<span class="sv_member">{copy.author}</span>' in info, copy
            assert f'<strong class="if_date"><span class="sound_only">작성일</span> {copy.posted_text}</strong>' in info
            assert ko_time(copy.posted_text) == copy.posted_at, copy
        else:
            assert re.search(rf'<h2 class="topic-title"><a [^>]*>{re.escape(copy.title)}</a></h2>', page), copy
            # The post holding the file: its author and <time datetime>.
            post = next(chunk for chunk in page.split('<div id="p')[1:]
                        if f'{copy.media_url.removeprefix(boards.site.origin + "/forum/")}"' in chunk)
            assert f'class="username">{copy.author}</a></strong>' in post, copy
            assert f'<time datetime="{copy.posted_at.isoformat()}">' in post, copy
            assert copy.posted_text == copy.posted_at.isoformat()
    # The list rows show the same titles and authors.
    lists = "".join(text(url) for url in boards.planted.seeds)
    lists += "".join(text(urljoin(boards.planted.seeds[0], f"?bo_table=free&page={n}")) for n in (2, 3))
    lists += "".join(text(urljoin(boards.planted.seeds[1], f"?f=2&start={n}")) for n in (10, 20))
    for copy in boards.planted.copies:
        assert f">{copy.title}</a>" in lists, copy.title
