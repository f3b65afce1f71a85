"""From a crawler's Match to a drafted takedown notice: how long, for one item and for a burst of items.

    .venv/bin/python -m bench.notice_latency [--items 1,100] [--out report.md]

For each burst size N it starts the real service (`server.app.running_service`) with the action worker beside it
(`clients.worker`, polling every 0.2 s) on a throwaway PostgreSQL cluster, registers N corpus images as
references, and serves N Korean board posts, each with a re-encoded, resized copy of one reference, from a
loopback fixture site. A crawler thread then sends the N posts' media to `Match` with their page metadata, one
after another, while the worker captures evidence (page and media fetch, full-page screenshot in headless
Chromium, WARC, encryption, hash-chained log) and drafts the notices in seven languages.

Per item: match start (client side) → item captured and its notice drafted (the same transaction). Also the
burst's total: first Match sent → last notice drafted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

import grpc
import psycopg

from bench.fixture_site import FixtureSite, korean_post_page
from bench.record import machine, publish
from bench.service_latency import image_path, pick_images
from bench.transforms import encode, load, resize
from clients.worker import worker_beside_service
from jiwoom.api.client import MatcherClient, open_channel
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.app import running_service
from server.config import EvidenceSettings, ServiceSettings, Settings
from server.storage.db import local_postgres


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_burst(n: int, seed: int = 7) -> dict[str, float | int]:
    candidates, _ = pick_images(n + 10, 0, seed)  # a few spare: flat images have nothing to match
    with tempfile.TemporaryDirectory() as tmp, local_postgres(Path(tmp) / "pg", binaries="system") as url, \
            FixtureSite() as site:
        settings = Settings(
            service=ServiceSettings(listen="127.0.0.1:0", data_dir=tmp, max_workers=4),
            evidence=EvidenceSettings(allow_networks="127.0.0.0/8", poll_interval_s=0.2))
        with running_service(settings, url) as running, \
                worker_beside_service(settings, running.database_url, running.service):  # as `jiwoom serve`
            tokens = {role: running.store.create_token(f"bench-{role}", role) for role in ("case_system", "crawler")}
            channel = open_channel(f"127.0.0.1:{running.port}")
            case_system = MatcherClient(channel, tokens["case_system"])
            crawler = MatcherClient(channel, tokens["crawler"])
            progress(f"burst {n}: registering {n} references")
            registered: list[int] = []
            for index in candidates:
                if len(registered) == n:
                    break
                try:
                    case_system.register_reference(f"case-{index}", image_path(index).read_bytes())
                    registered.append(index)
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        raise
            for i, index in enumerate(registered):
                copy = encode(resize(load(image_path(index)), 0.6), "JPEG", 80)
                site.put(f"/img/{i}.jpg", copy, content_type="image/jpeg")
                site.put(f"/board/{i}", korean_post_page(f"게시물 {i} (benign bench fixture)", "익명", "3시간 전",
                                                         "벤치마크용 게시물입니다.", [f"/img/{i}.jpg"]))
            site.put("/.well-known/security.txt", b"Contact: mailto:abuse@bench.example\n", content_type="text/plain")
            crawler.match(site.get("/img/0.jpg"))  # models load lazily: not part of the timing
            started: dict[int, float] = {}
            match_s: list[float] = []
            burst_start = time.time()

            def crawl() -> None:
                for i in range(n):
                    source = pb.Source(url=site.url(f"/img/{i}.jpg"), page_url=site.url(f"/board/{i}"),
                                       site=site.origin, title=f"게시물 {i} (benign bench fixture)")
                    t0 = time.time()
                    reply = crawler.match(site.get(f"/img/{i}.jpg"), source=source)
                    match_s.append(time.time() - t0)
                    started[reply.sighting_id] = t0

            thread = threading.Thread(target=crawl)
            thread.start()
            latencies, failures, matched = wait_for_drafts(url, started, thread, timeout_s=60 + 20 * n)
            thread.join()
            channel.close()
        burst_s = max(started[s] + latency for s, latency in latencies.items()) - burst_start
    for error in sorted(set(failures)):
        progress(f"capture failed: {error}")
    per_item = sorted(latencies.values())
    return {"items": n, "matched": matched, "drafted": len(per_item), "failed": len(failures),
            "match_s_median": statistics.median(match_s),
            "item_s_median": statistics.median(per_item), "item_s_max": per_item[-1],
            "item_s_p95": per_item[min(len(per_item) - 1, int(0.95 * len(per_item)))], "burst_s": burst_s}


def wait_for_drafts(url: str, started: dict[int, float], crawling: threading.Thread, timeout_s: float
                    ) -> tuple[dict[int, float], list[str], int]:
    """Once every post is crawled and every matched one captured (or failed): seconds from each matched post's
    Match to its notice draft (the capture commits with the draft), the errors of failed captures, and how many
    posts matched."""
    deadline = time.time() + timeout_s
    with psycopg.connect(url, autocommit=True) as conn:
        while time.time() < deadline:
            crawled = not crawling.is_alive()
            matched = conn.execute("select count(distinct sighting_id) from matches").fetchone()[0]
            queued = conn.execute("select count(distinct sighting_id) from evidence_items").fetchone()[0]
            pending = conn.execute("select count(*) from evidence_items where capture_state = 'pending'").fetchone()[0]
            if crawled and queued == matched and pending == 0:
                rows = conn.execute(
                    "select e.sighting_id, max(e.captured_at) from evidence_items e join notice_items ni"
                    " on ni.item_id = e.id where e.capture_state = 'captured' group by e.sighting_id").fetchall()
                failed = [r[0] for r in conn.execute(
                    "select capture_error from evidence_items where capture_state = 'failed'")]
                return {s: at.timestamp() - started[s] for s, at in rows if s in started}, failed, matched
            time.sleep(0.2)
    raise TimeoutError(f"captures not finished within {timeout_s:.0f} s")


def report(results: list[dict[str, float | int]]) -> str:
    lines = [
        "## Match → drafted notice (`bench/notice_latency.py`)",
        "",
        f"Machine: {machine()}. Measured {datetime.now():%Y-%m-%d}. Service, worker, Chromium, PostgreSQL and the",
        "fixture site share the machine; the crawler sends one post after another while the worker captures.",
        "",
        "| posts | matched | drafted | failed | Match median (s) | per item: Match → draft, median (s) "
        "| p95 (s) | max (s) "
        "| whole burst (s) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['items']} | {r['matched']} | {r['drafted']} | {r['failed']} | {r['match_s_median']:.2f} "
                     f"| {r['item_s_median']:.2f} | {r['item_s_p95']:.2f} | {r['item_s_max']:.2f} "
                     f"| {r['burst_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", default="1,100", help="burst sizes, comma-separated")
    parser.add_argument("--out", help="also write the markdown report here")
    args = parser.parse_args(argv)
    results = [run_burst(int(n)) for n in args.items.split(",")]
    publish(report(results), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
