"""server.index.exact (PyTorch exact k-NN) against FAISS's exact Flat index, and backend selection by IndexSettings.

Everything runs on CPU. The CUDA path differs only in its device and its float16 products; the latter are forced
on CPU here (`_compute`), so the arithmetic the GPU runs (float16 product, float32 re-scoring) is tested too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from server.config import IndexSettings, load_settings
from server.index import vector_index
from server.index.base import VectorHits, VectorSearch
from server.index.exact import ExactIndex
from server.index.faiss_index import VectorIndex
from server.matching.library import Library
from server.signals import SIGNALS, SignalVectors
from tests.conftest import add_remove_search_concurrently
from tests.test_index import brute_force, clustered, fill, normalised

ROOT = Path(__file__).resolve().parents[1]
RNG_SEED = 11


def dataset(kind: str, metric: str, n: int, nq: int, d: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """(stored, queries): random or clustered (low intrinsic dimension, like real embeddings); normalised for
    "ip", raw for "l2" (face descriptors are not normalised)."""
    rng = np.random.default_rng(RNG_SEED)
    if kind == "clustered":
        centers, proj = rng.standard_normal((40, 8)), rng.standard_normal((8, d))
        data, queries = clustered(rng, n, centers, proj), clustered(rng, nq, centers, proj)
    else:
        data, queries = normalised(rng, n, d), normalised(rng, nq, d)
    if metric == "l2":
        data, queries = data * 0.7 + 0.1, queries * 0.7 + 0.1
    return data, queries


def both(metric: str, data: np.ndarray, sizes: list[int], **options: object) -> tuple[VectorIndex, ExactIndex]:
    faiss_index = VectorIndex(data.shape[1], metric=metric, use_gpu=False)  # type: ignore[arg-type]
    exact = ExactIndex(data.shape[1], metric=metric, device="cpu", **options)  # type: ignore[arg-type]
    fill(faiss_index, data, sizes)
    fill(exact, data, sizes)
    return faiss_index, exact


def recall_at(expected: np.ndarray, got: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(expected, got, strict=True)]))


def hit_ids(hits: object) -> np.ndarray:
    return hits.owners * 100_000 + hits.locals  # type: ignore[attr-defined]


def assert_same_hits(want: object, got: object, tol: float = 1e-5) -> None:
    """Same owners and rows in the same order, except where two scores tie within float32 rounding (the BLAS
    behind FAISS and torch's matmul round differently, so such a pair may come out swapped, or the k-th hit
    may be either of two equals)."""
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4, atol=1e-4)  # type: ignore[attr-defined]
    a, b = hit_ids(want), hit_ids(got)
    for i, j in zip(*np.nonzero(a != b), strict=True):
        score = want.scores[i, j]  # type: ignore[attr-defined]
        ties = np.abs(want.scores[i] - score) <= tol  # type: ignore[attr-defined]
        assert ties.sum() > 1 and (b[i, j] in a[i][ties] or abs(want.scores[i, -1] - score) <= tol), (i, j)


# ------------------------------------------------------------------------------------------- same as FAISS


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_float32_matches_faiss_flat(metric: str, kind: str) -> None:
    data, q = dataset(kind, metric, 3000, 60)
    sizes = [1, 7, 300, 92, 600, 500, 1500]
    expected, exact = both(metric, data, sizes, dtype="float32")
    for k in (1, 10, 50):
        want, got = expected.search(q, k), exact.search(q, k)
        assert_same_hits(want, got)
        assert np.mean(hit_ids(want) == hit_ids(got)) > 0.995
        assert got.scores.dtype == np.float32 and got.owners.dtype == got.locals.dtype == np.int64
    single = exact.search(q[0], 5)  # one query as a 1-d vector
    assert single.owners.shape == (1, 5)
    # and against float64 brute force, owners and rows
    by_owner = {1000 + i: rows for i, rows in enumerate(np.split(data, np.cumsum(sizes)[:-1]))}
    scores, owners, locals_ = brute_force(by_owner, q, 10, metric)
    assert_same_hits(VectorHits(scores.astype(np.float32), owners, locals_), exact.search(q, 10))
    assert len(exact) == len(expected) == 3000 and exact.owners() == expected.owners()


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("metric", ["ip", "l2"])
@pytest.mark.parametrize("products", ["float32", "float16"])
def test_float16_storage_recall(metric: str, kind: str, products: str) -> None:
    """float16 rows: recall@10 >= 0.99 against float32 FAISS. products="float16" runs the CUDA arithmetic
    (float16 product, top 2k re-scored in float32) on CPU."""
    data, q = dataset(kind, metric, 4000, 200)
    expected, exact = both(metric, data, [100] * 40, dtype="float16")
    if products == "float16":
        exact._compute = torch.float16
    want, got = expected.search(q, 10), exact.search(q, 10)
    assert recall_at(hit_ids(want), hit_ids(got)) >= 0.99
    assert np.mean(hit_ids(want)[:, 0] == hit_ids(got)[:, 0]) >= 0.98
    # scores are float32 arithmetic on the float16-rounded vectors: off by the rounding, not by 3 digits
    np.testing.assert_allclose(got.scores, want.scores, atol=2e-3)
    assert exact.memory_bytes() < expected.memory_bytes()


def test_removals_compact_and_stay_exact() -> None:
    data, q = dataset("random", "ip", 3000, 50)
    expected, exact = both("ip", data, [100] * 30, dtype="float32")
    for gone in ([1003], [1005, 1007, 424242], [1000], [1029], [1003]):  # first, middle, last, repeated, unknown
        assert exact.remove(gone) == expected.remove(gone)
        assert_same_hits(expected.search(q, 20), exact.search(q, 20))
    assert len(exact) == 2500 and exact._n == 2500 and exact.owners() == expected.owners()
    for index in (expected, exact):  # a removed owner comes back with new rows
        index.add(1003, data[:5])
    assert_same_hits(expected.search(q, 20), exact.search(q, 20))
    assert exact.remove(exact.owners()) == 2505 and len(exact) == 0
    empty = exact.search(q, 3)
    assert (empty.owners == -1).all() and np.isneginf(empty.scores).all()


def test_l2_removal_moves_norms_with_rows() -> None:
    data, q = dataset("clustered", "l2", 2000, 40)
    expected, exact = both("l2", data, [50] * 40, dtype="float32")
    exact.remove([1000, 1013, 1014, 1031])
    expected.remove([1000, 1013, 1014, 1031])
    assert_same_hits(expected.search(q, 10), exact.search(q, 10), tol=1e-4)
    hits = exact.search(data[1000:1003], 1)  # a stored vector is at distance 0 from itself
    np.testing.assert_allclose(hits.scores[:, 0], 0, atol=1e-3)


def test_small_workspace_chunks_give_the_same_results() -> None:
    """Many row chunks and query batches (running top-k merge) equal one product over everything."""
    data, q = dataset("random", "l2", 3000, 70)
    _, whole = both("l2", data, [300] * 10, dtype="float32")
    _, chunked = both("l2", data, [300] * 10, dtype="float32", workspace_bytes=70 * 4 * 64)
    for k in (1, 10, 64, 200):
        assert_same_hits(whole.search(q, k), chunked.search(q, k), tol=1e-6)  # equal scores may swap
    chunked._compute = torch.float16  # the re-scoring path batches queries by the workspace too
    assert recall_at(hit_ids(whole.search(q, 10)), hit_ids(chunked.search(q, 10))) >= 0.99


def test_empty_index_and_k_beyond_size() -> None:
    for metric, worst in (("ip", -np.inf), ("l2", np.inf)):
        index = ExactIndex(8, metric=metric, device="cpu")  # type: ignore[arg-type]
        empty = index.search(np.zeros((2, 8), np.float32), 3)
        assert empty.owners.shape == (2, 3) and (empty.owners == -1).all() and (empty.scores == worst).all()
        index.add(3, np.eye(8, dtype=np.float32)[:2])
        hits = index.search(np.eye(8, dtype=np.float32)[:1], 5)
        assert hits.owners.tolist() == [[3, 3, -1, -1, -1]]
        assert hits.locals.tolist() == [[0, 1, -1, -1, -1]]
        assert (hits.scores[0, 2:] == worst).all() and hits.scores.dtype == np.float32


def test_bad_input_raises_value_error_like_vector_index() -> None:
    for index in (ExactIndex(4, device="cpu"), VectorIndex(4, use_gpu=False)):
        index.add(1, np.ones((2, 4), np.float32))
        bad_adds = [(1, np.ones((2, 4))), (2, np.ones((2, 5))), (2, np.empty((0, 4))), (-3, np.ones((1, 4))),
                    (2, np.array([[np.nan, 0, 0, 0]])), (2, np.array([[np.inf, 0, 0, 0]]))]
        for owner, rows in bad_adds:
            with pytest.raises(ValueError):
                index.add(owner, rows)
        with pytest.raises(ValueError, match="twice"):
            index.add_many([(5, np.ones((1, 4))), (5, np.ones((1, 4)))])
        with pytest.raises(ValueError, match="already"):
            index.add_many([(6, np.ones((1, 4))), (1, np.ones((1, 4)))])
        for queries, k in ((np.ones((1, 5)), 1), (np.array([[np.nan, 0, 0, 0]]), 1), (np.ones((1, 4)), 0)):
            with pytest.raises(ValueError):
                index.search(queries, k)
        assert index.owners() == {1} and len(index) == 2  # nothing refused was added
    with pytest.raises(ValueError, match="float16"):
        ExactIndex(4, device="cpu", dtype="float16").add(1, np.full((1, 4), 1e5, np.float32))
    for options in ({"metric": "cos"}, {"device": "tpu"}, {"dtype": "bfloat16"}, {"workspace_bytes": 0}):
        with pytest.raises(ValueError):
            ExactIndex(4, **options)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            ExactIndex(4, device="cuda")


# ------------------------------------------------------------------------------------------- memory


def test_growth_is_amortised() -> None:
    index = ExactIndex(16, device="cpu")
    rng = np.random.default_rng(RNG_SEED)
    capacities = set()
    for owner in range(5000):
        index.add(owner, rng.standard_normal((2, 16)).astype(np.float32))
        capacities.add(len(index._data))
    assert len(index) == 10_000 and len(capacities) <= 8  # 1024 * 1.5^6 > 10,000
    assert len(index._data) < 1.5 * 10_000 + 1
    assert index.memory_bytes() >= len(index._data) * 16 * 4


def test_memory_budget_refuses_adds_beyond_it() -> None:
    row = 32 * 2  # float16 rows of 32
    index = ExactIndex(32, device="cpu", dtype="float16", memory_budget_bytes=2500 * row)
    rng = np.random.default_rng(RNG_SEED)
    index.add_many((o, rng.standard_normal((100, 32)).astype(np.float32)) for o in range(25))
    assert len(index) == 2500 and len(index._data) == 2500  # growth capped at the budget
    with pytest.raises(ValueError, match="memory_budget_bytes"):
        index.add(99, rng.standard_normal((1, 32)).astype(np.float32))
    assert len(index) == 2500 and 99 not in index.owners()
    index.remove([0])
    index.add(99, rng.standard_normal((100, 32)).astype(np.float32))  # room again after a removal
    assert len(index) == 2500 and index.memory_bytes() <= 2500 * row + index._ids.nbytes + 100 * 25
    greedy = ExactIndex(64, device="cpu", workspace_bytes=1 << 60)  # more than any machine has free
    with pytest.raises(ValueError, match="free"):  # refused before allocating
        greedy.add(1, np.zeros((1, 64), np.float32))
    assert len(greedy) == 0


# ------------------------------------------------------------------------------------------- snapshots


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_snapshot_round_trip(tmp_path: Path, metric: str) -> None:
    data, q = dataset("clustered", metric, 2000, 30)
    _, index = both(metric, data, [200] * 10, dtype="float16")
    index.remove([1004])
    index.save(tmp_path / "e.idx")
    loaded = ExactIndex.load(tmp_path / "e.idx", device="cpu", dtype="float16")
    for a, b in zip(index.search(q, 7), loaded.search(q, 7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.owners() == index.owners() and len(loaded) == 1800 and loaded.metric == metric
    upcast = ExactIndex.load(tmp_path / "e.idx", device="cpu", dtype="float32")  # float16 values are exact in float32
    np.testing.assert_array_equal(upcast.search(q, 7).owners, index.search(q, 7).owners)
    loaded.remove([1003])  # still mutable after loading
    loaded.add(1004, data[:2])
    assert len(loaded) == 1602 and not (loaded.search(q, 7).owners == 1003).any()
    empty = ExactIndex(8, device="cpu")
    empty.save(tmp_path / "empty.idx")
    assert len(ExactIndex.load(tmp_path / "empty.idx", device="cpu")) == 0


def test_corrupt_or_foreign_snapshots_raise_value_error(tmp_path: Path) -> None:
    index = ExactIndex(8, device="cpu")
    index.add(1, np.eye(8, dtype=np.float32))
    path = tmp_path / "e.idx"
    index.save(path)
    good = path.read_bytes()
    for name, payload in {"truncated": good[: len(good) // 2], "flipped": good[:90] + bytes([good[90] ^ 1])
                          + good[91:], "garbage": b"not an index", "empty": b""}.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError):
            ExactIndex.load(tmp_path / name)
    with pytest.raises(ValueError, match="exact"):  # a FAISS snapshot is not an exact one, and back
        faiss_index = VectorIndex(8, use_gpu=False)
        faiss_index.save(tmp_path / "v.idx")
        ExactIndex.load(tmp_path / "v.idx")
    with pytest.raises(ValueError, match="vector"):
        VectorIndex.load(path)
    with pytest.raises(ValueError, match="budget"):
        ExactIndex.load(path, device="cpu", memory_budget_bytes=100)


def test_concurrent_search_while_adding_and_removing() -> None:
    data, _ = dataset("random", "ip", 4000, 1, d=32)
    index = ExactIndex(32, device="cpu", workspace_bytes=1 << 16)

    def search(i: int) -> None:
        assert index.search(data[i : i + 4], 5).owners.shape == (4, 5)

    add_remove_search_concurrently(lambda o: index.add(o, data[o : o + 50]), lambda o: index.remove([o]), search)
    assert len(index) == 80 * 50 - 10 * 50
    stored = {o for o in range(0, 4000, 50) if o % 400}
    assert index.owners() == stored
    hits = index.search(data[[o for o in sorted(stored)[:20]]], 1)  # every stored owner finds its own first row
    assert hits.owners[:, 0].tolist() == sorted(stored)[:20] and (hits.locals[:, 0] == 0).all()


# ------------------------------------------------------------------------------------- backend selection


def test_settings_select_the_backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    torch_settings = IndexSettings(backend="torch", device="cpu", torch_dtype="float16", workspace_bytes=1 << 20)
    exact = vector_index(16, "l2", torch_settings)
    assert isinstance(exact, ExactIndex) and exact.dtype == torch.float16 and exact.metric == "l2"
    assert exact.workspace_bytes == 1 << 20 and exact.device == "cpu" and isinstance(exact, VectorSearch)
    flat = vector_index(16, "ip", IndexSettings(device="cpu"), "HNSW16")
    assert isinstance(flat, VectorIndex) and flat.factory == "HNSW16" and flat.device == "cpu"
    exact.add(1, np.ones((1, 16), np.float32))
    exact.save(tmp_path / "e.idx")
    assert isinstance(vector_index(16, "l2", torch_settings, snapshot=tmp_path / "e.idx"), ExactIndex)
    with pytest.raises(ValueError):  # a torch snapshot under FAISS settings
        vector_index(16, "l2", IndexSettings(device="cpu"), snapshot=tmp_path / "e.idx")

    monkeypatch.setenv("JIWOOM_INDEX_BACKEND", "torch")
    monkeypatch.setenv("JIWOOM_INDEX_TORCH_DTYPE", "float32")
    monkeypatch.setenv("JIWOOM_INDEX_MEMORY_BUDGET_BYTES", "1000000")
    loaded = load_settings().index
    assert (loaded.backend, loaded.torch_dtype, loaded.memory_budget_bytes) == ("torch", "float32", 1_000_000)
    for bad in ({"backend": "annoy"}, {"device": "tpu"}, {"torch_dtype": "int8"}):
        with pytest.raises(ValueError):
            IndexSettings(**bad)  # type: ignore[arg-type]


def rows(rng: np.random.Generator, n: int, dim: int, binary: bool = False) -> SignalVectors:
    vectors = rng.integers(0, 256, (n, dim), dtype=np.uint8) if binary else normalised(rng, n, dim)
    return SignalVectors(vectors, np.arange(n, dtype=np.float32), np.tile(np.float32([0, 0, 1, 1]), (n, 1)),
                         np.arange(n, dtype=np.int32))


def test_library_on_the_torch_backend(tmp_path: Path) -> None:
    """A library of the torch backend: embedding and face in ExactIndex, PDQ in FAISS; snapshots reload under
    the same settings and are refused (rebuild from the database) under other ones."""
    settings = IndexSettings(backend="torch", device="cpu")
    signals = {name: SIGNALS[name] for name in ("pdq", "embedding", "face")}
    library = Library("references", signals, settings)
    assert isinstance(library.indexes["embedding"], ExactIndex) and isinstance(library.indexes["face"], ExactIndex)
    rng = np.random.default_rng(RNG_SEED)
    items = [(o, {"pdq": rows(rng, 1, 32, binary=True), "embedding": rows(rng, 10, 512), "face": rows(rng, 2, 128)})
             for o in range(1, 41)]
    library.add_many(items)
    library.remove([7])
    query = {"embedding": SignalVectors(items[3][1]["embedding"].vectors[:2], np.zeros(2, np.float32),
                                        np.zeros((2, 4), np.float32), np.zeros(2, np.int32))}
    from server.config import MatchSettings

    hits = library.search(query, {"embedding": 0.99}, MatchSettings())["embedding"]
    assert set(hits.owners.tolist()) == {4} and sorted(hits.locals.tolist()) == [0, 1]
    assert [s.signal for s in library.stats()] == ["pdq", "embedding", "face"]
    library.save(tmp_path)
    again = Library.load("references", tmp_path, signals, settings)
    assert again is not None and isinstance(again.indexes["embedding"], ExactIndex) and len(again) == 39
    assert again.search(query, {"embedding": 0.99}, MatchSettings())["embedding"].owners.tolist() == \
        hits.owners.tolist()
    assert Library.load("references", tmp_path, signals, IndexSettings(device="cpu")) is None  # now FAISS


def test_exact_index_and_bench_import_without_faiss() -> None:
    """The GPU machine has torch and no faiss (nor tritonclient): the exact index, backend selection, the index
    benchmark and the service itself must import there (only PDQ's binary index needs faiss, when it is made)."""
    code = ("import sys; sys.modules['faiss'] = sys.modules['tritonclient'] = None\n"
            "import numpy as np\n"
            "from server.config import IndexSettings\n"
            "from server.index import vector_index\n"
            "import bench.index_scale\n"
            "import server.app, server.matching.library, server.service, jiwoom.cli\n"
            "index = vector_index(4, 'ip', IndexSettings(backend='torch', device='cpu'))\n"
            "index.add(1, np.eye(4, dtype=np.float32))\n"
            "assert index.search(np.eye(4, dtype=np.float32), 1).owners.ravel().tolist() == [1] * 4\n"
            "assert 'faiss' not in sys.modules or sys.modules['faiss'] is None\n")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
