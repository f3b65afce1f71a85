"""Naver Search API (web documents and images): https://developers.naver.com/docs/serviceapi/search/web/web.md

`GET {base}/v1/search/webkr.json` or `/v1/search/image` with `query`, `display` (≤100), `start` (1..1000) and
`sort`, authenticated by the X-Naver-Client-Id and X-Naver-Client-Secret headers. Errors are HTTP 4xx/5xx with
`{"errorMessage", "errorCode"}`: SE01-SE06 bad requests, 024 (401) bad keys, 010 (429) quota or rate limit, SE99
(500) the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ingest.engines import EngineError, EngineHit, EngineQuery, EngineResults, parse_json, redact, strip_markup
from jiwoom.shared.web import Fetcher, FetchError

_PATHS = {"web": "/v1/search/webkr.json", "image": "/v1/search/image"}
_LAST_START = 1000  # the API refuses start over 1000


class Naver:
    name = "naver"
    default_base_url = "https://openapi.naver.com"
    kinds = ("web", "image")
    max_per_page = 100
    max_pages = 10
    credentials: Mapping[str, str] = {"client_id": "JIWOOM_NAVER_CLIENT_ID",
                                      "client_secret": "JIWOOM_NAVER_CLIENT_SECRET"}

    def url(self, query: EngineQuery) -> str:
        start = (query.page - 1) * query.per_page + 1
        params = {"query": query.query, "display": query.per_page, "start": start, "sort": "sim"}
        return f"{query.base_url.rstrip('/')}{_PATHS[query.kind]}?{urlencode(params)}"

    async def search(self, fetcher: Fetcher, query: EngineQuery, secrets: Mapping[str, str]) -> EngineResults:
        headers = {"X-Naver-Client-Id": secrets["client_id"], "X-Naver-Client-Secret": secrets["client_secret"],
                   "Accept": "application/json"}
        try:
            fetched = await fetcher.fetch(self.url(query), headers=headers)
        except FetchError as error:
            raise type(error)(redact(str(error), secrets)) from None
        data = parse_json(self.name, fetched)
        if fetched.status >= 400 or not isinstance(data, dict) or not isinstance(data.get("items"), list):
            raise _error(fetched.status, data)
        return parse_results(query, data)


def parse_results(query: EngineQuery, data: Mapping[str, Any]) -> EngineResults:
    hits = []
    for item in data["items"]:
        link = item.get("link") if isinstance(item, dict) else None
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            continue
        title = strip_markup(item.get("title"))
        # Image items give the image only (`link`; `thumbnail` is Naver's own copy), no page.
        hits.append(EngineHit(image=link, title=title) if query.kind == "image" else EngineHit(page=link, title=title))
    start = _int(data.get("start"), (query.page - 1) * query.per_page + 1)
    shown = _int(data.get("display"), len(data["items"]))
    next_start = start + max(shown, 1)
    more = bool(data["items"]) and next_start <= min(_int(data.get("total"), 0), _LAST_START)
    return EngineResults(tuple(hits), more)


def _int(value: Any, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _error(status: int, data: Any) -> EngineError:
    body = data if isinstance(data, dict) else {}
    code = str(body.get("errorCode") or f"HTTP{status}")
    message = str(body.get("errorMessage") or "unexpected answer")[:500]
    # 010 is the daily quota or the per-second rate limit (HTTP 429); SE99 and 5xx are Naver's own failures.
    retry = status == 429 or status >= 500 or code in ("010", "SE99")
    return EngineError("naver", status, code, message, retry=retry)
