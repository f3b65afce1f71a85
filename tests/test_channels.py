"""SNS channels (ingest/platforms/): the Telegram preview and X API v2 adapters on fixture pages, the config, and
crawls of a Telegram-preview-shaped channel on loopback and a fake X API holding planted copies of registered
references, found with their post's URL, time and views; a channel without its token is skipped, saying why.
"""

from __future__ import annotations

import html
import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from bench import transforms
from bench.fixture_site import FixtureSite
from ingest.config import ConfigError, parse_config
from ingest.platforms import ChannelError, ChannelSpec, Reply, adapter
from tests import test_crawl
from tests.test_crawl import World, crawl_in_process

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CDN = "https://cdn4.telesco.pe/file"


# --- fixtures: pages shaped like the real ones ---------------------------------------------------------------------


def tg_message(channel: str, number: int, posted: datetime, text: str = "", views: str = "",
               photos: tuple[str, ...] = (), video: str = "", thumb: str = "") -> str:
    """One message of a t.me/s preview page, in Telegram's markup (what scrapers of it rely on)."""
    esc = html.escape
    parts = [f'<a class="tgme_widget_message_photo_wrap 5765 blured" href="https://t.me/{channel}/{number}?single"'
             f" style=\"width:800px;background-image:url('{esc(url)}')\"><div class=\"tgme_widget_message_photo\""
             ' style="padding-top:75%"></div></a>' for url in photos]
    if video or thumb:
        source = f'<video src="{esc(video)}" class="tgme_widget_message_video js-message_video" width="100%"' \
                 ' height="100%"></video>' if video else ""
        parts.append(f'<a class="tgme_widget_message_video_player js-message_video_player"'
                     f' href="https://t.me/{channel}/{number}"><i class="tgme_widget_message_video_thumb"'
                     f" style=\"background-image:url('{esc(thumb)}')\"></i>"
                     f'<div class="tgme_widget_message_video_wrap">{source}</div>'
                     '<time class="message_video_duration js-message_video_duration">0:03</time></a>')
    if text:
        parts.append('<div class="tgme_widget_message_text js-message_text" dir="auto">'
                     + "<br/>".join(esc(line) for line in text.splitlines()) + "</div>")
    return f"""
<div class="tgme_widget_message_wrap js-widget_message_wrap">
 <div class="tgme_widget_message text_not_supported_wrap js-widget_message" data-post="{channel}/{number}"
      data-view="eyJjIjotMTAwMTIzLCJwIjo{number}">
  <div class="tgme_widget_message_user"><a href="https://t.me/{channel}"><i class="tgme_widget_message_user_photo
    bgcolor1" data-content="L"><img src="{CDN}/avatar.jpg"></i></a></div>
  <div class="tgme_widget_message_bubble">
   <div class="tgme_widget_message_author accent_color"><a class="tgme_widget_message_owner_name"
     href="https://t.me/{channel}"><span dir="auto">유출 채널 (benign fixture)</span></a></div>
   {"".join(parts)}
   <div class="tgme_widget_message_footer compact js-message_footer">
    <div class="tgme_widget_message_info short js-message_info">
     <span class="tgme_widget_message_views">{esc(views)}</span><span class="copyonly"> views</span>
     <span class="tgme_widget_message_meta"><a class="tgme_widget_message_date"
       href="https://t.me/{channel}/{number}"><time datetime="{posted.isoformat()}" class="time">
       {posted:%H:%M}</time></a></span>
    </div>
   </div>
  </div>
 </div>
</div>"""


def tg_page(channel: str, messages: list[str], before: int | None) -> bytes:
    more = (f'<div class="tgme_widget_message_centered js-messages_more_wrap"><a href="/s/{channel}?before={before}"'
            f' data-before="{before}" class="tme_messages_more js-messages_more"></a></div>') if before else ""
    return f"""<!DOCTYPE html><html><head><meta charset="utf-8"><title>유출 채널 – Telegram</title>
<link rel="canonical" href="https://t.me/s/{channel}"></head><body class="widget_frame_base tgme_webpreview">
<header class="tgme_header"><div class="tgme_header_info"><i class="tgme_page_photo_image"
 style="background-image:url('{CDN}/channel.jpg')"></i></div></header>
<main class="tgme_main"><section class="tgme_channel_history js-message_history">{more}
{"".join(messages)}
</section></main></body></html>""".encode()


