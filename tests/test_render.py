"""Render mode end to end: pages whose posts only exist after their scripts run (a board filled by fetch(), an
infinite-scroll feed, an embedded player, og:video and JSON-LD pages) on loopback fixture sites, crawled through
headless Chromium behind the guard proxy, streaming to a real service with real models and PostgreSQL. Every
planted copy is found with its post's metadata; a rendered page's script, image and iframe never reach the private
or metadata address; and a crawl killed in render mode resumes without fetching finished pages again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
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
from bench.fixture_boards import _clip
from bench.fixture_site import FixtureSite, korean_post_page
from bench.serve_process import kill_hard
from jiwoom.api.client import MatcherClient, open_channel
from server.app import running_service
from server.config import ServiceSettings, Settings
from tests.conftest import fresh_database, guard_lines
from tests.test_crawl import World

CASE = "case-render"
JOB = "render-test"
KILL_JOB = "render-kill"
PRIVATE = ("10.0.0.1", "169.254.169.254")
KST_POSTED = datetime(2026, 11, 21, 5, 3, tzinfo=UTC)  # "2026.11.21 14:03" on a Korean board


@dataclass(frozen=True)
class Copy:
    name: str  # the reference it copies
    media_url: str
    page_url: str  # the post's URL, anchor included for a post in a list
    title: str
    author: str
    posted_at: datetime


@dataclass
class Rendered:
    world: World
    copies: list[Copy]
    stats: dict[str, Any]
    connected: list[tuple[str, int]]  # what the guard proxy connected to
    guard_log: list[str]  # the jiwoom.guard logger's lines
    ssrf_page: str

    def sql(self, query: str, params: tuple = ()) -> list[tuple]:
        return self.world.sql(query, params)


def _js_board(site: FixtureSite, image: str) -> str:
    """A board post that its script fetches as JSON and writes into the page: the plain HTML has nothing."""
    post = {"title": "[렌더] 스크립트 게시판 글 (benign fixture)", "author": "스크립트작성자",
            "posted": "2026.11.21 14:03", "text": "스크립트가 채운 본문입니다.", "image": image}
    site.put("/app/posts.json", json.dumps(post, ensure_ascii=False).encode(), content_type="application/json")
    site.put("/app/board.js", b"""
fetch('/app/posts.json').then((r) => r.json()).then((p) => {
  const app = document.getElementById('app');
  app.innerHTML = '<article class="post"><h1 class="title"></h1><div class="info"><span class="author"></span>'
    + '<span class="date"></span></div><div class="content"><p></p><p><img></p></div></article>';
  app.querySelector('.title').textContent = p.title;
  app.querySelector('.author').textContent = p.author;
  app.querySelector('.date').textContent = p.posted;
  app.querySelector('.content p').textContent = p.text;
  app.querySelector('img').src = p.image;
});
""", content_type="application/javascript")
    site.put("/app/board", b'<!DOCTYPE html><html lang="ko"><head><meta charset="utf-8"><title>\xea\xb2\x8c\xec\x8b\x9c'
             b'\xed\x8c\x90</title></head><body><div id="app">...</div><script src="/app/board.js"></script>'
             b"</body></html>")
    return site.url("/app/board")


FEED_BATCHES = 4  # the first on load, three more by scrolling


def _feed(site: FixtureSite, image: str) -> tuple[str, dict[str, str]]:
    """An infinite list: two tall posts per batch, the next batch appended when the reader scrolls to the bottom.
    The planted copy is in the last batch, reached only by scrolling three times."""
    planted: dict[str, str] = {}
    for n in range(FEED_BATCHES):
        items = []
        for k in range(2):
            number = n * 2 + k + 1
            item = {"id": f"post-{number}", "title": f"피드 글 {number} (benign fixture)",
                    "author": f"피드회원{number}", "time": f"2026-11-{10 + number:02d}T10:00:00+09:00",
                    "text": f"피드 본문 {number}",
                    "image": image if (n, k) == (FEED_BATCHES - 1, 1) else ""}
            if item["image"]:
                planted = item
            items.append(item)
        site.put(f"/feed/items?n={n}", json.dumps(items, ensure_ascii=False).encode(),
                 content_type="application/json")
    site.put("/feed", (f"""<!DOCTYPE html><html lang="ko"><head><meta charset="utf-8"><title>피드</title>
