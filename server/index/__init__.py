"""The vector indexes, one interface (`base.VectorSearch`), and the one factory that names a backend.

`faiss_index` (FAISS, CPU or GPU; PDQ's binary multi-hash index), `exact` (PyTorch, exact, no faiss needed) and
`milvus` (one Milvus server that several replicas share, PDQ included) are imported only here and only when chosen,
so a machine with torch but no faiss can use the torch backend for the float signals. With the torch backend,
PDQ's binary index is FAISS's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from server.index.base import VectorSearch

if TYPE_CHECKING:
    from server.config import IndexSettings
    from server.index.faiss_index import BinaryIndex
    from server.index.milvus import MilvusOwners


def vector_index(dim: int, metric: str, settings: IndexSettings, factory: str = "Flat",
                 snapshot: Path | None = None) -> VectorSearch:
    """A fresh index of the configured backend, or the one saved at `snapshot` (ValueError if that snapshot is of
    another backend, or unreadable). `factory` applies to the FAISS backend; the torch backend is always exact; the
    Milvus backend builds `milvus_float_index` in the collection `settings.collection` names (no snapshots)."""
    if settings.backend == "milvus":
        from server.index.milvus import MilvusVectorIndex

        return MilvusVectorIndex(dim, metric, settings, _collection(settings))
    if settings.backend == "torch":
        from server.index.exact import ExactIndex

        options = {"device": settings.device, "dtype": settings.torch_dtype,
                   "memory_budget_bytes": settings.memory_budget_bytes, "workspace_bytes": settings.workspace_bytes}
        if snapshot is not None:
            return ExactIndex.load(snapshot, **options)
        return ExactIndex(dim, metric=metric, **options)  # type: ignore[arg-type]
    from server.index.faiss_index import VectorIndex

    if snapshot is not None:
        index = VectorIndex.load(snapshot, use_gpu=faiss_gpu(settings.device))
        index.set_nprobe(settings.nprobe)
        return index
    return VectorIndex(dim, metric=metric, factory=factory, nprobe=settings.nprobe,  # type: ignore[arg-type]
                       use_gpu=faiss_gpu(settings.device))


def _collection(settings: IndexSettings) -> str:
    if not settings.collection:
        raise ValueError("a Milvus index needs its collection named (IndexSettings.collection, set by the Library)")
    return settings.collection


def owner_registry(settings: IndexSettings, library: str) -> MilvusOwners:
    """The owners of a library whose indexes are shared (the Milvus backend): see `server.index.milvus`."""
    from server.index.milvus import MilvusOwners

    return MilvusOwners(settings, library)


def faiss_gpu(device: str) -> bool | None:
    """FAISS's use_gpu for an `IndexSettings.device`: None (GPU iff faiss sees one), False, or True (required)."""
    return {"auto": None, "cpu": False}.get(device, True)


def binary_index(settings: IndexSettings, snapshot: Path | None = None) -> BinaryIndex:
    """PDQ's exact Hamming index, fresh or from `snapshot`: FAISS's (on a GPU iff faiss sees one, unless the device
    is "cpu", see IndexSettings) unless the backend is Milvus."""
    if settings.backend == "milvus":
        from server.index.milvus import MilvusBinaryIndex

        return MilvusBinaryIndex(settings, _collection(settings))  # type: ignore[return-value]
    from server.index.faiss_index import BinaryIndex

    use_gpu = False if settings.device == "cpu" else None
    return BinaryIndex.load(snapshot, use_gpu=use_gpu) if snapshot is not None else BinaryIndex(use_gpu=use_gpu)


def one_search_thread() -> None:
    """One OpenMP thread per search, where FAISS is installed: requests already run in parallel on the gRPC
    workers, and FAISS's threads on top of them oversubscribe the cores (measured: single queries several times
    slower; bench/RESULTS.md)."""
    try:
        import faiss
    except ImportError:
        return
    faiss.omp_set_num_threads(1)