def x_page(tweets: list[dict[str, Any]], media: list[dict[str, Any]], next_token: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"result_count": len(tweets), "newest_id": tweets[0]["id"], "oldest_id": tweets[-1]["id"]}
    if next_token:
        meta["next_token"] = next_token
    return {"data": tweets, "includes": {"media": media, "users": [{"id": "42", "name": "누군가",
                                                                      "username": "leaker_42"}]}, "meta": meta}


def x_tweet(tweet_id: str, created: datetime, media_keys: list[str], impressions: int = 1200) -> dict[str, Any]:
    return {"id": tweet_id, "text": "유출 원본 (benign fixture)", "author_id": "42",
            "created_at": created.strftime("%Y-%m-%dT%H:%M:%S.000Z"), "edit_history_tweet_ids": [tweet_id],
            "attachments": {"media_keys": media_keys},
            "public_metrics": {"retweet_count": 3, "reply_count": 1, "like_count": 9, "quote_count": 0,
                               "bookmark_count": 0, "impression_count": impressions}}


def x_video(key: str, best: str) -> dict[str, Any]:
    return {"media_key": key, "type": "video", "preview_image_url": "https://pbs.twimg.com/ext_tw_video_thumb/1.jpg",
            "variants": [{"bit_rate": 256000, "content_type": "video/mp4", "url": best + "?low"},
                         {"content_type": "application/x-mpegURL", "url": "https://video.twimg.com/pl/1.m3u8"},
                         {"bit_rate": 2176000, "content_type": "video/mp4", "url": best},
                         {"bit_rate": 832000, "content_type": "video/mp4", "url": best + "?mid"}]}


# --- the adapters --------------------------------------------------------------------------------------------------


def test_telegram_preview_pages_give_posts_media_views_and_the_older_page() -> None:
    channel = adapter(ChannelSpec("telegram", channel="leak_channel"), {})
    assert channel.page_url(None) == "https://t.me/s/leak_channel"
    assert channel.page_url("120") == "https://t.me/s/leak_channel?before=120"
    first = tg_page("leak_channel", [
        tg_message("leak_channel", 120, NOW - timedelta(hours=2), "첫 줄\n둘째 줄", "1.2K",
                   photos=(f"{CDN}/a.jpg", f"{CDN}/b.jpg")),
        tg_message("leak_channel", 121, NOW - timedelta(hours=1), views="845", video=f"{CDN}/v.mp4?token=x",
                   thumb=f"{CDN}/v_thumb.jpg"),
        tg_message("leak_channel", 122, NOW, views="3M", thumb=f"{CDN}/big_thumb.jpg"),  # too big to preview
    ], before=120)
    page = channel.parse(Reply(200, first), NOW)
    assert page.cursor == "120"
    assert [p.url for p in page.posts] == [f"https://t.me/leak_channel/{n}" for n in (120, 121, 122)]
    photo, video, big = page.posts
    assert photo.images == [f"{CDN}/a.jpg", f"{CDN}/b.jpg"] and not photo.videos  # not the avatars
    assert photo.text == "첫 줄\n둘째 줄"
    assert photo.posted_at == NOW - timedelta(hours=2) and photo.author == "leak_channel"
    assert photo.extra["views"] == "1.2K" and photo.extra["view_count"] == "1200"
    assert photo.extra["channel_title"] == "유출 채널 (benign fixture)"
    assert video.videos == [f"{CDN}/v.mp4?token=x"] and not video.images
    assert big.images == [f"{CDN}/big_thumb.jpg"] and big.extra["view_count"] == "3000000"

    last = channel.parse(Reply(200, tg_page("leak_channel", [tg_message("leak_channel", 1, NOW, "처음")], None)),
                         NOW)
    assert last.cursor is None and [p.text for p in last.posts] == ["처음"]
    assert channel.parse(Reply(200, b"<html><body>nothing</body></html>"), NOW).posts == []
    with pytest.raises(ChannelError) as refused:
        channel.parse(Reply(429, b""), NOW)
    assert refused.value.retry
    with pytest.raises(ChannelError) as missing:
        channel.parse(Reply(404, b"not found"), NOW)
    assert not missing.value.retry


