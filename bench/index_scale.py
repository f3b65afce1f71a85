"""Build time, memory, latency and recall of server.index at scale, on synthetic data.

    .venv/bin/python -m bench.index_scale --sizes 100000 1000000 --queries 1000 [--out /tmp/index_scale.md]
    .venv/bin/python -m bench.index_scale --references 100000 1000000 > /tmp/index_refs.md
    python3 -m bench.index_scale --sizes 100000 1000000 10000000 --backends torch   # GPU host, no faiss needed

Two modes. `--sizes` counts vectors (below). `--references` counts image references as the service stores them
(--pdq-per-reference 1 PDQ code, --vectors-per-reference 10 SSCD vectors each) and queries them as it does (8
dihedral PDQ codes in one call; 10 region vectors with k=32 in one call): PDQ MultiHash, Flat where it fits in
RAM, and IVF4096,PQ64np (trained on a 100k-vector sample, grown in 500k-vector chunks so the raw vectors are
never all in memory), with a time budget (--budget-min) past which the largest size is extrapolated, labelled
so. See `RefBench`.

Per-vector mode:

Indexes, at each size:
- PDQ: `BinaryIndex` (IndexBinaryMultiHash 256/16/16, nflip 1) over random 256-bit codes, 8 per owner (a
  reference's dihedral variants). Queries are stored codes with 0..31 random bits flipped; "recall" is the share
  of queries whose planted source comes back (the index is exact, so it should be 1.000).
- SSCD-like: `VectorIndex` over 512-d L2-normalised float vectors, 10 per owner (regions of one image), clustered
  with a low intrinsic dimension (2,000 clusters in a 64-d latent space, projected to 512-d, plus isotropic noise).
  Queries are near-copies of stored vectors (cosine ~0.9 to their source). Exact "Flat" and "IVF4096,PQ64" at
  nprobe 32; recall@1 and recall@10 of IVF-PQ are measured against Flat's results.
- torch: `server.index.exact.ExactIndex` over the same vectors, on --torch-device (auto: CUDA when there is one),
  one row per --torch-dtypes (default float32 and float16 on CUDA, float32 on CPU). Its recall is measured against
  FAISS Flat where that ran at the same size, else against the float32 torch row (exact too). A size is skipped,
  with a note, where its vectors do not fit: host memory for the generated data (and a CPU index), device memory
  for the stored tensor with its growth headroom (10M x 512 float16 = 10 GB). `--backends` picks what runs
  (pdq flat ivf torch; without faiss installed, torch only).

Latency: single queries one at a time (p50/p99 ms, over as many queries as fit in --single-budget-s), and
batched queries/s (all queries in one call). Memory: the index's own `memory_bytes()` estimate and the process
RSS growth while the index was built (psutil).

Threads: bulk builds and batched queries use all cores (or --threads). Per-call figures (one add(), one query)
use --single-threads OpenMP (and CPU torch) threads, 1 by default, as a server that runs requests side by side
would: a single small query split over OpenMP threads waits at barriers for any thread the OS has descheduled,
which on a busy 2-core machine made PDQ queries at 1M codes ~7x slower (8 ms p50 instead of 1.2 ms).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import numpy as np
import torch

from server.index.base import VectorHits
from server.index.exact import ExactIndex
from server.torch_device import resolve_device

try:
    import faiss

    from server.index.faiss_index import BinaryIndex, VectorIndex
except ImportError:  # a GPU host without faiss (the test machine): only the torch rows run
    faiss = None
from bench.record import publish

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
    gpu = (f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB)"
           if torch.cuda.is_available() else "none")
    faiss_line = (f"faiss {faiss.__version__} ({faiss.get_compile_options().strip()}), GPUs seen by faiss: "
                  f"{faiss.get_num_gpus()}, OpenMP threads {faiss.omp_get_max_threads()}" if faiss is not None
                  else "faiss not installed (FAISS rows skipped)")
    return [f"- CPU: {cpu}, {os.cpu_count()} cores, {ram:.0f} GiB RAM; GPU: {gpu}",
            f"- {faiss_line}; torch {torch.__version__} ({torch.get_num_threads()} CPU threads); numpy "
            f"{np.__version__}; Python {platform.python_version()}",
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


def _embedding_chunk(c: int, m: int, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """The first m rows drawn from seeded chunk c (m < CHUNK draws differently, not a prefix of the full chunk)."""
    centers, proj = model
    rng = np.random.default_rng(2000 + c)
    z = centers[rng.integers(0, CLUSTERS, m)] + 0.5 * rng.standard_normal((m, LATENT), dtype=np.float32)
    x = z @ proj + 0.1 * rng.standard_normal((m, DIM), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embeddings(n: int) -> np.ndarray:
    model = _model()
    out = np.empty((n, DIM), np.float32)
    for start in range(0, n, CHUNK):
        m = min(CHUNK, n - start)
        out[start : start + m] = _embedding_chunk(start // CHUNK, m, model)
    return out


def embedding_rows(first: int, stop: int, model: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Rows first..stop-1 of the endless embedding stream made of full seeded chunks: the same rows whatever
    slices they are asked in, and the same as embeddings(n) for n a multiple of CHUNK."""
    out = np.empty((stop - first, DIM), np.float32)
    for start in range(first - first % CHUNK, stop, CHUNK):
        x = _embedding_chunk(start // CHUNK, CHUNK, model)
        lo, hi = max(start, first), min(start + CHUNK, stop)
        out[lo - first : hi - first] = x[lo - start : hi - start]
    return out


def embedding_queries(data: np.ndarray, nq: int) -> np.ndarray:
    rng = np.random.default_rng(8)
    q = data[rng.choice(len(data), nq, replace=False)] + 0.02 * rng.standard_normal((nq, DIM), dtype=np.float32)
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


# ---------------------------------------------------------------------------------------------- measuring


SINGLE_THREADS = 1  # OpenMP threads for per-call figures (set from --single-threads)


@contextmanager
def per_call_threads() -> Iterator[None]:
    """OpenMP (FAISS) and CPU torch threads for per-call measurements, restored afterwards."""
    saved = faiss.omp_get_max_threads() if faiss is not None else 0, torch.get_num_threads()
    if faiss is not None:
        faiss.omp_set_num_threads(SINGLE_THREADS)
    torch.set_num_threads(SINGLE_THREADS)
    try:
        yield
    finally:
        if faiss is not None:
            faiss.omp_set_num_threads(saved[0])
        torch.set_num_threads(saved[1])


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


def row(name: str, size: int, build_s: float, add_ms: float, train: str, index: BinaryIndex | VectorIndex | ExactIndex,
        rss_delta: int | str | None, lat: tuple[float, float, int], qps: float, recall: str) -> str:
    mem = index.memory_bytes() / 2**20
    grown = rss_delta if isinstance(rss_delta, str) else "n/a" if rss_delta is None else f"{rss_delta / 2**20:,.0f}"
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


def add_all(index: BinaryIndex | VectorIndex | ExactIndex, data: np.ndarray, per_owner: int
            ) -> BinaryIndex | VectorIndex | ExactIndex:
    """Bulk load through add_many, 10,000 owners a call."""
    starts = range(0, len(data), per_owner)
    for first in range(0, len(starts), 10_000):
        index.add_many((owner, data[starts[owner] : starts[owner] + per_owner])
                       for owner in range(first, min(first + 10_000, len(starts))))
    return index


def add_one_by_one(index: BinaryIndex | VectorIndex | ExactIndex, data: np.ndarray, per_owner: int, n: int = 200
                   ) -> float:
    """ms per add() of one owner, for owners arriving one at a time (new references, sightings)."""
    first = len(data) // per_owner + 1
    with per_call_threads():
        started = time.perf_counter()
        for i in range(n):
            index.add(first + i, data[i * per_owner : (i + 1) * per_owner])
        return (time.perf_counter() - started) * 1000 / n


def batched(search: Callable[[np.ndarray], VectorHits], queries: np.ndarray) -> tuple[VectorHits, float]:
    """All queries in one call, after a warm-up call on the first 100 (CUDA: kernels chosen, memory pooled)."""
    search(queries[:100])
    started = time.perf_counter()
    hits = search(queries)
    return hits, len(queries) / (time.perf_counter() - started)


def stored_rows(hits: VectorHits, size: int) -> np.ndarray:
    """Row of `data` each hit holds. add_one_by_one stores owners first.. again with the first rows' vectors, so
    a tie between an original and its copy counts as the same hit whichever order an index returns them in."""
    first = size // VEC_PER_OWNER + 1
    owners = np.where(hits.owners >= first, hits.owners - first, hits.owners)
    return np.where(hits.owners < 0, -1, owners * VEC_PER_OWNER + hits.locals)


def recall_vs(reference: VectorHits, hits: VectorHits, size: int) -> str:
    """recall@1 and recall@10 of `hits` against an exact reference."""
    ref, got = stored_rows(reference, size), stored_rows(hits, size)
    r10 = np.mean([len(set(a) & set(b)) / len(set(a)) for a, b in zip(ref, got, strict=True)])  # copies count once
    return f"{np.mean(ref[:, 0] == got[:, 0]):.3f} (R@10 {r10:.3f})"


def bench_flat(size: int, data: np.ndarray, queries: np.ndarray, budget: float) -> tuple[str, VectorHits]:
    flat, seconds, grown = built(lambda: add_all(VectorIndex(DIM, metric="ip", use_gpu=False), data, VEC_PER_OWNER))
    add_ms = add_one_by_one(flat, data, VEC_PER_OWNER)
    lat = single_latency(lambda q, index=flat: index.search(q, 10), queries, budget)
    exact, qps = batched(lambda q, index=flat: index.search(q, 10), queries)
    return row("SSCD 512-d Flat (exact)", size, seconds, add_ms, "–", flat, grown, lat, qps, "1 (exact)"), exact


def bench_ivf(size: int, data: np.ndarray, queries: np.ndarray, budget: float, train_max: int,
              trained: dict[int, Path], notes: list[str], exact: VectorHits | None) -> str:
    # IVF k-means dominates; train once on the first `train_max` vectors and reuse the trained, empty index for
    # larger sizes (the first rows are the same data at every size) through save/load.
    factory = "IVF4096,PQ64"
    sample = min(size, train_max)
    if sample not in trained:
        index = VectorIndex(DIM, metric="ip", factory=factory, nprobe=32, use_gpu=False)
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
    ivf, seconds, grown = built(lambda: add_all(VectorIndex.load(trained[sample], use_gpu=False), data,
                                                VEC_PER_OWNER))
    add_ms = add_one_by_one(ivf, data, VEC_PER_OWNER)
    lat = single_latency(lambda q, index=ivf: index.search(q, 10), queries, budget)
    approx, qps = batched(lambda q, index=ivf: index.search(q, 10), queries)
    recall = "– (no exact reference)" if exact is None else recall_vs(exact, approx, size)
    return row(f"SSCD 512-d {factory} nprobe 32", size, seconds, add_ms, train_note, ivf, grown, lat, qps, recall)


def torch_fits(size: int, device: torch.device, dtype: str, data_bytes: int) -> str | None:
    """Why an ExactIndex of `size` vectors would not fit, or None: the tensor at its growth peak (old and new
    capacity side by side, up to 2.5x the vectors) plus the search workspace, against free device memory (CUDA)
    or MemAvailable less the generated data (CPU)."""
    need = int(2.5 * size * DIM * (2 if dtype == "float16" else 4)) + (256 << 20)
    free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else mem_available() - data_bytes
    if need > 0.9 * free:
        return f"needs ~{need / 2**30:.1f} GiB on {device} at its growth peak, {free / 2**30:.1f} GiB free"
    return None


def bench_torch(size: int, data: np.ndarray, queries: np.ndarray, budget: float, device: torch.device,
                dtype: str, reference: VectorHits | None, notes: list[str]) -> tuple[str, VectorHits | None]:
    """One ExactIndex row; returns (row, its hits) — float32 hits are exact and serve as the reference where
    FAISS Flat did not run."""
    name = f"SSCD 512-d torch exact {dtype} ({device.type})"
    why = torch_fits(size, device, dtype, data.nbytes)
    if why:
        notes.append(f"- {name} at {size:,} vectors skipped: {why}")
        return f"| {name} | {size:,} | skipped (memory, see notes) | | | | | | | | | |", None
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    index, seconds, grown = built(lambda: add_all(ExactIndex(DIM, metric="ip", device=str(device), dtype=dtype),
                                                  data, VEC_PER_OWNER))
    add_ms = add_one_by_one(index, data, VEC_PER_OWNER)
    lat = single_latency(lambda q, x=index: x.search(q, 10), queries, budget)
    hits, qps = batched(lambda q, x=index: x.search(q, 10), queries)
    if cuda:  # host RSS says little here: the device's peak allocation across build and searches instead
        grown = f"GPU peak {(torch.cuda.max_memory_allocated(device) - base) / 2**20:,.0f}"
    if reference is not None:
        recall = recall_vs(reference, hits, size)
    else:
        recall = "1 (exact reference)" if dtype == "float32" else "– (no float32 reference at this size)"
    out = row(name, size, seconds, add_ms, "–", index, grown, lat, qps, recall)
    del index
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return out, hits if dtype == "float32" else None


def bench_size(size: int, args: argparse.Namespace, trained: dict[int, Path], notes: list[str]) -> list[str]:
    """Every selected backend at one size, on the same generated vectors."""
    rows = []
    if "pdq" in args.backends:
        rows.append(bench_pdq(size, args.queries, args.single_budget_s))
        print(rows[-1], flush=True)
    float_backends = [b for b in args.backends if b != "pdq"]
    if not float_backends:
        return rows
    data_bytes = size * DIM * 4
    if data_bytes > 0.8 * mem_available():
        notes.append(f"- {size:,} vectors: float rows skipped, the generated float32 vectors alone need "
                     f"{data_bytes / 2**30:.1f} GiB of {mem_available() / 2**30:.1f} GiB available")
        return rows
    data = embeddings(size)
    queries = embedding_queries(data, args.queries)
    exact = None
    if "flat" in float_backends:
        need = 2 * size * (DIM * 4 + 56)  # codes, IDMap2 maps, std::vector growth
        if need > 0.8 * (mem_available()):
            notes.append(f"- FAISS Flat at {size:,} vectors skipped: needs ~{need / 2**30:.1f} GiB, "
                         f"{mem_available() / 2**30:.1f} GiB available")
        else:
            line, exact = bench_flat(size, data, queries, args.single_budget_s)
            rows.append(line)
            print(line, flush=True)
            gc.collect()
    if "ivf" in float_backends:
        rows.append(bench_ivf(size, data, queries, args.single_budget_s, args.train_max, trained, notes, exact))
        print(rows[-1], flush=True)
        gc.collect()
    if "torch" in float_backends:
        device = resolve_device(args.torch_device)
        dtypes = args.torch_dtypes or (["float32", "float16"] if device.type == "cuda" else ["float32"])
        for dtype in sorted(dtypes, key=lambda d: d != "float32"):  # float32 first: the reference without FAISS
            line, hits = bench_torch(size, data, queries, args.single_budget_s, device, dtype, exact, notes)
            exact = exact if exact is not None else hits
            rows.append(line)
            print(line, flush=True)
    return rows


# ------------------------------------------------------------------------------------------ per-reference mode
#
# The service stores, per image reference, 1 PDQ code and ~10 SSCD vectors (border-trimmed frame, content
# blocks, 3x3 grid), and a query is one reference-like image: its 8 dihedral PDQ variants against the PDQ index
# and ~10 region vectors, k=32 each, against the embedding index. This mode sizes and queries the indexes that way.


def trimmed_rss() -> int | None:
    """RSS after a collection and glibc malloc_trim, so freed heap from earlier indexes does not count."""
    gc.collect()
    with suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    return rss()


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def ivf_factory(requested: str, notes: list[str]) -> str:
    """`requested` if this FAISS parses it, else the same without the "np" (no polysemous training) suffix."""
    try:
        index = faiss.downcast_index(faiss.index_factory(DIM, requested, faiss.METRIC_INNER_PRODUCT))
    except RuntimeError:
        fallback = requested.removesuffix("np")
        notes.append(f"- `{requested}` is not accepted by faiss {faiss.__version__}; used `{fallback}` (polysemous "
                     "training included in train s)")
        return fallback
    if requested.endswith("np") and not getattr(index, "do_polysemous_training", True):
        notes.append(f"- `{requested}`: accepted by faiss {faiss.__version__}, do_polysemous_training = False "
                     "(skips polysemous training, which only serves polysemous search, unused here)")
    return requested


def ref_latency(search: Callable[[int], object], n: int, budget_s: float) -> tuple[float, float, int]:
    """p50, p99 ms of single reference-like queries, one call each, as many as fit in the budget (at least 10)."""
    times: list[float] = []
    with per_call_threads():
        search(0)  # warm
        started = time.perf_counter()
        for i in range(max(n, 10)):
            t = time.perf_counter()
            search(i % n)
            times.append((time.perf_counter() - t) * 1000)
            if i >= 9 and time.perf_counter() - started > budget_s:
                break
    return float(np.percentile(times, 50)), float(np.percentile(times, 99)), len(times)


def fmt_mib(nbytes: int | float | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:,.0f}"


class RefBench:
    """State shared across reference counts: the planted-query pool and the growing IVF index."""

    def __init__(self, args: argparse.Namespace, sizes: list[int], deadline: float, notes: list[str]) -> None:
        self.v, self.p = args.vectors_per_reference, args.pdq_per_reference
        self.nq, self.k, self.variants = args.queries or 200, args.ref_k, args.pdq_variants
        self.budget, self.deadline, self.notes = args.single_budget_s, deadline, notes
        self.chunk_refs = max(1, args.chunk_vectors // self.v)
        self.flat_fraction, self.train_max, self.nprobe = args.flat_ram_fraction, args.train_max, args.nprobe
        self.factory = ivf_factory(args.factory, notes)
        self.model = _model()
        # Planted-query pool: `per_block` random references out of every block of `block` references, their
        # vectors kept as they stream past, so queries at any size are drawn uniformly without regenerating data.
        self.block = min(10_000, min(sizes))
        per_block = -(-self.nq // (min(sizes) // self.block))
        self.pool_owners = set()
        for b in range(max(sizes) // self.block + 1):
            rng = np.random.default_rng(5000 + b)
            self.pool_owners.update((b * self.block + rng.choice(self.block, min(per_block, self.block),
                                                                 replace=False)).tolist())
        self.pool: dict[int, np.ndarray] = {}
        self.ivf: VectorIndex | None = None
        self.ivf_refs = 0
        self.ivf_add_s = self.ivf_train_s = 0.0
        self.ivf_rss0: int | None = None
        self.ivf_pool0 = 0
        self.stream_rate: float | None = None  # vectors/s of generate + add_many, to plan within the deadline
        self.measured: list[dict] = []  # IVF points measured, for extrapolation

    # ------------------------------------------------------------------------------------------------ data

    def stream(self, first_ref: int, stop_ref: int) -> Iterator[tuple[int, np.ndarray]]:
        """(first owner, rows) chunks of the synthetic vectors of references first_ref..stop_ref-1."""
        for start in range(first_ref, stop_ref, self.chunk_refs):
            stop = min(start + self.chunk_refs, stop_ref)
            rows = embedding_rows(start * self.v, stop * self.v, self.model)
            for owner in self.pool_owners.intersection(range(start, stop)) - self.pool.keys():
                self.pool[owner] = rows[(owner - start) * self.v : (owner - start + 1) * self.v].copy()
            yield start, rows

    def add_chunk(self, index: VectorIndex, start: int, rows: np.ndarray) -> float:
        t = time.perf_counter()
        index.add_many((start + i, rows[i * self.v : (i + 1) * self.v]) for i in range(len(rows) // self.v))
        return time.perf_counter() - t

    def vector_queries(self, refs: int) -> tuple[np.ndarray, np.ndarray]:
        """([Q, v, DIM] near-copies (cosine ~0.9) of the vectors of Q planted references < refs, their owners)."""
        candidates = sorted(o for o in self.pool if o < refs)
        rng = np.random.default_rng(9)
        owners = rng.choice(candidates, min(self.nq, len(candidates)), replace=False)
        q = np.stack([self.pool[int(o)] for o in owners])
        q = q + 0.02 * rng.standard_normal(q.shape, dtype=np.float32)
        return (q / np.linalg.norm(q, axis=2, keepdims=True)).astype(np.float32), owners

    # ----------------------------------------------------------------------------------------------- rows

    def row(self, name: str, refs: int, stored: int, build: str, train: str, mem: str, grown: str,
            lat: tuple[float, float, int] | None, recall: str) -> str:
        timing = "| – | – | – " if lat is None else f"| {lat[0]:.2f} | {lat[1]:.2f} | {lat[2]} "
        return f"| {name} | {refs:,} | {stored:,} | {build} | {train} | {mem} | {grown} {timing}| {recall} |"

    def recall(self, index: VectorIndex, queries: np.ndarray, owners: np.ndarray) -> str:
        """Batched (all threads): vector R@1 = a region's top hit is its own source row; reference R@1 = the
        best-scoring owner over the query's v x k hits is the planted reference."""
        hits = index.search(queries.reshape(-1, DIM), self.k)
        src_owner = np.repeat(owners, self.v)
        src_local = np.tile(np.arange(self.v), len(owners))
        vec = np.mean((hits.owners[:, 0] == src_owner) & (hits.locals[:, 0] == src_local))
        scores = hits.scores.reshape(len(owners), -1)
        best = hits.owners.reshape(len(owners), -1)[np.arange(len(owners)), scores.argmax(axis=1)]
        return f"vec {vec:.3f} / ref {np.mean(best == owners):.3f}"

    def pdq(self, refs: int) -> str:
        codes = pdq_codes(refs * self.p)
        rng = np.random.default_rng(11)
        owners = rng.choice(refs, self.nq, replace=False)
        queries = rng.integers(0, 256, (self.nq, self.variants, 32), dtype=np.uint8)  # unrelated orientations
        planted, source = pdq_queries(codes[owners * self.p + rng.integers(0, self.p, self.nq)], self.nq)
        owners = owners[source]  # pdq_queries draws its sources in its own order
        queries[np.arange(self.nq), rng.integers(0, self.variants, self.nq)] = planted
        trimmed_rss()  # hand freed heap back first, so RSS Δ is this index's
        index, seconds, grown = built(lambda: add_all(BinaryIndex(), codes, self.p))
        lat = ref_latency(lambda i: index.search(queries[i]), self.nq, self.budget)
        found = index.search(queries.reshape(-1, 32))
        hit = {(int(q) // self.variants, int(o)) for q, o in zip(found.query, found.owners, strict=True)}
        recall = np.mean([(i, int(o)) in hit for i, o in enumerate(owners)])
        others = len(hit - {(i, int(o)) for i, o in enumerate(owners)})
        return self.row("PDQ MultiHash (exact ≤31)", refs, len(codes), f"{seconds:.1f}", "–",
                        fmt_mib(index.memory_bytes()), fmt_mib(grown), lat,
                        f"{recall:.3f} (planted ref found; {others} other refs matched)")

    def flat(self, refs: int) -> str:
        need = refs * self.v * (DIM * 4 + 8 + 48)  # raw floats + IDMap2 id_map and rev_map
        avail = mem_available()
        name = f"SSCD {DIM}-d Flat (exact)"
        if need > self.flat_fraction * avail:
            self.notes.append(f"- Flat at {refs:,} references skipped: {refs * self.v:,} vectors need "
                              f"{need / 2**30:.1f} GiB, over {self.flat_fraction:.0%} of the "
                              f"{avail / 2**30:.1f} GiB available (machine RAM {machine_ram() / 2**30:.0f} GiB, "
                              "shared with another benchmark); an exact index at this scale needs a GPU or a "
                              "bigger host")
            return self.row(name, refs, refs * self.v, "skipped", "–", f"{need / 2**20:,.0f} (needed)", "–", None,
                            "does not fit (see notes)")
        before = trimmed_rss()
        index = VectorIndex(DIM, metric="ip", use_gpu=False)
        seconds = sum(self.add_chunk(index, start, rows) for start, rows in self.stream(0, refs))
        after = trimmed_rss()
        queries, owners = self.vector_queries(refs)
        lat = ref_latency(lambda i, x=index: x.search(queries[i], self.k), len(owners), self.budget)
        out = self.row(name, refs, refs * self.v, f"{seconds:.1f}", "–", fmt_mib(index.memory_bytes()),
                       fmt_mib(None if before is None or after is None else after - before), lat,
                       self.recall(index, queries, owners))
        del index
        gc.collect()
        return out

    def train_ivf(self) -> None:
        self.ivf = VectorIndex(DIM, metric="ip", factory=self.factory, nprobe=self.nprobe, use_gpu=False)
        sample = embedding_rows(0, self.train_max, self.model)
        started = time.perf_counter()
        self.ivf.train(sample)
        self.ivf_train_s = time.perf_counter() - started
        del sample
        self.ivf_rss0, self.ivf_pool0 = trimmed_rss(), self.pool_bytes()
        self.notes.append(f"- {self.factory} nprobe {self.nprobe}: trained once on the first {self.train_max:,} "
                          f"vectors ({self.ivf_train_s:.0f} s; FAISS warns below 39 x nlist points); the "
                          "index then grows chunk by chunk across reference counts, build s = cumulative add_many "
                          f"time of {self.chunk_refs * self.v:,}-vector chunks (data generation excluded)")

    def pool_bytes(self) -> int:
        return sum(a.nbytes for a in self.pool.values())

    def grow_ivf(self, refs: int) -> tuple[int, bool]:
        """Add references up to `refs`, stopping early if the next chunk would not leave time to measure.
        Returns (references now in the index, whether it stopped early)."""
        reserve = self.budget + 90
        while self.ivf_refs < refs:
            stop = min(self.ivf_refs + self.chunk_refs, refs)
            if self.stream_rate and time.perf_counter() + (stop - self.ivf_refs) * self.v / self.stream_rate \
                    + reserve > self.deadline:
                return self.ivf_refs, True
            t = time.perf_counter()
            for start, rows in self.stream(self.ivf_refs, stop):
                self.ivf_add_s += self.add_chunk(self.ivf, start, rows)
            self.stream_rate = (stop - self.ivf_refs) * self.v / (time.perf_counter() - t)
            self.ivf_refs = stop
            print(f"  IVF at {self.ivf_refs:,} refs, add {self.ivf_add_s:.0f} s, "
                  f"{self.deadline - time.perf_counter():.0f} s of budget left", file=sys.stderr, flush=True)
        return self.ivf_refs, False

    def ivf_rows(self, refs: int) -> list[str]:
        if self.ivf is None:
            self.train_ivf()
            train = f"{self.ivf_train_s:.0f}"
        else:
            train = "(once)"
        have, capped = self.grow_ivf(refs)
        name = f"SSCD {DIM}-d {self.factory} nprobe {self.nprobe}"
        rows = []
        if have and (not self.measured or self.measured[-1]["refs"] != have):
            now = trimmed_rss()
            grown = None if now is None or self.ivf_rss0 is None else \
                now - self.ivf_rss0 - (self.pool_bytes() - self.ivf_pool0)
            queries, owners = self.vector_queries(have)
            lat = ref_latency(lambda i: self.ivf.search(queries[i], self.k), len(owners), self.budget)
            point = {"refs": have, "build": self.ivf_add_s, "mem": self.ivf.memory_bytes(), "rss": grown,
                     "lat": lat}
            self.measured.append(point)
            label = name if not capped else f"{name} (measured at the largest size that fit the time budget)"
            rows.append(self.row(label, have, have * self.v, f"{self.ivf_add_s:.1f}", train, fmt_mib(point["mem"]),
                                 fmt_mib(grown), lat, self.recall(self.ivf, queries, owners)))
        if capped:
            rows.append(self.extrapolated(name, refs))
        return rows

    def extrapolated(self, name: str, refs: int) -> str:
        """Linear in references from the measured points: build time, memory_bytes (exactly linear), RSS, and
        latency (IVF scan work grows with the list lengths, plus a fixed coarse-quantizer cost)."""
        if not self.measured:
            self.notes.append(f"- {name} at {refs:,} references: no time left to build any of it")
            return f"| {name} | {refs:,} | {refs * self.v:,} | not built (budget) | | | | | | | |"
        last = self.measured[-1]
        scale = refs / last["refs"]
        per_ref = refs - last["refs"]
        ivf = faiss.downcast_index(faiss.extract_index_ivf(self.ivf._index))
        mem = last["mem"] + per_ref * (self.v * (ivf.code_size + 8) + 100)
        rss_est = None if last["rss"] is None else last["rss"] * scale
        lat = None
        if len(self.measured) >= 2:
            first = self.measured[0]

            def line(i: int) -> float:
                slope = (last["lat"][i] - first["lat"][i]) / (last["refs"] - first["refs"])
                return last["lat"][i] + slope * (refs - last["refs"])
            lat = (line(0), line(1), 0)
        timing = "| – | – " if lat is None else f"| ~{lat[0]:.1f} | ~{lat[1]:.1f} "
        self.notes.append(f"- EXTRAPOLATED row: the {refs:,}-reference IVF build did not fit the time budget; "
                          f"figures scaled linearly from the measurement at {last['refs']:,} references"
                          + ("" if lat is None else f" (latency: straight line through {self.measured[0]['refs']:,}"
                             f" and {last['refs']:,})") + "; recall not measured")
        return (f"| {name} — EXTRAPOLATED | {refs:,} | {refs * self.v:,} | ~{last['build'] * scale:.0f} | (once) "
                f"| ~{fmt_mib(mem)} | ~{fmt_mib(rss_est)} {timing}| – | not measured |")


def machine_ram() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def run_references(args: argparse.Namespace) -> str:
    started = time.perf_counter()
    sizes = sorted(args.references)
    notes: list[str] = []
    bench = RefBench(args, sizes, started + args.budget_min * 60, notes)
    lines = ["## server.index at scale, sized by references (`python -m bench.index_scale --references ...`)", "",
             *machine(), "",
             "| index | references | stored rows | build s | train s | memory_bytes MiB | RSS Δ MiB "
             "| ref-query p50 ms | p99 ms | n | recall@1 (planted) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, refs in enumerate(sizes):
        for line in [bench.pdq(refs), bench.flat(refs), *bench.ivf_rows(refs)]:
            lines.append(line)
            print(line, file=sys.stderr, flush=True)
        if bench.ivf_refs < refs:  # out of time: the larger sizes are extrapolated too
            lines += [bench.extrapolated(f"SSCD {DIM}-d {bench.factory} nprobe {bench.nprobe}", later)
                      for later in sizes[n + 1 :]]
            break
    load = os.getloadavg()
    lines += ["",
              f"- per reference: {bench.p} PDQ code(s) and {bench.v} SSCD {DIM}-d L2-normalised vectors (synthetic, "
              "clustered: 2,000 clusters in a 64-d latent space); owner = reference",
              f"- one ref-query = {bench.variants} PDQ codes (dihedral variants: 1 a planted stored code with 0..31 "
              f"bits flipped, {bench.variants - 1} random) in one search call, max_distance 31; or {bench.v} region "
              f"vectors (near-copies, cosine ~0.9, of one planted reference's vectors) in one search call, k={bench.k}",
              f"- latency: single ref-queries one at a time, {SINGLE_THREADS} OpenMP thread(s), as many as fit in "
              f"{args.single_budget_s:.0f} s (n); builds and recall batches use {faiss.omp_get_max_threads()} threads",
              f"- recall over {bench.nq} planted ref-queries: vec = a region's top-1 hit is its own source vector; "
              f"ref = the best-scoring owner among the {bench.v}x{bench.k} hits is the planted reference",
              "- build s = add_many time only (synthetic data generation excluded); RSS Δ = resident growth across "
              "the build, after malloc_trim (psutil)",
              *notes,
              f"- TIMINGS ARE CONTENDED: 2-core machine shared with another running benchmark; load average at end "
              f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
              f"- total run time {time.perf_counter() - started:.0f} s (budget {args.budget_min:.0f} min)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, help="queries per index (default 1000; 200 with --references)")
    parser.add_argument("--single-budget-s", type=float, default=15.0, help="time for single-query latency, each")
    parser.add_argument("--train-max", type=int, default=100_000, help="IVF training sample cap")
    parser.add_argument("--threads", type=int, help="FAISS OpenMP threads for bulk work (default: all cores)")
    parser.add_argument("--single-threads", type=int, default=1,
                        help="OpenMP and CPU torch threads for per-call figures")
    parser.add_argument("--backends", nargs="+", choices=["pdq", "flat", "ivf", "torch"],
                        help="what --sizes measures (default: all; torch only where faiss is not installed)")
    parser.add_argument("--torch-device", default="auto", help="auto (CUDA when there is one), cpu, cuda[:N]")
    parser.add_argument("--torch-dtypes", nargs="+", choices=["float16", "float32"],
                        help="one torch row each (default: float32 and float16 on CUDA, float32 on CPU)")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    refs = parser.add_argument_group("sizing by references (replaces --sizes; progress on stderr, table on stdout)")
    refs.add_argument("--references", type=int, nargs="+", help="reference counts, e.g. 100000 1000000")
    refs.add_argument("--vectors-per-reference", type=int, default=VEC_PER_OWNER)
    refs.add_argument("--pdq-per-reference", type=int, default=1)
    refs.add_argument("--pdq-variants", type=int, default=PDQ_PER_OWNER, help="PDQ codes per query (dihedral)")
    refs.add_argument("--ref-k", type=int, default=32, help="k per region vector of a query")
    refs.add_argument("--factory", default="IVF4096,PQ64np", help="approximate index (np: no polysemous training)")
    refs.add_argument("--nprobe", type=int, default=32)
    refs.add_argument("--chunk-vectors", type=int, default=500_000, help="vectors generated and added per chunk")
    refs.add_argument("--flat-ram-fraction", type=float, default=0.5,
                      help="build Flat only if it needs at most this share of MemAvailable")
    refs.add_argument("--budget-min", type=float, default=25.0,
                      help="stop growing the IVF index where finishing would exceed this; extrapolate the rest")
    args = parser.parse_args()
    notes: list[str] = []
    if faiss is None:
        if args.references or (args.backends and set(args.backends) - {"torch"}):
            parser.error("faiss is not installed: only --sizes with --backends torch can run here")
        notes.append("- faiss is not installed on this machine: PDQ, Flat and IVF rows not measured")
    args.backends = args.backends or (["pdq", "flat", "ivf", "torch"] if faiss is not None else ["torch"])
    if args.threads:
        if faiss is not None:
            faiss.omp_set_num_threads(args.threads)
        torch.set_num_threads(args.threads)
    global SINGLE_THREADS
    SINGLE_THREADS = args.single_threads
    if args.references:
        text = run_references(args)
        publish(text, args.out)
        return
    args.queries = args.queries or 1000

    started = time.perf_counter()
    lines = ["## server.index at scale (`python -m bench.index_scale`)", "", *machine(), "",
             "| index | vectors | bulk build s | add() ms/owner | train s | memory_bytes MiB | RSS Δ MiB "
             "| single p50 ms | single p99 ms | single n | batched q/s | recall@1 vs exact |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    trained: dict[int, Path] = {}
    for size in args.sizes:
        lines += bench_size(size, args, trained, notes)
    for path in trained.values():
        path.unlink(missing_ok=True)
    bulk_threads = faiss.omp_get_max_threads() if faiss is not None else torch.get_num_threads()
    load = os.getloadavg()
    lines += ["", f"- queries: {args.queries} per index, k=10 for float indexes, max_distance 31 for PDQ; "
              "bulk build = add_many, 10,000 owners a call (PDQ 8 codes, float 10 vectors per owner); "
              "add() ms/owner = 200 more owners added one call each after the build",
              f"- per-call figures (add() ms/owner, single p50/p99) with {SINGLE_THREADS} OpenMP / CPU torch "
              f"thread(s); bulk build and batched q/s (one call for all queries, after a warm-up call) with "
              f"{bulk_threads}; on CUDA a call includes copying queries in and results out",
              "- torch rows: memory_bytes = the stored tensor at its capacity (grows by 1.5x) + host ids; on CUDA "
              "the RSS column holds the device's peak allocation instead; recall against FAISS Flat at the same "
              "size, else against the float32 torch row",
              *notes, f"- load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
              f"- total run time {time.perf_counter() - started:.0f} s"]
    text = "\n".join(lines) + "\n"
    publish(text, args.out)


if __name__ == "__main__":
    main()
