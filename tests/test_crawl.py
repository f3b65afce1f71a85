"""The crawler end to end: `jiwoom crawl` against a realistic Korean board and English forum on loopback (with
planted copies of dev-corpus references and hostile pages), streaming to a real gRPC service with real models and
PostgreSQL. It finds every planted copy with its post's metadata, survives every hostile page, never contacts the
private address, and resumes after a kill without fetching finished pages again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from bench import transforms
from bench.fixture_boards import Planted, plant_boards
from bench.fixture_site import FixtureSite, korean_post_page
from bench.serve_process import kill_hard
from jiwoom.api.client import MatcherClient, open_channel
from server.app import running_service
from server.config import ServiceSettings, Settings
from server.storage.db import SYSTEM_BINARIES
from tests.conftest import fresh_database, publish_post

ROOT = Path(__file__).resolve().parents[1]
CASE = "case-crawl"
JOB = "crawl-test"


@dataclass
class World:
    database_url: str
    site: FixtureSite
    planted: Planted
    config: Path
    env: dict[str, str]
    references: dict[str, int]
    log: Path
    matcher: str
    case_system: MatcherClient

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description else []

    def wait_under_way(self, process: subprocess.Popen[bytes], done_query: str, params: tuple = (),
                       at_least: int = 8, timeout_s: float = 180) -> None:
        """Until `done_query` counts `at_least` finished rows (the moment to kill the crawl hard)."""
        deadline = time.monotonic() + timeout_s
        while True:
            done = self.sql(done_query, params)
            if done and done[0][0] >= at_least:
                return
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"the crawl did not get going: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def crawl(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "jiwoom.cli", "crawl", str(self.config), "--database-url",
                                     self.database_url], cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # a group of its own: killed with its browsers


@pytest.fixture(scope="module")
def world(postgres_server: str, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    data_dir = tmp_path_factory.mktemp("crawl")
    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir), max_workers=4))
    with fresh_database(postgres_server) as url, running_service(settings, url) as running, FixtureSite() as site:
        planted = plant_boards(site, corpus, now=datetime.now(UTC))
        channel = open_channel(f"127.0.0.1:{running.port}")
        case_system = MatcherClient(channel, running.store.create_token("test-case-system", "case_system"))
        references = {name: case_system.register_reference(CASE, path.read_bytes(), skip_retro_hunt=True)
                      .reference_id for name, path in planted.references.items()}
        config = data_dir / "crawl.yaml"
        config.write_text(yaml.safe_dump({
            "job": JOB, "prompt": "학교 유출 영상, 한국 커뮤니티에 올라옴", "seeds": planted.seeds,
            "limits": {"per_host_concurrency": 4, "per_host_delay_s": 0.0, "concurrency": 8, "timeout_s": 5.0,
                       "max_pages": 500, "max_depth": 4},
            "allow_networks": ["127.0.0.0/8"], "matcher": f"127.0.0.1:{running.port}"}, allow_unicode=True))
        env = {**os.environ, "JIWOOM_CRAWLER_TOKEN": running.store.create_token("test-crawler", "crawler")}
        yield World(url, site, planted, config, env, references, data_dir / "crawl.log", f"127.0.0.1:{running.port}",
                    case_system)
        channel.close()


def test_a_killed_crawl_resumes_without_refetching_finished_pages(world: World) -> None:
    process = world.crawl()
    try:  # kill it hard once it is well under way
        world.wait_under_way(process, "select count(*) from crawl_frontier where state = 'done' and kind <> 'media'")
    finally:
        kill_hard(process)
    finished = dict(world.sql("select url, fetched_at from crawl_frontier where state = 'done' and kind <> 'media'"))
    requests_before = world.site.requests()
    assert world.sql("select state from crawl_jobs where id = %s", (JOB,)) == [("running",)]

    process = world.crawl()
    assert process.wait(timeout=600) == 0, world.log.read_text()[-3000:]
    assert world.sql("select state from crawl_jobs where id = %s", (JOB,)) == [("finished",)]
    assert not world.sql("select url from crawl_frontier where state in ('pending', 'fetching')")
    # Pages finished before the kill were not fetched again (the site's own request log says so).
    again = [path for path in world.site.requests()[len(requests_before):]
             if any(url.endswith(path) for url in finished)]
    assert not again, again
    assert dict(world.sql("select url, fetched_at from crawl_frontier where url = any(%s)", (list(finished),))) \
        == finished


def test_every_planted_copy_is_found_with_its_post_metadata(world: World) -> None:
    for copy in world.planted.copies:
        rows = world.sql(
            # A post in a thread is its page plus the post's anchor (#p123): where a browser shows it.
            "select s.id, s.title, s.author, s.posted_at, s.site from sightings s"
            " where s.url = %s and split_part(s.page_url, '#', 1) = %s", (copy.media_url, copy.page_url))
        assert rows, f"{copy.transform} copy of {copy.reference} on {copy.page_url} was not streamed"
        sighting_id, title, author, posted_at, _ = rows[0]
        assert (title, author) == (copy.title, copy.author), copy
        assert posted_at is not None and abs(posted_at - copy.posted_at) <= timedelta(minutes=2), (posted_at, copy)
        matched = {r[0] for r in world.sql("select reference_id from matches where sighting_id = %s",
                                           (sighting_id,))}
        assert world.references[copy.reference] in matched, f"{copy.transform} copy of {copy.reference} not matched"


def test_hostile_pages_are_survived_and_the_private_address_never_contacted(world: World) -> None:
    def outcome(name: str) -> tuple[str, str]:
        rows = world.sql("select state, error from crawl_frontier where url = %s", (world.planted.hostile[name],))
        assert rows, f"{name} was never reached"
        return rows[0]

    # Each hostile page ends in a recorded outcome with a reason; the crawl went on around it (it finished).
    assert outcome("huge_image")[0] == "failed" and "refused" in outcome("huge_image")[1]
    assert outcome("truncated_jpeg")[0] == "failed" and "truncated" in outcome("truncated_jpeg")[1].lower()
    assert outcome("redirect_loop")[0] == "failed" and "redirect" in outcome("redirect_loop")[1]
    assert outcome("hanging_page")[0] == "failed"
    for name in ("huge_image_page", "truncated_jpeg_page", "private_page", "garbage_page", "many_links_page"):
        assert outcome(name)[0] == "done", (name, outcome(name))
    # The private address: the image on the page, and the same-site redirects that lead there, are refused
    # before any connection (jiwoom/shared/web.py checks every hop); nothing from it was ever streamed.
    for url in [*world.planted.private_urls, world.planted.hostile["private_image_redirect"]]:
        for state, error in world.sql("select state, error from crawl_frontier where url = %s", (url,)):
            assert state == "failed" and "refused" in error, (url, state, error)
    assert not world.sql("select id from sightings where url like 'http://10.0.0.1%%'")
    assert not world.sql("select url from crawl_frontier where state = 'fetching'")


def test_the_obfuscated_title_is_scored_against_the_keywords(world: World) -> None:
    for title in world.planted.obfuscated_titles:
        rows = world.sql("select text_score, hits, suspected from crawl_posts where title = %s", (title,))
        assert rows and rows[0][1], (title, rows)


def test_author_frequency_and_media_spread(world: World) -> None:
    from ingest.crawler import author_activity, media_spread

    with psycopg.connect(world.database_url) as conn:
        authors = author_activity(conn, JOB)
        spread = media_spread(conn, JOB, min_posts=1)
    assert authors and authors[0]["posts"] >= 2
    assert spread and all(s["posts"] >= 1 for s in spread)


def crawl_in_process(world: World, config: Any) -> None:
    """Run one crawl job (an ingest.config.CrawlConfig) to its end in this process, against the world's service."""
    from psycopg_pool import ConnectionPool

    from ingest.crawler import Crawl, start_job
    from ingest.keywords import Lexicon, default_encoder, expand
    from ingest.normalise import Normaliser
    from ingest.stream import MatchStreamer

    normaliser = Normaliser.load()
    expansion = expand(config.prompt, Lexicon.load(), default_encoder(), normaliser)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        start_job(conn, config, expansion, "test")

    async def crawl() -> None:
        with ConnectionPool(world.database_url, min_size=1, max_size=4) as pool:
            async with MatchStreamer(world.matcher, world.env["JIWOOM_CRAWLER_TOKEN"]) as streamer:
                await Crawl(config, pool, streamer, expansion, normaliser).run()

    asyncio.run(crawl())


