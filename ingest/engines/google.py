"""Google Programmable Search (Custom Search JSON API): https://developers.google.com/custom-search/v1/reference/rest

`GET {base}/customsearch/v1?key=&cx=&q=&start=&num=` (num ≤10; the API serves the first 100 results), plus
`searchType=image` for images, whose `link` is the image and `image.contextLink` its page. The next page is
`queries.nextPage[0].startIndex`. Errors are `{"error": {"code", "message", "status", "errors": [{"reason"}]}}`;
quota is 429 RESOURCE_EXHAUSTED or 403 with reason rateLimitExceeded / dailyLimitExceeded / userRateLimitExceeded.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from ingest.engines import EngineError, EngineHit, EngineQuery, EngineResults, parse_json, redact, strip_markup
from jiwoom.shared.web import Fetcher, FetchError

_QUOTA_REASONS = frozenset({"rateLimitExceeded", "dailyLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
_LAST_RESULT = 100  # start + num may not pass 100


class Google:
    name = "google"
    default_base_url = "https://www.googleapis.com"
    kinds = ("web", "image")
    max_per_page = 10
    max_pages = 10
    credentials: Mapping[str, str] = {"key": "JIWOOM_GOOGLE_API_KEY", "cx": "JIWOOM_GOOGLE_CX"}

    def url(self, query: EngineQuery) -> str:
        params: dict[str, str | int] = {"q": query.query, "num": query.per_page,
                                        "start": (query.page - 1) * query.per_page + 1}
        if query.kind == "image":
            params["searchType"] = "image"
        return f"{query.base_url.rstrip('/')}/customsearch/v1?{urlencode(params)}"

    async def search(self, fetcher: Fetcher, query: EngineQuery, secrets: Mapping[str, str]) -> EngineResults:
        # The API takes its key in the query string: the frontier keeps url() (no key), errors are redacted.
        keyed = f"{self.url(query)}&{urlencode({'key': secrets['key'], 'cx': secrets['cx']})}"
        try:
            fetched = await fetcher.fetch(keyed, headers={"Accept": "application/json"})
        except FetchError as error:
            raise type(error)(redact(str(error), secrets)) from None
        data = parse_json(self.name, fetched)
        if fetched.status >= 400 or not isinstance(data, dict) or "error" in data:
            raise _error(fetched.status, data, secrets)
        return parse_results(query, data)


def parse_results(query: EngineQuery, data: Mapping[str, Any]) -> EngineResults:
    hits = []
    items = data.get("items")
    for item in items if isinstance(items, list) else []:  # no "items" at all when nothing matched
        link = item.get("link") if isinstance(item, dict) else None
        if not isinstance(link, str) or not link.startswith(("http://", "https://")):
            continue
        title = strip_markup(item.get("title"))
        if query.kind == "image":
            context = (item.get("image") or {}).get("contextLink") if isinstance(item.get("image"), dict) else None
            page = context if isinstance(context, str) and context.startswith(("http://", "https://")) else ""
            hits.append(EngineHit(page=page, image=link, title=title))
        else:
            hits.append(EngineHit(page=link, title=title))
    next_pages = (data.get("queries") or {}).get("nextPage") if isinstance(data.get("queries"), dict) else None
    next_start = next_pages[0].get("startIndex") if isinstance(next_pages, list) and next_pages and \
        isinstance(next_pages[0], dict) else None
    more = isinstance(next_start, int) and next_start + query.per_page - 1 <= _LAST_RESULT
    return EngineResults(tuple(hits), more)


def _error(status: int, data: Any, secrets: Mapping[str, str]) -> EngineError:
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    reasons = {e.get("reason") for e in error.get("errors") or [] if isinstance(e, dict)}
    code = str(error.get("status") or error.get("code") or f"HTTP{status}")
    if reasons - {None}:
        code += f" ({', '.join(sorted(str(r) for r in reasons - {None}))})"
    message = redact(str(error.get("message") or "unexpected answer"), secrets)[:500]
    retry = status == 429 or status >= 500 or code.startswith("RESOURCE_EXHAUSTED") or bool(reasons & _QUOTA_REASONS)
    return EngineError("google", status, code, message, retry=retry)
