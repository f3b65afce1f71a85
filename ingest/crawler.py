"""The crawl: seeds and search results to pages to posts to media, streamed to the Matcher.

The frontier is in PostgreSQL (migration 0004): every URL is a row, claimed ('fetching') before it is fetched and
finished ('done', 'failed') in the same transaction that records what it gave (posts, links, media results). A crash
leaves some rows 'fetching'; the next run of the same job puts them back to 'pending' and goes on, so finished
pages are never fetched again.

Fetches go through jiwoom/shared/web.py (private, loopback and link-local addresses refused at connect time unless
allow-listed; byte, time and redirect limits), with a per-host concurrency and spacing on top. Only the seeds'
hosts and hosts a search endpoint returned are followed.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from psycopg import Connection
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool

from ingest.config import CrawlConfig, EngineSearch
from ingest.engines import ENGINES, EngineError, EngineHit, EngineQuery
from ingest.extract import Page, Post, SiteSelectors, extract_page
from ingest.keywords import Expansion, score_text
from ingest.normalise import Normaliser
from ingest.platforms import ChannelError, Platform, Reply, adapter
from ingest.progress import Progress
from ingest.render import Renderer, RenderError, RenderLimits
from ingest.stream import MatchStreamer, StreamFailed
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from jiwoom.shared.web import Fetcher, FetchError, FetchPolicy, FetchRefused, site_of

log = logging.getLogger(__name__)
USER_AGENT = "jiwoom-crawler/0.1 (+victim-support takedown crawler)"
PAGE_KINDS = ("seed", "search", "page")
MAX_TEXT_CHARS = 4000  # post text sent with each item: enough for evidence and scoring
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class CrawlStats:
    pages: int = 0
    media: int = 0
    posts: int = 0
    matches: int = 0
    failed: int = 0
    rendered: int = 0  # pages taken through headless Chromium (render mode)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> rows not fetched (an engine without keys)
    started: float = 0.0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        seconds = self.seconds or float("inf")
        return {"pages": self.pages, "media": self.media, "posts": self.posts, "matches": self.matches,
                "failed": self.failed, "skipped": dict(self.skipped), "seconds": round(self.seconds, 2),
                "pages_per_s": round(self.pages / seconds, 2), "media_per_s": round(self.media / seconds, 2),
                "rendered": self.rendered, "rendered_per_s": round(self.rendered / seconds, 2)}


class HostGate:
    """At most `concurrency` requests in flight per host, their starts at least `delay_s` apart."""

    def __init__(self, concurrency: int, delay_s: float) -> None:
        self.concurrency = concurrency
        self.delay_s = delay_s
        self._slots: dict[str, asyncio.Semaphore] = {}
        self._next_start: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        semaphore = self._slots.setdefault(host, asyncio.Semaphore(self.concurrency))
        async with semaphore:
            loop = asyncio.get_running_loop()
            start = max(loop.time(), self._next_start.get(host, 0.0))
            self._next_start[host] = start + self.delay_s
            await asyncio.sleep(start - loop.time())
            yield


@dataclass(frozen=True)
class FrontierRow:
    id: int
    url: str
    kind: str
    host: str
    depth: int
    attempts: int
    post: dict[str, Any] | None
    selectors: str


# -- the job and its frontier ---------------------------------------------------------------------------------------


def start_job(conn: Connection, config: CrawlConfig, expansion: Expansion, created_by: str) -> bool:
    """Create the job with its seeds and searches, or resume it; True when it was resumed."""
    row = conn.execute("insert into crawl_jobs (id, prompt, config, keywords, minors, hosts, created_by)"
                       " values (%s, %s, %s, %s, %s, %s, %s) on conflict (id) do nothing returning id",
                       (config.job, config.prompt, Jsonb(config.as_json()),
                        Jsonb([{"text": k.text, "kind": k.kind, "score": round(k.score, 4)}
                               for k in expansion.keywords]), expansion.concerns_minors,
                        sorted({site_of(seed.url) for seed in config.seeds}), created_by)).fetchone()
    if row is None:
        resumed = conn.execute("update crawl_frontier set state = 'pending' where job_id = %s and state = 'fetching'"
                               " returning id", (config.job,)).fetchall()
        # An engine skipped for want of keys last time is asked again: its keys may be set now.
        conn.execute("update crawl_frontier set state = 'pending', error = '' where job_id = %s and kind = 'engine'"
                     " and state = 'skipped'", (config.job,))
        # So is a channel skipped for want of its token.
        conn.execute("update crawl_frontier set state = 'pending', error = '' where job_id = %s and kind = 'channel'"
                     " and state = 'skipped'", (config.job,))
        conn.execute("update crawl_jobs set state = 'running', updated_at = now() where id = %s", (config.job,))
        log.info("crawl job %s resumed (%d interrupted fetches back in the queue)", config.job, len(resumed))
        return True
    for seed in config.seeds:
        _enqueue(conn, config.job, [seed.url], kind="seed", depth=0, selectors=seed.url)
    queries = [k.text for k in expansion.keywords if k.kind != "obfuscation"]
    for endpoint in config.search:
        _enqueue(conn, config.job, [endpoint.url.replace("{query}", quote(q)) for q in queries[:endpoint.keywords]],
                 kind="search", depth=0)
    for i, entry in enumerate(config.engines):
        for q in queries[:entry.keywords]:
            _enqueue_engine(conn, config.job, i, entry, q, page=1)
    for spec in config.channels:  # each channel's newest page; the rest follow its cursors
        _enqueue(conn, config.job, [adapter(spec, os.environ).page_url(None)], kind="channel", depth=0,
                 selectors=spec.key)
    return False


def _engine_query(entry: EngineSearch, query: str, page: int) -> EngineQuery:
    base_url = entry.base_url or ENGINES[entry.engine].default_base_url
    return EngineQuery(entry.kind, query, page, entry.per_page, base_url)


def _enqueue_engine(conn: Connection, job: str, entry_index: int, entry: EngineSearch, query: str, page: int) -> None:
    # The row's URL is the request without credentials; `post` says which config entry, keyword and page it is.
    url = ENGINES[entry.engine].url(_engine_query(entry, query, page))
    _enqueue(conn, job, [url], kind="engine", depth=0,
             post={"entry": entry_index, "engine": entry.engine, "query": query, "page": page})


def _enqueue(conn: Connection, job: str, urls: Iterable[str], *, kind: str, depth: int, discovered_from: str = "",
             post: dict[str, Any] | None = None, selectors: str = "") -> int:
    # A page is one row however many pages link to it; a media URL is one row per post it is in.
    rows = [(job, url, kind, site_of(url), depth, discovered_from if kind == "media" else "",
             Jsonb(post) if post is not None else None, selectors) for url in dict.fromkeys(urls)]
    if not rows:
        return 0
    with conn.cursor() as cursor:
        cursor.executemany(
            "insert into crawl_frontier (job_id, url, kind, host, depth, discovered_from, post, selectors)"
            " values (%s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing", rows)
    return len(rows)


def _claim(conn: Connection, job: str, limit: int, pages_left: int, media_left: int) -> list[FrontierRow]:
    """The next rows to fetch, marked 'fetching': media first (matches should flow while pages are crawled), then
    the shallowest pages."""
    kinds = [k for k, left in (("media", media_left), ("page", pages_left)) if left > 0]
    if not kinds:
        return []
    rows = conn.execute(
        "update crawl_frontier set state = 'fetching', attempts = attempts + 1 where id in (select id from"
        " crawl_frontier where job_id = %s and state = 'pending' and (kind = 'media') = any(%s)"
        " order by (kind = 'media') desc, depth, id limit %s for update skip locked)"
        " returning id, url, kind, host, depth, attempts, post, selectors",
        (job, [k == "media" for k in kinds], limit)).fetchall()
    return [FrontierRow(*r) for r in sorted(rows, key=lambda r: (r[2] != "media", r[4], r[0]))]


def _finish(conn: Connection, row_id: int, state: str, error: str = "") -> None:
    conn.execute("update crawl_frontier set state = %s, error = %s, fetched_at = now() where id = %s",
                 (state, error[:2000], row_id))


# -- the crawl ------------------------------------------------------------------------------------------------------


@dataclass
class Crawl:
    config: CrawlConfig
    pool: ConnectionPool
    streamer: MatchStreamer
    expansion: Expansion
    normaliser: Normaliser
    now: datetime | None = None  # the crawl's "now" for relative post times (tests fix it)
    stats: CrawlStats = field(default_factory=CrawlStats)
    progress: Progress | None = None  # None: logged a minute and stored for the console, no terminal line
    _scope: set[str] = field(default_factory=set)
    _selectors: dict[str, SiteSelectors] = field(default_factory=dict)
    _render: dict[str, str] = field(default_factory=dict)  # seed URL -> its render mode
    _renderer: Renderer | None = None
    _gate: HostGate | None = None
    _channels: dict[str, Platform] = field(default_factory=dict)  # ChannelSpec.key -> its platform's adapter

    def __post_init__(self) -> None:
        self.progress = self.progress or Progress(self.config.job, self.pool)
        self._scope = {site_of(seed.url) for seed in self.config.seeds}
        self._selectors = {seed.url: SiteSelectors(**seed.selectors) for seed in self.config.seeds if seed.selectors}
        self._render = {seed.url: seed.render for seed in self.config.seeds}
        self._channels = {spec.key: adapter(spec, os.environ) for spec in self.config.channels}

    def _policy(self, max_bytes: int) -> FetchPolicy:
        limits = self.config.limits
        return FetchPolicy(max_bytes=max_bytes, timeout_s=limits.timeout_s, max_redirects=limits.max_redirects,
                           allow_networks=self.config.allow_networks, user_agent=USER_AGENT,
                           connect_timeout_s=min(10.0, limits.timeout_s))

    async def run(self, stop: asyncio.Event | None = None) -> CrawlStats:
        """Crawl until the frontier is empty, the budgets are spent, or `stop` is set."""
        limits = self.config.limits
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        self.stats.started = loop.time()
        with self.pool.connection() as conn:
            # Hosts found by an earlier run's searches are in scope again on resume.
            row = conn.execute("select hosts from crawl_jobs where id = %s", (self.config.job,)).fetchone()
            self._scope |= set(row[0] if row else ())
            self._skip_engines_without_keys(conn)
            self._skip_channels_without_tokens(conn)
        gate = HostGate(limits.per_host_concurrency, limits.per_host_delay_s)
        in_flight: set[asyncio.Task[None]] = set()
        stopping = asyncio.create_task(stop.wait())
        # The renderer's browser requests go through its guard proxy, under the pages' policy (allow-list, caps).
        render_limits = RenderLimits(browsers=limits.render_browsers, page_load_timeout_s=limits.render_timeout_s,
                                     total_s=limits.render_total_s, max_dom_bytes=limits.render_max_dom_bytes,
                                     max_scrolls=limits.render_max_scrolls)
        async with Fetcher(self._policy(limits.page_max_bytes)) as pages, \
                Fetcher(self._policy(limits.media_max_bytes)) as media, \
                Renderer(self._policy(limits.page_max_bytes), render_limits, USER_AGENT) as self._renderer:
            self._gate = gate
            while not stop.is_set():
                free = limits.concurrency * 2 - len(in_flight)  # keep the gate's queues fed, not flooded
                rows: list[FrontierRow] = []
                if free > 0:
                    with self.pool.connection() as conn:
                        used = dict(conn.execute(
                            "select kind = 'media', count(*) from crawl_frontier where job_id = %s"
                            " and state not in ('pending', 'skipped') group by 1", (self.config.job,)).fetchall())
                        rows = _claim(conn, self.config.job, free, limits.max_pages - used.get(False, 0),
                                      limits.max_media - used.get(True, 0))
                for row in rows:
                    fetcher = media if row.kind == "media" else pages
                    task = asyncio.create_task(self._one(row, fetcher, gate))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if not in_flight:
                    break  # nothing pending and nothing running: the crawl is complete
                await asyncio.wait(in_flight | {stopping}, timeout=1.0, return_when=asyncio.FIRST_COMPLETED)
                self.progress.tick(self.stats, loop.time() - self.stats.started)
            stopping.cancel()
            for task in in_flight:
                task.cancel()
            await asyncio.gather(*in_flight, return_exceptions=True)
        state = "stopped" if stop.is_set() else "finished"
        with self.pool.connection() as conn:
            conn.execute("update crawl_jobs set state = %s, updated_at = now() where id = %s", (state, self.config.job))
        self.stats.seconds = loop.time() - self.stats.started
        self.progress.finish(self.stats, self.stats.seconds, state)
        return self.stats

    async def _one(self, row: FrontierRow, fetcher: Fetcher, gate: HostGate) -> None:
        try:
            if row.kind == "engine":
                await self._engine(row, fetcher, gate)
                return
            if row.kind == "channel":
                await self._channel(row, fetcher, gate)
                return
            async with gate.slot(row.host):
                fetched = await fetcher.fetch(row.url)
            if row.kind == "media":
                await self._media(row, fetched.status, fetched.decoded, fetched.header("content-type") or "")
            else:
                await self._page(row, fetched.status, fetched.decoded, fetched.final_url,
                                 fetched.header("content-type") or "")
        except asyncio.CancelledError:
            raise  # left 'fetching': the next run takes it up again
        except EngineError as error:  # the API's own error reply: quota and server errors are asked again later
            if error.retry and row.attempts < self.config.limits.max_attempts:
                await asyncio.sleep(min(self.config.limits.timeout_s, 2.0 ** row.attempts))
            self._failed(row, str(error), retry=error.retry)
        except ChannelError as error:  # the platform would not give the page now (a rate limit): asked again later
            if error.retry and row.attempts < self.config.limits.max_attempts:
                await asyncio.sleep(error.wait_s)
            self._failed(row, str(error), retry=error.retry)
        except FetchRefused as error:  # policy: a private address, too big, too many redirects: never retried
            self._failed(row, f"refused: {error}", retry=False)
        except (FetchError, StreamFailed, OSError, TimeoutError) as error:
            self._failed(row, f"{type(error).__name__}: {error}", retry=True)
        except Exception as error:  # a bug or hostile input we did not foresee: recorded, the crawl goes on
            log.exception("crawling %s failed", row.url)
            self._failed(row, f"{type(error).__name__}: {error}", retry=False)

    def _failed(self, row: FrontierRow, error: str, *, retry: bool) -> None:
        again = retry and row.attempts < self.config.limits.max_attempts
        with self.pool.connection() as conn:
            if again:
                conn.execute("update crawl_frontier set state = 'pending', error = %s where id = %s",
                             (error[:2000], row.id))
            else:
                _finish(conn, row.id, "failed", error)
        if not again:
            self.stats.failed += 1
        log.info("%s %s: %s%s", row.kind, row.url, error, " (will retry)" if again else "")

    # -- pages ------------------------------------------------------------------------------------------------------

    async def _page(self, row: FrontierRow, status: int, body: bytes, final_url: str, content_type: str) -> None:
        if status >= 400 or not content_type.split(";")[0].strip().lower().startswith(HTML_TYPES):
            with self.pool.connection() as conn:
                _finish(conn, row.id, "failed", f"HTTP {status} {content_type[:80]}")
            self.stats.failed += 1
            return
        selectors = self._selectors.get(row.selectors)
        now = self.now or datetime.now(UTC)
        page = await asyncio.to_thread(extract_page, body, final_url, now, selectors)
        page = await self._maybe_render(row, page, final_url, now, selectors)
        scored = [(post, score_text(" ".join((post.title, post.text)), self.expansion, self.normaliser))
                  for post in page.posts]
        with self.pool.connection() as conn:
            if row.kind == "search":
                found = self._admit(conn, page.post_links + page.links, row.host)
                _enqueue(conn, self.config.job, found, kind="page", depth=1)
            else:
                self._enqueue_links(conn, row, page)
            for post, score in scored:
                self._record_post(conn, row, post, score)
            # An image an engine found on this page but no post here shows: matched with the page as its context.
            shown = {u for post in page.posts for u in (*post.images, *post.videos)}
            hinted = [u for u in (row.post or {}).get("engine_images", []) if u not in shown]
            if hinted:
                self._engine_media(conn, hinted, final_url, page.title or (row.post or {}).get("title", ""), row.depth)
            _finish(conn, row.id, "done")
        self.stats.pages += 1
        self.stats.posts += len(page.posts)

    def _admit(self, conn: Connection, urls: Iterable[str], from_host: str) -> list[str]:
        """A search's results (an endpoint's page or an engine's answer): their hosts become part of the crawl."""
        found = [u for u in dict.fromkeys(urls) if site_of(u) != from_host]
        self._scope |= {site_of(u) for u in found}
        conn.execute("update crawl_jobs set hosts = array(select distinct unnest(hosts || %s::text[]))"
                     " where id = %s", (sorted({site_of(u) for u in found}), self.config.job))
        return found

    def _engine_secrets(self, entry: EngineSearch) -> tuple[dict[str, str], list[str]]:
        """The entry's credentials from the environment, and the names of the variables that are not set."""
        names = entry.env_names()
        secrets = {cred: os.environ.get(name, "") for cred, name in names.items()}
        return secrets, [names[cred] for cred, value in secrets.items() if not value]

    def _skip_engines_without_keys(self, conn: Connection) -> None:
        for i, entry in enumerate(self.config.engines):
            _, missing = self._engine_secrets(entry)
            if not missing:
                continue
            reason = f"{entry.engine} {entry.kind}: no key (${', $'.join(missing)} not set)"
            skipped = conn.execute("update crawl_frontier set state = 'skipped', error = %s where job_id = %s"
                                   " and kind = 'engine' and state = 'pending' and (post->>'entry')::int = %s"
                                   " returning id", (reason, self.config.job, i)).fetchall()
            self.stats.skipped[reason] = self.stats.skipped.get(reason, 0) + len(skipped)
            log.warning("engine skipped, %s: %d queries not asked", reason, len(skipped))

    async def _engine(self, row: FrontierRow, fetcher: Fetcher, gate: HostGate) -> None:
        ask = row.post or {}
        entry = self.config.engines[int(ask["entry"])]
        if entry.engine != ask.get("engine"):
            raise ValueError(f"engine entry {ask.get('entry')} is {entry.engine} now, was {ask.get('engine')}")
        secrets, missing = self._engine_secrets(entry)
        if missing:  # the variables went away since the run started
            raise EngineError(entry.engine, 0, "no-key", f"${', $'.join(missing)} not set", retry=False)
        page = int(ask["page"])
        async with gate.slot(row.host):
            results = await ENGINES[entry.engine].search(fetcher, _engine_query(entry, ask["query"], page), secrets)
        by_page: dict[str, list[EngineHit]] = {}
        for hit in results.hits:
            by_page.setdefault(hit.page, []).append(hit)
        with self.pool.connection() as conn:
            found = set(self._admit(conn, [u for h in results.hits for u in (h.page, h.image) if u], row.host))
            for page_url, hits in by_page.items():
                if not page_url:  # image results without a page (Naver): the image is matched on its own
                    for hit in hits:
                        if hit.image in found:
                            self._engine_media(conn, [hit.image], hit.image, hit.title, 1)
                elif page_url in found:
                    images = [h.image for h in hits if h.image]
                    hint = {"engine_images": images, "title": hits[0].title} if images else None
                    _enqueue(conn, self.config.job, [page_url], kind="page", depth=1, post=hint)
            if results.next_page and page < entry.pages:
                _enqueue_engine(conn, self.config.job, int(ask["entry"]), entry, ask["query"], page + 1)
            _finish(conn, row.id, "done")
        self.stats.pages += 1

    def _engine_media(self, conn: Connection, urls: list[str], post_url: str, title: str, depth: int) -> None:
        score = score_text(title, self.expansion, self.normaliser)
        described = {"post_url": post_url, "title": title[:1000], "author": "", "posted_at": None, "text": "",
                     "score": round(score.score, 4), "hits": score.hits[:20],
                     "suspected": score.score >= self.config.limits.suspect_score}
        _enqueue(conn, self.config.job, urls, kind="media", depth=depth, discovered_from=post_url, post=described)

    # -- SNS channels -----------------------------------------------------------------------------------------------

    def _skip_channels_without_tokens(self, conn: Connection) -> None:
        for key, platform in self._channels.items():
            reason = platform.unavailable()
            if not reason:
                continue
            skipped = conn.execute("update crawl_frontier set state = 'skipped', error = %s where job_id = %s"
                                   " and kind = 'channel' and state = 'pending' and selectors = %s returning id",
                                   (reason, self.config.job, key)).fetchall()
            said = f"channel {key}: {reason}"
            self.stats.skipped[said] = self.stats.skipped.get(said, 0) + len(skipped)
            log.warning("%s: skipped", said)

    async def _channel(self, row: FrontierRow, fetcher: Fetcher, gate: HostGate) -> None:
        """One page of a channel: its posts go the way of a board's, then the next page until `pages` is reached."""
        platform = self._channels.get(row.selectors)
        if platform is None or platform.unavailable():
            raise ChannelError(f"channel {row.selectors}: not in the job's config, or no token now", retry=False)
        async with gate.slot(row.host):
            fetched = await fetcher.fetch(row.url, headers=platform.headers())
        reply = Reply(fetched.status, fetched.decoded, {k.lower(): v for k, v in fetched.headers})
        page = await asyncio.to_thread(platform.parse, reply, self.now or datetime.now(UTC))
        scored = [(post, score_text(" ".join((post.title, post.text)), self.expansion, self.normaliser))
                  for post in page.posts]
        with self.pool.connection() as conn:
            for post, score in scored:
                self._record_post(conn, row, post, score)
            if page.cursor and row.depth + 1 < platform.spec.pages:  # depth: the page's number, from 0
                _enqueue(conn, self.config.job, [platform.page_url(page.cursor)], kind="channel",
                         depth=row.depth + 1, selectors=row.selectors)
            _finish(conn, row.id, "done")
        self.stats.pages += 1
        self.stats.posts += len(page.posts)

    async def _maybe_render(self, row: FrontierRow, page: Page, final_url: str, now: datetime,
                            selectors: SiteSelectors | None) -> Page:
        """The page again through headless Chromium when its seed says `always`, or `auto` and the plain HTML gave
        no posts and no post links (a script builds them). A failed render leaves the plain page."""
        mode = self._render.get(row.selectors, "auto")
        if self._renderer is None or mode == "never" or (mode == "auto" and (page.posts or page.post_links)):
            return page
        try:
            async with (self._gate or HostGate(1, 0.0)).slot(row.host):
                rendered = await self._renderer.render(final_url)
        except RenderError as error:
            log.warning("%s", error)
            return page
        self.stats.rendered += 1
        url = rendered.url if site_of(rendered.url) == site_of(final_url) else final_url
        again = await asyncio.to_thread(extract_page, rendered.html, url, now, selectors)
        return again if again.posts or again.post_links or again.links else page

    def _enqueue_links(self, conn: Connection, row: FrontierRow, page: Page) -> None:
        if row.depth >= self.config.limits.max_depth:
            return
        follow = [u for u in (*page.post_links, *page.next_pages) if site_of(u) in self._scope]
        if row.kind == "seed":  # a seed's other same-site pages (board lists) are worth a look too
            follow += [u for u in page.links if site_of(u) == row.host]
        _enqueue(conn, self.config.job, follow, kind="page", depth=row.depth + 1, selectors=row.selectors)

    def _record_post(self, conn: Connection, row: FrontierRow, post: Post, score: Any) -> None:
        limits = self.config.limits
        media = list(dict.fromkeys([*post.images, *post.videos]))[:limits.max_media_per_post]
        suspected = score.score >= limits.suspect_score
        conn.execute(
            "insert into crawl_posts (job_id, post_url, host, title, author, posted_at, text, text_score, hits,"
            " suspected, media) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict (job_id, post_url)"
            " do update set title = excluded.title, author = excluded.author, posted_at = excluded.posted_at,"
            " text = excluded.text, text_score = excluded.text_score, hits = excluded.hits,"
            " suspected = excluded.suspected, media = excluded.media, seen_at = now()",
            (self.config.job, post.url, site_of(post.url), post.title[:1000], post.author[:200], post.posted_at,
             post.text[:MAX_TEXT_CHARS], score.score, Jsonb(score.hits[:50]), suspected, len(media)))
        described = {"post_url": post.url, "title": post.title[:1000], "author": post.author[:200],
                     "posted_at": post.posted_at.isoformat() if post.posted_at else None,
                     "text": post.text[:MAX_TEXT_CHARS], "score": round(score.score, 4), "hits": score.hits[:20],
                     "suspected": suspected, "extra": post.extra}
        _enqueue(conn, self.config.job, media, kind="media", depth=row.depth, discovered_from=post.url,
                 post=described)

    # -- media ------------------------------------------------------------------------------------------------------

    async def _media(self, row: FrontierRow, status: int, data: bytes, content_type: str) -> None:
        post = row.post or {}
        post_url = post.get("post_url", "")
        if status >= 400 or not data:
            with self.pool.connection() as conn:
                _finish(conn, row.id, "failed", f"HTTP {status}, {len(data)} bytes")
            self.stats.failed += 1
            return
        sha256 = hashlib.sha256(data).digest()
        with self.pool.connection() as conn:
            author_posts, spread = conn.execute(
                "select (select count(*) from crawl_posts where host = %s and author = %s and author <> ''),"
                " (select count(distinct post_url) from crawl_media where content_sha256 = %s)",
                (site_of(post_url), post.get("author", ""), sha256)).fetchone()
        source = pb.Source(url=row.url, page_url=post_url, site=site_of(post_url), title=post.get("title", ""),
                           author=post.get("author", ""), text=post.get("text", ""),
                           suspected=bool(post.get("suspected")),
                           # A platform's metadata (views, channel) first: the crawl's own keys win a clash.
                           extra={**post.get("extra", {}), "crawl_job": self.config.job,
                                  "text_score": str(post.get("score", 0)),
                                  "keyword_hits": json.dumps(post.get("hits", []), ensure_ascii=False),
                                  "author_posts_seen": str(author_posts), "media_seen_in_posts": str(spread)})
        if post.get("posted_at"):
            source.posted_at.FromDatetime(datetime.fromisoformat(post["posted_at"]))
        response = await self.streamer.match(f"{self.config.job}:{row.id}", data, source)
        matches = len(response.result.matches) if not response.error_code else 0
        error = f"{response.error_code}: {response.error_message}" if response.error_code else ""
        with self.pool.connection() as conn:
            conn.execute(
                "insert into crawl_media (job_id, media_url, post_url, host, content_sha256, bytes, sighting_id,"
                " matches, error) values (%s, %s, %s, %s, %s, %s, %s, %s, %s) on conflict do nothing",
                (self.config.job, row.url, post_url, row.host, sha256, len(data),
                 response.result.sighting_id or None if not response.error_code else None, matches, error[:2000]))
            _finish(conn, row.id, "failed" if error else "done", error)
            if not error and response.result.exposures:
                _redact_post(conn, self.config.job, post_url, response.result)
        self.stats.media += 1
        self.stats.matches += matches
        if error:
            self.stats.failed += 1


