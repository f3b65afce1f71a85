"""FAISS indexes for matching: `VectorIndex` (float embeddings, face descriptors) and `BinaryIndex` (PDQ codes).

Numpy in, numpy out, thin wrappers over one FAISS index each; no framework between the caller and FAISS.

Ids are packed `owner << 20 | local` (see `server.index.base`, which holds what this module shares with the
PyTorch index `server.index.exact`): one owner is one `IDSelectorRange`, several are one `IDSelectorBatch`.

Removal: where the FAISS index supports `remove_ids` (Flat, IVF, PQ, SQ on CPU) it is used. Where it does not
(HNSW, `IndexBinaryMultiHash`, every GPU index) removed owners become *tombstones*: their rows stay in the index
and are filtered out of results at search time, and the index is rebuilt from the kept rows once tombstoned rows
exceed 20 % of it. Results never include a removed owner either way.

The service picks this module or the PyTorch one by `IndexSettings` (`server.index.vector_index`).

GPU: with `use_gpu=None` an index goes to the GPU iff `faiss.get_num_gpus() > 0` (always GPU 0). The GPU code
paths are written against FAISS's documented GPU API but have NOT been run: the machines this was written on have
no GPU and `faiss-cpu`. The tests exercise every CPU path, including the tombstone paths that the GPU also uses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from server.index.base import (
    LOCAL_BITS,
    MAX_LOCAL,
    BinaryMatches,
    Growable,
    Owned,
    VectorHits,
    as_vectors,
    batch_owners,
    check_id_map,
    check_new_owners,
    check_owner_sections,
    no_hits,
    owner_ids,
    owner_sections,
    unpack_ids,
    worst_score,
)
from server.index.snapshot import read_snapshot, write_snapshot

TOMBSTONE_FRACTION = 0.2  # rebuild once this share of the searched index is tombstoned rows
GPU_MAX_K = 2048  # FAISS GPU k-selection limit
GPU_BINARY_K = 256  # neighbours fetched per PDQ query on the GPU, where there is no range search
PDQ_BITS = 256
PDQ_BYTES = PDQ_BITS // 8
# IndexBinaryMultiHash(256, 16 maps, 16 bits) with nflip=1 is exact up to Hamming 31: a code within 31 bits
# differs by at most one bit in at least one of its 16 sixteen-bit chunks (pigeonhole), so that chunk's map,
# probed with 0 or 1 flipped bits, finds it. At 32 bits all 16 chunks can differ by 2 and the code is missed.
PDQ_MAX_EXACT_DISTANCE = 31


def _remove_owners(index: Any, counts: dict[int, int], owners: list[int]) -> int:
    """One owner is one id range; several are one batch of their exact ids (a single pass over the index)."""
    if len(owners) == 1:
        first = int(owners[0]) << LOCAL_BITS
        return index.remove_ids(faiss.IDSelectorRange(first, first + MAX_LOCAL))
    ids = owner_ids(counts, owners)  # must outlive the selector, which points into it
    return index.remove_ids(faiss.IDSelectorBatch(len(ids), faiss.swig_ptr(ids)))


def _gpu_wanted(use_gpu: bool | None) -> bool:
    gpus = faiss.get_num_gpus()
    if use_gpu and gpus == 0:
        raise ValueError("use_gpu=True but faiss sees no GPU (faiss-cpu, or no device)")
    return gpus > 0 if use_gpu is None else use_gpu


# ------------------------------------------------------------------------------------------------ filtering


def _drop_tombstones(ids: np.ndarray, scores: np.ndarray, tombs: dict[int, int], k: int, worst: float
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop tombstoned and missing hits, keep each row's order, pad to k. Returns (ids, scores, satisfied rows):
    a row is satisfied when it kept k hits or the index ran out of candidates for it (a -1 came back)."""
    owners = unpack_ids(ids)[0]
    dead = np.isin(owners, np.fromiter(tombs, np.int64, len(tombs))) | (ids < 0)
    satisfied = ((~dead).sum(axis=1) >= k) | (ids < 0).any(axis=1)
    order = np.argsort(dead, axis=1, kind="stable")[:, :k]  # live hits first, in their ranked order
    ids = np.take_along_axis(np.where(dead, -1, ids), order, axis=1)
    scores = np.take_along_axis(np.where(dead, worst, scores), order, axis=1)
    if ids.shape[1] < k:
        pad = k - ids.shape[1]
        ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=worst)
    return ids, scores, satisfied