def test_search_endpoints_bring_in_new_sites(world: World, corpus: Path) -> None:
    """No seeds: a search endpoint, asked for the top keywords, returns a site nobody gave; it is crawled."""
    from ingest.config import parse_config

    with FixtureSite() as search, FixtureSite() as found:
        name, path = next((n, p) for n, p in world.planted.references.items() if p.suffix == ".jpg")
        copy = transforms.encode(transforms.border(transforms.load(path)), "JPEG", 85)
        publish_post(found, "/board/7", "/img/7.jpg", copy, title="ㅇㅑ동 유출 (benign fixture)")
        search.put("/search", f'<html><body><ol><li><a href="{found.url("/board/7")}">결과</a></li>'
                   f'<li><a href="http://10.0.0.1/x">x</a></li></ol></body></html>'.encode())
        config = parse_config({"job": "crawl-search", "prompt": "학교 유출 영상",
                               "search": [{"url": search.url("/search?q={query}"), "keywords": 3}],
                               "limits": {"per_host_delay_s": 0, "timeout_s": 5},
                               "allow_networks": ["127.0.0.0/8"], "matcher": world.matcher})
        crawl_in_process(world, config)
        queries = [r for r in search.requests() if r.startswith("/search?q=")]
        assert len(queries) == 3  # the top three keywords, each searched once
        assert found.origin.removeprefix("http://") in world.sql(
            "select hosts from crawl_jobs where id = 'crawl-search'")[0][0]
        rows = world.sql("select s.id, s.title from sightings s where s.page_url = %s", (found.url("/board/7"),))
        assert rows and rows[0][1] == "ㅇㅑ동 유출 (benign fixture)"
        assert world.references[name] in {r[0] for r in world.sql(
            "select reference_id from matches where sighting_id = %s", (rows[0][0],))}
        assert world.sql("select suspected from crawl_posts where post_url = %s", (found.url("/board/7"),)) == \
            [(True,)]  # the obfuscated title scored against the keywords
        assert world.sql("select state from crawl_frontier where url = 'http://10.0.0.1/x'") in ([], [("failed",)])


