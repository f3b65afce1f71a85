"""A crawl job's configuration: one YAML file an officer (or the case system) writes.

```yaml
job: school-leak-2026-11            # the job's id: running it again resumes it
prompt: 학교 유출 영상, 한국 커뮤니티에 올라옴
seeds:
  - url: https://board.example/bbs/board.php?bo_table=free
    selectors: {title: "#bo_v_title", author: ".sv_member"}   # optional CSS selectors (ingest/extract.py)
    render: auto                     # auto|always|never: pages through headless Chromium (ingest/render.py)
search:                              # optional: endpoints that find more sites from the keywords
  - url: https://search.example/?q={query}
    keywords: 5                      # how many of the top keywords to search for
engines:                             # optional: search engines' official APIs (ingest/engines/), keys from the env
  - {engine: naver, kind: web, keywords: 5, pages: 2}      # $JIWOOM_NAVER_CLIENT_ID, $JIWOOM_NAVER_CLIENT_SECRET
  - {engine: google, kind: image, keywords: 3, env: {key: MY_GOOGLE_KEY}}   # else $JIWOOM_GOOGLE_API_KEY, _CX
channels:                            # optional: SNS channels (ingest/platforms/), newest pages first
  - {platform: telegram, channel: some_public_channel, pages: 5}           # t.me/s/<channel>, no account
  - {platform: x, query: "유출 -is:retweet has:media", pages: 3}            # API v2; token $JIWOOM_X_BEARER_TOKEN
limits: {max_pages: 5000, max_depth: 4, per_host_concurrency: 2, per_host_delay_s: 1.0}
allow_networks: []                   # CIDRs re-admitted past the private-address guard (tests: 127.0.0.0/8)
matcher: 127.0.0.1:50051             # jiwoom serve; the crawler's token comes from $JIWOOM_CRAWLER_TOKEN
```
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from ingest.engines import ENGINES
from ingest.platforms import ChannelSpec, channel_spec

MAX_CONFIG_BYTES = 1024 * 1024


class ConfigError(ValueError):
    """The crawl config is not usable: the message says where and why."""


@dataclass(frozen=True)
class CrawlLimits:
    max_pages: int = 10_000  # pages fetched per job (lists, posts, search results); media are counted apart
    max_media: int = 50_000
    max_depth: int = 4  # link hops from a seed or search result
    max_media_per_post: int = 50
    concurrency: int = 8  # fetches in flight, all hosts together
    per_host_concurrency: int = 2
    per_host_delay_s: float = 1.0  # between the starts of two requests to one host
    max_redirects: int = 5
    page_max_bytes: int = 5 * 1024 * 1024
    media_max_bytes: int = 48 * 1024 * 1024  # under the service's 64 MB message limit
    timeout_s: float = 30.0  # one fetch, redirects included
    match_timeout_s: float = 120.0  # one item's answer on the stream
    max_attempts: int = 2  # a URL failing this often (network, not policy) is given up
    suspect_score: float = 0.35  # posts whose text scores at least this are sent as suspected
    # Render mode (ingest/render.py): browsers at once, page-load timeout, one render's total time, the DOM taken.
    render_browsers: int = 2
    render_timeout_s: float = 15.0
    render_total_s: float = 30.0
    render_max_dom_bytes: int = 5 * 1024 * 1024
    render_max_scrolls: int = 10  # scrolls of an infinite list


@dataclass(frozen=True)
class Seed:
    url: str
    selectors: dict[str, str] = field(default_factory=dict)
    render: str = "auto"  # auto: when the plain HTML gives no posts and no post links; always; never


@dataclass(frozen=True)
class SearchEndpoint:
    url: str  # with {query}, replaced by each keyword (URL-quoted)
    keywords: int = 5


@dataclass(frozen=True)
class EngineSearch:
    engine: str  # a name in ingest.engines.ENGINES
    kind: str = "web"  # "web" or "image"
    keywords: int = 5  # how many of the top keywords to ask for
    pages: int = 1  # result pages per keyword
    per_page: int = 10
    base_url: str = ""  # '' for the engine's official API (tests: a loopback fake)
    env: dict[str, str] = field(default_factory=dict)  # credential -> environment variable, over the defaults

    def env_names(self) -> dict[str, str]:
        return {**ENGINES[self.engine].credentials, **self.env}


@dataclass(frozen=True)
class CrawlConfig:
    job: str
    prompt: str = ""
    seeds: tuple[Seed, ...] = ()
    search: tuple[SearchEndpoint, ...] = ()
    engines: tuple[EngineSearch, ...] = ()
    channels: tuple[ChannelSpec, ...] = ()  # SNS channels (ingest/platforms/)
    limits: CrawlLimits = field(default_factory=CrawlLimits)
    allow_networks: tuple[str, ...] = ()
    matcher: str = "127.0.0.1:50051"
    matcher_tls_ca: str = ""
    token_env: str = "JIWOOM_CRAWLER_TOKEN"
    lexicon: str = ""  # an officer's extra lexicon file, on top of the shipped one

    def as_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _http_url(value: Any, where: str) -> str:
    if not isinstance(value, str) or urlsplit(value).scheme not in ("http", "https") or not urlsplit(value).hostname:
        raise ConfigError(f"{where}: not an http(s) URL: {value!r}")
    return value


def _fields(cls: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(data) - set(names)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(names)})")
    return data


def parse_config(data: Any) -> CrawlConfig:
    data = _fields(CrawlConfig, data, "config")
    job = data.get("job")
    if not isinstance(job, str) or not job.strip() or len(job) > 200:
        raise ConfigError("config: 'job' must be a name of 1 to 200 characters")
    limits_data = _fields(CrawlLimits, data.get("limits") or {}, "limits")
    try:
        limits = CrawlLimits(**{k: type(getattr(CrawlLimits, k))(v) for k, v in limits_data.items()})
    except (TypeError, ValueError) as error:
        raise ConfigError(f"limits: {error}") from None
    if min(limits.max_pages, limits.concurrency, limits.per_host_concurrency, limits.max_attempts) < 1:
        raise ConfigError("limits: counts must be at least 1")
    if limits.render_browsers < 1 or limits.render_max_scrolls < 0:
        raise ConfigError("limits: render_browsers must be at least 1, render_max_scrolls at least 0")
    seeds = []
    for i, seed in enumerate(data.get("seeds") or []):
        seed = {"url": seed} if isinstance(seed, str) else _fields(Seed, seed, f"seeds[{i}]")
        selectors = seed.get("selectors") or {}
        if not isinstance(selectors, dict) or not all(isinstance(v, str) for v in selectors.values()):
            raise ConfigError(f"seeds[{i}].selectors: a mapping of names to CSS selectors")
        render = seed.get("render", "auto")
        if render not in ("auto", "always", "never"):
            raise ConfigError(f"seeds[{i}].render: auto, always or never, got {render!r}")
        seeds.append(Seed(_http_url(seed.get("url"), f"seeds[{i}].url"), dict(selectors), render))
    search = []
    for i, endpoint in enumerate(data.get("search") or []):
        endpoint = _fields(SearchEndpoint, endpoint, f"search[{i}]")
        url = _http_url(endpoint.get("url"), f"search[{i}].url")
        if "{query}" not in url:
            raise ConfigError(f"search[{i}].url: needs a {{query}} placeholder")
        search.append(SearchEndpoint(url, int(endpoint.get("keywords", 5))))
    engines = [_engine(entry, f"engines[{i}]") for i, entry in enumerate(data.get("engines") or [])]
    channels = [_channel(entry, f"channels[{i}]") for i, entry in enumerate(data.get("channels") or [])]
    if len({c.key for c in channels}) < len(channels):
        raise ConfigError("channels: the same channel is listed twice")
    if not seeds and not search and not engines and not channels:
        raise ConfigError("config: give seeds, search endpoints, engines or channels")
    return CrawlConfig(
        job=job.strip(), prompt=str(data.get("prompt") or ""), seeds=tuple(seeds), search=tuple(search),
        engines=tuple(engines), channels=tuple(channels),
        limits=limits, allow_networks=tuple(str(n) for n in data.get("allow_networks") or ()),
        matcher=str(data.get("matcher") or "127.0.0.1:50051"), matcher_tls_ca=str(data.get("matcher_tls_ca") or ""),
        token_env=str(data.get("token_env") or "JIWOOM_CRAWLER_TOKEN"), lexicon=str(data.get("lexicon") or ""))


_ENV_NAME = re.compile(r"[A-Z_][A-Z0-9_]{0,127}")


def _engine(entry: Any, where: str) -> EngineSearch:
    entry = _fields(EngineSearch, entry, where)
    name = entry.get("engine")
    if name not in ENGINES:
        raise ConfigError(f"{where}.engine: {name!r} is not one of {sorted(ENGINES)}")
    engine = ENGINES[name]
    kind = entry.get("kind", "web")
    if kind not in engine.kinds:
        raise ConfigError(f"{where}.kind: {kind!r} is not one of {list(engine.kinds)} for {name}")
    counts: dict[str, int] = {}
    for key, default, most in (("keywords", 5, 100), ("pages", 1, engine.max_pages),
                               ("per_page", 10, engine.max_per_page)):
        value = entry.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ConfigError(f"{where}.{key}: a whole number from 1 to {most}, got {value!r}")
        counts[key] = value
    if counts["pages"] * counts["per_page"] > engine.max_pages * engine.max_per_page:
        raise ConfigError(f"{where}: {name} serves at most {engine.max_pages * engine.max_per_page} results"
                          f" (pages x per_page)")
    base_url = _http_url(entry["base_url"], f"{where}.base_url") if entry.get("base_url") else ""
    env = entry.get("env") or {}
    if not isinstance(env, dict) or set(env) - set(engine.credentials) or \
            not all(isinstance(v, str) and _ENV_NAME.fullmatch(v) for v in env.values()):
        # Names only: a key written into the job file would be stored with the job's config.
        raise ConfigError(f"{where}.env: maps {sorted(engine.credentials)} to environment variable names"
                          " (A-Z, 0-9, _)")  # values not echoed: they may be a key pasted in
    return EngineSearch(name, kind, base_url=base_url, env=dict(env), **counts)


def _channel(entry: Any, where: str) -> ChannelSpec:
    entry = _fields(ChannelSpec, entry, where)
    try:
        return channel_spec(entry)
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None


def load_config(path: Path) -> CrawlConfig:
    raw = Path(path).read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not YAML: {error}") from None
    return parse_config(data)
