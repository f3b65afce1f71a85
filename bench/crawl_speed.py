"""Crawler throughput: pages/s and media/s of a whole crawl against the fixture boards (`bench/fixture_boards.py`).

It starts the real service (`server.app.running_service`) on a throwaway PostgreSQL cluster, plants the Korean
board and the English forum (hostile pages included) on a loopback fixture site, registers the planted references,
and runs the crawler (`ingest.crawler.Crawl`, as `jiwoom crawl` does) to the end: pages fetched and extracted, every
post's text scored against the keywords, every media fetched and streamed to `MatchStream`. It reports pages/s,
media/s, and how many planted copies were found (a check that the timed crawl did the real work). No per-host delay
(a real crawl is politer: per_host_delay_s defaults to 1 s, which alone caps one host at 1 page/s).

The render arm (`--render`, on by default) crawls the same fixture pages again as a second job with every seed at
`render: always` (each page also through headless Chromium behind the guard proxy): rendered pages/s beside plain.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import grpc
import psycopg

from bench.fixture_boards import plant_boards
from bench.fixture_site import FixtureSite
from bench.record import machine, publish
from bench.service_latency import CONFIGS
from bench.transforms import CORPUS
from ingest.config import parse_config
from ingest.crawler import Crawl, start_job
from ingest.keywords import Lexicon, default_encoder, expand
from ingest.normalise import Normaliser
from ingest.stream import MatchStreamer
from jiwoom.api.client import MatcherClient, open_channel
from server.app import running_service
from server.config import ServiceSettings
from server.storage.db import local_postgres

PROMPT = "학교 유출 영상, 한국 커뮤니티에 올라옴"


def run(posts_per_board: int, concurrency: int, config_name: str = "default",
        render: bool = True) -> dict[str, float | int | str]:
    with tempfile.TemporaryDirectory() as tmp, local_postgres(Path(tmp) / "pg", binaries="system") as url:
        settings = dataclasses.replace(CONFIGS[config_name], service=ServiceSettings(
            listen="127.0.0.1:0", data_dir=tmp, max_workers=4))
        with running_service(settings, url) as running, FixtureSite() as site:
            planted = plant_boards(site, CORPUS, now=datetime.now(UTC), posts_per_board=posts_per_board)
            channel = open_channel(f"127.0.0.1:{running.port}")
            client = MatcherClient(channel, running.store.create_token("bench-case-system", "case_system"))
            unmatchable = set()
            for name, path in planted.references.items():
                try:
                    client.register_reference("bench-crawl", path.read_bytes(), skip_retro_hunt=True)
                except grpc.RpcError as error:  # e.g. a flat picture with nothing matchable: its copies can't count
                    print(f"reference {name} refused: {error.details()}", file=sys.stderr)
                    unmatchable.add(name)
            copies = [c for c in planted.copies if c.reference not in unmatchable]
            token = running.store.create_token("bench-crawler", "crawler")
            normaliser = Normaliser.load()
            expansion = expand(PROMPT, Lexicon.load(), default_encoder(), normaliser)

            def crawl_job(job: str, render_mode: str) -> dict[str, float | int]:
                seeds = [{**(s if isinstance(s, dict) else {"url": s}), "render": render_mode} for s in planted.seeds]
                config = parse_config({
                    "job": job, "prompt": PROMPT, "seeds": seeds, "allow_networks": ["127.0.0.0/8"],
                    "matcher": f"127.0.0.1:{running.port}",
                    "limits": {"per_host_concurrency": concurrency, "concurrency": concurrency, "per_host_delay_s": 0,
                               "timeout_s": 5, "max_pages": 100_000, "render_browsers": min(concurrency, 4)}})
                with running.store.pool.connection() as conn:
                    start_job(conn, config, expansion, "bench")

                async def crawl() -> dict[str, float | int]:
                    async with MatchStreamer(config.matcher, token) as streamer:
                        return (await Crawl(config, running.store.pool, streamer, expansion,
                                            normaliser).run()).as_dict()

                return asyncio.run(crawl())

            # The plain arm as before (auto: the fixture boards' plain HTML has posts, so nothing is rendered).
            stats = crawl_job("bench", "auto")
            rendered = crawl_job("bench-render", "always") if render else {}
            with psycopg.connect(url) as conn:
                found = sum(1 for c in copies if conn.execute(
                    "select 1 from sightings s join matches m on m.sighting_id = s.id where s.url = %s"
                    " and split_part(s.page_url, '#', 1) = %s", (c.media_url, c.page_url)).fetchone())
            channel.close()
    return {**stats, "config": config_name, "posts_per_board": posts_per_board, "concurrency": concurrency,
            "rendered_pages": rendered.get("rendered", 0), "rendered_seconds": rendered.get("seconds", 0.0),
            "rendered_pages_per_s": rendered.get("pages_per_s", 0.0),
            "planted": len(copies),
            "found": found, "site_pages": planted.pages, "site_media": planted.media}


def report(results: list[dict[str, float | int | str]]) -> str:
    lines = [
        "## Crawler throughput (`bench/crawl_speed.py`)",
        "",
        f"Machine: {machine()}. Measured {datetime.now():%Y-%m-%d}. Service (in-process models), PostgreSQL, the",
        "fixture site and the crawler share the machine; no per-host delay. Every media item is streamed to",
        "`MatchStream` and matched, so media/s is the matcher's pace on this machine.",
        "",
        "| configuration | posts per board | concurrency | pages | media | posts | failed (hostile) "
        "| planted copies found | seconds | pages/s | media/s | rendered pages | rendered pages/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['config']} | {r['posts_per_board']} | {r['concurrency']} | {r['pages']} | {r['media']} "
                     f"| {r['posts']} "
                     f"| {r['failed']} | {r['found']}/{r['planted']} | {r['seconds']:.1f} | {r['pages_per_s']:.2f} "
                     f"| {r['media_per_s']:.2f} | {r['rendered_pages']} | {r['rendered_pages_per_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--posts", default="24", help="posts per board, comma-separated")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--configs", default="default", help=f"comma-separated, of {sorted(CONFIGS)} "
                        "(bench.service_latency's)")
    parser.add_argument("--out", help="also write the markdown report here")
    parser.add_argument("--no-render", dest="render", action="store_false",
                        help="skip the render arm (the same pages again, every one through headless Chromium)")
    args = parser.parse_args(argv)
    results = [run(int(n), args.concurrency, name, args.render) for name in args.configs.split(",")
               for n in args.posts.split(",")]
    publish(report(results), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