def _redact_post(conn: Connection, job: str, post_url: str, result: pb.MatchResponse) -> None:
    """The service found personal information in this post: from now on the crawl keeps only its title and text
    as the service stored them, redacted (the post's row, and its media still waiting in the frontier)."""
    conn.execute("update crawl_posts set title = %s, text = %s where job_id = %s and post_url = %s",
                 (result.redacted_title, result.redacted_text, job, post_url))
    conn.execute("update crawl_frontier set post = post || jsonb_build_object('title', %s::text, 'text', %s::text)"
                 " where job_id = %s and post->>'post_url' = %s",
                 (result.redacted_title, result.redacted_text, job, post_url))


# -- statistics ------------------------------------------------------------------------------------------------------


def author_activity(conn: Connection, job: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Who posts most, per host: posts, suspected posts, first and last post time, posts per day."""
    keys = ("host", "author", "posts", "suspected", "first", "last", "per_day")
    return [dict(zip(keys, row, strict=True)) for row in conn.execute(
        "select host, author, count(*), count(*) filter (where suspected), min(posted_at), max(posted_at),"
        " round((count(*) / greatest(extract(epoch from max(posted_at) - min(posted_at)) / 86400, 1))::numeric, 2)"
        " from crawl_posts where author <> '' and (%s::text is null or job_id = %s) group by host, author"
        " order by count(*) desc, host, author limit %s", (job, job, limit))]


def media_spread(conn: Connection, job: str | None = None, min_posts: int = 2, limit: int = 100
                 ) -> list[dict[str, Any]]:
    """The same media (by SHA-256) across posts and sites: how far each copy has spread."""
    keys = ("sha256", "posts", "hosts", "matches", "urls")
    return [dict(zip(keys, (bytes(row[0]).hex(), *row[1:]), strict=True)) for row in conn.execute(
        "select content_sha256, count(distinct post_url), count(distinct host), max(matches),"
        " (array_agg(distinct media_url))[1:5] from crawl_media where content_sha256 is not null"
        " and (%s::text is null or job_id = %s) group by content_sha256 having count(distinct post_url) >= %s"
        " order by count(distinct post_url) desc limit %s", (job, job, min_posts, limit))]
