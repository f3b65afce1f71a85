"""SNS channels: one adapter module per platform behind one interface, so the next platform is one more module.

An adapter turns a channel (a public Telegram channel, an X search or timeline) into pages of posts: it names the
URL of a page (the first, or the one after a cursor), the headers the request needs, and parses the reply into
`ingest.extract.Post`s with their media URLs and the cursor of the next (older) page. The crawler does the fetching
(jiwoom/shared/web.py), the frontier rows (kind 'channel'), scoring and the media; adapters do no I/O of their own.

A module here registers itself by defining ``ADAPTER``, a class with a unique ``name`` (the config's ``platform``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit

from ingest.extract import Post

MAX_PAGES = 1000  # per channel: a typo's 10**9 would never end
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")


@dataclass(frozen=True)
class ChannelSpec:
    """One channel of a crawl config (`channels:`); which fields apply depends on the platform."""

    platform: str
    channel: str = ""  # telegram: the channel's public name (t.me/<channel>)
    query: str = ""  # x: a recent-search query
    user_id: str = ""  # x: a numeric user id, whose timeline is read
    pages: int = 5  # pages of posts read, newest first
    base_url: str = ""  # the platform's own when empty (tests: a loopback fixture)
    token_env: str = ""  # platforms with an API token: the environment variable holding it

    @property
    def key(self) -> str:
        """Names the channel in the frontier (rows' `selectors`), stable across runs of the job."""
        return f"{self.platform}:" + "|".join(v for v in (self.channel, self.query, self.user_id) if v)


@dataclass(frozen=True)
class Reply:
    """What the fetcher got for a channel page."""

    status: int
    body: bytes
    headers: Mapping[str, str] = field(default_factory=dict)  # names lower-cased


@dataclass
class ChannelPage:
    posts: list[Post]
    cursor: str | None  # the next (older) page's cursor; None when there is none


class ChannelError(Exception):
    """A page the platform would not give now (rate limit, API error): the row is retried, after `wait_s`."""

    def __init__(self, message: str, *, retry: bool = True, wait_s: float = 0.0) -> None:
        super().__init__(message)
        self.retry = retry
        self.wait_s = wait_s


class Platform(Protocol):
    name: ClassVar[str]
    spec: ChannelSpec

    def __init__(self, spec: ChannelSpec, environ: Mapping[str, str]) -> None: ...

    @classmethod
    def check(cls, spec: ChannelSpec) -> None:
        """Raise ValueError when `spec` is not a usable channel of this platform (called when the config loads)."""

    def unavailable(self) -> str:
        """Why the channel cannot be crawled now (a missing token), '' when it can."""

    def page_url(self, cursor: str | None) -> str:
        """The URL of the first page (cursor None) or of the page after `cursor`."""

    def headers(self) -> dict[str, str]:
        """Request headers for the platform's pages (sent to its own origin only)."""

    def parse(self, reply: Reply, now: datetime) -> ChannelPage:
        """The posts of one page; raises ChannelError for replies that are not pages."""


@functools.cache
def registry() -> dict[str, type[Platform]]:
    """Every adapter module in this package, by platform name."""
    found: dict[str, type[Platform]] = {}
    for module in pkgutil.iter_modules(__path__):
        adapter = importlib.import_module(f"{__name__}.{module.name}").ADAPTER
        found[adapter.name] = adapter
    return found


def channel_spec(data: Mapping[str, Any]) -> ChannelSpec:
    """A config's channel entry, checked; ValueError says what is wrong (keys are checked by the caller)."""
    platforms = registry()
    platform = data.get("platform")
    if platform not in platforms:
        raise ValueError(f"'platform' must be one of {sorted(platforms)}, got {platform!r}")
    values: dict[str, Any] = {"platform": platform}
    for f in fields(ChannelSpec):
        if f.name == "platform" or f.name not in data:
            continue
        value = data[f.name]
        if f.name == "pages":
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PAGES:
                raise ValueError(f"'pages' must be a whole number from 1 to {MAX_PAGES}, got {value!r}")
        elif not isinstance(value, str):
            raise ValueError(f"{f.name!r} must be a string, got {type(value).__name__}")
        values[f.name] = value.strip() if isinstance(value, str) else value
    spec = ChannelSpec(**values)
    if spec.base_url and (urlsplit(spec.base_url).scheme not in ("http", "https")
                          or not urlsplit(spec.base_url).hostname):
        raise ValueError(f"'base_url' is not an http(s) URL: {spec.base_url!r}")
    if spec.token_env and not _ENV_NAME.match(spec.token_env):
        raise ValueError(f"'token_env' must be an environment variable's name, got {spec.token_env!r}")
    platforms[platform].check(spec)
    return spec


def adapter(spec: ChannelSpec, environ: Mapping[str, str]) -> Platform:
    return registry()[spec.platform](spec, environ)
