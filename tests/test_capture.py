"""Evidence capture against a real loopback site: the guarded fetcher, a real headless Chromium, real WARC files.

Nothing is mocked: the browser is the system Chromium, the network is 127.0.0.1 (allow-listed only where a test
says so), and the WARC is read back with warcio with its digests checked.
"""

from __future__ import annotations

import gzip
import io
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from PIL import Image
from warcio.archiveiterator import ArchiveIterator

from bench.fixture_site import FixtureSite, korean_post_page
from clients.evidence.capture import PNG_SIGNATURE, Browser, BrowserError, Screenshot, build_warc
from jiwoom.shared.web import (
    Fetched,
    Fetcher,
    FetchPolicy,
    FetchRefused,
    address_allowed,
    guarded_socket_factory,
    url_allowed,
)
from tests.conftest import ASTRONAUT

LOOPBACK = FetchPolicy(allow_networks=("127.0.0.0/8",))


@pytest.fixture(scope="module")
def site() -> Iterator[FixtureSite]:
    with FixtureSite() as s:
        yield s


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser(policy=LOOPBACK) as b:
        yield b


def _decode(shot: Screenshot) -> Image.Image:
    assert shot.png.startswith(PNG_SIGNATURE)
    image = Image.open(io.BytesIO(shot.png))
    image.load()
    assert image.format == "PNG"
    assert image.size == (shot.width, shot.height)
    return image.convert("RGB")


def _pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16).reshape(-1, 3)


# --- screenshots ------------------------------------------------------------------------------------------------


def test_full_page_screenshot_of_korean_post(browser: Browser, site: FixtureSite, corpus: Path) -> None:
    site.put("/img/astronaut.jpg", (corpus / "images" / ASTRONAUT).read_bytes(), "image/jpeg")
    tall = '<div class="spacer" style="height:3000px">본문 계속</div>'
    site.put("/board/free/1024", korean_post_page(
        "오늘 날씨가 좋네요", "산책러", "2026.11.21 14:03", "공원에 다녀왔습니다.\n사진 올려요.",
        ["/img/astronaut.jpg"], extra_html=tall))

    shot = browser.screenshot(site.url("/board/free/1024"), timeout_s=15)

    image = _decode(shot)
    assert shot.load_complete and not shot.truncated
    assert shot.width == 1280
    assert shot.height >= 3000 + 200  # the whole page, far past the 900 px window
    assert shot.title.startswith("오늘 날씨가 좋네요")
    assert shot.final_url == site.url("/board/free/1024")
    assert site.hits("/img/astronaut.jpg") >= 1
    # The photo rendered: many strongly coloured pixels, which text and page chrome alone do not give.
    px = _pixels(image)
    colourful = int(((px.max(axis=1) - px.min(axis=1)) > 60).sum())
    assert colourful > 50_000


def test_screenshot_height_is_capped(browser: Browser, site: FixtureSite) -> None:
    site.put("/tall", b'<html><body style="margin:0"><div style="height:5000px;background:#0a0"></div></body></html>')
    shot = browser.screenshot(site.url("/tall"), timeout_s=15, max_height_px=1200)
    _decode(shot)
    assert shot.truncated and shot.height == 1200 and shot.load_complete


def test_hanging_page_is_stopped_and_still_captured(browser: Browser, site: FixtureSite) -> None:
    site.hang("/slow", prefix='<html lang="ko"><body style="margin:0"><h1>불러오는 중</h1>'
              '<div style="height:400px;background:#d00000"></div>'.encode())
    start = time.monotonic()
    shot = browser.screenshot(site.url("/slow"), timeout_s=4)
    elapsed = time.monotonic() - start

    assert elapsed < 4 + 1.5
    assert not shot.load_complete
    image = _decode(shot)
    px = _pixels(image)
    reds = int(((px[:, 0] > 180) & (px[:, 1] < 60) & (px[:, 2] < 60)).sum())
    assert reds > 1280 * 300  # what had arrived was rendered
    # The browser is still usable afterwards.
    site.put("/after-hang", b"<html><head><title>ok</title></head><body>ok</body></html>")
    assert browser.screenshot(site.url("/after-hang"), timeout_s=10).title == "ok"