<style>article {{ min-height: 700px; }}</style></head><body><h1>피드</h1><div id="feed"></div><script>
let next = 0, loading = false;
function more() {{
  if (loading || next >= {FEED_BATCHES}) return;
  loading = true;
  fetch('/feed/items?n=' + next).then((r) => r.json()).then((items) => {{
    for (const p of items) {{
      const a = document.createElement('article');
      a.className = 'post'; a.id = p.id;
      a.innerHTML = '<h2 class="post-title"></h2><span class="author"></span><time></time><div class="content">'
        + '<p></p></div>';
      a.querySelector('.post-title').textContent = p.title;
      a.querySelector('.author').textContent = p.author;
      a.querySelector('time').setAttribute('datetime', p.time);
      a.querySelector('time').textContent = p.time;
      a.querySelector('p').textContent = p.text;
      if (p.image) {{ const img = document.createElement('img'); img.src = p.image; a.querySelector('.content')
        .appendChild(img); }}
      document.getElementById('feed').appendChild(a);
    }}
    next += 1; loading = false;
  }});
}}
window.addEventListener('scroll', () => {{
  if (window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 100) more();
}});
more();
</script></body></html>""").encode())
    return site.url("/feed"), planted


def _ssrf(site: FixtureSite) -> str:
    """A page whose script, image and iframe point at the private and the cloud-metadata address."""
    site.put("/ssrf", b"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>x</title></head><body>
<div id="out">waiting</div>
<img src="http://10.0.0.1/pixel.png" width="300" height="300">
<iframe src="http://169.254.169.254/latest/meta-data/iam/" width="300" height="300"></iframe>
<script>
const out = document.getElementById('out');
for (const url of ['http://10.0.0.1/', 'http://169.254.169.254/latest/meta-data/']) {
  fetch(url).then((r) => r.text()).then((t) => { out.textContent += ' got ' + t.length; })
    .catch(() => { out.textContent += ' blocked'; });
}
const x = new XMLHttpRequest(); x.open('GET', 'http://10.0.0.1/admin'); x.send();
</script></body></html>""")
    return site.url("/ssrf")


def _run_crawl(world: World, config: Any) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """Run one job to its end in this process; its stats and the guard proxy's upstream connections."""
    from psycopg_pool import ConnectionPool

    from ingest.crawler import Crawl, start_job
    from ingest.keywords import Lexicon, default_encoder, expand
    from ingest.normalise import Normaliser
    from ingest.stream import MatchStreamer

    normaliser = Normaliser.load()
    expansion = expand(config.prompt, Lexicon.load(), default_encoder(), normaliser)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        start_job(conn, config, expansion, "test")

    async def crawl() -> tuple[dict[str, Any], list[tuple[str, int]]]:
        with ConnectionPool(world.database_url, min_size=1, max_size=4) as pool:
            async with MatchStreamer(world.matcher, world.env["JIWOOM_CRAWLER_TOKEN"]) as streamer:
                job = Crawl(config, pool, streamer, expansion, normaliser)
                stats = (await job.run()).as_dict()
                assert job._renderer is not None
                return stats, list(job._renderer.proxy.connected)

    return asyncio.run(crawl())


