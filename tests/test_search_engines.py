"""Search engines through their APIs (ingest/engines/): fake Naver and Google APIs on loopback that check the
credentials and parameters and answer in each API's documented JSON (results, paging, a bad query, an auth failure,
a quota reply); the adapters' parsing and paging; the job config; and one crawl where the keywords go to both
engines, which alone point to a site holding a planted copy, while an engine without keys is skipped and says so.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg
import pytest

from bench import transforms
from bench.fixture_site import FixtureSite
from ingest.config import ConfigError, parse_config
from ingest.engines import ENGINES, EngineError, EngineQuery
from jiwoom.shared.web import Fetcher, FetchPolicy
from tests.conftest import publish_post
from tests.test_crawl import World, world  # noqa: F401  (the crawl tests' service, boards and database)

NAVER_ID, NAVER_SECRET = "test-naver-id", "test-naver-secret"
GOOGLE_KEY, GOOGLE_CX = "test-google-key-0123", "test-cx"
LOOPBACK = FetchPolicy(allow_networks=("127.0.0.0/8",), timeout_s=5.0)

Answer = tuple[int, dict[str, Any]]


@dataclass
class Request:
    path: str
    params: dict[str, str]
    headers: dict[str, str]


@dataclass
class FakeApi:
    """A loopback JSON API: `answer(request)` gives the status and body; every request is kept."""

    answer: Callable[[Request], Answer]
    requests: list[Request] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None
    redirect_to: str = ""  # when set, every request is answered 302 there

    def __enter__(self) -> FakeApi:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                target = urlsplit(self.path)
                request = Request(target.path, {k: v[0] for k, v in parse_qs(target.query).items()},
                                  {k.lower(): v for k, v in self.headers.items()})
                api.requests.append(request)
                if api.redirect_to:
                    self.send_response(302)
                    self.send_header("Location", api.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status, body = api.answer(request)
                data = json.dumps(body, ensure_ascii=False).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.shutdown()
        self.server.server_close()

    @property
    def origin(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"


def naver_api(results: Callable[[str, str, int], tuple[list[dict[str, Any]], int]]) -> FakeApi:
    """Naver's search API: `results(kind, query, start)` gives the items and the total; the queries "quota" and
    "bad" get the quota and bad-query replies, wrong keys the auth failure (as the API documents them)."""

    def answer(request: Request) -> Answer:
        if (request.headers.get("x-naver-client-id"), request.headers.get("x-naver-client-secret")) != \
                (NAVER_ID, NAVER_SECRET):
            return 401, {"errorMessage": "Authentication failed. (인증에 실패했습니다.)", "errorCode": "024"}
        kind = {"/v1/search/webkr.json": "web", "/v1/search/image": "image"}.get(request.path)
        query, start, display = request.params.get("query", ""), int(request.params.get("start", 1)), \
            int(request.params.get("display", 10))
        if kind is None:
            return 404, {"errorMessage": "Not Exist Client ID", "errorCode": "404"}
        if query == "quota":
            return 429, {"errorMessage": "Request limit exceeded (호출 한도가 초과되었습니다.)", "errorCode": "010"}
        if not query or query == "bad" or not 1 <= display <= 100 or not 1 <= start <= 1000:
            return 400, {"errorMessage": "Incorrect query request (잘못된 쿼리요청입니다.)", "errorCode": "SE01"}
        items, total = results(kind, query, start)
        return 200, {"lastBuildDate": "Sat, 21 Nov 2026 14:03:00 +0900", "total": total, "start": start,
                     "display": len(items), "items": items}

    return FakeApi(answer)


def google_api(results: Callable[[str, str, int], tuple[list[dict[str, Any]], int]]) -> FakeApi:
    """Google's Custom Search JSON API: `results(kind, q, start)` gives the items and the total; the query
    "quota" gets the 429 quota reply, "daily" the 403 daily limit, "bad" a 400, a wrong key a 400 bad key."""

    def error(code: int, status: str, message: str, reason: str) -> Answer:
        return code, {"error": {"code": code, "message": message, "status": status,
                                "errors": [{"message": message, "domain": "global", "reason": reason}]}}

    def answer(request: Request) -> Answer:
        p = request.params
        if request.path != "/customsearch/v1":
            return error(404, "NOT_FOUND", "Not found", "notFound")
        if p.get("key") != GOOGLE_KEY or p.get("cx") != GOOGLE_CX:
            return error(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", "badRequest")
        q, start, num = p.get("q", ""), int(p.get("start", 1)), int(p.get("num", 10))
        if q == "quota":
            return error(429, "RESOURCE_EXHAUSTED", "Quota exceeded for quota metric 'Queries'", "rateLimitExceeded")
        if q == "daily":
            return error(403, "PERMISSION_DENIED", "Daily Limit Exceeded", "dailyLimitExceeded")
        if not q or q == "bad" or not 1 <= num <= 10 or start + num > 101:
            return error(400, "INVALID_ARGUMENT", "Request contains an invalid argument.", "invalid")
        kind = "image" if p.get("searchType") == "image" else "web"
        items, total = results(kind, q, start)
        queries: dict[str, Any] = {"request": [{"startIndex": start, "count": num, "searchTerms": q}]}
        if start + num <= min(total, 100):
            queries["nextPage"] = [{"startIndex": start + num, "count": num, "searchTerms": q}]
        return 200, {"kind": "customsearch#search", "queries": queries,
                     "searchInformation": {"totalResults": str(total)}, **({"items": items} if items else {})}

    return FakeApi(answer)


def web_items(n: int, start: int) -> list[dict[str, Any]]:
    return [{"title": f"<b>결과</b> {i}", "link": f"https://site{i}.example/post/{i}",
             "description": "설명 <b>결과</b>"} for i in range(start, start + n)]


def search(api: FakeApi, engine: str, kind: str, query: str, page: int = 1, per_page: int = 10,
           secrets: dict[str, str] | None = None) -> Any:
    async def go() -> Any:
        async with Fetcher(LOOPBACK) as fetcher:
            keys = secrets or ({"client_id": NAVER_ID, "client_secret": NAVER_SECRET} if engine == "naver"
                               else {"key": GOOGLE_KEY, "cx": GOOGLE_CX})
            return await ENGINES[engine].search(fetcher, EngineQuery(kind, query, page, per_page, api.origin), keys)

    return asyncio.run(go())


# -- the adapters ---------------------------------------------------------------------------------------------------


def test_naver_web_results_paging_and_headers() -> None:
    with naver_api(lambda kind, q, start: (web_items(min(10, 15 - start + 1), start), 15)) as api:
        first = search(api, "naver", "web", "학교 유출")
        second = search(api, "naver", "web", "학교 유출", page=2)
    assert [h.page for h in first.hits] == [f"https://site{i}.example/post/{i}" for i in range(1, 11)]
    assert first.hits[0].title == "결과 1" and not first.hits[0].image  # <b> markup stripped
    assert first.next_page and not second.next_page and len(second.hits) == 5
    assert [r.params for r in api.requests] == [
        {"query": "학교 유출", "display": "10", "start": "1", "sort": "sim"},
        {"query": "학교 유출", "display": "10", "start": "11", "sort": "sim"}]
    assert api.requests[0].headers["x-naver-client-id"] == NAVER_ID


def test_naver_image_results_are_images_without_a_page() -> None:
    items = [{"title": "<b>사진</b>", "link": "https://img.example/a.jpg", "thumbnail": "https://search.pstatic.net/t",
              "sizeheight": "600", "sizewidth": "800"}, {"title": "bad", "link": "javascript:alert(1)"}]
    with naver_api(lambda kind, q, start: (items if kind == "image" else [], 2)) as api:
        results = search(api, "naver", "image", "사진")
    assert [(h.page, h.image, h.title) for h in results.hits] == [("", "https://img.example/a.jpg", "사진")]
    assert not results.next_page and api.requests[0].path == "/v1/search/image"


def test_naver_errors_carry_the_apis_code_and_only_quota_is_retried() -> None:
    with naver_api(lambda kind, q, start: ([], 0)) as api:
        with pytest.raises(EngineError) as bad:
            search(api, "naver", "web", "bad")
        with pytest.raises(EngineError) as quota:
            search(api, "naver", "web", "quota")
        with pytest.raises(EngineError) as auth:
            search(api, "naver", "web", "학교", secrets={"client_id": NAVER_ID, "client_secret": "wrong"})
        empty = search(api, "naver", "web", "아무것도")
    assert (bad.value.status, bad.value.code, bad.value.retry) == (400, "SE01", False)
    assert (quota.value.status, quota.value.code, quota.value.retry) == (429, "010", True)
    assert (auth.value.status, auth.value.code, auth.value.retry) == (401, "024", False)
    assert "wrong" not in str(auth.value)
    assert empty.hits == () and not empty.next_page


def test_google_web_and_image_results_and_paging() -> None:
    def results(kind: str, q: str, start: int) -> tuple[list[dict[str, Any]], int]:
        if kind == "image":
            return [{"title": "<b>img</b>", "link": "https://cdn.example/1.jpg", "displayLink": "board.example",
                     "image": {"contextLink": "https://board.example/post/1", "height": 600, "width": 800}},
                    {"title": "no page", "link": "https://cdn.example/2.jpg", "image": {}}], 2
        return [{"title": f"<b>t</b>{i}", "link": f"https://g{i}.example/", "displayLink": f"g{i}.example",
                 "snippet": "s"} for i in range(start, min(start + 10, 26))], 25

    with google_api(results) as api:
        pages = [search(api, "google", "web", "leak", page=p) for p in (1, 2, 3)]
        images = search(api, "google", "image", "leak")
    assert [len(p.hits) for p in pages] == [10, 10, 5] and [p.next_page for p in pages] == [True, True, False]
    assert pages[0].hits[0].page == "https://g1.example/" and pages[0].hits[0].title == "t1"
    assert [(h.page, h.image) for h in images.hits] == [("https://board.example/post/1", "https://cdn.example/1.jpg"),
                                                        ("", "https://cdn.example/2.jpg")]
    assert [(r.params["start"], r.params["num"]) for r in api.requests[:3]] == [("1", "10"), ("11", "10"),
                                                                               ("21", "10")]
    assert api.requests[3].params["searchType"] == "image" and "searchType" not in api.requests[0].params
    # The key travels in the request only: the frontier's URL for the same query has none.
    assert GOOGLE_KEY not in ENGINES["google"].url(EngineQuery("web", "leak", 1, 10, api.origin))


def test_google_errors_quota_is_retried_bad_requests_and_keys_are_not() -> None:
    with google_api(lambda kind, q, start: ([], 0)) as api:
        raised = {}
        for q in ("quota", "daily", "bad"):
            with pytest.raises(EngineError) as error:
                search(api, "google", "web", q)
            raised[q] = error.value
        with pytest.raises(EngineError) as bad_key:
            search(api, "google", "web", "leak", secrets={"key": "wrong-key-777", "cx": GOOGLE_CX})
        empty = search(api, "google", "web", "nothing")
    assert (raised["quota"].status, raised["quota"].retry) == (429, True)
    assert raised["quota"].code.startswith("RESOURCE_EXHAUSTED")
    assert (raised["daily"].status, raised["daily"].retry) == (403, True) and "dailyLimitExceeded" in \
        raised["daily"].code
    assert (raised["bad"].status, raised["bad"].retry) == (400, False)
    assert bad_key.value.retry is False and "API key not valid" in bad_key.value.message
    assert "wrong-key-777" not in str(bad_key.value)
    assert empty.hits == () and not empty.next_page


def test_credentials_headers_are_not_sent_to_another_origin_on_a_redirect() -> None:
    with FakeApi(lambda r: (200, {})) as elsewhere, FakeApi(lambda r: (200, {})) as api:
        api.redirect_to = elsewhere.origin + "/landing"

        async def go() -> Any:
            async with Fetcher(LOOPBACK) as fetcher:
                return await fetcher.fetch(api.origin + "/v1/search/webkr.json",
                                           headers={"X-Naver-Client-Secret": NAVER_SECRET})

        fetched = asyncio.run(go())
    assert fetched.status == 200 and fetched.final_url == elsewhere.origin + "/landing"
    assert api.requests[0].headers["x-naver-client-secret"] == NAVER_SECRET
    assert "x-naver-client-secret" not in elsewhere.requests[0].headers


# -- the job config -------------------------------------------------------------------------------------------------


def test_engine_config_is_validated_strictly() -> None:
    config = parse_config({"job": "j", "engines": [
        {"engine": "naver", "kind": "image", "keywords": 3, "pages": 2, "per_page": 50},
        {"engine": "google", "env": {"key": "MY_GOOGLE_KEY"}, "base_url": "http://127.0.0.1:9/"}]})
    naver, google = config.engines
    assert (naver.engine, naver.kind, naver.keywords, naver.pages, naver.per_page) == ("naver", "image", 3, 2, 50)
    assert naver.env_names() == {"client_id": "JIWOOM_NAVER_CLIENT_ID", "client_secret": "JIWOOM_NAVER_CLIENT_SECRET"}
    assert google.env_names() == {"key": "MY_GOOGLE_KEY", "cx": "JIWOOM_GOOGLE_CX"} and google.kind == "web"
    bad = [({"engine": "bing"}, "engines[0].engine"), ({"engine": "naver", "kind": "video"}, "engines[0].kind"),
           ({"engine": "google", "per_page": 20}, "engines[0].per_page"),
           ({"engine": "naver", "pages": 0}, "engines[0].pages"),
           ({"engine": "naver", "keywords": "5"}, "engines[0].keywords"),
           ({"engine": "naver", "pages": 10, "per_page": 100, "extra": 1}, "unknown keys"),
           ({"engine": "google", "env": {"key": "AIzaSy-pasted-key"}}, "engines[0].env"),
           ({"engine": "google", "env": {"token": "X"}}, "engines[0].env"),
           ({"engine": "naver", "base_url": "ftp://x"}, "engines[0].base_url")]
    for entry, where in bad:
        with pytest.raises(ConfigError, match=where.replace("[", r"\[").replace("]", r"\]")) as error:
            parse_config({"job": "j", "engines": [entry]})
        assert "pasted" not in str(error.value)  # a key pasted where a name goes is not echoed
    with pytest.raises(ConfigError, match="seeds, search endpoints, engines"):
        parse_config({"job": "j"})


# -- a crawl --------------------------------------------------------------------------------------------------------


def keyword_queries(prompt: str) -> list[str]:
    """The queries a prompt's keywords give, in the order the crawl asks them."""
    from ingest.keywords import Lexicon, default_encoder, expand
    from ingest.normalise import Normaliser

    expansion = expand(prompt, Lexicon.load(), default_encoder(), Normaliser.load())
    return [k.text for k in expansion.keywords if k.kind != "obfuscation"]