def test_x_api_pages_give_posts_photos_the_best_video_and_the_next_token() -> None:
    search = adapter(ChannelSpec("x", query="유출 has:media"), {"JIWOOM_X_BEARER_TOKEN": "t0ken"})
    assert search.unavailable() == "" and search.headers()["Authorization"] == "Bearer t0ken"
    first = urlsplit(search.page_url(None))
    assert first.netloc == "api.x.com" and first.path == "/2/tweets/search/recent"
    params = parse_qs(first.query)
    assert params["query"] == ["유출 has:media"] and "next_token" not in params
    assert params["expansions"] == ["attachments.media_keys,author_id"]
    assert params["media.fields"] == ["url,preview_image_url,variants,type"]
    assert params["tweet.fields"] == ["created_at,public_metrics,author_id"] and params["user.fields"] == ["username"]
    assert parse_qs(urlsplit(search.page_url("b26v89")).query)["next_token"] == ["b26v89"]
    timeline = adapter(ChannelSpec("x", user_id="2244994945"), {"JIWOOM_X_BEARER_TOKEN": "t0ken"})
    assert urlsplit(timeline.page_url(None)).path == "/2/users/2244994945/tweets"
    assert parse_qs(urlsplit(timeline.page_url("7140dibdnow9c7btw")).query)["pagination_token"] == ["7140dibdnow9c7btw"]

    body = x_page([x_tweet("1001", NOW, ["3_1", "3_2"]), x_tweet("1002", NOW - timedelta(days=1), ["7_1"], 50)],
                  [{"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/media/p1.jpg"},
                   {"media_key": "3_2", "type": "photo", "url": "https://pbs.twimg.com/media/p2.jpg"},
                   x_video("7_1", "https://video.twimg.com/ext_tw_video/1/vid/1280x720/best.mp4")], "b26v89")
    page = search.parse(Reply(200, json.dumps(body).encode()), NOW)
    assert page.cursor == "b26v89"
    photos, video = page.posts
    assert photos.url == "https://x.com/leaker_42/status/1001" and photos.author == "@leaker_42"
    assert photos.posted_at == NOW and photos.images == ["https://pbs.twimg.com/media/p1.jpg",
                                                          "https://pbs.twimg.com/media/p2.jpg"]
    assert photos.extra["view_count"] == "1200" and photos.extra["like_count"] == "9"
    assert video.videos == ["https://video.twimg.com/ext_tw_video/1/vid/1280x720/best.mp4"] and not video.images
    body["meta"].pop("next_token")
    assert search.parse(Reply(200, json.dumps(body).encode()), NOW).cursor is None

    errors = {"errors": [{"title": "Invalid Request", "detail": "One or more parameters to your request was invalid.",
                          "type": "https://api.twitter.com/2/problems/invalid-request"}]}
    problem = {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}
    for status, reply in ((200, errors), (400, errors), (401, problem)):
        with pytest.raises(ChannelError) as failed:
            search.parse(Reply(status, json.dumps(reply).encode()), NOW)
        assert failed.value.retry and ("Invalid Request" in str(failed.value) or "Unauthorized" in str(failed.value))
    reset = int(time.time()) + 30
    with pytest.raises(ChannelError) as limited:
        search.parse(Reply(429, b'{"title":"Too Many Requests","status":429}',
                           {"x-rate-limit-reset": str(reset)}), NOW)
    assert limited.value.retry and 25 <= limited.value.wait_s <= 31

    assert "JIWOOM_X_BEARER_TOKEN" in adapter(ChannelSpec("x", query="q"), {}).unavailable()