def test_browser_restarts_after_driver_crash(browser: Browser, site: FixtureSite) -> None:
    site.put("/alive", b"<html><head><title>alive</title></head><body>alive</body></html>")
    driver = browser._driver
    assert driver is not None
    os.kill(driver.service.process.pid, signal.SIGKILL)  # the chromedriver this Browser started
    driver.service.process.wait(timeout=5)

    shot = browser.screenshot(site.url("/alive"), timeout_s=10)
    assert shot.title == "alive" and shot.load_complete
    assert browser._driver is not driver


def test_browser_recovers_from_a_crashed_tab(browser: Browser, site: FixtureSite) -> None:
    # chrome://crash kills the renderer: the capture fails (even after one restart), the next one works.
    with pytest.raises(BrowserError, match="crashed"):
        browser.screenshot("chrome://crash", timeout_s=10)
    site.put("/after-crash", b"<html><head><title>back</title></head><body>back</body></html>")
    assert browser.screenshot(site.url("/after-crash"), timeout_s=10).title == "back"


# --- the guarded fetcher ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ip", "allowed"), [
    ("8.8.8.8", True), ("2001:4860:4860::8888", True),
    ("10.0.0.1", False), ("172.16.5.4", False), ("192.168.0.1", False), ("100.64.0.1", False),
    ("127.0.0.1", False), ("169.254.169.254", False), ("0.0.0.0", False), ("224.0.0.1", False),
    ("240.0.0.1", False), ("255.255.255.255", False),
    ("::1", False), ("::", False), ("fe80::1", False), ("fe80::1%eth0", False), ("fc00::1", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", False), ("::ffff:8.8.8.8", True),
    ("64:ff9b::a9fe:a9fe", False), ("2002:0a00:0001::1", False), ("not-an-ip", False),
])
def test_address_allowed(ip: str, allowed: bool) -> None:
    assert address_allowed(ip, FetchPolicy()) is allowed


def test_allow_networks_readmits_loopback_only() -> None:
    assert address_allowed("127.0.0.1", LOOPBACK)
    assert address_allowed("::ffff:127.0.0.1", LOOPBACK)
    assert not address_allowed("::1", LOOPBACK)
    assert not address_allowed("10.0.0.1", LOOPBACK)


@pytest.mark.asyncio
@pytest.mark.parametrize("url", [
    "http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::ffff:10.0.0.1]/", "http://[fd00::1]/",
    "http://2130706433/", "file:///etc/passwd", "ftp://example.com/",
])
async def test_refuses_private_and_odd_urls(url: str) -> None:
    start = time.monotonic()
    async with Fetcher() as fetcher:
        with pytest.raises(FetchRefused):
            await fetcher.fetch(url)
    assert time.monotonic() - start < 1  # refused before any connection attempt


@pytest.mark.asyncio
async def test_refuses_loopback_unless_allow_listed(site: FixtureSite) -> None:
    site.put("/secret", b"internal")
    async with Fetcher() as fetcher:
        with pytest.raises(FetchRefused, match="not allowed"):
            await fetcher.fetch(site.url("/secret"))
        # A name that resolves to loopback is refused by the resolver, at connect time.
        with pytest.raises(FetchRefused, match="not allowed"):
            await fetcher.fetch(f"http://localhost:{site.port}/secret")
    assert site.hits("/secret") == 0
    async with Fetcher(LOOPBACK) as fetcher:
        page = await fetcher.fetch(site.url("/secret"))
        # Through the resolver too: localhost's loopback address passes the allow list.
        by_name = await fetcher.fetch(f"http://localhost:{site.port}/secret")
    assert page.status == 200 and page.body == b"internal" and by_name.peer_ip == "127.0.0.1"
    assert site.hits("/secret") == 2


@pytest.mark.asyncio
async def test_socket_factory_refuses_at_connect_time(site: FixtureSite) -> None:
    # The last layer on its own (no guarded resolver): the address is refused as the socket is made.
    site.put("/connect-guard", b"internal")
    connector = aiohttp.TCPConnector(socket_factory=guarded_socket_factory(FetchPolicy()))
    async with aiohttp.ClientSession(connector=connector) as session:
        for url in (site.url("/connect-guard"), f"http://localhost:{site.port}/connect-guard"):
            with pytest.raises(aiohttp.ClientConnectorError, match="not allowed"):
                await session.get(url)
    assert site.hits("/connect-guard") == 0


