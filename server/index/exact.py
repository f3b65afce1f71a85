"""Exact k-NN in PyTorch: `ExactIndex`, a matrix product and a top-k over every stored vector, on CUDA or on CPU.

The GPU reference index (issue 7): what a GPU host runs without faiss, and the exact baseline that approximate
indexes are measured against. Same interface and semantics as `server.index.faiss_index.VectorIndex` (owners with packed
ids, add/add_many/remove/search, snapshots in the same file format), so the service picks it by configuration
(`IndexSettings.backend = "torch"`, see `server.index.vector_index`). Imports torch and numpy, never faiss.

Storage: one [capacity, dim] tensor on the device, float16 or float32, plus the packed ids in host memory. Adds
append rows; a full tensor grows by half (amortised O(1) adds, at most a third of it unused). Removal is exact:
the rows after the first removed one move up in place, a bounded chunk at a time, so there are no tombstones and
no rebuilds. `memory_budget_bytes` caps the tensor, and growth that would pass the cap or the device's free memory
raises ValueError before allocating: an add is refused, the process does not run out of memory.

Search: queries in batches, stored rows in chunks sized so that the [batch, chunk] score matrix fits
`workspace_bytes`, a running top-k across chunks. "l2" ranks by 2 q.x - |x|^2 (|x|^2 kept per row), as FAISS does,
and returns true Euclidean distances like `VectorIndex`.

Precision: float16 products run only on CUDA (tensor cores). Their top 2k candidates per query are re-scored in
float32 from the stored rows, so the returned scores, and the order among those candidates, are float32 arithmetic
on the float16-rounded vectors (recall against float32 FAISS: tests/test_exact_index.py); they assume scores well inside
the float16 range (|q||x| << 65504), as for embeddings and face descriptors. On CPU, float16 products are
slow (PyTorch 2.13 on this 2-core EPYC: 6.7 s against 1.7 s in float32 for 1000 x 100k x 512), so chunks of a
float16 tensor are upcast and multiplied in float32 there; float32 storage on CPU avoids the upcast, and is the
"auto" choice there.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from server.index.base import (
    LOCAL_BITS,
    Growable,
    Owned,
    VectorHits,
    as_vectors,
    batch_owners,
    check_id_map,
    check_new_owners,
    check_owner_sections,
    no_hits,
    owner_sections,
    unpack_ids,
    worst_score,
)
from server.index.snapshot import read_snapshot, write_snapshot
from server.torch_device import resolve_device

DTYPES = {"float16": torch.float16, "float32": torch.float32}
FLOAT16_MAX = 65504.0
GROWTH = 1.5  # capacity factor when the tensor is full
MIN_CAPACITY = 1024
QUERY_BATCH = 4096  # queries per product: larger batches gain little and hold more workspace
COPY_ROWS = 1 << 16  # rows converted or moved per step (adds, loads, compaction): bounds temporary memory
DEFAULT_WORKSPACE = 256 << 20


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" is float16 on CUDA (half the memory, tensor cores) and float32 on CPU (see the module docstring)."""
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto', 'float16' or 'float32', got {dtype!r}")
    return DTYPES[dtype]