def test_channels_in_the_config_are_checked_strictly() -> None:
    config = parse_config({"job": "j", "channels": [
        {"platform": "telegram", "channel": "leak_channel", "pages": 2},
        {"platform": "x", "query": "유출", "pages": 3, "token_env": "MY_X_TOKEN"}]})
    assert [c.key for c in config.channels] == ["telegram:leak_channel", "x:유출"]
    assert config.as_json()["channels"][1]["token_env"] == "MY_X_TOKEN"
    for bad, says in (({"platform": "myspace"}, "'platform' must be one of"),
                      ({"platform": "telegram", "channel": "t.me/x y"}, "public channel's name"),
                      ({"platform": "telegram", "channel": "leak_channel", "query": "q"}, "only 'channel'"),
                      ({"platform": "x"}, "either 'query'"),
                      ({"platform": "x", "query": "q", "user_id": "1"}, "either 'query'"),
                      ({"platform": "x", "user_id": "someone"}, "numeric user id"),
                      ({"platform": "x", "query": "q", "pages": 0}, "'pages' must be"),
                      ({"platform": "x", "query": "q", "pages": "3"}, "'pages' must be"),
                      ({"platform": "x", "query": "q", "bearer": "abc"}, "unknown keys ['bearer']"),
                      ({"platform": "x", "query": "q", "token_env": "Bearer abc"}, "'token_env' must be"),
                      ({"platform": "x", "query": "q", "base_url": "ftp://x"}, "'base_url'")):
        with pytest.raises(ConfigError, match=r"^channels\[0\]") as error:
            parse_config({"job": "j", "channels": [bad]})
        assert says in str(error.value), (bad, str(error.value))
    with pytest.raises(ConfigError, match="twice"):
        parse_config({"job": "j", "channels": [{"platform": "telegram", "channel": "leak_channel"}] * 2})


# --- crawls --------------------------------------------------------------------------------------------------------


world = test_crawl.world  # its module fixture (a real service with registered references): one for this module


def _copies(world: World, corpus: Path, n: int) -> list[tuple[str, bytes]]:
    """`n` transformed copies of the world's registered photo references: (reference name, JPEG bytes)."""
    names = [name for name, path in world.planted.references.items() if path.suffix == ".jpg"][:n]
    assert len(names) == n
    return [(name, transforms.encode(transforms.border(transforms.load(world.planted.references[name])), "JPEG", 85))
            for name in names]


def _video_copy(world: World) -> tuple[str, bytes]:
    """The clip the boards carry of the registered reference video: the bytes a channel reposts."""
    copy = next(c for c in world.planted.copies if c.kind == "video")
    return copy.reference, world.site.get(urlsplit(copy.media_url).path)


def _sighting(world: World, media_url: str) -> tuple[int, str, str, datetime, dict[str, str], set[int]]:
    rows = world.sql("select id, page_url, author, posted_at, extra from sightings where url = %s", (media_url,))
    assert rows, f"{media_url} was not streamed"
    sighting_id, page_url, author, posted_at, extra = rows[0]
    matched = {r[0] for r in world.sql("select reference_id from matches where sighting_id = %s", (sighting_id,))}
    return sighting_id, page_url, author, posted_at, extra, matched