def test_a_victims_personal_information_in_a_crawled_post_is_flagged_and_kept_only_redacted(world: World) -> None:
    """A post on a board shows a case's name spaced out in its title, typed apart in jamo in its body, and the
    phone in Hangul digits in the title and in a caption on its picture: the sighting records each exposure, and
    neither the service's tables nor the crawl's keep the values in clear (a pg_dump says so)."""
    from PIL import ImageDraw, ImageFont

    from ingest.config import parse_config

    world.case_system.record_identifiers(CASE, [("name", "김지영"), ("phone", "010-1234-5678")])
    with FixtureSite() as board:
        _, path = next((n, p) for n, p in world.planted.references.items() if p.suffix == ".jpg")
        image = transforms.load(path).copy()
        draw = ImageDraw.Draw(image)
        size = max(18, image.height // 12)
        font = ImageFont.truetype("/usr/share/fonts/truetype/nanum/NanumGothicBold.ttf", size)
        top = round(image.height * 0.62)
        draw.rectangle((0, top - size * 0.4, image.width, top + size * 1.6), fill="white")
        draw.text((size, top), "010-1234-5678", font=font, fill="black")
        title = "김 지 영 유출 연락처 공일공-1234-5678 (benign fixture)"
        board.put("/img/9.jpg", transforms.encode(image, "JPEG", 90), content_type="image/jpeg")
        board.put("/board/9", korean_post_page(title, "익명123", "2026.11.21 14:03",
                                               "이 사람 ㄱㅣㅁ지영 맞음\n퍼가지 마세요.", ["/img/9.jpg"]))
        page_url = board.url("/board/9")
        config = parse_config({"job": "crawl-exposed", "prompt": "학교 유출 영상", "seeds": [page_url],
                               "limits": {"per_host_delay_s": 0, "timeout_s": 5},
                               "allow_networks": ["127.0.0.0/8"], "matcher": world.matcher})
        crawl_in_process(world, config)
    rows = world.sql("select id, title, post_text from sightings where page_url = %s", (page_url,))
    assert rows, "the post's media was not streamed"
    sighting_id, stored_title, stored_text = rows[0]
    assert stored_title == "[name] 유출 연락처 [phone] (benign fixture)"
    assert "이 사람 [name] 맞음" in stored_text
    assert set(world.sql("select kind, field from sighting_exposures where sighting_id = %s and case_id = %s",
                         (sighting_id, CASE))) >= {("name", "title"), ("phone", "title"), ("name", "text"),
                                                   ("phone", "ocr")}
    assert world.sql("select title from crawl_posts where job_id = 'crawl-exposed'") == [(stored_title,)]
    assert {r[0] for r in world.sql("select post->>'title' from crawl_frontier where job_id = 'crawl-exposed'"
                                    " and kind = 'media'")} == {stored_title}
    dump = subprocess.run([str(SYSTEM_BINARIES / "pg_dump"), "--data-only", world.database_url],
                          capture_output=True, text=True, check=True, timeout=120).stdout
    for clear in ("김 지 영", "ㄱㅣㅁ지영", "공일공-1234-5678", "1234-5678", "01012345678"):
        assert clear not in dump, clear
