"""Milvus (server.index.milvus) against in-process FAISS (server.index.faiss_index): the same vectors, the same
queries, the same machine, in one run.

    .venv/bin/python -m bench.index_milvus --sizes 100000,1000000 --queries 1000 [--milvus-indexes HNSW,FLAT]
        [--single-budget-s 30] [--budget-min 25] [--out F]

It starts an Embedded Milvus (the `milvus` package) in a temporary directory, and stops it at the end. Both sides
are built through `server.index.vector_index` / `binary_index` (the service's factory), so Milvus is measured
through the service's own client code (pymilvus `MilvusClient` over loopback gRPC, upsert in 16 MiB batches,
search at the "Customized" consistency level, `milvus_staleness_s` 0.5).

At each size (rows = stored vectors or codes; the data are `bench.index_scale`'s synthetic vectors and codes):
- embedding: 512-d L2-normalised float vectors, inner product, 10 per owner. FAISS exact Flat against each Milvus
  index in --milvus-indexes (HNSW M 16, efConstruction 200, ef 128; IVF_PQ nlist 4096, m 64, nprobe 32; FLAT).
  Queries are near-copies of stored vectors, k=32. Recall@32 = share of FAISS Flat's (exact) 32 neighbours that
  Milvus returns, counted per query and averaged.
- PDQ: 256-bit codes, 8 per owner. FAISS BinaryIndex (IndexBinaryMultiHash) against Milvus BIN_FLAT range search,
  radius 31 bits (both exact). Queries are stored codes with 0..31 bits flipped; recall = the planted source
  found; "agree" = share of queries whose whole match set is the same on both sides.

Timings:
- insert s: the bulk add_many calls (10,000 owners a call), data generation excluded.
- Milvus index s: after the inserts, flush, wait for the index to cover every row, release and load the
  collection again (so every sealed segment is searched through its index, not brute-force as a growing one).
- latency: single queries one call at a time, FAISS and Milvus interleaved query by query (the order swaps every
  query), so load from other jobs falls on both; as many as fit in --single-budget-s per pair (at least 50).
  FAISS searches with 1 OpenMP thread, as the service does (`one_search_thread`); Milvus's server uses the
  machine's cores as it likes, and its figure includes the loopback gRPC round trip and pymilvus.
Memory:
- FAISS: the index's own `memory_bytes()` (codes and id maps, in the benchmark's process).
- Milvus: resident set (psutil) of the Milvus server process and its children, just before the collection is
  created (once it has stopped falling after the previous collection was dropped: Milvus frees a dropped
  collection's segments some seconds later) and after it is built and loaded, and their difference. The server
  process holds its embedded etcd, growing-segment buffers and allocator caches too. Each collection is dropped
  after its rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bench.index_scale import (
    DIM,
    PDQ_PER_OWNER,
    VEC_PER_OWNER,
    add_all,
    embedding_queries,
    embeddings,
    fmt_mib,
    machine,
    mem_available,
    pdq_codes,
    pdq_queries,
    per_call_threads,
    stored_rows,
    trimmed_rss,
)
from bench.milvus_server import start_milvus
from bench.record import publish
from server.config import IndexSettings
from server.index import binary_index, vector_index
from server.index.base import BinaryMatches, VectorHits

K = 32
PDQ_RADIUS = 31
MIN_SINGLE = 50


# ------------------------------------------------------------------------------------------------ Milvus server


class Server:
    """An Embedded Milvus in a temporary directory, and the resident memory of its processes."""

    def __init__(self) -> None:
        import psutil

        self.dir = tempfile.mkdtemp(prefix="index_milvus_")
        self.server = start_milvus(Path(self.dir))
        self.uri = f"http://127.0.0.1:{self.server.listen_port}"
        self.proc = psutil.Process(self.server.server_proc.pid)

    def rss(self) -> int:
        procs = [self.proc, *self.proc.children(recursive=True)]
        return sum(p.memory_info().rss for p in procs if p.is_running())

    def settled_rss(self, timeout_s: float = 90.0) -> int:
        """RSS once it has stopped falling: Milvus releases a dropped collection's segments some seconds after the
        drop returns (measured: 1.3 GiB still held just after dropping a 100k HNSW collection)."""
        last, started = self.rss(), time.perf_counter()
        while time.perf_counter() - started < timeout_s:
            time.sleep(3)
            now = self.rss()
            if now > 0.99 * last:
                return now
            last = now
        return last

    def version(self) -> str:
        from pymilvus import __version__ as client_version

        from server.index.milvus import client

        server = client(self.settings("x", "FLAT")).get_server_version()
        return f"Milvus {server} (Embedded, `milvus` package), pymilvus {client_version}"

    def settings(self, collection: str, float_index: str) -> IndexSettings:
        # a long call timeout: loading a 1M-row collection takes longer than the service's 10 s default
        return IndexSettings(backend="milvus", milvus_uri=self.uri, milvus_prefix="bench",
                             milvus_float_index=float_index, collection=collection, milvus_timeout_s=1800)

    def stop(self) -> None:
        import shutil

        from server.index.milvus import forget_clients

        forget_clients()
        self.server.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def settle(index: object, timeout_s: float) -> float:
    """Flush, wait until the vector index covers every row, then reload: seconds taken (TimeoutError past
    timeout_s)."""
    started = time.perf_counter()
    milvus, name = index.client, index.name  # type: ignore[attr-defined]
    milvus.flush(name)
    while True:
        info = milvus.describe_index(name, "vector")
        # indexed_rows, not pending_index_rows: the upserts' deletes make Milvus compact segments after the first
        # build, and the compacted ones wait for an index again (pending stayed at 860k of 1M for minutes) while
        # the indexed originals still serve searches
        if int(info.get("indexed_rows", 0)) >= int(info.get("total_rows", 0)):
            break
        if time.perf_counter() - started > timeout_s:
            raise TimeoutError(f"{name}: index covers {info.get('indexed_rows')} of {info.get('total_rows')} rows "
                               f"after {timeout_s:.0f} s")
        time.sleep(1)
    milvus.release_collection(name)
    milvus.load_collection(name)
    return time.perf_counter() - started


# --------------------------------------------------------------------------------------------------- measuring


def interleaved(searches: dict[str, Callable[[np.ndarray], object]], queries: np.ndarray, budget_s: float
                ) -> dict[str, tuple[float, float, int]]:
    """p50, p99 ms and n per search, single queries, one of each per query with the order swapped every query."""
    names = list(searches)
    times: dict[str, list[float]] = {n: [] for n in names}
    with per_call_threads():
        for name in names:
            searches[name](queries[:1])  # warm
        started = time.perf_counter()
        for i in range(len(queries)):
            for name in names if i % 2 == 0 else names[::-1]:
                t = time.perf_counter()
                searches[name](queries[i : i + 1])
                times[name].append((time.perf_counter() - t) * 1000)
            if i + 1 >= MIN_SINGLE and time.perf_counter() - started > budget_s:
                break
    return {n: (float(np.percentile(t, 50)), float(np.percentile(t, 99)), len(t)) for n, t in times.items()}


def timed(run: Callable[[], object]) -> tuple[object, float]:
    started = time.perf_counter()
    out = run()
    return out, time.perf_counter() - started


def recall_at_k(exact: VectorHits, approx: VectorHits, size: int) -> float:
    ref, got = stored_rows(exact, size), stored_rows(approx, size)
    return float(np.mean([len(set(a) & set(b)) / len(set(a)) for a, b in zip(ref, got, strict=True)]))


def batched(search: Callable[[np.ndarray], VectorHits], queries: np.ndarray, step: int = 100) -> VectorHits:
    """All queries, `step` a call (Milvus caps nq x k per call), hits stacked like one call's."""
    parts = [search(queries[i : i + step]) for i in range(0, len(queries), step)]
    return VectorHits(*(np.concatenate(field) for field in zip(*parts, strict=True)))