def test_a_telegram_channel_is_crawled_page_by_page_and_its_copies_found(world: World, corpus: Path) -> None:
    with FixtureSite() as tme, FixtureSite() as cdn:
        (photo_ref, photo), (thumb_ref, thumb) = _copies(world, corpus, 2)
        video_ref, video = _video_copy(world)
        cdn.put("/file/photo.jpg", photo, content_type="image/jpeg")
        cdn.put("/file/thumb.jpg", thumb, content_type="image/jpeg")
        cdn.put("/file/clip.mp4", video, content_type="video/mp4")
        times = {n: NOW - timedelta(hours=40 - n) for n in range(1, 40)}
        # Page 1 (the newest): a text post and the video; page 2: the photo; page 3 is past `pages` and unread.
        tme.put("/s/leak_channel", tg_page("leak_channel", [
            tg_message("leak_channel", 31, times[31], "공지: 퍼가지 마세요 (benign fixture)", "501"),
            tg_message("leak_channel", 32, times[32], "유출 영상 (benign fixture)", "1.2K",
                       video=cdn.url("/file/clip.mp4"), thumb=cdn.url("/file/clip_thumb.jpg"))], before=31))
        tme.put("/s/leak_channel?before=31", tg_page("leak_channel", [
            tg_message("leak_channel", 21, times[21], "유출 원본 모음 (benign fixture)", "9.9K",
                       photos=(cdn.url("/file/photo.jpg"),)),
            tg_message("leak_channel", 22, times[22], views="12", thumb=cdn.url("/file/thumb.jpg"))], before=21))
        tme.put("/s/leak_channel?before=21", tg_page("leak_channel", [
            tg_message("leak_channel", 11, times[11], "page three", "1", photos=(cdn.url("/file/never.jpg"),))],
            before=11))
        config = parse_config({"job": "crawl-telegram", "prompt": "학교 유출 영상",
                               "channels": [{"platform": "telegram", "channel": "leak_channel", "pages": 2,
                                             "base_url": tme.origin}],
                               "limits": {"per_host_delay_s": 0, "timeout_s": 10},
                               "allow_networks": ["127.0.0.0/8"], "matcher": world.matcher})
        crawl_in_process(world, config)
        assert [r for r in tme.requests() if r.startswith("/s/")] == ["/s/leak_channel", "/s/leak_channel?before=31"]
        assert cdn.hits("/file/never.jpg") == 0
        assert world.sql("select state from crawl_jobs where id = 'crawl-telegram'") == [("finished",)]
        assert world.sql("select url, depth, state from crawl_frontier where job_id = 'crawl-telegram'"
                         " and kind = 'channel' order by depth") == [
            (f"{tme.origin}/s/leak_channel", 0, "done"), (f"{tme.origin}/s/leak_channel?before=31", 1, "done")]
        for media, reference, number, views in ((cdn.url("/file/clip.mp4"), video_ref, 32, "1.2K"),
                                                (cdn.url("/file/photo.jpg"), photo_ref, 21, "9.9K"),
                                                (cdn.url("/file/thumb.jpg"), thumb_ref, 22, "12")):
            _, page_url, author, posted_at, extra, matched = _sighting(world, media)
            assert page_url == f"{tme.origin}/leak_channel/{number}" and author == "leak_channel"
            assert posted_at == times[number]
            assert (extra["views"], extra["platform"], extra["crawl_job"]) == (views, "telegram", "crawl-telegram")
            assert world.references[reference] in matched, (media, reference)
        assert world.sql("select count(*) from crawl_posts where job_id = 'crawl-telegram'") == [(4,)]