@pytest.fixture(scope="module")
def rendered(postgres_server: str, corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rendered]:
    from ingest.config import parse_config

    data_dir = tmp_path_factory.mktemp("render")
    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir), max_workers=4))
    with fresh_database(postgres_server) as url, running_service(settings, url) as running, \
            FixtureSite() as site, FixtureSite() as player:
        channel = open_channel(f"127.0.0.1:{running.port}")
        case_system = MatcherClient(channel, running.store.create_token("test-case-system", "case_system"))
        photos = [corpus / "images" / name for name in ("img_0073.jpg", "img_0128.jpg")]
        video = corpus / "videos" / "vid_002.mp4"
        references = {p.stem: case_system.register_reference(CASE, p.read_bytes(), skip_retro_hunt=True)
                      .reference_id for p in [*photos, video]}
        for i, photo in enumerate(photos):
            site.put(f"/img/{i}.jpg", transforms.encode(transforms.border(transforms.load(photo)), "JPEG", 85),
                     content_type="image/jpeg")
        clip = _clip(str(video), 1.0, 2.5, 480)
        copies: list[Copy] = []

        board = _js_board(site, "/img/0.jpg")
        copies.append(Copy(photos[0].stem, site.url("/img/0.jpg"), board, "[렌더] 스크립트 게시판 글 (benign fixture)",
                           "스크립트작성자", KST_POSTED))
        feed, item = _feed(site, "/img/1.jpg")
        copies.append(Copy(photos[1].stem, site.url("/img/1.jpg"), f"{feed}#{item['id']}", item["title"],
                           item["author"], datetime.fromisoformat(item["time"]).astimezone(UTC)))
        # An embedded player on another host: the iframe's page holds the <video>.
        player.put("/media/7.mp4", clip, content_type="video/mp4")
        player.put("/player/7", b'<!DOCTYPE html><html><body style="margin:0"><video src="/media/7.mp4" controls'
                   b' width="640" height="360"></video></body></html>')
        embed_title = "[렌더] 플레이어 퍼온 글 (benign fixture)"
        site.put("/embed/post/7", korean_post_page(embed_title, "퍼나르기", "2026.11.21 14:03", "영상 첨부합니다.", [],
                                                   f'<iframe src="{player.url("/player/7")}" width="640"'
                                                   ' height="360"></iframe>'))
        copies.append(Copy(video.stem, player.url("/media/7.mp4"), site.url("/embed/post/7"), embed_title,
                           "퍼나르기", KST_POSTED))
        # og:video in the head, the body a player shell.
        site.put("/media/og.mp4", clip, content_type="video/mp4")
        site.put("/watch/og", """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta property="og:title" content="오픈그래프 영상 (benign fixture)"><meta property="og:type" content="video.other">
<meta property="og:video" content="/media/og.mp4"><meta name="author" content="오지영상">
<meta property="article:published_time" content="2026-11-21T14:03:00+09:00"><title>watch</title></head>
<body><div id="player"></div></body></html>""".encode())
        copies.append(Copy(video.stem, site.url("/media/og.mp4"), site.url("/watch/og"),
                           "오픈그래프 영상 (benign fixture)", "오지영상", KST_POSTED))
        # JSON-LD: a SocialMediaPosting with a VideoObject, nothing in the markup.
        site.put("/media/ld.mp4", clip, content_type="video/mp4")
        ld = {"@context": "https://schema.org", "@graph": [{
            "@type": "SocialMediaPosting", "headline": "제이슨 엘디 영상 글 (benign fixture)",
            "author": {"@type": "Person", "name": "엘디회원"}, "datePublished": "2026-11-21T14:03:00+09:00",
            "video": {"@type": "VideoObject", "name": "clip", "contentUrl": "/media/ld.mp4",
                      "embedUrl": "/embed/ld", "uploadDate": "2026-11-21"}}]}
        site.put("/watch/ld", (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>watch</title>'
                               f'<script type="application/ld+json">{json.dumps(ld, ensure_ascii=False)}</script>'
                               f'</head><body><div id="player"></div></body></html>').encode())
        copies.append(Copy(video.stem, site.url("/media/ld.mp4"), site.url("/watch/ld"),
                           "제이슨 엘디 영상 글 (benign fixture)", "엘디회원", KST_POSTED))
        ssrf = _ssrf(site)

        env = {**os.environ, "JIWOOM_CRAWLER_TOKEN": running.store.create_token("test-crawler", "crawler")}
        world = World(url, site, None, data_dir / "crawl.yaml", env, references,  # type: ignore[arg-type]
                      data_dir / "crawl.log", f"127.0.0.1:{running.port}", case_system)
        config = parse_config({
            "job": JOB, "prompt": "학교 유출 영상, 한국 커뮤니티에 올라옴",
            "seeds": [board, {"url": feed, "selectors": {"post": "article.post", "title": ".post-title"}},
                      {"url": site.url("/embed/post/7"), "render": "always"}, site.url("/watch/og"),
                      site.url("/watch/ld"), ssrf],
            "limits": {"per_host_delay_s": 0, "per_host_concurrency": 4, "timeout_s": 5, "render_total_s": 20,
                       "max_depth": 1},
            "allow_networks": ["127.0.0.0/8"], "matcher": world.matcher})
        with guard_lines() as lines:
            stats, connected = _run_crawl(world, config)
        yield Rendered(world, copies, stats, connected, lines, ssrf)
        channel.close()