def lat_cells(lat: tuple[float, float, int]) -> str:
    return f"{lat[0]:.2f} | {lat[1]:.2f} | {lat[2]}"


def line(signal: str, size: int, index: str, insert: str, build: str, memory: str,
         lat: tuple[float, float, int] | None, quality: str) -> str:
    cells = "– | – | –" if lat is None else lat_cells(lat)
    return f"| {signal} | {size:,} | {index} | {insert} | {build} | {memory} | {cells} | {quality} |"


class Run:
    def __init__(self, args: argparse.Namespace, server: Server, notes: list[str]) -> None:
        self.args, self.server, self.notes = args, server, notes
        self.deadline = time.perf_counter() + args.budget_min * 60

    def out_of_time(self, what: str) -> bool:
        if time.perf_counter() > self.deadline:
            self.notes.append(f"- {what}: not run, the run's --budget-min {self.args.budget_min:.0f} was spent")
            return True
        return False

    def milvus_memory(self, before: int, after: int) -> str:
        return f"server RSS {fmt_mib(before)} → {fmt_mib(after)} (Δ {fmt_mib(after - before)})"

    def embedding(self, size: int) -> list[str]:
        need = 2 * size * DIM * 4 * 1.2  # generated data + FAISS Flat, in this process
        if need > 0.6 * mem_available():
            self.notes.append(f"- embedding at {size:,}: skipped, data and FAISS Flat need ~{need / 2**30:.1f} GiB "
                              f"of {mem_available() / 2**30:.1f} GiB available (Milvus needs as much again)")
            return []
        data = embeddings(size)
        queries = embedding_queries(data, self.args.queries)
        trimmed_rss()
        flat, flat_s = timed(lambda: add_all(vector_index(DIM, "ip", IndexSettings(device="cpu")), data,
                                             VEC_PER_OWNER))
        exact = batched(lambda q: flat.search(q, K), queries)
        rows = []
        for kind in self.args.milvus_indexes:
            if self.out_of_time(f"embedding Milvus {kind} at {size:,}"):
                break
            before = self.server.settled_rss()
            milvus = vector_index(DIM, "ip", self.server.settings(f"emb_{kind.lower()}_{size}", kind))
            try:
                _, insert_s = timed(lambda m=milvus: add_all(m, data, VEC_PER_OWNER))
                try:
                    build_s = settle(milvus, max(60.0, self.deadline - time.perf_counter()))
                except TimeoutError as error:
                    self.notes.append(f"- embedding Milvus {kind} at {size:,}: {error}; not measured further")
                    rows.append(line("embedding", size, f"Milvus {kind}", f"{insert_s:.1f}", "did not finish", "–",
                                     None, "–"))
                    break
                after = self.server.rss()
                lat = interleaved({"faiss": lambda q: flat.search(q, K),
                                   "milvus": lambda q, m=milvus: m.search(q, K)}, queries, self.args.single_budget_s)
                recall = recall_at_k(exact, batched(lambda q, m=milvus: m.search(q, K), queries), size)
            finally:
                milvus.client.drop_collection(milvus.name)
            rows += [line("embedding", size, f"FAISS Flat (exact), paired with {kind}", f"{flat_s:.1f}", "–",
                          f"memory_bytes {fmt_mib(flat.memory_bytes())}", lat["faiss"], "1 (exact)"),
                     line("embedding", size, f"Milvus {kind}", f"{insert_s:.1f}", f"{build_s:.1f}",
                          self.milvus_memory(before, after), lat["milvus"], f"{recall:.3f}")]
            for r in rows[-2:]:
                print(r, file=sys.stderr, flush=True)
        return rows

    def pdq(self, size: int) -> list[str]:
        if self.out_of_time(f"PDQ at {size:,}"):
            return []
        codes = pdq_codes(size)
        queries, source = pdq_queries(codes, self.args.queries)
        faiss_index, faiss_s = timed(lambda: add_all(binary_index(IndexSettings(device="cpu")), codes,
                                                     PDQ_PER_OWNER))
        before = self.server.settled_rss()
        milvus = binary_index(self.server.settings(f"pdq_{size}", "FLAT"))
        try:
            _, insert_s = timed(lambda: add_all(milvus, codes, PDQ_PER_OWNER))
            build_s = settle(milvus, max(60.0, self.deadline - time.perf_counter()))
            after = self.server.rss()
            lat = interleaved({"faiss": lambda q: faiss_index.search(q, PDQ_RADIUS),
                               "milvus": lambda q: milvus.search(q, PDQ_RADIUS)}, queries, self.args.single_budget_s)
            found = {name: matches(index.search(queries, PDQ_RADIUS), len(queries))
                     for name, index in (("faiss", faiss_index), ("milvus", milvus))}
        finally:
            milvus.client.drop_collection(milvus.name)
        planted = {name: np.mean([int(s) in f[i] for i, s in enumerate(source)]) for name, f in found.items()}
        agree = np.mean([a == b for a, b in zip(found["faiss"], found["milvus"], strict=True)])
        rows = [line("PDQ", size, "FAISS BinaryIndex multi-hash (exact ≤31)", f"{faiss_s:.1f}", "–",
                     f"memory_bytes {fmt_mib(faiss_index.memory_bytes())}", lat["faiss"],
                     f"planted {planted['faiss']:.3f}"),
                line("PDQ", size, "Milvus BIN_FLAT range ≤31", f"{insert_s:.1f}", f"{build_s:.1f}",
                     self.milvus_memory(before, after), lat["milvus"],
                     f"planted {planted['milvus']:.3f}; agree {agree:.3f}")]
        for r in rows:
            print(r, file=sys.stderr, flush=True)
        return rows