@pytest.mark.asyncio
async def test_follows_redirects_across_hosts(site: FixtureSite) -> None:
    with FixtureSite() as other:
        other.put("/post/7", "<p>게시물</p>".encode())
        site.redirect("/go", "/go2", status=301)
        site.redirect("/go2", other.url("/post/7"), status=302)
        async with Fetcher(LOOPBACK) as fetcher:
            page = await fetcher.fetch(site.url("/go"))
        other_url = other.url("/post/7")
    assert page.status == 200 and page.decoded.decode() == "<p>게시물</p>"
    assert page.url == site.url("/go") and page.final_url == other_url
    assert page.redirects == (site.url("/go"), site.url("/go2"))
    assert page.fetched_at.tzinfo is not None and page.http_version == "HTTP/1.1"
    assert ("Content-Type", "text/html; charset=utf-8") in page.headers


@pytest.mark.asyncio
async def test_redirect_hops_are_checked(site: FixtureSite) -> None:
    site.redirect("/to-metadata", "http://169.254.169.254/latest/meta-data/")
    async with Fetcher(LOOPBACK) as fetcher:
        with pytest.raises(FetchRefused, match="not allowed"):
            await fetcher.fetch(site.url("/to-metadata"))


@pytest.mark.asyncio
async def test_refuses_redirect_loop_and_long_chains(site: FixtureSite) -> None:
    site.redirect("/loop-a", "/loop-b")
    site.redirect("/loop-b", "/loop-a")
    for i in range(8):
        site.redirect(f"/chain/{i}", f"/chain/{i + 1}")
    site.put("/chain/8", b"end")
    async with Fetcher(LOOPBACK) as fetcher:
        with pytest.raises(FetchRefused, match="loop"):
            await fetcher.fetch(site.url("/loop-a"))
        with pytest.raises(FetchRefused, match="too many redirects"):
            await fetcher.fetch(site.url("/chain/0"))
    assert site.hits("/chain/6") == 0  # stopped at the limit, not after
    async with Fetcher(FetchPolicy(allow_networks=("127.0.0.0/8",), max_redirects=8)) as fetcher:
        assert (await fetcher.fetch(site.url("/chain/0"))).body == b"end"


@pytest.mark.asyncio
async def test_non_2xx_is_returned(site: FixtureSite) -> None:
    site.put("/gone-soon", b"here")
    async with Fetcher(LOOPBACK) as fetcher:
        assert (await fetcher.fetch(site.url("/gone-soon"))).status == 200
        site.remove("/gone-soon")
        gone = await fetcher.fetch(site.url("/gone-soon"))
        site.put("/gone", b"removed", status=410)
        removed = await fetcher.fetch(site.url("/gone"))
    assert (gone.status, gone.reason) == (404, "Not Found")
    assert removed.status == 410 and removed.body == b"removed"


@pytest.mark.asyncio
@pytest.mark.parametrize("declare_length", [True, False])
async def test_refuses_huge_body_without_reading_it(site: FixtureSite, declare_length: bool) -> None:
    path = f"/huge-{declare_length}"
    site.put_large(path, 200 * 2**20, declare_length=declare_length)
    start = time.monotonic()
    async with Fetcher(LOOPBACK) as fetcher:  # the default 64 MiB cap
        with pytest.raises(FetchRefused, match="larger than"):
            await fetcher.fetch(site.url(path))
    assert time.monotonic() - start < 5