class FakeXApi:
    """X API v2 on loopback: the recent search in two pages (the second rate-limited once), bearer token required."""

    def __init__(self, token: str, pages: dict[str | None, dict[str, Any]]) -> None:
        self.token = token
        self.pages = pages  # next_token (None: the first page) -> the reply
        self.requests: list[tuple[str, dict[str, list[str]], str]] = []
        self.limited = False
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                target = urlsplit(self.path)
                params = parse_qs(target.query)
                api.requests.append((target.path, params, self.headers.get("Authorization", "")))
                cursor = params.get("next_token", [None])[0]
                if self.headers.get("Authorization") != f"Bearer {api.token}":
                    self._reply(401, {"title": "Unauthorized", "type": "about:blank", "status": 401,
                                      "detail": "Unauthorized"})
                elif target.path != "/2/tweets/search/recent" or cursor not in api.pages:
                    self._reply(400, {"errors": [{"title": "Invalid Request", "detail": "bad cursor"}]})
                elif cursor is not None and not api.limited:
                    api.limited = True
                    self._reply(429, {"title": "Too Many Requests", "status": 429},
                                {"x-rate-limit-reset": str(int(time.time()) + 1), "x-rate-limit-remaining": "0"})
                else:
                    self._reply(200, api.pages[cursor])

            def _reply(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeXApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def x_token(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("JIWOOM_X_TEST_TOKEN", "test-bearer-token")
    monkeypatch.delenv("JIWOOM_X_ABSENT_TOKEN", raising=False)
    yield "test-bearer-token"


def test_an_x_search_is_crawled_through_the_api_and_a_channel_without_its_token_skipped(
        world: World, corpus: Path, x_token: str) -> None:
    with FixtureSite() as pbs, FixtureSite() as video_host:
        (photo_ref, photo), = _copies(world, corpus, 1)
        video_ref, video = _video_copy(world)
        pbs.put("/media/photo.jpg", photo, content_type="image/jpeg")
        video_host.put("/ext_tw_video/1/vid/best.mp4", video, content_type="video/mp4")
        low = video_host.url("/ext_tw_video/1/vid/low.mp4")
        first = x_page([x_tweet("2001", NOW - timedelta(hours=1), ["3_1"], impressions=4321),
                        x_tweet("2002", NOW - timedelta(hours=2), [])],
                       [{"media_key": "3_1", "type": "photo", "url": pbs.url("/media/photo.jpg")}], "page2token")
        second = x_page([x_tweet("1990", NOW - timedelta(days=1), ["7_1"], impressions=77)],
                        [x_video("7_1", video_host.url("/ext_tw_video/1/vid/best.mp4"))
                         | {"variants": [{"bit_rate": 256000, "content_type": "video/mp4", "url": low},
                                         {"bit_rate": 2176000, "content_type": "video/mp4",
                                          "url": video_host.url("/ext_tw_video/1/vid/best.mp4")}]}], None)
        with FakeXApi(x_token, {None: first, "page2token": second}) as api:
            config = parse_config({"job": "crawl-x", "prompt": "학교 유출 영상", "channels": [
                {"platform": "x", "query": "유출 has:media", "pages": 3, "base_url": api.origin,
                 "token_env": "JIWOOM_X_TEST_TOKEN"},
                {"platform": "x", "user_id": "12345", "base_url": api.origin, "token_env": "JIWOOM_X_ABSENT_TOKEN"}],
                "limits": {"per_host_delay_s": 0, "timeout_s": 10},
                "allow_networks": ["127.0.0.0/8"], "matcher": world.matcher})
            crawl_in_process(world, config)
        # Two pages (the second asked again after its rate limit), always with the token; the skipped timeline never.
        assert [(path, params.get("next_token"), auth) for path, params, auth in api.requests] == [
            ("/2/tweets/search/recent", None, f"Bearer {x_token}"),
            ("/2/tweets/search/recent", ["page2token"], f"Bearer {x_token}"),
            ("/2/tweets/search/recent", ["page2token"], f"Bearer {x_token}")]
        assert video_host.hits("/ext_tw_video/1/vid/low.mp4") == 0  # only the highest-bitrate variant
        assert world.sql("select state from crawl_jobs where id = 'crawl-x'") == [("finished",)]
        channels = world.sql("select selectors, depth, state, error from crawl_frontier where job_id = 'crawl-x'"
                             " and kind = 'channel' order by selectors, depth")
        assert [row[:3] for row in channels] == [("x:12345", 0, "skipped"), ("x:유출 has:media", 0, "done"),
                                                 ("x:유출 has:media", 1, "done")]
        assert "$JIWOOM_X_ABSENT_TOKEN is not set" in channels[0][3]
        assert "test-bearer-token" not in json.dumps(world.sql("select config from crawl_jobs where id = 'crawl-x'"))
        for media, reference, tweet, posted, views in (
                (pbs.url("/media/photo.jpg"), photo_ref, "2001", NOW - timedelta(hours=1), "4321"),
                (video_host.url("/ext_tw_video/1/vid/best.mp4"), video_ref, "1990", NOW - timedelta(days=1), "77")):
            _, page_url, author, posted_at, extra, matched = _sighting(world, media)
            assert page_url == f"https://x.com/leaker_42/status/{tweet}" and author == "@leaker_42"
            assert posted_at == posted and extra["view_count"] == views and extra["platform"] == "x"
            assert world.references[reference] in matched, (media, reference)