def crawl_with_stats(world: World, config: Any) -> dict[str, Any]:  # noqa: F811
    """Run the job in this process (as tests/test_crawl.py's crawl_in_process does) and return its stats."""
    from psycopg_pool import ConnectionPool

    from ingest.crawler import Crawl, start_job
    from ingest.keywords import Lexicon, default_encoder, expand
    from ingest.normalise import Normaliser
    from ingest.stream import MatchStreamer

    normaliser = Normaliser.load()
    expansion = expand(config.prompt, Lexicon.load(), default_encoder(), normaliser)
    with psycopg.connect(world.database_url, autocommit=True) as conn:
        start_job(conn, config, expansion, "test")

    async def crawl() -> dict[str, Any]:
        with ConnectionPool(world.database_url, min_size=1, max_size=4) as pool:
            async with MatchStreamer(world.matcher, world.env["JIWOOM_CRAWLER_TOKEN"]) as streamer:
                return (await Crawl(config, pool, streamer, expansion, normaliser).run()).as_dict()

    return asyncio.run(crawl())


def test_engines_bring_in_a_site_and_an_engine_without_keys_is_skipped(
        world: World, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """No seeds: Naver's web search (two pages) and Google's image search point to a site nobody gave; its posts
    are crawled and the planted copies matched with their post metadata. Google's quota runs out for the second
    keyword (asked twice, then failed with the API's code); Naver's image search has no keys and is skipped."""
    monkeypatch.setenv("JIWOOM_NAVER_CLIENT_ID", NAVER_ID)
    monkeypatch.setenv("JIWOOM_NAVER_CLIENT_SECRET", NAVER_SECRET)
    monkeypatch.setenv("JIWOOM_GOOGLE_API_KEY", GOOGLE_KEY)
    monkeypatch.setenv("JIWOOM_GOOGLE_CX", GOOGLE_CX)
    monkeypatch.delenv("JIWOOM_TEST_UNSET_ID", raising=False)
    quota_query: list[str] = []
    with FixtureSite() as found:
        name, path = next((n, p) for n, p in world.planted.references.items() if p.suffix == ".jpg")
        image = transforms.border(transforms.load(path))
        publish_post(found, "/board/7", "/img/7.jpg", transforms.encode(image, "JPEG", 85),
                     title="ㅇㅑ동 유출 (benign fixture)")
        publish_post(found, "/board/8", "/img/8.jpg", transforms.encode(image, "JPEG", 70),
                     title="학교 영상 다시 올림 (benign fixture)")
        origin = found.origin  # for the checks after the site is down

        def at(path: str) -> str:
            return origin + path

        def naver_results(kind: str, q: str, start: int) -> tuple[list[dict[str, Any]], int]:
            link = found.url("/board/7") if start == 1 else "http://10.0.0.1/x"
            return [{"title": f"<b>{q}</b>", "link": link, "description": "..."}], 2

        def google_results(kind: str, q: str, start: int) -> tuple[list[dict[str, Any]], int]:
            assert kind == "image"
            return [{"title": "<b>사진</b>", "link": found.url("/img/8.jpg"),
                     "image": {"contextLink": found.url("/board/8")}}], 1

        naver, google = naver_api(naver_results), google_api(google_results)
        inner = google.answer
        google.answer = lambda r: inner(r) if r.params.get("q") not in quota_query else \
            inner(Request(r.path, {**r.params, "q": "quota"}, r.headers))
        with naver, google:
            config = parse_config({
                "job": "crawl-engines", "prompt": "학교 유출 영상",
                "engines": [
                    {"engine": "naver", "kind": "web", "keywords": 2, "pages": 2, "per_page": 1,
                     "base_url": naver.origin},
                    {"engine": "google", "kind": "image", "keywords": 2, "base_url": google.origin},
                    {"engine": "naver", "kind": "image", "keywords": 2, "base_url": naver.origin,
                     "env": {"client_id": "JIWOOM_TEST_UNSET_ID"}}],
                "limits": {"per_host_delay_s": 0, "timeout_s": 5, "max_attempts": 2},
                "allow_networks": ["127.0.0.0/8"], "matcher": world.matcher})
            queries = keyword_queries(config.prompt)
            quota_query.append(queries[1])  # Google's quota runs out for the second keyword
            stats = crawl_with_stats(world, config)

    # Naver web: both keywords, two pages each (start 1 and 2 with one result a page), keys in the headers.
    assert sorted((r.params["query"], r.params["start"]) for r in naver.requests) == sorted(
        (q, s) for q in queries[:2] for s in ("1", "2"))
    assert all(r.path == "/v1/search/webkr.json" for r in naver.requests)  # the image entry never asked
    # Google: the second keyword hit the quota, asked max_attempts times, then failed with the API's code.
    assert [r.params["q"] for r in google.requests].count(queries[1]) == 2
    (state, error), = world.sql("select state, error from crawl_frontier where job_id = 'crawl-engines' and"
                                " kind = 'engine' and post->>'query' = %s and post->>'engine' = 'google'",
                                (queries[1],))
    assert state == "failed" and "429" in error and "RESOURCE_EXHAUSTED" in error and GOOGLE_KEY not in error
    # The engine without keys: skipped, the reason counted in the stats and recorded on its rows.
    reason = "naver image: no key ($JIWOOM_TEST_UNSET_ID not set)"
    assert stats["skipped"] == {reason: 2}
    assert world.sql("select state, error from crawl_frontier where job_id = 'crawl-engines' and kind = 'engine'"
                     " and post->>'entry' = '2'") == [("skipped", reason)] * 2
    assert not world.sql("select url from crawl_frontier where job_id = 'crawl-engines' and url like %s",
                         (f"%{GOOGLE_KEY}%",))
    # The site only the engines named joined the scope; both posts' copies were matched with their metadata.
    assert origin.removeprefix("http://") in world.sql(
        "select hosts from crawl_jobs where id = 'crawl-engines'")[0][0]
    for post, title in (("/board/7", "ㅇㅑ동 유출 (benign fixture)"),
                        ("/board/8", "학교 영상 다시 올림 (benign fixture)")):
        rows = world.sql("select s.id, s.title, s.author from sightings s where s.page_url = %s", (at(post),))
        assert rows and rows[0][1:] == (title, "익명123"), (post, rows)
        assert world.references[name] in {r[0] for r in world.sql(
            "select reference_id from matches where sighting_id = %s", (rows[0][0],))}
    # Google's image was on its page's post: one media row, from the page, not a second one from the engine.
    assert world.sql("select discovered_from from crawl_frontier where job_id = 'crawl-engines' and kind = 'media'"
                     " and url = %s", (at("/img/8.jpg"),)) == [(at("/board/8"),)]
    assert world.sql("select state from crawl_frontier where url = 'http://10.0.0.1/x'") in ([], [("failed",)])
    assert world.sql("select state from crawl_jobs where id = 'crawl-engines'") == [("finished",)]