def test_every_planted_copy_in_rendered_pages_is_found_with_its_post_metadata(rendered: Rendered) -> None:
    for copy in rendered.copies:
        rows = rendered.sql("select s.id, s.title, s.author, s.posted_at from sightings s where s.url = %s"
                            " and s.page_url = %s", (copy.media_url, copy.page_url))
        assert rows, f"{copy.media_url} on {copy.page_url} was not streamed: {rendered.stats}"
        sighting_id, title, author, posted_at = rows[0]
        assert (title, author) == (copy.title, copy.author), copy
        assert posted_at is not None and abs(posted_at - copy.posted_at) <= timedelta(minutes=2), (posted_at, copy)
        matched = {r[0] for r in rendered.sql("select reference_id from matches where sighting_id = %s",
                                              (sighting_id,))}
        assert rendered.world.references[copy.name] in matched, f"{copy} not matched"
    # The script-built pages were rendered (their plain HTML has no post), the feed all the way down.
    assert rendered.stats["rendered"] >= 4, rendered.stats
    feed_posts = rendered.sql("select post_url from crawl_posts where post_url like %s", ("%/feed#post-%",))
    assert len(feed_posts) == FEED_BATCHES * 2, feed_posts


def test_the_ssrf_guard_holds_in_render_mode(rendered: Rendered) -> None:
    # The page was rendered (it has no post in its plain HTML) and finished.
    assert rendered.sql("select state from crawl_frontier where url = %s", (rendered.ssrf_page,)) == [("done",)]
    # Its script's fetch() and XHR, its <img> and its <iframe> reached the guard and were refused, each logged
    # with its host and address...
    for address in PRIVATE:
        refusals = [line for line in rendered.guard_log if line.startswith(f"refused {address}:")
                    and f"resolves to {address}" in line]
        assert refusals, (address, rendered.guard_log)
    assert any("/pixel.png" in line for line in rendered.guard_log)
    assert any("/latest/meta-data/iam/" in line for line in rendered.guard_log)
    # ...and no connection to either was ever attempted, while the fixture sites' were.
    assert not [c for c in rendered.connected if c[0] in PRIVATE], rendered.connected
    assert any(address == "127.0.0.1" for address, _ in rendered.connected)
    assert not rendered.sql("select url from sightings where url like 'http://10.0.0.1%%'"
                            " or url like 'http://169.254.%%'")


# --- a kill mid-crawl in render mode ------------------------------------------------------------------------------

KILL_POSTS = 24


