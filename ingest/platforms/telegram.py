"""Public Telegram channels through their web preview, ``https://t.me/s/<channel>`` (no account, no API).

A preview page holds the channel's latest messages (``.tgme_widget_message`` with ``data-post="channel/123"``),
oldest first, and a "more" link (``a.tme_messages_more[data-before]``) to the older ones: ``?before=<message id>``.
Photos are ``a.tgme_widget_message_photo_wrap`` with the picture as a CSS background; a video is the ``video`` in
``.tgme_widget_message_video_player``, or only its thumbnail when Telegram serves no file to the preview (large
videos). The media sit on Telegram's CDN (cdn1..cdn5.telesco.pe); the crawler fetches them like any post's media.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urljoin, urlsplit

import lxml.html
from lxml import etree

from ingest.extract import Post
from ingest.platforms import ChannelError, ChannelPage, ChannelSpec, Reply

BASE_URL = "https://t.me"
MAX_BYTES = 5 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{3,31}$")  # Telegram's public usernames: 4 to 32 characters
_BACKGROUND = re.compile(r"background-image\s*:\s*url\(\s*['\"]?([^'\")]+)['\"]?\s*\)", re.I)
_VIEWS = re.compile(r"^([\d.,]+)\s*([KMB]?)$", re.I)
_SCALE = {"": 1, "K": 1_000, "M": 1_000_000, "B": 1_000_000_000}


def _cls(name: str) -> str:
    return f"contains(concat(' ', normalize-space(@class), ' '), ' {name} ')"


_MESSAGES = etree.XPath(f"//div[{_cls('tgme_widget_message')} and @data-post]")
_TIME = etree.XPath(f".//*[{_cls('tgme_widget_message_date')}]//time[@datetime]/@datetime")
_VIEWS_TEXT = etree.XPath(f"string(.//*[{_cls('tgme_widget_message_views')}])")
_TEXT = etree.XPath(f".//div[{_cls('tgme_widget_message_text')}]")
_PHOTOS = etree.XPath(f".//a[{_cls('tgme_widget_message_photo_wrap')}]/@style")
_PLAYERS = etree.XPath(f".//*[{_cls('tgme_widget_message_video_player')}]")
_VIDEO_SRC = etree.XPath(".//video/@src")
_THUMB = etree.XPath(f".//*[{_cls('tgme_widget_message_video_thumb')}]/@style")
_OWNER = etree.XPath(f"string(.//*[{_cls('tgme_widget_message_owner_name')}])")
_SIGNED = etree.XPath(f"string(.//*[{_cls('tgme_widget_message_from_author')}])")
_FORWARDED = etree.XPath(f"string(.//*[{_cls('tgme_widget_message_forwarded_from_name')}])")
_MORE = etree.XPath(f"//a[{_cls('tme_messages_more')}]/@data-before")


def view_count(text: str) -> int | None:
    """Telegram's rounded view counts ("1.2K", "3M", "845") as a number."""
    match = _VIEWS.match(text.strip())
    if not match:
        return None
    try:
        return round(float(match.group(1).replace(",", "")) * _SCALE[match.group(2).upper()])
    except ValueError:
        return None


class TelegramChannel:
    name: ClassVar[str] = "telegram"

    def __init__(self, spec: ChannelSpec, environ: Mapping[str, str]) -> None:
        self.spec = spec
        self.base_url = (spec.base_url or BASE_URL).rstrip("/")

    @classmethod
    def check(cls, spec: ChannelSpec) -> None:
        if not _NAME.match(spec.channel):
            raise ValueError(f"telegram: 'channel' must be a public channel's name (t.me/<name>), got {spec.channel!r}")
        if spec.query or spec.user_id or spec.token_env:
            raise ValueError("telegram: only 'channel', 'pages' and 'base_url' apply (public preview, no token)")

    def unavailable(self) -> str:
        return ""

    def page_url(self, cursor: str | None) -> str:
        url = f"{self.base_url}/s/{self.spec.channel}"
        return f"{url}?before={cursor}" if cursor else url

    def headers(self) -> dict[str, str]:
        return {}

    def parse(self, reply: Reply, now: datetime) -> ChannelPage:
        if reply.status == 429 or reply.status >= 500:
            raise ChannelError(f"telegram: HTTP {reply.status}")
        if reply.status >= 400:
            raise ChannelError(f"telegram: HTTP {reply.status} (no such public channel?)", retry=False)
        if len(reply.body) > MAX_BYTES:
            raise ChannelError(f"telegram: page over {MAX_BYTES} bytes", retry=False)
        try:
            doc = lxml.html.document_fromstring(reply.body, parser=lxml.html.HTMLParser(
                encoding="utf-8", remove_comments=True, no_network=True))
        except (etree.ParserError, ValueError):
            return ChannelPage([], None)  # an empty or garbage page: nothing on it, and nothing after it
        page_url = self.page_url(None)
        posts = [post for message in _MESSAGES(doc) if (post := self._post(message, page_url)) is not None]
        before = [b for b in _MORE(doc) if b.isdigit()]
        ids = [int(p.url.rsplit("/", 1)[1]) for p in posts]
        # Only a cursor older than every post on the page moves on (a page pointing at itself would never end).
        cursor = before[0] if before and (not ids or int(before[0]) <= min(ids)) else None
        return ChannelPage(posts, cursor)

    def _post(self, message: etree._Element, page_url: str) -> Post | None:
        channel, _, number = str(message.get("data-post", "")).partition("/")
        if not number.isdigit() or not channel:
            return None
        posted_text = next(iter(_TIME(message)), "")
        posted_at = None
        if posted_text:
            try:
                posted_at = datetime.fromisoformat(str(posted_text)).astimezone(UTC)
            except ValueError:
                posted_at = None
        images = [url for style in _PHOTOS(message) if (url := _background(str(style), page_url))]
        videos: list[str] = []
        for player in _PLAYERS(message):
            src = next((u for s in _VIDEO_SRC(player) if (u := _absolute(str(s), page_url))), None)
            if src:
                videos.append(src)
            else:  # Telegram shows only the thumbnail of videos it will not serve to the preview
                images += [url for style in _THUMB(player) if (url := _background(str(style), page_url))]
        extra = {"platform": self.name, "channel": channel}
        for key, value in (("channel_title", _OWNER(message)), ("signed_by", _SIGNED(message)),
                           ("forwarded_from", _FORWARDED(message)), ("views", _VIEWS_TEXT(message))):
            if str(value).strip():
                extra[key] = str(value).strip()[:200]
        if (count := view_count(extra.get("views", ""))) is not None:
            extra["view_count"] = str(count)
        return Post(url=f"{self.base_url}/{channel}/{number}", author=channel, posted_at=posted_at,
                    posted_text=str(posted_text), text=_text(message), images=list(dict.fromkeys(images)),
                    videos=list(dict.fromkeys(videos)), extra=extra)


def _text(message: etree._Element) -> str:
    blocks = _TEXT(message)
    if not blocks:
        return ""
    block = blocks[0]
    for br in block.iter("br"):  # line breaks are <br>: keep them as lines
        br.tail = "\n" + (br.tail or "")
    return str(block.text_content()).strip()


def _absolute(url: str, base: str) -> str | None:
    url = urljoin(base, url.strip())
    return url if urlsplit(url).scheme in ("http", "https") and len(url) <= 2048 else None


def _background(style: str, base: str) -> str | None:
    match = _BACKGROUND.search(style)
    return _absolute(match.group(1), base) if match else None


ADAPTER = TelegramChannel
