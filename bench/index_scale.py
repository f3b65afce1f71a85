"""Build time, memory, latency and recall of server.index at scale, on synthetic data.

    .venv/bin/python -m bench.index_scale --sizes 100000 1000000 --queries 1000 [--out /tmp/index_scale.md]

Indexes, at each size:
- PDQ: `BinaryIndex` (IndexBinaryMultiHash 256/16/16, nflip 1) over random 256-bit codes, 8 per owner (a
  reference's dihedral variants). Queries are stored codes with 0..31 random bits flipped; "recall" is the share
  of queries whose planted source comes back (the index is exact, so it should be 1.000).
- SSCD-like: `VectorIndex` over 512-d L2-normalised float vectors, 10 per owner (regions of one image), clustered
  with a low intrinsic dimension (2,000 clusters in a 64-d latent space, projected to 512-d, plus isotropic noise).
  Queries are near-copies of stored vectors (cosine ~0.9 to their source). Exact "Flat" and "IVF4096,PQ64" at
  nprobe 32; recall@1 and recall@10 of IVF-PQ are measured against Flat's results.

Latency: single queries one at a time (p50/p99 ms, over as many queries as fit in --single-budget-s), and
batched queries/s (all queries in one call). Memory: the index's own `memory_bytes()` estimate and the process
RSS growth while the index was built (psutil).

Threads: bulk builds and batched queries use all cores (or --threads). Per-call figures (one add(), one query)
use --single-threads OpenMP threads, 1 by default, as a server that runs requests side by side would: a single
small query split over OpenMP threads waits at barriers for any thread the OS has descheduled, which on a busy
2-core machine made PDQ queries at 1M codes ~7x slower (8 ms p50 instead of 1.2 ms).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from server.index import BinaryIndex, VectorIndex

DIM = 512
LATENT = 64
CLUSTERS = 2000
CHUNK = 100_000  # data is generated in seeded chunks, so the first n rows are the same at every size
PDQ_PER_OWNER = 8
VEC_PER_OWNER = 10

try:
    import psutil

    def rss() -> int | None:
        return psutil.Process().memory_info().rss
except ImportError:  # RSS growth is then not reported
    def rss() -> int | None:
        return None


def machine() -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = os.getloadavg()
    return [f"- CPU: {cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM; FAISS OpenMP threads: "
            f"{faiss.omp_get_max_threads()}",
            f"- faiss {faiss.__version__} ({faiss.get_compile_options().strip()}), GPUs seen by faiss: "
            f"{faiss.get_num_gpus()}; numpy {np.__version__}; Python {platform.python_version()}",
            f"- load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (other jobs on the machine skew "
            "timings)"]


# -------------------------------------------------------------------------------------------------- data


def pdq_codes(n: int) -> np.ndarray:
    out = np.empty((n, 32), np.uint8)
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng(1000 + start // CHUNK)
        out[start : start + CHUNK] = rng.integers(0, 256, (min(CHUNK, n - start), 32), dtype=np.uint8)
    return out


def pdq_queries(codes: np.ndarray, nq: int) -> tuple[np.ndarray, np.ndarray]:
    """(queries, source row): each query is a stored code with 0..31 random bits flipped."""
    rng = np.random.default_rng(7)
    source = rng.choice(len(codes), nq, replace=False)
    bits = np.unpackbits(codes[source], axis=1)
    for i in range(nq):
        flips = rng.choice(256, rng.integers(0, 32), replace=False)
        bits[i, flips] ^= 1
    return np.packbits(bits, axis=1), source


def _model() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    return rng.standard_normal((CLUSTERS, LATENT)).astype(np.float32), \
        (rng.standard_normal((LATENT, DIM)) / np.sqrt(LATENT)).astype(np.float32)


def embeddings(n: int) -> np.ndarray:
    centers, proj = _model()
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng(2000 + start // CHUNK)
        m = min(CHUNK, n - start)
        z = centers[rng.integers(0, CLUSTERS, m)] + 0.5 * rng.standard_normal((m, LATENT), dtype=np.float32)
        x = z @ proj + 0.1 * rng.standard_normal((m, DIM), dtype=np.float32)
        out[start : start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def embedding_queries(data: np.ndarray, nq: int) -> np.ndarray:
    rng = np.random.default_rng(8)
    q = data[rng.choice(len(data), nq, replace=False)] + 0.02 * rng.standard_normal((nq, DIM), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- measuring


SINGLE_THREADS = 1  # OpenMP threads for per-call figures (set from --single-threads)


@contextmanager
def per_call_threads() -> Iterator[None]:
    """OpenMP threads for per-call measurements, restored afterwards."""
    saved = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(SINGLE_THREADS)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(saved)


def single_latency(search: Callable[[np.ndarray], object], queries: np.ndarray, budget_s: float
                   ) -> tuple[float, float, int]:
    """p50, p99 ms over single-query calls, as many as fit in the budget (at least 10)."""
    times: list[float] = []
    with per_call_threads():
        search(queries[:1])  # warm
        started = time.perf_counter()
        for i in range(len(queries)):
            t = time.perf_counter()
            search(queries[i : i + 1])
            times.append((time.perf_counter() - t) * 1000)
            if i >= 9 and time.perf_counter() - started > budget_s:
                break
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)


def built(build: Callable[[], object]) -> tuple[object, float, int | None]:
    gc.collect()
    before = rss()
    started = time.perf_counter()
    index = build()
    seconds = time.perf_counter() - started
    after = rss()
    return index, seconds, None if before is None or after is None else after - before


def row(name: str, size: int, build_s: float, add_ms: float, train: str, index: BinaryIndex | VectorIndex,
        rss_delta: int | None, lat: tuple[float, float, int], qps: float, recall: str) -> str:
    mem = index.memory_bytes() / 2**20
    grown = "n/a" if rss_delta is None else f"{rss_delta / 2**20:,.0f}"
    return (f"| {name} | {size:,} | {build_s:.1f} | {add_ms:.2f} | {train} | {mem:,.0f} | {grown} "
            f"| {lat[0]:.2f} | {lat[1]:.2f} | {lat[2]} | {qps:,.0f} | {recall} |")


def bench_pdq(size: int, nq: int, budget: float) -> str:
    codes = pdq_codes(size)
    queries, source = pdq_queries(codes, nq)

    index, seconds, grown = built(lambda: add_all(BinaryIndex(), codes, PDQ_PER_OWNER))
    add_ms = add_one_by_one(index, codes, PDQ_PER_OWNER)
    lat = single_latency(index.search, queries, budget)
    started = time.perf_counter()
    found = index.search(queries)
    qps = nq / (time.perf_counter() - started)
    hits = {(int(q), int(o) * PDQ_PER_OWNER + int(loc)) for q, o, loc in zip(found.query, found.owners, found.locals,
                                                                               strict=True)}
    recall = np.mean([(i, int(s)) in hits for i, s in enumerate(source)])
    return row("PDQ MultiHash (exact ≤31)", size, seconds, add_ms, "–", index, grown, lat, qps,
               f"{recall:.3f} (planted)")


def add_all(index: BinaryIndex | VectorIndex, data: np.ndarray, per_owner: int) -> BinaryIndex | VectorIndex:
    """Bulk load through add_many, 10,000 owners a call."""
    starts = range(0, len(data), per_owner)
    for first in range(0, len(starts), 10_000):
        index.add_many((owner, data[starts[owner] : starts[owner] + per_owner])
                       for owner in range(first, min(first + 10_000, len(starts))))
    return index


def add_one_by_one(index: BinaryIndex | VectorIndex, data: np.ndarray, per_owner: int, n: int = 200) -> float:
    """ms per add() of one owner, for owners arriving one at a time (new references, sightings)."""
    first = len(data) // per_owner + 1
    with per_call_threads():
        started = time.perf_counter()
        for i in range(n):
            index.add(first + i, data[i * per_owner : (i + 1) * per_owner])
        return (time.perf_counter() - started) * 1000 / n


def bench_float(size: int, nq: int, budget: float, train_max: int, trained: dict[int, Path], notes: list[str]
                ) -> list[str]:
    data = embeddings(size)
    queries = embedding_queries(data, nq)
    rows = []

    flat, seconds, grown = built(lambda: add_all(VectorIndex(DIM, metric="ip"), data, VEC_PER_OWNER))
    add_ms = add_one_by_one(flat, data, VEC_PER_OWNER)
    lat = single_latency(lambda q, index=flat: index.search(q, 10), queries, budget)
    started = time.perf_counter()
    exact = flat.search(queries, 10)
    qps = nq / (time.perf_counter() - started)
    rows.append(row("SSCD 512-d Flat (exact)", size, seconds, add_ms, "–", flat, grown, lat, qps, "1 (exact)"))
    del flat
    gc.collect()

    # IVF k-means dominates; train once on the first `train_max` vectors and reuse the trained, empty index for
    # larger sizes (the first rows are the same data at every size) through save/load.
    factory = "IVF4096,PQ64"
    sample = min(size, train_max)
    if sample not in trained:
        index = VectorIndex(DIM, metric="ip", factory=factory, nprobe=32)
        started = time.perf_counter()
        index.train(data[:sample])
        train_s = time.perf_counter() - started
        path = Path(f"/tmp/index_scale_trained_{sample}.idx")
        index.save(path)
        trained[sample] = path
        train_note = f"{train_s:.0f}"
        notes.append(f"- {factory}: trained on {sample:,} vectors in {train_s:.0f} s; trained index reused for "
                     f"every size ≥ {sample:,} (training on all of a larger set would take ~linear longer)")
        del index
    else:
        train_note = f"reused ({sample // 1000}k)"
    ivf, seconds, grown = built(lambda: add_all(VectorIndex.load(trained[sample]), data, VEC_PER_OWNER))
    add_ms = add_one_by_one(ivf, data, VEC_PER_OWNER)
    lat = single_latency(lambda q, index=ivf: index.search(q, 10), queries, budget)
    started = time.perf_counter()
    approx = ivf.search(queries, 10)
    qps = nq / (time.perf_counter() - started)
    exact_ids = exact.owners * VEC_PER_OWNER + exact.locals
    approx_ids = approx.owners * VEC_PER_OWNER + approx.locals
    r1 = np.mean(exact_ids[:, 0] == approx_ids[:, 0])
    r10 = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_ids, approx_ids, strict=True)])
    rows.append(row(f"SSCD 512-d {factory} nprobe 32", size, seconds, add_ms, train_note, ivf, grown, lat, qps,
                    f"{r1:.3f} (R@10 {r10:.3f})"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--single-budget-s", type=float, default=15.0, help="time for single-query latency, each")
    parser.add_argument("--train-max", type=int, default=100_000, help="IVF training sample cap")
    parser.add_argument("--threads", type=int, help="FAISS OpenMP threads for bulk work (default: all cores)")
    parser.add_argument("--single-threads", type=int, default=1, help="OpenMP threads for per-call figures")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    global SINGLE_THREADS
    SINGLE_THREADS = args.single_threads

    started = time.perf_counter()
    lines = ["## server.index at scale (`python -m bench.index_scale`)", "", *machine(), "",
             "| index | vectors | bulk build s | add() ms/owner | train s | memory_bytes MiB | RSS Δ MiB "
             "| single p50 ms | single p99 ms | single n | batched q/s | recall@1 vs exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    notes: list[str] = []
    trained: dict[int, Path] = {}
    for size in args.sizes:
        lines.append(bench_pdq(size, args.queries, args.single_budget_s))
        print(lines[-1], flush=True)
        for line in bench_float(size, args.queries, args.single_budget_s, args.train_max, trained, notes):
            lines.append(line)
            print(line, flush=True)
    for path in trained.values():
        path.unlink(missing_ok=True)
    lines += ["", f"- queries: {args.queries} per index, k=10 for float indexes, max_distance 31 for PDQ; "
              "bulk build = add_many, 10,000 owners a call (PDQ 8 codes, float 10 vectors per owner); "
              "add() ms/owner = 200 more owners added one call each after the build",
              f"- per-call figures (add() ms/owner, single p50/p99) with {SINGLE_THREADS} OpenMP thread(s); bulk "
              f"build and batched q/s with {faiss.omp_get_max_threads()}",
              *notes, f"- total run time {time.perf_counter() - started:.0f} s"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