def _ivf_of(index: faiss.Index) -> Any:
    return faiss.try_extract_index_ivf(index)


def _index_bytes(index: Any) -> int:
    """Estimated resident bytes of a CPU float index (codes, ids, coarse centroids, tables, graph links)."""
    index = faiss.downcast_index(index)
    n = index.ntotal
    if isinstance(index, faiss.IndexIDMap2):
        return _index_bytes(index.index) + n * (8 + 48)  # id_map + rev_map (unordered_map node ~48 B)
    if isinstance(index, faiss.IndexIDMap):
        return _index_bytes(index.index) + n * 8
    if isinstance(index, faiss.IndexPreTransform):
        return _index_bytes(index.index) + sum(faiss.downcast_VectorTransform(index.chain.at(i)).d_in
                                               * faiss.downcast_VectorTransform(index.chain.at(i)).d_out * 4
                                               for i in range(index.chain.size()))
    ivf = _ivf_of(index)
    if ivf is not None:
        ivf = faiss.downcast_index(ivf)
        total = n * (ivf.code_size + 8) + ivf.nlist * 32 + _index_bytes(ivf.quantizer)
        if isinstance(ivf, faiss.IndexIVFPQ):
            total += ivf.pq.M * ivf.pq.ksub * ivf.pq.dsub * 4 + ivf.precomputed_table.size() * 4
        return total
    if isinstance(index, faiss.IndexHNSW):
        return _index_bytes(index.storage) + index.hnsw.neighbors.size() * 4 + n * 16
    if isinstance(index, faiss.IndexFlatCodes):
        return n * index.code_size
    return int(faiss.serialize_index(index).nbytes)  # anything else: its serialised size


class _Owned(Owned):
    """What both FAISS index kinds share: owners under a lock (`Owned`), an optional GPU copy."""

    _gpu: Any

    @property
    def device(self) -> str:
        """Where searches run: "gpu" or "cpu" (for GetStats)."""
        return "gpu" if self._gpu is not None else "cpu"