def matches(found: BinaryMatches, nq: int) -> list[set[int]]:
    """Per query, the stored rows (owner * PDQ_PER_OWNER + local) within the radius."""
    out: list[set[int]] = [set() for _ in range(nq)]
    for q, o, loc in zip(found.query, found.owners, found.locals, strict=True):
        out[int(q)].add(int(o) * PDQ_PER_OWNER + int(loc))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000", help="stored rows per index, comma-separated")
    parser.add_argument("--queries", type=int, default=1000, help="queries per size (latency stops at the budget)")
    parser.add_argument("--milvus-indexes", default="HNSW,FLAT",
                        help="Milvus float indexes to compare with FAISS Flat: HNSW, IVF_PQ, IVF_FLAT, FLAT")
    parser.add_argument("--signals", default="embedding,pdq")
    parser.add_argument("--single-budget-s", type=float, default=30.0, help="interleaved single queries, per pair")
    parser.add_argument("--budget-min", type=float, default=25.0, help="past this, what is left is not run")
    parser.add_argument("--out", type=Path, help="also write the Markdown here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.milvus_indexes = [s.strip().upper() for s in args.milvus_indexes.split(",")]
    signals = args.signals.split(",")

    started = time.perf_counter()
    notes: list[str] = []
    server = Server()
    try:
        empty = server.rss()
        head = [f"## Milvus against in-process FAISS (`python -m bench.index_milvus --sizes {args.sizes} "
                f"--queries {args.queries} --milvus-indexes {','.join(args.milvus_indexes)}`)", "",
                *machine(), f"- {server.version()}; server RSS when started, empty: {fmt_mib(empty)} MiB", "",
                "| signal | rows | index | insert s | Milvus index s | memory MiB | single p50 ms | single p99 ms "
                "| n | recall@32 vs exact / PDQ |",
                "|---|---|---|---|---|---|---|---|---|---|"]
        print("\n".join(head), file=sys.stderr, flush=True)
        run = Run(args, server, notes)
        rows: list[str] = []
        for size in sizes:
            if "pdq" in signals:
                rows += run.pdq(size)
            if "embedding" in signals:
                rows += run.embedding(size)
            trimmed_rss()  # the size's data and FAISS indexes are gone
        final = server.rss()
    finally:
        server.stop()
    load = os.getloadavg()
    text = "\n".join([*head, *rows, "",
                      f"- queries: {args.queries} per size; embedding k={K}, PDQ radius {PDQ_RADIUS}; rows per owner: "
                      f"{VEC_PER_OWNER} vectors, {PDQ_PER_OWNER} PDQ codes",
                      "- FAISS rows: insert s = bulk add_many; latency with 1 OpenMP thread, interleaved query by "
                      "query with the Milvus row under it (the FAISS Flat index is the same one for every pair)",
                      "- Milvus rows: insert s = upserts through server.index.milvus; Milvus index s = flush, "
                      "index built over every row, collection released and loaded again; latency includes the "
                      "loopback gRPC call; memory = RSS of the Milvus server process (and children) before the "
                      "collection was created → after it was built and loaded",
                      f"- server RSS at the end (every collection dropped): {fmt_mib(final)} MiB",
                      *notes,
                      f"- load average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
                      f"total run time {time.perf_counter() - started:.0f} s"]) + "\n"
    publish(text, args.out)


if __name__ == "__main__":
    main()