def _profiles_processes(marker: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if marker.encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_a_crawl_killed_in_render_mode_resumes_without_refetching_finished_pages(
        rendered: Rendered, tmp_path: Path) -> None:
    with FixtureSite() as site:
        # A list and its posts, all written by script: only a rendered crawl sees them.
        site.put("/r/app.js", b"""
const data = JSON.parse(document.getElementById('data').textContent);
document.getElementById('app').innerHTML = data.html;
""", content_type="application/javascript")

        def scripted(html: str) -> bytes:
            payload = json.dumps({"html": html}, ensure_ascii=False).replace("</", "<\\/")
            return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>r</title></head><body>'
                    f'<div id="app"></div><script type="application/json" id="data">{payload}</script>'
                    f'<script src="/r/app.js"></script></body></html>').encode()

        links = "".join(f'<li><a href="/r/post/{n}">글 {n}</a></li>' for n in range(1, KILL_POSTS + 1))
        site.put("/r/list", scripted(f"<ul>{links}</ul>"))
        for n in range(1, KILL_POSTS + 1):
            site.put(f"/r/post/{n}", scripted(
                f'<article class="post"><h1 class="title">렌더 글 {n} (benign fixture)</h1><div class="info">'
                f'<span class="author">회원{n}</span><span class="date">2026.11.21 14:03</span></div>'
                f'<div class="content"><p>본문 {n}</p></div></article>'))
        config = tmp_path / "kill.yaml"
        config.write_text(yaml.safe_dump({
            "job": KILL_JOB, "prompt": "학교 유출 영상", "seeds": [{"url": site.url("/r/list"), "render": "always"}],
            "limits": {"per_host_delay_s": 0, "per_host_concurrency": 2, "concurrency": 2, "timeout_s": 5,
                       "render_browsers": 2, "render_total_s": 15, "max_pages": 200},
            "allow_networks": ["127.0.0.0/8"], "matcher": rendered.world.matcher}, allow_unicode=True))
        # Short, under /tmp: Chromium's singleton socket path must fit a unix socket name.
        profiles = Path(tempfile.mkdtemp(prefix="jiwoom-render-kill-"))
        # Chromium's profiles under our own TMPDIR: what a SIGKILL leaves behind is found (and ended) by it.
        world = World(rendered.world.database_url, site, None, config,  # type: ignore[arg-type]
                      {**rendered.world.env, "TMPDIR": str(profiles)}, {}, tmp_path / "kill.log",
                      rendered.world.matcher, rendered.world.case_system)
        process = world.crawl()
        try:
            world.wait_under_way(process, "select count(*) from crawl_frontier where job_id = %s and state = 'done'",
                                 (KILL_JOB,), timeout_s=240)
        finally:
            kill_hard(process)  # the crawl and its chromedrivers
            time.sleep(0.5)
            for pid in _profiles_processes(str(profiles)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        finished = dict(world.sql("select url, fetched_at from crawl_frontier where job_id = %s and state = 'done'",
                                  (KILL_JOB,)))
        unfinished = world.sql("select count(*) from crawl_frontier where job_id = %s and state <> 'done'",
                               (KILL_JOB,))[0][0]
        assert unfinished > 0, "killed too late: nothing was left to resume"
        requests_before = len(site.requests())
        assert world.sql("select state from crawl_jobs where id = %s", (KILL_JOB,)) == [("running",)]

        process = world.crawl()
        try:
            assert process.wait(timeout=600) == 0, world.log.read_text()[-3000:]
        finally:
            for pid in _profiles_processes(str(profiles)):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            shutil.rmtree(profiles, ignore_errors=True)
        assert world.sql("select state from crawl_jobs where id = %s", (KILL_JOB,)) == [("finished",)]
        assert not world.sql("select url from crawl_frontier where job_id = %s and state <> 'done'", (KILL_JOB,))
        # Neither the plain fetch nor the browser asked again for a page finished before the kill.
        finished_paths = {url.removeprefix(site.origin) for url in finished}
        again = [path for path in site.requests()[requests_before:] if path in finished_paths]
        assert not again, again
        assert dict(world.sql("select url, fetched_at from crawl_frontier where url = any(%s)",
                              (list(finished),))) == finished
        # Every post exists only rendered: all of them were taken, each once.
        titles = [r[0] for r in world.sql("select title from crawl_posts where job_id = %s", (KILL_JOB,))]
        assert sorted(titles) == sorted(f"렌더 글 {n} (benign fixture)" for n in range(1, KILL_POSTS + 1))
        for path in finished_paths:  # once plain, once by the browser: never again
            assert site.hits(path) == 2, (path, site.hits(path))
