"""Search engines asked through their official APIs, so an officer's keywords find sites nobody listed.

One interface for every engine: given the guarded fetcher (jiwoom/shared/web.py), a query and a page number, an
engine answers the hits (pages to crawl; for image results the image and, where the API gives it, its page) and
whether another page exists. Each engine is one small module registered in ENGINES. Credentials come from
environment variables (named in the job config, with per-engine defaults), never from the job file itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from jiwoom.shared.web import Fetched, Fetcher

__all__ = ["ENGINES", "EngineError", "EngineHit", "EngineQuery", "EngineResults", "SearchEngine", "parse_json",
           "redact", "strip_markup"]

_TAGS = re.compile(r"<[^>]{0,200}>")


@dataclass(frozen=True)
class EngineQuery:
    kind: str  # "web" or "image"
    query: str
    page: int  # 1-based
    per_page: int
    base_url: str  # the API's origin (tests: a loopback fake)


@dataclass(frozen=True)
class EngineHit:
    page: str = ""  # a page to crawl ('' for an image result whose API gives no page)
    image: str = ""  # an image result's own URL
    title: str = ""  # the engine's title, markup stripped


@dataclass(frozen=True)
class EngineResults:
    hits: tuple[EngineHit, ...]
    next_page: bool


class EngineError(Exception):
    """The API answered with an error: `code` and `message` as the engine gave them; `retry` for quota, rate
    limits and server errors (worth asking again later), not for bad queries or bad keys."""

    def __init__(self, engine: str, status: int, code: str, message: str, *, retry: bool) -> None:
        super().__init__(f"{engine} HTTP {status} {code}: {message}")
        self.engine, self.status, self.code, self.message, self.retry = engine, status, code, message, retry


class SearchEngine(Protocol):
    name: str
    default_base_url: str
    kinds: tuple[str, ...]
    max_per_page: int
    max_pages: int  # the deepest page the API serves at max_per_page
    credentials: Mapping[str, str]  # credential -> its default environment variable

    def url(self, query: EngineQuery) -> str:
        """The request URL without credentials: the frontier row's URL, safe to store and log."""

    async def search(self, fetcher: Fetcher, query: EngineQuery, secrets: Mapping[str, str]) -> EngineResults:
        """Ask the API; raises EngineError for its error replies, FetchError (credentials redacted) otherwise."""


def strip_markup(text: Any) -> str:
    # Both APIs wrap the matched words in <b>…</b>; entities are left alone (titles are only shown, never parsed).
    return _TAGS.sub("", text).strip() if isinstance(text, str) else ""


def redact(text: str, secrets: Mapping[str, str]) -> str:
    """`text` with every credential value replaced, for error messages that quote a request URL."""
    for value in secrets.values():
        if value:
            text = text.replace(value, "***")
    return text


def parse_json(engine: str, fetched: Fetched) -> Any:
    try:
        return json.loads(fetched.decoded)
    except (ValueError, UnicodeDecodeError):
        raise EngineError(engine, fetched.status, "not-json", f"{fetched.header('content-type') or ''} body of"
                          f" {len(fetched.decoded)} bytes", retry=fetched.status >= 500) from None


def _registry() -> dict[str, SearchEngine]:
    from ingest.engines.google import Google
    from ingest.engines.naver import Naver

    return {engine.name: engine for engine in (Naver(), Google())}


ENGINES: dict[str, SearchEngine] = _registry()
