"""What every vector index shares, in plain numpy: packed owner ids, input checks, owner bookkeeping, the result
type and the search interface.

No FAISS and no torch here: `faiss_index` (FAISS) and `exact` (PyTorch) both build on this module, and each can be
imported without the other's library (the GPU test machine has torch but no faiss). The backend is chosen in one
place, the factory in `server.index`.

Why ids are packed: every stored vector belongs to an *owner* (a reference or a sighting) and has a row number
within it, and the index id is `owner << 20 | local`. All rows of one owner are then one contiguous id range, so
"forget this reference" is one range or one batch of ids, and a hit tells its owner and row by bit arithmetic. No
Python-side id map has to be kept, saved or kept consistent with the index.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    pass

LOCAL_BITS = 20
MAX_LOCAL = 1 << LOCAL_BITS  # rows per owner
MAX_OWNER = 1 << 43  # 43 + 20 bits keep packed ids positive in int64 (and -1 free for "no hit")



def pack_ids(owner: int, n: int) -> np.ndarray:
    """The n index ids of `owner`'s rows 0..n-1."""
    check_owner(owner)
    if not 0 <= n <= MAX_LOCAL:
        raise ValueError(f"an owner holds at most {MAX_LOCAL} vectors, got {n}")
    return (np.int64(owner) << np.int64(LOCAL_BITS)) | np.arange(n, dtype=np.int64)


