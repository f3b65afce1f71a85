"""Milvus as the index that several `jiwoom serve` replicas share (`IndexSettings.backend = "milvus"`).

Each (library, signal) pair is one collection, `<prefix>_<library>_<signal>`: the packed id (`base.pack_ids`) as
primary key, the owner as a scalar field (forgetting is a delete by filter), the frame time of the row (a video
match's segment needs it, and no replica holds it in memory), and the vector. PDQ codes are `BINARY_VECTOR` 256
under `BIN_FLAT` with `HAMMING`: range search is exact there (measured: `BIN_IVF_FLAT` range search misses matches,
even at distance 0). Embeddings and faces are `FLOAT_VECTOR` under the configured index (`HNSW` by default,
`IVF_PQ` for memory, `GPU_CAGRA` on a GPU Milvus) with inner product or L2.

A library's owners are one more collection, `<prefix>_<library>_owners`: one row an owner with its row count per
signal (JSON), written after the owner's rows and deleted before them, so an owner listed there is searchable.
It answers "how many", "which" and "how many lack a signal" (`Library.unscreened`) without any replica keeping a
list. PostgreSQL stays the truth: every collection can be rebuilt from it (`jiwoom index rebuild`).

Consistency: writes return once Milvus has them. A search sees every write acknowledged `milvus_staleness_s`
before it (a guarantee timestamp, Milvus's "customised" level), which costs nothing; Strong (staleness 0) waits
for the next time tick, about 200 ms a search on Milvus's defaults (measured here on Embedded Milvus 2.3.5).
Reads that decide what to delete or rebuild are always Strong.

Every failure of Milvus (unreachable, timed out, refused) is `IndexUnavailable`: the caller gets UNAVAILABLE.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from jiwoom.api.errors import IndexUnavailable
from server.config import IndexSettings
from server.index.base import (
    LOCAL_BITS,
    BinaryMatches,
    VectorHits,
    as_vectors,
    batch_owners,
    check_owner,
    no_hits,
    unpack_ids,
)

log = logging.getLogger(__name__)

PDQ_BITS = 256
WRITE_BATCH_BYTES = 16 * 1024 * 1024  # rows per insert call: well under Milvus's 64 MiB gRPC message limit
DELETE_BATCH = 1000  # owners per delete expression
QUERY_BATCH = 16384  # Milvus's limit on one query's results
STRONG = "Strong"
MAKE_ATTEMPTS = 8
T = TypeVar("T")

_clients: dict[tuple[str, str, str], Any] = {}
_clients_lock = threading.Lock()


def client(settings: IndexSettings) -> Any:
    """One MilvusClient per server and credentials in this process (it is thread-safe and holds one channel)."""
    from pymilvus import MilvusClient

    key = (settings.milvus_uri, settings.milvus_token, settings.milvus_db)
    with _clients_lock:
        if key not in _clients:
            _clients[key] = _call(f"connect to {settings.milvus_uri}", lambda: MilvusClient(
                uri=settings.milvus_uri, token=settings.milvus_token, db_name=settings.milvus_db,
                timeout=settings.milvus_timeout_s))
        return _clients[key]


def forget_clients() -> None:
    """Close the cached clients (a test stops its Milvus; the next call connects again)."""
    with _clients_lock:
        for each in _clients.values():
            try:
                each.close()
            except Exception:  # closing a client of a server already gone: nothing left to release
                log.debug("closing a Milvus client failed", exc_info=True)
        _clients.clear()


def _call(what: str, run: Callable[[], T]) -> T:
    from pymilvus.exceptions import MilvusException

    try:
        return run()
    except MilvusException as error:
        raise IndexUnavailable(f"milvus: {what}: {error.message}") from error
    except (OSError, TimeoutError) as error:
        raise IndexUnavailable(f"milvus: {what}: {error}") from error


def collection_name(settings: IndexSettings, suffix: str) -> str:
    name = f"{settings.milvus_prefix}_{suffix}"
    if not name.replace("_", "a").isalnum() or not (name[0].isalpha() or name[0] == "_") or len(name) > 255:
        raise ValueError(f"{name!r} is not a Milvus collection name (letters, digits and _; milvus_prefix first)")
    return name


class _Collection:
    """One Milvus collection: made (with its index) and loaded on first use, checked against what it must hold."""

    shared = True  # the Library keeps no owners or frame times of its own for a shared index
    device = "milvus"

    def __init__(self, settings: IndexSettings, suffix: str) -> None:
        self.settings = settings
        self.name = collection_name(settings, suffix)
        self.client = client(settings)
        self._ensure()

    def _schema_fields(self, schema: Any, data_type: Any) -> None:
        raise NotImplementedError

    def _index_params(self, params: Any) -> None:
        raise NotImplementedError

    def _expected(self) -> dict[str, Any]:
        """What the vector field of an existing collection must be: {"type": DataType, "dim": int}."""
        raise NotImplementedError

    def _ensure(self) -> None:
        from pymilvus import DataType, MilvusClient

        def make() -> bool:
            if not self.client.has_collection(self.name):
                schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
                self._schema_fields(schema, DataType)
                params = self.client.prepare_index_params()
                self._index_params(params)
                self.client.create_collection(self.name, schema=schema, index_params=params,
                                              consistency_level=STRONG)
            self._check(self.client.describe_collection(self.name))
            if not self.client.list_indexes(self.name, field_name="vector"):
                return False  # another replica is making it: its index comes next
            self.client.load_collection(self.name)
            return True

        # Replicas that start together race to make the same collection: the loser's calls fail or find it half
        # made, and succeed a moment later
        for attempt in range(MAKE_ATTEMPTS):
            try:
                if _call(f"open collection {self.name}", make):
                    return
            except IndexUnavailable:
                if attempt == MAKE_ATTEMPTS - 1:
                    raise
            time.sleep(0.2 * (attempt + 1))
        raise IndexUnavailable(f"milvus: collection {self.name} has no index on its vectors")

    def _check(self, description: dict[str, Any]) -> None:
        expected = self._expected()
        vector = next((f for f in description["fields"] if f["name"] == "vector"), None)
        dim = None if vector is None else int(vector.get("params", {}).get("dim", 0))
        if vector is None or vector["type"] != expected["type"] or dim != expected["dim"]:
            found = "no vector field" if vector is None else f"{vector['type']!r} of dimension {dim}"
            raise ValueError(f"Milvus collection {self.name} holds {found}, this signal stores "
                             f"{expected['type']!r} of dimension {expected['dim']}: another model or signal wrote "
                             f"it; rebuild it (jiwoom index rebuild) or choose another milvus_prefix")

    def _read_level(self) -> dict[str, Any]:
        """The consistency of a search: all writes acknowledged `milvus_staleness_s` ago, or Strong."""
        staleness = self.settings.milvus_staleness_s
        if staleness <= 0:
            return {"consistency_level": STRONG}
        physical_ms = int((time.time() - staleness) * 1000)
        return {"consistency_level": "Customized", "guarantee_timestamp": physical_ms << 18}  # Milvus hybrid ts

    # -- what every index answers ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return self.count()

    def count(self, expression: str = "", strong: bool = False) -> int:
        """Rows (matching `expression`): as of `milvus_staleness_s` ago unless `strong` (sizes for stats and
        metrics need not wait for a time tick)."""
        level = {"consistency_level": STRONG} if strong else self._read_level()
        rows = _call(f"count {self.name}", lambda: self.client.query(
            self.name, filter=expression, output_fields=["count(*)"], **level))
        return int(rows[0]["count(*)"]) if rows else 0

    def owners(self, since: int | None = None) -> set[int]:
        """Every owner holding rows here, or those with ids from `since` on."""
        return set(self._scan("owner", "" if since is None else f"owner >= {int(since)}"))

    def _scan(self, field: str, expression: str = "") -> Iterator[int]:
        """Every row's `field`, in batches (Strong: what it returns decides deletes and rebuilds)."""
        def start() -> Any:
            return self.client.query_iterator(self.name, batch_size=QUERY_BATCH // 4, filter=expression,
                                              output_fields=[field], consistency_level=STRONG)

        iterator = _call(f"scan {self.name}", start)
        try:
            while batch := _call(f"scan {self.name}", iterator.next):
                yield from (int(row[field]) for row in batch)
        finally:
            iterator.close()

    def memory_bytes(self) -> int:
        return 0  # this process holds none of it

    def remove(self, owners: Iterable[int]) -> int:
        """Delete every row of these owners (unknown ones are ignored); returns the number of rows removed."""
        gone = sorted({int(o) for o in owners})
        removed = 0
        for start in range(0, len(gone), DELETE_BATCH):
            expression = f"owner in {json.dumps(gone[start:start + DELETE_BATCH])}"
            removed += self.count(expression, strong=True)
            _call(f"delete from {self.name}", lambda e=expression: self.client.delete(self.name, filter=e))
        return removed

    def _write(self, rows: list[dict[str, Any]], row_bytes: int) -> None:
        step = max(1, WRITE_BATCH_BYTES // max(row_bytes, 1))
        for start in range(0, len(rows), step):
            chunk = rows[start:start + step]
            # upsert, not insert: a replica that re-adds an owner (reconciling at start) must not duplicate it
            _call(f"write to {self.name}", lambda c=chunk: self.client.upsert(self.name, c))

    def save(self, path: Path) -> None:
        raise ValueError(f"{self.name} lives in Milvus: there is no snapshot to save (PostgreSQL is the truth)")


class _RowCollection(_Collection):
    """Vectors of one signal: packed id, owner, frame time, vector."""

    dim: int

    def times(self, owners: np.ndarray, locals_: np.ndarray) -> np.ndarray:
        """Frame time of each (owner, row); 0 for rows deleted since the search."""
        ids = ((np.asarray(owners, np.int64) << np.int64(LOCAL_BITS)) | np.asarray(locals_, np.int64)).tolist()
        if not ids:
            return np.zeros(0, np.float32)
        found: dict[int, float] = {}
        for start in range(0, len(ids), QUERY_BATCH):
            chunk = sorted(set(ids[start:start + QUERY_BATCH]))
            rows = _call(f"read times from {self.name}", lambda c=chunk: self.client.query(
                self.name, ids=c, output_fields=["time"], **self._read_level()))
            found.update((int(r["id"]), float(r["time"])) for r in rows)
        return np.array([found.get(i, 0.0) for i in ids], np.float32)

    def add(self, owner: int, vectors: np.ndarray) -> None:
        self.add_many([(owner, vectors)])

    def add_many(self, items: Iterable[tuple[int, np.ndarray]]) -> None:
        self.add_timed((owner, rows, np.zeros(len(rows), np.float32)) for owner, rows in items)

    def add_timed(self, items: Iterable[tuple[int, np.ndarray, np.ndarray]]) -> None:
        """Rows of many owners with each row's frame time (the Library's adds; `add_many` stores 0)."""
        timed = list(items)
        owners, blocks, x, ids = batch_owners([(o, r) for o, r, _ in timed], self._convert)
        if not owners:
            return
        times = np.concatenate([np.asarray(t, np.float32).reshape(-1) for _, _, t in timed])
        if len(times) != len(ids):
            raise ValueError(f"{self.name}: {len(times)} frame times for {len(ids)} rows")
        owner_of = np.repeat(np.asarray(owners, np.int64), [len(b) for b in blocks])
        rows = [{"id": int(i), "owner": int(o), "time": float(t), "vector": self._encode(v)}
                for i, o, t, v in zip(ids.tolist(), owner_of.tolist(), times.tolist(), x, strict=True)]
        self._write(rows, self._row_bytes())

    def _convert(self, rows: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _encode(self, row: np.ndarray) -> Any:
        raise NotImplementedError

    def _row_bytes(self) -> int:
        raise NotImplementedError


class MilvusVectorIndex(_RowCollection):
    """`base.VectorSearch` over a Milvus collection of float vectors ("ip": inner product; "l2": Euclidean)."""

    def __init__(self, dim: int, metric: str, settings: IndexSettings, suffix: str) -> None:
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
        self.dim = dim
        self.metric = metric
        self.index_type = settings.milvus_float_index
        super().__init__(settings, suffix)

    @property
    def layout(self) -> str:
        return f"milvus:{self.index_type},{self.metric},{self.dim}"

    @property
    def _milvus_metric(self) -> str:
        return "IP" if self.metric == "ip" else "L2"

    def _schema_fields(self, schema: Any, data_type: Any) -> None:
        schema.add_field("id", data_type.INT64, is_primary=True)
        schema.add_field("owner", data_type.INT64)
        schema.add_field("time", data_type.FLOAT)
        schema.add_field("vector", data_type.FLOAT_VECTOR, dim=self.dim)

    def _index_params(self, params: Any) -> None:
        s = self.settings
        build = {"FLAT": {}, "HNSW": {"M": s.milvus_hnsw_m, "efConstruction": s.milvus_hnsw_ef_construction},
                 "IVF_FLAT": {"nlist": s.milvus_ivf_nlist},
                 "IVF_PQ": {"nlist": s.milvus_ivf_nlist, "m": s.milvus_pq_m, "nbits": 8},
                 "GPU_CAGRA": {"intermediate_graph_degree": 64, "graph_degree": 32}}[self.index_type]
        params.add_index("vector", index_type=self.index_type, metric_type=self._milvus_metric, params=build)

    def _expected(self) -> dict[str, Any]:
        from pymilvus import DataType

        return {"type": DataType.FLOAT_VECTOR, "dim": self.dim}

    def _convert(self, rows: np.ndarray) -> np.ndarray:
        return as_vectors(rows, self.dim)

    def _encode(self, row: np.ndarray) -> Any:
        return row  # pymilvus takes float32 rows as they are

    def _row_bytes(self) -> int:
        return 4 * self.dim + 32

    def _search_params(self, k: int) -> dict[str, Any]:
        s = self.settings
        params = {"FLAT": {}, "HNSW": {"ef": max(s.milvus_hnsw_ef, k)}, "IVF_FLAT": {"nprobe": s.nprobe},
                  "IVF_PQ": {"nprobe": s.nprobe}, "GPU_CAGRA": {"itopk_size": max(128, k)}}[self.index_type]
        return {"metric_type": self._milvus_metric, "params": params}

    def search(self, queries: np.ndarray, k: int) -> VectorHits:
        q = as_vectors(queries, self.dim)
        if not 1 <= k <= QUERY_BATCH:
            raise ValueError(f"k must be in 1..{QUERY_BATCH}, got {k}")
        out = no_hits(len(q), k, self.metric)
        if not len(q):
            return out
        results = _call(f"search {self.name}", lambda: self.client.search(
            self.name, data=list(q), limit=k, anns_field="vector", search_params=self._search_params(k),
            output_fields=[], **self._read_level()))
        for row, hits in enumerate(results):
            if not hits:
                continue
            ids = np.array([h["id"] for h in hits], np.int64)
            scores = np.array([h["distance"] for h in hits], np.float32)
            if self.metric == "l2":
                scores = np.sqrt(np.maximum(scores, 0))  # Milvus reports squared L2; VectorHits wants the distance
            owners, locals_ = unpack_ids(ids)
            n = len(ids)
            out.scores[row, :n], out.owners[row, :n], out.locals[row, :n] = scores, owners, locals_
        return out


class MilvusBinaryIndex(_RowCollection):
    """PDQ's 256-bit codes under BIN_FLAT: every stored code within a Hamming radius, exactly (like
    `faiss_index.BinaryIndex.search`), up to `milvus_range_limit` codes a query."""

    dim = PDQ_BITS // 8

    @property
    def layout(self) -> str:
        return "milvus:BIN_FLAT,hamming,256"

    def _schema_fields(self, schema: Any, data_type: Any) -> None:
        schema.add_field("id", data_type.INT64, is_primary=True)
        schema.add_field("owner", data_type.INT64)
        schema.add_field("time", data_type.FLOAT)
        schema.add_field("vector", data_type.BINARY_VECTOR, dim=PDQ_BITS)

    def _index_params(self, params: Any) -> None:
        params.add_index("vector", index_type="BIN_FLAT", metric_type="HAMMING")

    def _expected(self) -> dict[str, Any]:
        from pymilvus import DataType

        return {"type": DataType.BINARY_VECTOR, "dim": PDQ_BITS}

    def _convert(self, rows: np.ndarray) -> np.ndarray:
        codes = np.ascontiguousarray(rows, np.uint8)
        if codes.ndim == 1:
            codes = codes[None]
        if codes.ndim != 2 or codes.shape[1] != self.dim:
            raise ValueError(f"expected PDQ codes of shape [n, {self.dim}], got {np.shape(rows)}")
        return codes

    def _encode(self, row: np.ndarray) -> Any:
        return row.tobytes()

    def _row_bytes(self) -> int:
        return self.dim + 32

    def search(self, queries: np.ndarray, max_distance: int = 31) -> BinaryMatches:
        q = self._convert(queries)
        if not 0 <= max_distance < PDQ_BITS:
            raise ValueError(f"max_distance must be in [0, {PDQ_BITS})")
        empty = np.empty(0, np.int64)
        if not len(q):
            return BinaryMatches(empty, empty, empty, np.empty(0, np.int32))
        limit = self.settings.milvus_range_limit
        # range search keeps range_filter <= distance < radius: radius = max_distance + 1 makes it inclusive
        params = {"metric_type": "HAMMING", "params": {"radius": max_distance + 1, "range_filter": 0}}
        results = _call(f"search {self.name}", lambda: self.client.search(
            self.name, data=[row.tobytes() for row in q], limit=limit, anns_field="vector", search_params=params,
            output_fields=[], **self._read_level()))
        query, ids, distances = [], [], []
        for row, hits in enumerate(results):
            if len(hits) >= limit:
                log.warning("%s: a query found %d codes within %d bits (milvus_range_limit): the rest are not "
                            "returned", self.name, len(hits), max_distance)
            for hit in hits:
                query.append(row)
                ids.append(hit["id"])
                distances.append(hit["distance"])
        owners, locals_ = unpack_ids(np.array(ids, np.int64))
        q_rows, dist = np.array(query, np.int64), np.array(distances, np.float32).astype(np.int32)
        order = np.lexsort((locals_, owners, dist, q_rows))
        return BinaryMatches(q_rows[order], owners[order], locals_[order], dist[order])


class MilvusOwners(_Collection):
    """A library's owners: one row each, with its number of rows per signal (see the module docstring)."""

    def __init__(self, settings: IndexSettings, library: str) -> None:
        super().__init__(settings, f"{library}_owners")

    def _schema_fields(self, schema: Any, data_type: Any) -> None:
        schema.add_field("owner", data_type.INT64, is_primary=True)
        schema.add_field("rows", data_type.JSON)
        schema.add_field("vector", data_type.FLOAT_VECTOR, dim=2)  # Milvus needs one; never searched

    def _index_params(self, params: Any) -> None:
        params.add_index("vector", index_type="FLAT", metric_type="L2")

    def _expected(self) -> dict[str, Any]:
        from pymilvus import DataType

        return {"type": DataType.FLOAT_VECTOR, "dim": 2}

    def record(self, rows: dict[int, dict[str, int]]) -> None:
        """Each owner's row count per signal (after its rows are written)."""
        for owner in rows:
            check_owner(owner)
        self._write([{"owner": int(o), "rows": counts, "vector": [0.0, 0.0]} for o, counts in rows.items()], 256)

    def remove(self, owners: Iterable[int]) -> int:
        gone = sorted({int(o) for o in owners})
        held = 0
        for start in range(0, len(gone), DELETE_BATCH):
            chunk = gone[start:start + DELETE_BATCH]
            held += len(_call(f"find owners in {self.name}", lambda c=chunk: self.client.query(
                self.name, ids=c, output_fields=["owner"], consistency_level=STRONG)))
            _call(f"delete from {self.name}", lambda c=chunk: self.client.delete(self.name, ids=c))
        return held

    def lacking(self, has: str, lacks: str) -> int:
        """Owners with rows of signal `has` and none of `lacks` (as of `milvus_staleness_s` ago)."""
        for name in (has, lacks):
            if not name.isidentifier():
                raise ValueError(f"not a signal name: {name!r}")
        expression = f'rows["{has}"] > 0 and not (rows["{lacks}"] > 0)'
        rows = _call(f"count {self.name}", lambda: self.client.query(
            self.name, filter=expression, output_fields=["count(*)"], **self._read_level()))
        return int(rows[0]["count(*)"]) if rows else 0

    def holding(self, signal: str) -> int:
        if not signal.isidentifier():
            raise ValueError(f"not a signal name: {signal!r}")
        return self.count(f'rows["{signal}"] > 0')


def drop_collections(settings: IndexSettings, libraries: Iterable[str]) -> list[str]:
    """Drop every collection of these libraries under `milvus_prefix` (a rebuild starts from nothing)."""
    milvus = client(settings)
    prefixes = tuple(f"{settings.milvus_prefix}_{library}_" for library in libraries)
    names = [n for n in _call("list collections", milvus.list_collections) if n.startswith(prefixes)]
    for name in names:
        _call(f"drop {name}", lambda n=name: milvus.drop_collection(n))
    return names