def _free_bytes(device: torch.device) -> int | None:
    """Bytes that a new allocation on `device` can take: free device memory plus what PyTorch's caching allocator
    holds unused (CUDA), or MemAvailable (CPU; None where /proc/meminfo is missing)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


class ExactIndex(Owned):
    """Float vectors of one dimension under one metric, stored per owner on a torch device, searched exactly.

    metric "ip": score = inner product (cosine for L2-normalised embeddings), higher is better; "l2": score =
    Euclidean distance, lower is better. `device` "auto" | "cpu" | "cuda[:N]"; `dtype` "auto" | "float16" |
    "float32"; `memory_budget_bytes` caps the stored tensor (0: only the device's free memory does);
    `workspace_bytes` bounds the score matrix of one search step.
    """

    def __init__(self, dim: int, *, metric: Literal["ip", "l2"] = "ip", device: str = "auto", dtype: str = "auto",
                 memory_budget_bytes: int = 0, workspace_bytes: int = DEFAULT_WORKSPACE) -> None:
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
        if dim < 1 or memory_budget_bytes < 0 or workspace_bytes < 1:
            raise ValueError("dim and workspace_bytes must be positive, memory_budget_bytes >= 0")
        self.dim, self.metric = dim, metric
        self.torch_device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.torch_device)
        # float16 products only where they are fast; elsewhere float32 products of upcast chunks
        self._compute = self.dtype if self.torch_device.type == "cuda" else torch.float32
        self.memory_budget_bytes, self.workspace_bytes = memory_budget_bytes, workspace_bytes
        self._lock = threading.RLock()
        self._counts: dict[int, int] = {}
        self._n = 0  # rows in use; the tensors hold capacity rows
        self._data = torch.empty((0, dim), dtype=self.dtype, device=self.torch_device)
        self._sq_norms = torch.empty(0, dtype=torch.float32, device=self.torch_device)  # "l2": |x|^2 per row
        self._ids = Growable(np.int64)  # packed id of each row, host memory

    # ------------------------------------------------------------------------------------------- properties

    @property
    def layout(self) -> str:
        """Backend, metric and dimension: what a snapshot must match to stand in for this index."""
        return f"torch exact {self.metric} {self.dim}"

    @property
    def device(self) -> str:
        """Where searches run: "gpu" or "cpu" (for GetStats, as `VectorIndex` reports it)."""
        return "gpu" if self.torch_device.type == "cuda" else "cpu"

    @property
    def _row_bytes(self) -> int:
        return self.dim * self._data.element_size() + (4 if self.metric == "l2" else 0)

    def memory_bytes(self) -> int:
        """Bytes held: the device tensors at their capacity, the host id array, owner bookkeeping."""
        with self._lock:
            return len(self._data) * self._row_bytes + self._ids.nbytes + 100 * len(self._counts)

    # ---------------------------------------------------------------------------------------------- mutation

    def add(self, owner: int, vectors: np.ndarray) -> None:
        """Store `vectors` as rows 0..n-1 of `owner`. An owner is added once (remove it first to replace it)."""
        self.add_many([(owner, vectors)])

    def add_many(self, items: Iterable[tuple[int, np.ndarray]]) -> None:
        """`add` for many owners at once (bulk loads); nothing is added if any owner is refused."""
        owners, blocks, x, ids = batch_owners(items, lambda rows: as_vectors(rows, self.dim))
        if not owners:
            return
        with self._lock:
            check_new_owners(owners, self._counts)
            self._append(x, ids)
            self._counts.update((o, len(b)) for o, b in zip(owners, blocks, strict=True))

    def _append(self, x: np.ndarray, ids: np.ndarray) -> None:
        """Rows after the last one, converted and copied to the device a bounded chunk at a time. ValueError (and
        nothing added) if the index cannot grow or a value does not fit float16."""
        self._reserve(self._n + len(x))
        for start in range(0, len(x), COPY_ROWS):
            chunk = x[start : start + COPY_ROWS]
            if self.dtype == torch.float16 and chunk.dtype != np.float16 and np.abs(chunk).max() > FLOAT16_MAX:
                raise ValueError(f"vectors beyond the float16 range (|x| > {FLOAT16_MAX:g}); use dtype float32")
            rows = torch.from_numpy(chunk if chunk.flags.writeable else chunk.copy())  # torch wants writable arrays
            rows = rows.to(self.torch_device, self.dtype)
            at = self._n + start
            self._data[at : at + len(rows)] = rows
            if self.metric == "l2":  # norms of the rows as stored (rounded), so scores are consistent
                self._sq_norms[at : at + len(rows)] = rows.float().square().sum(dim=1)
        self._ids.append(ids)
        self._n += len(x)

    def _reserve(self, need: int) -> None:
        """Room for `need` rows: grow by GROWTH (capped by the budget), or exactly where memory is short; refuse
        with ValueError before allocating what does not fit."""
        capacity, row = len(self._data), self._row_bytes
        if need <= capacity:
            return
        budget = self.memory_budget_bytes
        if budget and need * row > budget:
            raise ValueError(f"{need:,} vectors need {need * row / 2**20:,.1f} MiB, over this index's "
                             f"memory_budget_bytes ({budget / 2**20:,.1f} MiB): add refused")
        grown = max(need, MIN_CAPACITY, int(capacity * GROWTH))
        if budget:
            grown = max(need, min(grown, budget // row))
        free = _free_bytes(self.torch_device)
        if free is not None and grown * row + self.workspace_bytes > free:
            grown = need  # no room for headroom: grow exactly
            if need * row + self.workspace_bytes > free:
                raise ValueError(f"{need:,} vectors need {need * row / 2**20:,.1f} MiB on {self.torch_device} "
                                 f"(plus {self.workspace_bytes / 2**20:,.0f} MiB search workspace), only "
                                 f"{free / 2**20:,.1f} MiB free: add refused")
        data = torch.empty((grown, self.dim), dtype=self.dtype, device=self.torch_device)
        data[: self._n] = self._data[: self._n]
        self._data = data
        if self.metric == "l2":
            norms = torch.empty(grown, dtype=torch.float32, device=self.torch_device)
            norms[: self._n] = self._sq_norms[: self._n]
            self._sq_norms = norms

    def remove(self, owners: Iterable[int]) -> int:
        """Remove every vector of these owners (unknown owners are ignored); returns the number removed."""
        with self._lock:
            present = sorted({int(o) for o in owners} & self._counts.keys())
            if not present:
                return 0
            ids = self._ids.view()
            dead = np.isin(ids >> LOCAL_BITS, np.array(present, np.int64))
            first = int(np.argmax(dead))  # rows before the first removed one stay where they are
            moved = np.flatnonzero(~dead[first:]) + first
            # Gather a chunk (a copy), then write it lower down: every source row lies beyond every row written so
            # far (moved[i] >= first + i + 1), so nothing is overwritten before it is read.
            for start in range(0, len(moved), COPY_ROWS):
                rows = torch.from_numpy(moved[start : start + COPY_ROWS]).to(self.torch_device)
                at = first + start
                self._data[at : at + len(rows)] = self._data[rows]
                if self.metric == "l2":
                    self._sq_norms[at : at + len(rows)] = self._sq_norms[rows]
            self._ids.replace(ids[~dead])
            self._n = first + len(moved)
            return sum(self._counts.pop(o) for o in present)

    # ---------------------------------------------------------------------------------------------- search

    def search(self, queries: np.ndarray, k: int) -> VectorHits:
        """k best (owner, local) per query, best first; k may exceed the index size (padded with -1)."""
        q = as_vectors(queries, self.dim)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        with self._lock:
            n = self._n
            if n == 0:
                return no_hits(len(q), k, self.metric)
            kk = min(k, n)
            rescore = self._compute != torch.float32
            candidates = min(n, 2 * kk) if rescore else kk
            batch = QUERY_BATCH
            if rescore:  # the gathered [batch, candidates, dim] float32 rows must fit the workspace too
                batch = max(1, min(batch, self.workspace_bytes // (candidates * self.dim * 6)))
            sims, rows = np.empty((len(q), kk), np.float32), np.empty((len(q), kk), np.int64)
            for start in range(0, len(q), batch):
                block = torch.from_numpy(q[start : start + batch]).to(self.torch_device)
                s, r = self._top(block, candidates)
                if rescore:
                    s, r = self._rescore(block, r, kk)
                sims[start : start + len(block)] = s.cpu().numpy()
                rows[start : start + len(block)] = r.cpu().numpy()
            ids = self._ids.view()[rows]
        if self.metric == "l2":  # similarity 2 q.x - |x|^2 -> |q - x|
            sims = np.sqrt(np.maximum(np.einsum("ij,ij->i", q, q)[:, None] - sims, 0), dtype=np.float32)
        owners, locals_ = unpack_ids(ids)
        if kk < k:
            pad = ((0, 0), (0, k - kk))
            sims = np.pad(sims, pad, constant_values=worst_score(self.metric))
            owners, locals_ = np.pad(owners, pad, constant_values=-1), np.pad(locals_, pad, constant_values=-1)
        return VectorHits(sims, owners, locals_)

    def _top(self, queries: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top k (similarity, row) per query over all stored rows, best first: chunks of rows, a running top-k.
        Similarity: q.x for "ip"; 2 q.x - |x|^2 for "l2" (the same order as distance, FAISS's expansion)."""
        q = queries.to(self._compute) * (2 if self.metric == "l2" else 1)  # doubling is exact in float16 too
        per_row = len(q) * (4 + (2 if self._compute == torch.float16 else 0))  # float32 scores (+ float16 product)
        if self.dtype != self._compute:
            per_row += self.dim * 4  # the upcast copy of the chunk
        chunk = max(k, self.workspace_bytes // per_row)
        best: tuple[torch.Tensor, torch.Tensor] | None = None
        for start in range(0, self._n, chunk):
            rows = self._data[start : min(start + chunk, self._n)].to(self._compute)
            s = (q @ rows.T).float()
            if self.metric == "l2":
                s -= self._sq_norms[start : start + len(rows)]
            s, r = torch.topk(s, min(k, len(rows)), dim=1)
            r += start
            if best is not None:
                s, pick = torch.topk(torch.cat([best[0], s], dim=1), k, dim=1)
                r = torch.gather(torch.cat([best[1], r], dim=1), 1, pick)
            best = (s, r)
        assert best is not None
        return best

    def _rescore(self, queries: torch.Tensor, rows: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Float32 similarities of the candidate rows, and the best k of them (float16 products round scores to
        ~3 digits; this puts the exact order and scores back)."""
        x = self._data[rows].float()  # [batch, candidates, dim]
        s = torch.bmm(x, queries.float().unsqueeze(2)).squeeze(2)
        if self.metric == "l2":
            s = 2 * s - self._sq_norms[rows]
        s, pick = torch.topk(s, k, dim=1)
        return s, torch.gather(rows, 1, pick)

    # ----------------------------------------------------------------------------------------- persistence

    def save(self, path: Path) -> None:
        """Atomic snapshot (the `server.index.base` format): the stored rows as stored, their ids, the owners."""
        with self._lock:
            header = {"kind": "exact", "dim": self.dim, "metric": self.metric,
                      "dtype": str(self.dtype).removeprefix("torch.")}
            sections = {"vectors": self._data[: self._n].cpu().numpy(), "ids": self._ids.view(),
                        **owner_sections(self._counts)}
            write_snapshot(path, header, sections)

    @classmethod
    def load(cls, path: Path, *, device: str = "auto", dtype: str = "auto", memory_budget_bytes: int = 0,
             workspace_bytes: int = DEFAULT_WORKSPACE) -> ExactIndex:
        """Read a snapshot from `save` onto `device`, converting to `dtype`; ValueError if it is truncated, corrupt,
        inconsistent, or over the memory budget."""
        header, sections = read_snapshot(path, "exact")
        try:
            dim, metric, vectors, ids = int(header["dim"]), header["metric"], sections["vectors"], sections["ids"]
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{path}: malformed exact-index snapshot: {err}") from err
        if vectors.ndim != 2 or vectors.shape[1] != dim or vectors.dtype not in (np.float16, np.float32) \
                or ids.shape != (len(vectors),) or ids.dtype != np.int64:
            raise ValueError(f"{path}: stored vectors or ids do not match the snapshot header")
        counts = check_owner_sections(path, sections, len(vectors))
        check_id_map(path, ids, counts)
        self = cls(dim, metric=metric, device=device, dtype=dtype, memory_budget_bytes=memory_budget_bytes,
                   workspace_bytes=workspace_bytes)
        self._append(vectors, ids)
        self._counts = counts
        return self


__all__ = ["ExactIndex", "resolve_dtype"]