class VectorIndex(_Owned):
    """Float32 vectors of one dimension under one metric, stored per owner, searched k-NN.

    metric "ip" is for L2-normalised embeddings (score = cosine, higher is better); "l2" is for dlib face
    descriptors (score = true Euclidean distance, lower is better). `factory` is a FAISS index_factory string
    ("Flat", "IVF4096,PQ64", "HNSW32", ...) without an IDMap prefix: ids are added here. With a GPU present,
    use_gpu=None means GPU, which needs a factory FAISS can copy to the GPU (Flat, IVF*); pass use_gpu=False
    for the others (HNSW, PQ without IVF, ...).

    On CPU the index is the single source of truth. On GPU (not run here, see the module docstring) a CPU copy
    of the index stays in host memory as the master that takes exact removals, snapshots and rebuilds; the GPU
    replica is what is searched, with tombstones until it is re-copied from the master.
    """

    def __init__(self, dim: int, *, metric: Literal["ip", "l2"] = "ip", factory: str = "Flat",
                 use_gpu: bool | None = None, nprobe: int = 32) -> None:
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
        if factory.replace(" ", "").upper().startswith("IDMAP"):
            raise ValueError("give the factory without an IDMap prefix; VectorIndex adds the id layer itself")
        faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
        index = faiss.index_factory(dim, factory, faiss_metric)
        # IVF indexes store ids natively and remove by id correctly; IndexIDMap2 over IVF does not (its
        # position map goes stale after an IVF removal), so only the others get the IDMap2 layer.
        if _ivf_of(index) is None:
            index = faiss.index_factory(dim, f"IDMap2,{factory}", faiss_metric)
        self._setup(index, dim, metric, factory, nprobe, _gpu_wanted(use_gpu), {}, None)

    def _setup(self, index: Any, dim: int, metric: str, factory: str, nprobe: int, gpu: bool,
               counts: dict[int, int], raw: dict[int, np.ndarray] | None) -> None:
        self.dim, self.metric, self.factory, self.nprobe = dim, metric, factory, nprobe
        self._lock = threading.RLock()
        self._index = index
        self._counts = counts  # live owner -> number of vectors
        self._tombs: dict[int, int] = {}  # removed owners whose rows are still in the searched index
        self._removable = self._probe_remove()
        # Raw vectors are kept only where the index can neither remove rows nor give them back for a rebuild.
        self._raw = (raw if raw is not None else {}) if not self._removable else None
        self._worst = worst_score(metric)
        self._gpu: Any = None
        self._gpu_res: Any = None
        self._gpu_ids: Growable | None = None  # GPU row -> id, where the master is an IDMap2
        self._set_nprobe(self._index)
        if gpu:
            if not self._removable:
                raise ValueError(f"factory {factory!r} cannot be removed from on CPU; GPU mode needs a CPU master "
                                 "that can (Flat, IVF*)")
            self._gpu_res = faiss.StandardGpuResources()
            if self._index.is_trained:
                self._copy_to_gpu()

    def _probe_remove(self) -> bool:
        try:
            self._index.remove_ids(faiss.IDSelectorRange(0, 0))  # removes nothing; throws if unsupported
        except RuntimeError:
            return False
        return True

    def _set_nprobe(self, index: Any) -> None:
        if self._gpu is not None and index is self._gpu:
            if _ivf_of(self._index) is not None:
                faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.nprobe)
            return
        ivf = _ivf_of(index)
        if ivf is not None:
            ivf.nprobe = self.nprobe

    def set_nprobe(self, nprobe: int) -> None:
        """IVF lists visited per query from now on (a search-time setting: a loaded snapshot takes the configured
        one, not the one it was saved with)."""
        with self._lock:
            self.nprobe = nprobe
            self._set_nprobe(self._index)
            if self._gpu is not None:
                self._set_nprobe(self._gpu)

    def _cloner_options(self) -> Any:
        options = faiss.GpuClonerOptions()
        ivf = _ivf_of(self._index)
        # GpuIndexIVFPQ needs float16 lookup tables for 64-byte codes (shared-memory limit); flat storage stays
        # float32 so that Flat remains exact.
        options.useFloat16 = ivf is not None and isinstance(faiss.downcast_index(ivf), faiss.IndexIVFPQ)
        return options

    def _copy_to_gpu(self) -> None:
        """(Re)build the GPU replica from the CPU master. Not run here (no GPU)."""
        options = self._cloner_options()
        if _ivf_of(self._index) is not None:  # ids live in the IVF lists and travel with them
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._index, options)
            self._gpu_ids = None
        else:  # GpuIndexFlat has no ids: search it by row and map rows through the master's id_map
            inner = faiss.downcast_index(self._index.index)
            self._gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, inner, options)
            self._gpu_ids = Growable(np.int64)
            self._gpu_ids.append(faiss.vector_to_array(self._index.id_map))
        self._set_nprobe(self._gpu)
        self._tombs.clear()

    # ------------------------------------------------------------------------------------------- properties

    @property
    def needs_training(self) -> bool:
        return not self._index.is_trained

    @property
    def layout(self) -> str:
        """Backend, factory, metric and dimension: what a snapshot must match to stand in for this index."""
        return f"faiss {self.factory} {self.metric} {self.dim}"

    @property
    def min_training_vectors(self) -> int:
        """Vectors worth training this factory on: FAISS's k-means wants >= 39 points per centroid (it warns below),
        for the IVF lists and for PQ's 256 codewords per sub-quantizer; 0 once trained."""
        if not self.needs_training:
            return 0
        ivf = _ivf_of(self._index)
        pq = getattr(faiss.downcast_index(ivf if ivf is not None else self._index.index), "pq", None)
        centroids = max(ivf.nlist if ivf is not None else 1, pq.ksub if pq is not None else 1)
        return max(39 * centroids, self.dim)

    def train_from(self, source: VectorIndex, sample_size: int, seed: int = 0) -> None:
        """Train on a random sample of `source`'s vectors, then add all of them (same owners and rows).

        How a trainable factory starts: the library serves from an exact Flat `source` until enough vectors
        have arrived (`min_training_vectors`), then builds this index from it. `source` must be a Flat index
        (its stored vectors are the originals); it is read under its lock and left unchanged."""
        with source._lock, self._lock:
            vectors, ids = source._flat_rows()
            if len(vectors) < max(self.min_training_vectors, 1):
                raise ValueError(f"{len(vectors)} vectors are too few to train {self.factory!r} "
                                 f"(wants {self.min_training_vectors})")
            rng = np.random.default_rng(seed)
            picked = np.sort(rng.choice(len(vectors), min(sample_size, len(vectors)), replace=False))
            self.train(vectors[picked])
            order = np.argsort(ids, kind="stable")  # by owner, then row: each owner's rows in one block
            owners = ids[order] >> LOCAL_BITS
            starts = np.flatnonzero(np.r_[True, owners[1:] != owners[:-1]])
            ends = np.r_[starts[1:], len(order)]
            step = max(1, len(starts) // max(1, len(order) // 100_000))  # ~100k rows per add_many
            for first in range(0, len(starts), step):
                self.add_many((int(owners[b]), vectors[order[b:e]])
                              for b, e in zip(starts[first : first + step], ends[first : first + step], strict=True))

    def _flat_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(vectors, ids) stored in an IDMap2 over a Flat index: a read-only view of FAISS's storage and the id map,
        valid while the index is unchanged (hold the lock)."""
        inner = faiss.downcast_index(getattr(self._index, "index", self._index))
        if not isinstance(inner, faiss.IndexFlat):  # (GPU tombstones concern the replica; this is the master)
            raise ValueError(f"only an exact Flat index can hand its vectors over, not {self.factory!r}")
        n = inner.ntotal
        vectors = faiss.rev_swig_ptr(inner.get_xb(), n * self.dim).reshape(n, self.dim) if n else \
            np.empty((0, self.dim), np.float32)
        return vectors, faiss.vector_to_array(self._index.id_map)

    def memory_bytes(self) -> int:
        """Estimate of host (and GPU) bytes held: index codes, ids, centroids, plus kept raw vectors."""
        with self._lock:
            total = _index_bytes(self._index) + 100 * len(self._counts)
            if self._raw:
                total += sum(v.nbytes for v in self._raw.values())
            if self._gpu is not None:  # the replica mirrors the master's codes (GPU memory)
                total += _index_bytes(self._index) + (self._gpu_ids.nbytes if self._gpu_ids is not None else 0)
            return total

    def _as_vectors(self, vectors: np.ndarray) -> np.ndarray:
        return as_vectors(vectors, self.dim)

    # ---------------------------------------------------------------------------------------------- mutation

    def train(self, sample: np.ndarray) -> None:
        """Train a trainable factory (IVF, PQ) on a representative sample; must happen before any add.

        On GPU an IVF index trains there (k-means is the slow part) and is copied back as the CPU master."""
        x = self._as_vectors(sample)
        with self._lock:
            if self._index.ntotal or self._counts:
                raise ValueError("train before adding vectors")
            if self._gpu_res is not None and _ivf_of(self._index) is not None:
                gpu = faiss.index_cpu_to_gpu(self._gpu_res, 0, self._index, self._cloner_options())
                gpu.train(x)
                self._index = faiss.index_gpu_to_cpu(gpu)
            else:
                self._index.train(x)
            self._set_nprobe(self._index)
            if self._gpu_res is not None:
                self._copy_to_gpu()

    def add(self, owner: int, vectors: np.ndarray) -> None:
        """Store `vectors` as rows 0..n-1 of `owner`. An owner is added once (remove it first to replace it)."""
        self.add_many([(owner, vectors)])

    def add_many(self, items: Iterable[tuple[int, np.ndarray]]) -> None:
        """`add` for many owners in one FAISS call, for bulk loads (startup, rebuilds from the database).

        Why: IVF pays its coarse-quantizer search per call, and below 20 rows FAISS skips BLAS; with 4096
        centroids of 512-d that is ~2 ms a call here, so adding 10-vector owners one by one is ~30x slower."""
        owners, blocks, x, ids = batch_owners(items, self._as_vectors)
        if not owners:
            return
        with self._lock:
            check_new_owners(owners, self._counts)
            if self.needs_training:
                raise ValueError(f"factory {self.factory!r} needs train(sample) before add")
            if not self._tombs.keys().isdisjoint(owners):  # their old rows still sit in the index, same ids
                self._rebuild()
            self._index.add_with_ids(x, ids)
            if self._raw is not None:
                self._raw.update((o, b.copy()) for o, b in zip(owners, blocks, strict=True))
            if self._gpu is not None:
                if self._gpu_ids is None:
                    self._gpu.add_with_ids(x, ids)
                else:
                    self._gpu.add(x)
                    self._gpu_ids.append(ids)
            self._counts.update((o, len(b)) for o, b in zip(owners, blocks, strict=True))

    def remove(self, owners: Iterable[int]) -> int:
        """Remove every vector of these owners (unknown owners are ignored); returns the number removed."""
        with self._lock:
            present = sorted({int(o) for o in owners} & self._counts.keys())
            if not present:
                return 0
            removed = sum(self._counts[o] for o in present)
            if self._removable:
                _remove_owners(self._index, self._counts, present)
            if not self._removable or self._gpu is not None:
                self._tombs.update((o, self._counts[o]) for o in present)
            for o in present:
                del self._counts[o]
                if self._raw is not None:
                    del self._raw[o]
            searched = self._gpu if self._gpu is not None else self._index
            if sum(self._tombs.values()) > TOMBSTONE_FRACTION * searched.ntotal:
                self._rebuild()
            return removed

    def _rebuild(self) -> None:
        """Drop tombstoned rows from the searched index: re-copy the GPU replica from the (clean) master, or
        re-add the kept raw vectors to the reset CPU index (reset keeps training: PCA, HNSW parameters...)."""
        if self._gpu is not None:
            self._copy_to_gpu()
        elif self._raw is not None:
            self._index.reset()
            if self._raw:
                self._index.add_with_ids(np.concatenate(list(self._raw.values())),
                                         owner_ids(self._counts, self._raw))
        self._tombs.clear()

    # ---------------------------------------------------------------------------------------------- search

    def search(self, queries: np.ndarray, k: int) -> VectorHits:
        """k best (owner, local) per query, best first; never a removed owner; k may exceed the index size."""
        q = self._as_vectors(queries)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            index, ids_of = self._index, None
            if self._gpu is not None and k <= GPU_MAX_K:
                index, ids_of = self._gpu, self._gpu_ids
            tombs = self._tombs if index is self._gpu or not self._removable else {}
            ntotal = index.ntotal
            if ntotal == 0:
                return no_hits(len(q), k, self.metric)
            # Enough candidates to cover every tombstoned row is always enough; start smaller and widen.
            bound = min(ntotal, k + sum(tombs.values()))
            kk = min(bound, max(2 * k, k + 16)) if tombs else min(k, ntotal)
            while True:
                cap = min(kk, GPU_MAX_K) if index is self._gpu else kk
                scores, ids = index.search(q, cap)
                if ids_of is not None:  # GPU flat rows -> ids
                    ids = np.where(ids < 0, -1, ids_of.view()[np.maximum(ids, 0)])
                ids, scores, satisfied = _drop_tombstones(ids, scores, tombs, k, self._worst)
                if satisfied.all() or cap >= bound:
                    break
                if cap < kk:  # GPU selection limit reached with tombstones in the way: compact, then retry
                    self._rebuild()
                    return self.search(q, k)
                kk = min(bound, 4 * kk)
            if self.metric == "l2":  # FAISS L2 is squared
                scores = np.sqrt(np.maximum(scores, 0), dtype=np.float32)
            scores = np.where(ids < 0, self._worst, scores).astype(np.float32)
            owners, locals_ = unpack_ids(ids)
            return VectorHits(scores, owners, locals_)

    # ----------------------------------------------------------------------------------------- persistence

    def save(self, path: Path) -> None:
        """Atomic snapshot: the CPU index (the GPU's master copy), owner bookkeeping, raw vectors if kept."""
        with self._lock:
            if self._tombs and self._gpu is None:
                self._rebuild()  # snapshots never carry tombstones
            header = {"kind": "vector", "dim": self.dim, "metric": self.metric, "factory": self.factory,
                      "nprobe": self.nprobe}
            sections = {"index": faiss.serialize_index(self._index), **owner_sections(self._counts)}
            if self._raw is not None:
                sections["raw"] = (np.concatenate([self._raw[o] for o in self._counts]) if self._counts
                                   else np.empty((0, self.dim), np.float32))
            write_snapshot(path, header, sections)

    @classmethod
    def load(cls, path: Path, use_gpu: bool | None = None) -> VectorIndex:
        """Read a snapshot from `save`; ValueError if it is truncated, corrupt or inconsistent."""
        header, sections = read_snapshot(path, "vector")
        try:
            dim, metric, factory, nprobe = header["dim"], header["metric"], header["factory"], header["nprobe"]
            index = faiss.deserialize_index(sections["index"])
        except (KeyError, RuntimeError) as err:
            raise ValueError(f"{path}: unreadable index in snapshot: {err}") from err
        if index.d != dim or index.metric_type != (faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2):
            raise ValueError(f"{path}: index dimension or metric differ from the snapshot header")
        counts = check_owner_sections(path, sections, index.ntotal)
        if isinstance(index, faiss.IndexIDMap2):
            check_id_map(path, faiss.vector_to_array(index.id_map), counts)
        raw = None
        if "raw" in sections:
            vectors = sections["raw"]
            if vectors.shape != (index.ntotal, dim):
                raise ValueError(f"{path}: raw vectors do not match the index")
            raw, start = {}, 0
            for owner, n in counts.items():
                raw[owner] = vectors[start : start + n].copy()
                start += n
        self = cls.__new__(cls)
        self._setup(index, dim, metric, factory, nprobe, _gpu_wanted(use_gpu), counts, raw)
        if self._raw is not None and raw is None and index.ntotal:
            raise ValueError(f"{path}: snapshot lacks the raw vectors this index type needs for rebuilds")
        return self


def _multihash() -> tuple[Any, Any]:
    """(IndexBinaryIDMap2, its MultiHash). Keep both: the Python wrapper of the inner does not own it."""
    inner = faiss.IndexBinaryMultiHash(PDQ_BITS, 16, 16)
    inner.nflip = 1  # exact for Hamming <= 31 (see PDQ_MAX_EXACT_DISTANCE)
    return faiss.IndexBinaryIDMap2(inner), inner


def _multihash_rows(index: Any, inner: Any) -> tuple[np.ndarray, np.ndarray]:
    """Codes and ids of an IDMap2(MultiHash) in insertion order, read back from the MultiHash's flat storage."""
    n = index.ntotal
    codes = faiss.downcast_IndexBinary(inner.storage).reconstruct_n(0, n) if n else np.empty((0, PDQ_BYTES), np.uint8)
    return codes, faiss.vector_to_array(index.id_map)


class BinaryIndex(_Owned):
    """256-bit PDQ codes (uint8 [N, 32]) stored per owner, searched by Hamming radius.

    CPU: IndexBinaryIDMap2 over IndexBinaryMultiHash(256, 16, 16), nflip 1: exact up to distance 31, about a
    millisecond a query at 1M codes. MultiHash cannot remove rows, so removals are tombstones with a rebuild
    (re-hashing the kept codes, read back from the MultiHash's own flat storage) past 20 %.
    GPU (not run here, see the module docstring): GpuIndexBinaryFlat, exhaustive, k=256 nearest then the
    radius filter, so a query with more than 256 codes within the radius gets only its 256 nearest; codes and
    ids are mirrored in host memory for rebuilds and snapshots.
    """

    def __init__(self, *, use_gpu: bool | None = None) -> None:
        self._setup(_gpu_wanted(use_gpu), {})
        if self._gpu is None:
            self._index, self._inner = _multihash()

    def _setup(self, gpu: bool, counts: dict[int, int]) -> None:
        self._lock = threading.RLock()
        self._counts = counts
        self._tombs: dict[int, int] = {}
        self._index: Any = None
        self._inner: Any = None
        self._gpu: Any = None
        self._gpu_res: Any = None
        self._codes: Growable | None = None
        self._ids: Growable | None = None
        if gpu:
            self._gpu_res = faiss.StandardGpuResources()
            self._gpu = faiss.GpuIndexBinaryFlat(self._gpu_res, PDQ_BITS)
            self._codes, self._ids = Growable(np.uint8, PDQ_BYTES), Growable(np.int64)

    @property
    def layout(self) -> str:
        """What a snapshot must match to stand in for this index (the same for every PDQ index)."""
        return f"faiss binary {PDQ_BITS}"

    def memory_bytes(self) -> int:
        """Estimate: codes, the 16 hash maps' id lists and buckets, the IDMap2 maps (CPU), or the GPU codes and
        their host mirror (GPU)."""
        with self._lock:
            if self._gpu is not None:
                return self._gpu.ntotal * PDQ_BYTES + self._codes.nbytes + self._ids.nbytes + 100 * len(self._counts)
            n = self._index.ntotal
            # per code: 32 B storage + 16 maps x 8 B id + 8 B id_map + ~48 B rev_map node; per distinct 16-bit key
            # in each map an unordered_map node with a std::vector (~80 B)
            return n * (PDQ_BYTES + 16 * 8 + 8 + 48) + 16 * min(n, 1 << 16) * 80 + 100 * len(self._counts)

    @staticmethod
    def _as_codes(codes: np.ndarray) -> np.ndarray:
        x = np.asarray(codes)
        if x.ndim == 1:
            x = x[None]
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != PDQ_BYTES:
            raise ValueError(f"expected PDQ codes as uint8 [n, {PDQ_BYTES}], got {x.dtype} {np.shape(codes)}")
        return np.ascontiguousarray(x)

    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """All codes and ids in the searched index, tombstoned rows included, in insertion order."""
        if self._gpu is not None:
            return self._codes.view(), self._ids.view()
        return _multihash_rows(self._index, self._inner)

    def add(self, owner: int, codes: np.ndarray) -> None:
        """Store `codes` as rows 0..n-1 of `owner` (e.g. its 8 dihedral PDQ variants). An owner is added once."""
        self.add_many([(owner, codes)])

    def add_many(self, items: Iterable[tuple[int, np.ndarray]]) -> None:
        """`add` for many owners in one FAISS call, for bulk loads."""
        owners, blocks, x, ids = batch_owners(items, self._as_codes)
        if not owners:
            return
        with self._lock:
            check_new_owners(owners, self._counts)
            if not self._tombs.keys().isdisjoint(owners):
                self._rebuild()
            if self._gpu is not None:
                self._gpu.add(x)
                self._codes.append(x)
                self._ids.append(ids)
            else:
                self._index.add_with_ids(x, ids)
            self._counts.update((o, len(b)) for o, b in zip(owners, blocks, strict=True))

    def remove(self, owners: Iterable[int]) -> int:
        """Remove every code of these owners (unknown owners are ignored); returns the number removed."""
        with self._lock:
            present = sorted({int(o) for o in owners} & self._counts.keys())
            for o in present:
                self._tombs[o] = self._counts.pop(o)
            removed = sum(self._tombs[o] for o in present)
            searched = self._gpu if self._gpu is not None else self._index
            if sum(self._tombs.values()) > TOMBSTONE_FRACTION * searched.ntotal:
                self._rebuild()
            return removed

    def _rebuild(self) -> None:
        codes, ids = self._rows()
        keep = ~np.isin(unpack_ids(ids)[0], np.fromiter(self._tombs, np.int64, len(self._tombs)))
        codes, ids = np.ascontiguousarray(codes[keep]), np.ascontiguousarray(ids[keep])
        self._fill(codes, ids)
        self._tombs.clear()

    def _fill(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Replace the searched index's contents with these rows."""
        if self._gpu is not None:
            self._gpu.reset()
            if len(codes):
                self._gpu.add(codes)
            self._codes.replace(codes)
            self._ids.replace(ids)
        else:
            self._index, self._inner = _multihash()
            if len(codes):
                self._index.add_with_ids(codes, ids)

    def search(self, queries: np.ndarray, max_distance: int = PDQ_MAX_EXACT_DISTANCE) -> BinaryMatches:
        """All stored codes within Hamming `max_distance` (inclusive) of each query; never a removed owner."""
        q = self._as_codes(queries)
        if not 0 <= max_distance <= PDQ_MAX_EXACT_DISTANCE:
            raise ValueError(f"max_distance must be in [0, {PDQ_MAX_EXACT_DISTANCE}] (where MultiHash is exact)")
        with self._lock:
            if self._gpu is not None:
                k = min(GPU_BINARY_K, self._gpu.ntotal)
                if k == 0:
                    return _no_matches()
                dist, rows = self._gpu.search(q, k)
                hit = (rows >= 0) & (dist <= max_distance)
                query = np.nonzero(hit)[0].astype(np.int64)
                ids, dist = self._ids.view()[rows[hit]], dist[hit]
            else:
                # FAISS binary range_search keeps distance < radius, so radius = max_distance + 1 (inclusive)
                lims, dist, ids = self._index.range_search(q, max_distance + 1)
                query = np.repeat(np.arange(len(q), dtype=np.int64), np.diff(lims.astype(np.int64)))
            owners, locals_ = unpack_ids(ids)
            live = ~np.isin(owners, np.fromiter(self._tombs, np.int64, len(self._tombs)))
            dist = np.asarray(dist).astype(np.int32)
            query, owners, locals_, dist = query[live], owners[live], locals_[live], dist[live]
            order = np.lexsort((locals_, owners, dist, query))
            return BinaryMatches(query[order], owners[order], locals_[order], dist[order])

    def save(self, path: Path) -> None:
        """Atomic snapshot: a CPU IndexBinaryIDMap2(MultiHash) (built from the host mirror on GPU) and owners."""
        with self._lock:
            if self._tombs:
                self._rebuild()  # snapshots never carry tombstones
            if self._gpu is not None:
                index, _inner = _multihash()  # _inner must stay alive while index is used
                codes, ids = self._rows()
                if len(codes):
                    index.add_with_ids(codes, ids)
            else:
                index = self._index
            sections = {"index": faiss.serialize_index_binary(index), **owner_sections(self._counts)}
            write_snapshot(path, {"kind": "binary", "bits": PDQ_BITS}, sections)

    @classmethod
    def load(cls, path: Path, use_gpu: bool | None = None) -> BinaryIndex:
        """Read a snapshot from `save`; ValueError if it is truncated, corrupt or inconsistent."""
        header, sections = read_snapshot(path, "binary")
        try:
            index = faiss.deserialize_index_binary(sections["index"])
        except (KeyError, RuntimeError) as err:
            raise ValueError(f"{path}: unreadable index in snapshot: {err}") from err
        if not isinstance(index, faiss.IndexBinaryIDMap2) or header.get("bits") != PDQ_BITS or index.d != PDQ_BITS:
            raise ValueError(f"{path}: snapshot does not hold a 256-bit IndexBinaryIDMap2")
        inner = faiss.downcast_IndexBinary(index.index)
        if not isinstance(inner, faiss.IndexBinaryMultiHash) or inner.nhash != 16 or inner.b != 16:
            raise ValueError(f"{path}: snapshot does not hold IndexBinaryMultiHash(256, 16, 16)")
        counts = check_owner_sections(path, sections, index.ntotal)
        check_id_map(path, faiss.vector_to_array(index.id_map), counts)
        self = cls.__new__(cls)
        self._setup(_gpu_wanted(use_gpu), counts)
        if self._gpu is None:
            inner.nflip = 1  # a search-time parameter: set it whatever the file says
            self._index, self._inner = index, inner
        else:
            self._fill(*_multihash_rows(index, inner))
        return self


def _no_matches() -> BinaryMatches:
    empty = np.empty(0, np.int64)
    return BinaryMatches(empty, empty, empty, np.empty(0, np.int32))