def unpack_ids(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(owners, locals) of index ids, same shape; a -1 id ("no hit") gives -1 for both."""
    ids = np.asarray(ids, dtype=np.int64)
    missing = ids < 0
    owners = np.where(missing, -1, ids >> LOCAL_BITS)
    locals_ = np.where(missing, -1, ids & (MAX_LOCAL - 1))
    return owners, locals_


def check_owner(owner: int) -> None:
    if not isinstance(owner, int | np.integer) or not 0 <= owner < MAX_OWNER:
        raise ValueError(f"owner must be an int in [0, 2**43), got {owner!r}")


def check_new_owners(owners: list[int], counts: dict[int, int]) -> None:
    known = [o for o in owners if o in counts]
    if known:
        raise ValueError(f"owner {known[0]} is already in the index ({len(known)} known owners in this add)")


def owner_ids(counts: dict[int, int], owners: Iterable[int]) -> np.ndarray:
    return np.concatenate([pack_ids(o, counts[o]) for o in owners]) if counts else np.empty(0, np.int64)


def as_vectors(vectors: np.ndarray, dim: int) -> np.ndarray:
    """C-contiguous float32 [n, dim] (a single vector becomes one row); ValueError on a wrong shape, NaN or inf."""
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != dim:
        raise ValueError(f"expected vectors of shape [n, {dim}], got {np.shape(vectors)}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or inf")
    return np.ascontiguousarray(x)


def batch_owners(items: Iterable[tuple[int, np.ndarray]], convert: Any
                 ) -> tuple[list[int], list[np.ndarray], np.ndarray, np.ndarray]:
    """Owners, their row blocks, the rows stacked and their packed ids: one index call for many owners."""
    owners, blocks = [], []
    for owner, rows in items:
        check_owner(owner)
        x = convert(rows)
        if not 0 < len(x) <= MAX_LOCAL:
            raise ValueError(f"add 1..{MAX_LOCAL} rows per owner, got {len(x)} for owner {owner}")
        owners.append(int(owner))
        blocks.append(x)
    if len(set(owners)) != len(owners):
        raise ValueError("an owner appears twice in one add_many")
    if not owners:
        return owners, blocks, np.zeros(0), np.zeros(0, np.int64)
    x = np.concatenate(blocks) if len(blocks) > 1 else blocks[0]
    ids = np.concatenate([pack_ids(o, len(b)) for o, b in zip(owners, blocks, strict=True)])
    return owners, blocks, x, ids


class Growable:
    """A numpy array with amortised O(1) appends along axis 0."""

    def __init__(self, dtype: Any, width: int | None = None) -> None:
        shape = (1024,) if width is None else (1024, width)
        self._data = np.empty(shape, dtype)
        self._n = 0

    def append(self, rows: np.ndarray) -> None:
        need = self._n + len(rows)
        if need > len(self._data):
            grown = np.empty((max(need, 2 * len(self._data)), *self._data.shape[1:]), self._data.dtype)
            grown[: self._n] = self._data[: self._n]
            self._data = grown
        self._data[self._n : need] = rows
        self._n = need

    def view(self) -> np.ndarray:
        return self._data[: self._n]

    def replace(self, rows: np.ndarray) -> None:
        self._n = 0
        self.append(rows)

    @property
    def nbytes(self) -> int:
        return self._data.nbytes


class VectorHits(NamedTuple):
    """k best hits per query, best first. Missing hits: owner and local -1, score -inf ("ip") or +inf ("l2")."""

    scores: np.ndarray  # [Q, k] float32: inner product for "ip", Euclidean distance (not squared) for "l2"
    owners: np.ndarray  # [Q, k] int64
    locals: np.ndarray  # [Q, k] int64


class BinaryMatches(NamedTuple):
    """Every stored code within `max_distance` of each query, sorted by (query, distance)."""

    query: np.ndarray  # int64[]: row of the query
    owners: np.ndarray  # int64[]
    locals: np.ndarray  # int64[]
    distances: np.ndarray  # int32[]: Hamming distance


def worst_score(metric: str) -> np.float32:
    return np.float32(-np.inf if metric == "ip" else np.inf)


def no_hits(nq: int, k: int, metric: str) -> VectorHits:
    return VectorHits(np.full((nq, k), worst_score(metric), np.float32), np.full((nq, k), -1, np.int64),
                      np.full((nq, k), -1, np.int64))


class Owned:
    """What every index shares: vectors counted per owner, under a lock."""

    _lock: threading.RLock
    _counts: dict[int, int]

    def __len__(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def owners(self) -> set[int]:
        with self._lock:
            return set(self._counts)


@runtime_checkable
class VectorSearch(Protocol):
    """The interface of a float-vector index, whatever its backend (`server.index.VectorIndex`,
    `server.exact_index.ExactIndex`)."""

    dim: int
    metric: str

    @property
    def layout(self) -> str:
        """Backend, structure, metric and dimension: what a snapshot must match to be loaded in its place."""

    @property
    def device(self) -> str: ...

    def __len__(self) -> int: ...

    def owners(self) -> set[int]: ...

    def memory_bytes(self) -> int: ...

    def add(self, owner: int, vectors: np.ndarray) -> None: ...

    def add_many(self, items: Iterable[tuple[int, np.ndarray]]) -> None: ...

    def remove(self, owners: Iterable[int]) -> int: ...

    def search(self, queries: np.ndarray, k: int) -> VectorHits: ...

    def save(self, path: Path) -> None: ...


def check_owner_sections(path: Path, sections: dict[str, np.ndarray], ntotal: int) -> dict[int, int]:
    owners, counts = sections.get("owners"), sections.get("counts")
    if owners is None or counts is None or owners.shape != counts.shape or int(counts.sum()) != ntotal:
        raise ValueError(f"{path}: owner bookkeeping does not match the index ({ntotal} vectors)")
    return dict(zip(owners.tolist(), counts.tolist(), strict=True))


def check_id_map(path: Path, id_map: np.ndarray, counts: dict[int, int]) -> None:
    """The ids actually stored must be exactly the owners' rows (catches a snapshot stitched from two indexes)."""
    expected = owner_ids(counts, sorted(counts))  # sorted owners give sorted ids
    if not np.array_equal(np.sort(id_map), expected):
        raise ValueError(f"{path}: ids stored in the index do not match the owner bookkeeping")


def owner_sections(counts: dict[int, int]) -> dict[str, np.ndarray]:
    return {"owners": np.fromiter(counts, np.int64, len(counts)),
            "counts": np.fromiter(counts.values(), np.int64, len(counts))}
