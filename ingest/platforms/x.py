"""X (Twitter) through its official API v2 only, with the bearer token of the centre's developer account.

A channel is a recent search (``GET /2/tweets/search/recent?query=``) or a user's timeline
(``GET /2/users/:id/tweets``); pages follow ``meta.next_token`` (sent back as ``next_token`` for searches and
``pagination_token`` for timelines). Media come from ``includes.media``: a photo's ``url``, a video's or GIF's
highest-bitrate MP4 variant (its preview image when it has none). Error replies (``{"errors": [...]}`` without
data, problem details ``{"title", "detail", "type", "status"}``) and rate limits (429, ``x-rate-limit-reset``) are
ChannelErrors: the crawler retries the page later.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import urlencode

from ingest.extract import Post
from ingest.platforms import ChannelError, ChannelPage, ChannelSpec, Reply

BASE_URL = "https://api.x.com"
POST_BASE = "https://x.com"
DEFAULT_TOKEN_ENV = "JIWOOM_X_BEARER_TOKEN"
MAX_QUERY = 512  # the recent-search endpoint's limit for most access levels
MAX_RATE_WAIT_S = 16 * 60  # X's windows are 15 minutes
_USER_ID = re.compile(r"^\d{1,20}$")
_FIELDS = {
    "max_results": "100",
    "expansions": "attachments.media_keys,author_id",
    "media.fields": "url,preview_image_url,variants,type",
    "tweet.fields": "created_at,public_metrics,author_id",
    "user.fields": "username",
}


class XChannel:
    name: ClassVar[str] = "x"

    def __init__(self, spec: ChannelSpec, environ: Mapping[str, str]) -> None:
        self.spec = spec
        self.base_url = (spec.base_url or BASE_URL).rstrip("/")
        self.token_env = spec.token_env or DEFAULT_TOKEN_ENV
        self._token = environ.get(self.token_env, "").strip()

    @classmethod
    def check(cls, spec: ChannelSpec) -> None:
        if bool(spec.query) == bool(spec.user_id):
            raise ValueError("x: give either 'query' (a recent search) or 'user_id' (a user's timeline)")
        if spec.channel:
            raise ValueError("x: 'channel' does not apply (use 'query' or 'user_id')")
        if len(spec.query) > MAX_QUERY:
            raise ValueError(f"x: 'query' is over {MAX_QUERY} characters")
        if spec.user_id and not _USER_ID.match(spec.user_id):
            raise ValueError(f"x: 'user_id' must be a numeric user id, got {spec.user_id!r}")

    def unavailable(self) -> str:
        return "" if self._token else f"no X API bearer token: ${self.token_env} is not set"

    def page_url(self, cursor: str | None) -> str:
        if self.spec.query:
            path, params, cursor_name = "/2/tweets/search/recent", {"query": self.spec.query}, "next_token"
        else:
            path, params, cursor_name = f"/2/users/{self.spec.user_id}/tweets", {}, "pagination_token"
        params |= _FIELDS
        if cursor:
            params[cursor_name] = cursor
        return f"{self.base_url}{path}?{urlencode(params)}"

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}", "Accept": "application/json"}

    def parse(self, reply: Reply, now: datetime) -> ChannelPage:
        if reply.status == 429:
            reset = reply.headers.get("x-rate-limit-reset", "")
            wait = float(reset) - time.time() if reset.strip().isdigit() else 60.0
            raise ChannelError(f"x: rate limited (HTTP 429) until {reset or 'unknown'}",
                               wait_s=min(max(wait, 1.0), MAX_RATE_WAIT_S))
        try:
            data = json.loads(reply.body) if reply.body else {}
        except (ValueError, UnicodeDecodeError):
            raise ChannelError(f"x: HTTP {reply.status}, not JSON") from None
        if not isinstance(data, dict):
            raise ChannelError(f"x: HTTP {reply.status}, not a JSON object")
        if reply.status >= 400 or ("errors" in data and "data" not in data and "meta" not in data):
            raise ChannelError(f"x: HTTP {reply.status}: {_problem(data)}")
        includes = data.get("includes") if isinstance(data.get("includes"), dict) else {}
        media = {m.get("media_key"): m for m in _dicts(includes.get("media"))}
        users = {u.get("id"): u for u in _dicts(includes.get("users"))}
        posts = [self._post(tweet, media, users) for tweet in _dicts(data.get("data")) if tweet.get("id")]
        meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
        cursor = meta.get("next_token")
        return ChannelPage(posts, str(cursor) if cursor else None)

    def _post(self, tweet: dict[str, Any], media: dict[Any, dict[str, Any]], users: dict[Any, dict[str, Any]]
              ) -> Post:
        tweet_id = str(tweet["id"])
        user = users.get(tweet.get("author_id"), {})
        username = str(user.get("username") or "")
        posted_text = str(tweet.get("created_at") or "")
        try:
            posted_at = datetime.fromisoformat(posted_text.replace("Z", "+00:00")).astimezone(UTC) \
                if posted_text else None
        except ValueError:
            posted_at = None
        images: list[str] = []
        videos: list[str] = []
        attachments = tweet.get("attachments") if isinstance(tweet.get("attachments"), dict) else {}
        for key in attachments.get("media_keys") or []:
            item = media.get(key) or {}
            if item.get("type") == "photo" and item.get("url"):
                images.append(str(item["url"]))
            elif item.get("type") in ("video", "animated_gif"):
                mp4 = [v for v in _dicts(item.get("variants")) if v.get("content_type") == "video/mp4" and v.get("url")]
                if mp4:
                    videos.append(str(max(mp4, key=lambda v: v.get("bit_rate") or 0)["url"]))
                elif item.get("preview_image_url"):
                    images.append(str(item["preview_image_url"]))
        extra = {"platform": self.name, "tweet_id": tweet_id, "author_id": str(tweet.get("author_id") or "")}
        metrics = tweet.get("public_metrics") if isinstance(tweet.get("public_metrics"), dict) else {}
        for name in ("impression_count", "like_count", "retweet_count", "reply_count", "quote_count"):
            if isinstance(metrics.get(name), int):
                extra[name] = str(metrics[name])
        if "impression_count" in extra:
            extra["view_count"] = extra["impression_count"]
        author = f"@{username}" if username else str(tweet.get("author_id") or "")
        url = f"{POST_BASE}/{username}/status/{tweet_id}" if username else f"{POST_BASE}/i/web/status/{tweet_id}"
        return Post(url=url, author=author, posted_at=posted_at, posted_text=posted_text,
                    text=str(tweet.get("text") or ""), images=images, videos=videos, extra=extra)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _problem(data: dict[str, Any]) -> str:
    """X's error reply as one line: problem details, or the first entries of `errors`."""
    if "title" in data or "detail" in data:
        return f"{data.get('title', '')}: {data.get('detail', '')} ({data.get('type', '')})"[:500]
    errors = _dicts(data.get("errors"))
    if errors:
        return "; ".join(f"{e.get('title', '')}: {e.get('detail') or e.get('message', '')}" for e in errors[:3])[:500]
    return json.dumps(data)[:200]


ADAPTER = XChannel
