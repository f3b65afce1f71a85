"""`jiwoom crawl CONFIG` runs (or resumes) a crawl job; `jiwoom keywords PROMPT` shows what a prompt expands to."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from psycopg_pool import ConnectionPool

# Given by the composition root (jiwoom.cli): the crawler reaches the service only through the API, so it does
# not open the service's database or read its tokens itself.
OpenDatabase = Callable[[str | None, str | None], AbstractContextManager[ConnectionPool]]  # (url, data dir)
TokenHolder = Callable[[ConnectionPool, str], tuple[str, str] | None]  # token -> (name, role)


def _expansion(prompt: str, lexicon_file: str = "", limit: int | None = None):  # type: ignore[no-untyped-def]
    from ingest.keywords import Lexicon, default_encoder, expand
    from ingest.normalise import Normaliser

    normaliser = Normaliser.load()
    lexicon = Lexicon.load(extra=[Path(lexicon_file)] if lexicon_file else ())
    expansion = expand(prompt, lexicon, default_encoder(), normaliser, **({"limit": limit} if limit else {}))
    return expansion, normaliser


def keywords_command(args: argparse.Namespace) -> int:
    expansion, _ = _expansion(args.prompt, args.lexicon or "", args.limit)
    print(json.dumps({"prompt": args.prompt, "concerns_minors": expansion.concerns_minors}, ensure_ascii=False))
    for k in expansion.keywords:
        print(json.dumps({"text": k.text, "kind": k.kind, "score": round(k.score, 4), "concept": k.concept,
                          "language": k.language, "normalised": k.normalised}, ensure_ascii=False))
    return 0


def crawl_command(args: argparse.Namespace, open_database: OpenDatabase, token_holder: TokenHolder) -> int:
    from ingest.config import ConfigError, load_config
    from ingest.crawler import Crawl, author_activity, media_spread, start_job
    from ingest.progress import Progress
    from ingest.stream import MatchStreamer

    try:
        config = load_config(Path(args.config))
    except (ConfigError, OSError) as error:
        raise SystemExit(f"crawl config: {error}") from error
    token = os.environ.get(config.token_env, "")
    if not token:
        raise SystemExit(f"the crawler streams to the Matcher with a crawler token: set ${config.token_env}"
                         " (jiwoom token --role crawler --name crawler-1)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    expansion, normaliser = _expansion(config.prompt, config.lexicon)
    with open_database(args.database_url, args.data_dir) as pool:
        holder = token_holder(pool, token)
        if holder is None or holder[1] not in ("crawler", "admin"):
            raise SystemExit(f"${config.token_env} is not a crawler's token")
        with pool.connection() as conn:
            resumed = start_job(conn, config, expansion, holder[0])
        print(f"crawl job {config.job}: {'resumed' if resumed else 'started'}; {len(expansion.keywords)} keywords,"
              f" minors: {expansion.concerns_minors}", flush=True)

        async def crawl() -> dict[str, object]:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            ca = Path(config.matcher_tls_ca) if config.matcher_tls_ca else None
            async with MatchStreamer(config.matcher, token, tls_ca=ca,
                                     timeout_s=config.limits.match_timeout_s) as streamer:
                terminal = sys.stderr if sys.stderr.isatty() else None  # a live line for whoever watches it
                stats = await Crawl(config, pool, streamer, expansion, normaliser,
                                    progress=Progress(config.job, pool, terminal)).run(stop)
            return stats.as_dict()

        stats = asyncio.run(crawl())
        with pool.connection() as conn:
            stats["top_authors"] = author_activity(conn, config.job, limit=10)
            stats["spread"] = media_spread(conn, config.job, limit=10)
    print(json.dumps(stats, ensure_ascii=False, default=str), flush=True)
    return 0


def add_commands(commands: argparse._SubParsersAction,  # type: ignore[type-arg]
                 open_database: OpenDatabase, token_holder: TokenHolder) -> None:
    crawl = commands.add_parser("crawl", help="run or resume a crawl job from its YAML config")
    crawl.add_argument("config", help="the job's YAML file (see ingest/config.py and ingest/crawl.example.yaml)")
    crawl.add_argument("--database-url", help="PostgreSQL conninfo (default $DATABASE_URL, else embedded)")
    crawl.add_argument("--data-dir", help="data directory of the embedded PostgreSQL")
    crawl.set_defaults(run=lambda args: crawl_command(args, open_database, token_holder))
    keywords = commands.add_parser("keywords", help="expand an officer's prompt into ranked keywords")
    keywords.add_argument("prompt")
    keywords.add_argument("--lexicon", help="an extra lexicon YAML file")
    keywords.add_argument("--limit", type=int)
    keywords.set_defaults(run=keywords_command)
