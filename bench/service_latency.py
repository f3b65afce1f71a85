"""Latency and throughput of the running service over gRPC: RegisterReference, then Match at several concurrencies.

    .venv/bin/python -m bench.service_latency [--seconds 60] [--concurrency 1,4] [--references 50]
                                              [--configs before,default] [--copies 0.5] [--out report.md]

For each configuration (CONFIGS: `default`; `before`, the service as it was before the fast path: no cascade,
no distilled embedding, ONNX Runtime threads one per core; `grid0`, the default without grid windows;
`all_regions`, the default but a candidate gets the full embedding on every region, not only the flagged ones)
it starts the real service (`server.app.running_service`) on a throwaway PostgreSQL cluster
(`server.storage.db.local_postgres`, system binaries), registers N corpus images as references through
`jiwoom.api.client.MatcherClient`, then for `--seconds` per concurrency level sends `Match` requests from that
many client threads: a share `--copies` (default half) are transformed copies of registered references (they
should match), the rest transformed corpus images that were not registered (a crawl sees mostly those). Client
and server share this machine's cores, as they would on a single-box deployment.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import itertools
import json
import os
import random
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from bench.accuracy import near_duplicate_key, transformed
from bench.record import machine, publish
from bench.transforms import CORPUS, TRANSFORMS, encode, load
from jiwoom.api.client import MatcherClient, open_channel
from server.app import running_service
from server.config import MatchSettings, ModelSettings, ServiceSettings, Settings
from server.storage.db import local_postgres

WARMUP_REQUESTS = 2  # per concurrency level, not timed: the first calls load models and fill caches
CONFIGS: dict[str, Settings] = {
    "default": Settings(),
    "before": Settings(match=MatchSettings(signals="pdq,embedding,face", screen_signal="", face_min_score=0.3,
                                           face_min_width=0),
                       models=ModelSettings(threads=0, face_detector="hog")),
    "grid0": Settings(models=ModelSettings(region_grid=0, fast_region_grid=0)),
    "all_regions": Settings(match=MatchSettings(screen_regions_only=False)),
}


@dataclass(frozen=True)
class QueryItem:
    data: bytes
    expected: int | None  # corpus index of the reference it is a copy of; None for a non-matching image
    transform: str


@dataclass
class LevelResult:
    concurrency: int
    latencies_ms: list[float]
    seconds: float
    errors: int
    copies: int  # matching copies sent
    copies_found: int  # ... whose reference was among the matches
    others: int  # non-matching images sent
    others_matched: int  # ... that matched anything


@dataclass
class ConfigResult:
    label: str
    registration_ms: list[float]
    references: int
    levels: list[LevelResult]
    startup_s: float  # migrations, pool, empty indexes, gRPC server
    first_call_s: float  # the first Match: the models load lazily


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@functools.cache
def manifest_images() -> list[dict]:
    return json.loads((CORPUS / "manifest.json").read_text())["images"]


def image_path(index: int) -> Path:
    return CORPUS / manifest_images()[index]["file"]


def pick_images(references: int, queries: int, seed: int) -> tuple[list[int], list[int]]:
    """Corpus indexes to register, and others for non-matching queries (outside the references' near-duplicate
    groups, so a "non-matching" image is not a second shot of a registered one)."""
    manifest = manifest_images()
    order = list(range(len(manifest)))
    random.Random(seed).shuffle(order)
    registered = sorted(order[:references])
    groups = {near_duplicate_key(manifest[i]["orig"], manifest[i]["source"]) for i in registered}
    others = [i for i in order[references:]
              if near_duplicate_key(manifest[i]["orig"], manifest[i]["source"]) not in groups][:queries]
    return registered, others


def query_pool(registered: list[int], others: list[int], size: int, seed: int, copies: float = 0.5
               ) -> list[QueryItem]:
    """Transformed JPEGs (q90): a share `copies` of copies of registered references, spread through the pool,
    the rest unregistered images."""
    rng = random.Random(seed)
    names = list(TRANSFORMS)
    pool = []
    for i in range(size):
        copy = int((i + 1) * copies) > int(i * copies)
        index = rng.choice(registered) if copy else others[(i // 2) % len(others)]
        transform = rng.choice(names)
        image = transformed(transform, load(image_path(index)), seed + i)
        pool.append(QueryItem(encode(image, "JPEG", 90), index if copy else None, transform))
    return pool


def measure_level(client: MatcherClient, pool: list[QueryItem], reference_ids: dict[int, int], concurrency: int,
                  seconds: float) -> LevelResult:
    for item in pool[:WARMUP_REQUESTS]:
        client.match(item.data)
    counter = itertools.count()
    lock = threading.Lock()
    result = LevelResult(concurrency, [], 0.0, 0, 0, 0, 0, 0)
    stop_at = time.monotonic() + seconds

    def worker() -> None:
        while time.monotonic() < stop_at:
            item = pool[next(counter) % len(pool)]
            started = time.perf_counter()
            try:
                reply = client.match(item.data)
            except grpc.RpcError as error:
                progress(f"Match failed: {error.code()} {error.details()}")
                with lock:
                    result.errors += 1
                continue
            elapsed = (time.perf_counter() - started) * 1000
            found = {m.reference_id for m in reply.matches}
            with lock:
                result.latencies_ms.append(elapsed)
                if item.expected in reference_ids:
                    result.copies += 1
                    result.copies_found += int(reference_ids[item.expected] in found)
                elif item.expected is None:
                    result.others += 1
                    result.others_matched += int(bool(found))

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, name=f"client-{i}") for i in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - started  # includes the tail of calls started before the stop time
    return result


def run_config(label: str, settings: Settings, args: argparse.Namespace, registered: list[int],
               pool: list[QueryItem]) -> ConfigResult:
    with tempfile.TemporaryDirectory(prefix="jiwoom-latency-") as tmp:
        service = dataclasses.replace(settings.service, listen="127.0.0.1:0", data_dir=str(Path(tmp) / "data"))
        settings = dataclasses.replace(settings, service=service)
        with local_postgres(Path(tmp) / "postgres", binaries="system") as url:
            started = time.perf_counter()
            with running_service(settings, url) as running:
                startup = time.perf_counter() - started
                token = running.store.create_token("bench-latency", "admin")
                channel = open_channel(f"127.0.0.1:{running.port}")
                client = MatcherClient(channel, token, timeout_s=300)
                began = time.perf_counter()
                client.match(pool[1].data)  # loads the models before anything else is timed
                first_call_s = time.perf_counter() - began
                registration_ms = []
                reference_ids: dict[int, int] = {}
                for n, index in enumerate(registered):
                    data = image_path(index).read_bytes()
                    began = time.perf_counter()
                    try:
                        reply = client.register_reference(f"bench-case-{n % 5}", data)  # with retro-hunt
                    except grpc.RpcError as error:  # e.g. a flat picture: "nothing matchable"
                        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
                            raise
                        progress(f"{label}: corpus image {index} refused as a reference: {error.details()}")
                        continue
                    registration_ms.append((time.perf_counter() - began) * 1000)
                    reference_ids[index] = reply.reference_id
                progress(f"{label}: registered {len(reference_ids)} of {len(registered)} references")
                levels = []
                for concurrency in args.concurrency:
                    levels.append(measure_level(client, pool, reference_ids, concurrency, args.seconds))
                    progress(f"{label}: concurrency {concurrency}: {len(levels[-1].latencies_ms)} calls")
                channel.close()
    return ConfigResult(label, registration_ms, len(registered), levels, startup, first_call_s)


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def render(results: list[ConfigResult], args: argparse.Namespace, settings: Settings, pool: list[QueryItem],
           wall_s: float, load_at_start: tuple[float, float, float]) -> str:
    lines = ["# Service latency over gRPC (`python -m bench.service_latency`)\n"]
    add = lines.append
    add(f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    add(f"- Machine: {machine()}; no GPU; load average (1/5/15 min) at the start "
        + " / ".join(f"{v:.2f}" for v in load_at_start)
        + ", at the end " + " / ".join(f"{v:.2f}" for v in os.getloadavg()))
    add(f"- Command: `python -m bench.service_latency{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`")
    add(f"- Service: in-process inference, PostgreSQL 15 (system binaries, unix socket), gRPC on loopback without "
        f"TLS; max_workers {settings.service.max_workers}, max_concurrent_rpcs {settings.service.max_concurrent_rpcs}."
        f" The client threads run on the same {os.cpu_count()} cores.")
    add(f"- References: {args.references} corpus images (original bytes), registered one at a time with "
        f"retro-hunt. Match queries: a pool of {len(pool)} JPEG q90 images cycled through, "
        f"{sum(item.expected is not None for item in pool)} transformed copies of registered references (random "
        f"transform of {', '.join(TRANSFORMS)}), the rest transformed unregistered images; {args.seconds:g} s "
        f"per concurrency level after {WARMUP_REQUESTS} warm-up calls.")
    add(f"- Wall time: {wall_s / 60:.1f} min\n")
    add("| configuration | operation | concurrency | calls | p50 ms | p90 ms | p99 ms | throughput req/s | errors |"
        " copies found | non-matching that matched |")
    add("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        reg = r.registration_ms
        add(f"| {r.label} | RegisterReference | 1 | {len(reg)} | {percentile(reg, 50):.0f} | "
            f"{percentile(reg, 90):.0f} | {percentile(reg, 99):.0f} | {len(reg) / (sum(reg) / 1000):.2f} | 0 | | |")
        for level in r.levels:
            lat = level.latencies_ms
            add(f"| {r.label} | Match | {level.concurrency} | {len(lat)} | {percentile(lat, 50):.0f} | "
                f"{percentile(lat, 90):.0f} | {percentile(lat, 99):.0f} | {len(lat) / level.seconds:.2f} | "
                f"{level.errors} | {level.copies_found}/{level.copies} | {level.others_matched}/{level.others} |")
    add("")
    add("Service start (migrations, pool, empty indexes, gRPC): "
        + ", ".join(f"{r.label} {r.startup_s:.1f} s" for r in results)
        + ". First Match after start (models load lazily): "
        + ", ".join(f"{r.label} {r.first_call_s:.1f} s" for r in results) + ".")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="per concurrency level")
    parser.add_argument("--concurrency", default="1,4", help="comma-separated client thread counts")
    parser.add_argument("--references", type=int, default=50)
    parser.add_argument("--configs", default="before,default", help=f"comma-separated, of {sorted(CONFIGS)}")
    parser.add_argument("--copies", type=float, default=0.5, help="share of Match queries that copy a reference")
    parser.add_argument("--pool", type=int, default=40, help="distinct Match query images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the report to this file")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c.strip()]
    load_at_start = os.getloadavg()  # a shared machine skews the timings; say how busy it was
    started = time.perf_counter()
    registered, others = pick_images(args.references, args.pool, args.seed)
    pool = query_pool(registered, others, args.pool, args.seed, args.copies)
    base = Settings(service=ServiceSettings())
    results = []
    for name in (n.strip() for n in args.configs.split(",") if n.strip()):
        results.append(run_config(name, CONFIGS[name], args, registered, pool))
    text = render(results, args, base, pool, time.perf_counter() - started, load_at_start)
    publish(text, args.out)


if __name__ == "__main__":
    main()
