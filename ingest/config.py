"""A crawl job's configuration: one YAML file an officer (or the case system) writes.

```yaml
job: school-leak-2026-11            # the job's id: running it again resumes it
prompt: 학교 유출 영상, 한국 커뮤니티에 올라옴
seeds:
  - url: https://board.example/bbs/board.php?bo_table=free
    selectors: {title: "#bo_v_title", author: ".sv_member"}   # optional CSS selectors (ingest/extract.py)
search:                              # optional: endpoints that find more sites from the keywords
  - url: https://search.example/?q={query}
    keywords: 5                      # how many of the top keywords to search for
limits: {max_pages: 5000, max_depth: 4, per_host_concurrency: 2, per_host_delay_s: 1.0}
allow_networks: []                   # CIDRs re-admitted past the private-address guard (tests: 127.0.0.0/8)
matcher: 127.0.0.1:50051             # jiwoom serve; the crawler's token comes from $JIWOOM_CRAWLER_TOKEN
```
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

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


@dataclass(frozen=True)
class Seed:
    url: str
    selectors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class SearchEndpoint:
    url: str  # with {query}, replaced by each keyword (URL-quoted)
    keywords: int = 5


@dataclass(frozen=True)
class CrawlConfig:
    job: str
    prompt: str = ""
    seeds: tuple[Seed, ...] = ()
    search: tuple[SearchEndpoint, ...] = ()
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
    seeds = []
    for i, seed in enumerate(data.get("seeds") or []):
        seed = {"url": seed} if isinstance(seed, str) else _fields(Seed, seed, f"seeds[{i}]")
        selectors = seed.get("selectors") or {}
        if not isinstance(selectors, dict) or not all(isinstance(v, str) for v in selectors.values()):
            raise ConfigError(f"seeds[{i}].selectors: a mapping of names to CSS selectors")
        seeds.append(Seed(_http_url(seed.get("url"), f"seeds[{i}].url"), dict(selectors)))
    search = []
    for i, endpoint in enumerate(data.get("search") or []):
        endpoint = _fields(SearchEndpoint, endpoint, f"search[{i}]")
        url = _http_url(endpoint.get("url"), f"search[{i}].url")
        if "{query}" not in url:
            raise ConfigError(f"search[{i}].url: needs a {{query}} placeholder")
        search.append(SearchEndpoint(url, int(endpoint.get("keywords", 5))))
    if not seeds and not search:
        raise ConfigError("config: give seeds, search endpoints, or both")
    return CrawlConfig(
        job=job.strip(), prompt=str(data.get("prompt") or ""), seeds=tuple(seeds), search=tuple(search),
        limits=limits, allow_networks=tuple(str(n) for n in data.get("allow_networks") or ()),
        matcher=str(data.get("matcher") or "127.0.0.1:50051"), matcher_tls_ca=str(data.get("matcher_tls_ca") or ""),
        token_env=str(data.get("token_env") or "JIWOOM_CRAWLER_TOKEN"), lexicon=str(data.get("lexicon") or ""))


def load_config(path: Path) -> CrawlConfig:
    raw = Path(path).read_bytes()
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: over {MAX_CONFIG_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not YAML: {error}") from None
    return parse_config(data)