@pytest.mark.asyncio
async def test_keeps_wire_bytes_and_decodes_a_copy(site: FixtureSite) -> None:
    html = korean_post_page("압축", "익명", "2026.11.21 14:03", "gzip 본문", [])
    wire = gzip.compress(html)
    site.put("/gz", wire, headers={"Content-Encoding": "gzip"})
    site.put("/bomb", gzip.compress(bytes(20 * 2**20)), headers={"Content-Encoding": "gzip"})
    async with Fetcher(LOOPBACK) as fetcher:
        page = await fetcher.fetch(site.url("/gz"))
        assert page.body == wire and page.decoded == html
        assert page.header("content-encoding") == "gzip"
        async with Fetcher(FetchPolicy(allow_networks=("127.0.0.0/8",), max_bytes=2**20)) as small:
            with pytest.raises(FetchRefused, match="decoded body larger"):
                await small.fetch(site.url("/bomb"))


@pytest.mark.asyncio
async def test_hanging_page_times_out(site: FixtureSite) -> None:
    site.hang("/hang-fetch", prefix=b"<html><body>")
    start = time.monotonic()
    async with Fetcher(FetchPolicy(allow_networks=("127.0.0.0/8",), timeout_s=1.5)) as fetcher:
        with pytest.raises(FetchRefused, match="timed out"):
            await fetcher.fetch(site.url("/hang-fetch"))
    assert time.monotonic() - start < 3


# --- WARC -------------------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_warc_reads_back_with_valid_digests(site: FixtureSite) -> None:
    html = korean_post_page("증거", "익명", "2026.11.21 14:03", "본문", ["/img/x.jpg"])
    site.put("/evidence/page", html)
    site.put("/evidence/gz", gzip.compress(html), headers={"Content-Encoding": "gzip"})
    site.put_large("/evidence/chunked", 100_000, declare_length=False)
    site.remove("/evidence/removed")
    async with Fetcher(LOOPBACK) as fetcher:
        exchanges: list[Fetched] = [await fetcher.fetch(site.url(p)) for p in
                                    ("/evidence/page", "/evidence/gz", "/evidence/chunked", "/evidence/removed")]

    warc = build_warc(exchanges, warcinfo={"software": "jiwoom test", "operator": "test"}, filename="case.warc.gz")
    assert warc[:2] == b"\x1f\x8b"

    records = []
    for record in ArchiveIterator(io.BytesIO(warc), check_digests="raise"):
        headers = record.rec_headers
        assert headers.protocol == "WARC/1.1"
        if record.rec_type != "warcinfo":
            assert headers.get_header("WARC-Block-Digest", "").startswith("sha1:")
        if record.rec_type == "response":
            assert headers.get_header("WARC-Payload-Digest", "").startswith("sha1:")
        records.append((record.rec_type, headers.get_header("WARC-Target-URI"), headers.get_header("WARC-Record-ID"),
                        headers.get_header("WARC-Concurrent-To"), headers.get_header("WARC-Date"),
                        record.http_headers, record.content_stream().read()))

    assert [r[0] for r in records] == ["warcinfo"] + ["request", "response"] * 4
    assert b"software: jiwoom test" in records[0][6]
    for i, fetched in enumerate(exchanges):
        (_, req_uri, _, concurrent, req_date, req_http, _), (_, resp_uri, resp_id, _, resp_date, resp_http, payload) = (
            records[1 + 2 * i], records[2 + 2 * i])
        assert req_uri == resp_uri == fetched.final_url
        assert concurrent == resp_id and req_date == resp_date
        assert resp_date.startswith(fetched.fetched_at.strftime("%Y-%m-%dT%H:%M:%S"))
        assert req_http.protocol == "GET" and req_http.statusline.endswith("HTTP/1.1")
        assert int(resp_http.get_statuscode()) == fetched.status
        assert resp_http.headers == fetched.headers  # raw headers, as received
        assert payload == fetched.decoded  # warcio undoes chunking and gzip itself
    assert records[4][5].get_header("Content-Encoding") == "gzip"
    assert records[8][5].get_statuscode() == "404"


@pytest.mark.asyncio
async def test_url_allowed_checks_what_the_browser_would_open() -> None:
    assert not await url_allowed("http://10.0.0.1/board/1", FetchPolicy())
    assert not await url_allowed("http://169.254.169.254/latest/meta-data", FetchPolicy())
    assert not await url_allowed("http://localhost:8080/", FetchPolicy())
    assert not await url_allowed("file:///etc/passwd", LOOPBACK)
    assert await url_allowed("http://localhost:8080/", LOOPBACK)
