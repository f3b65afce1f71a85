"""server.index.faiss_index against brute force numpy: exactness, removal by owner, tombstones, snapshots, concurrency.

Everything runs on CPU; the GPU branches of server.index.faiss_index cannot run here (no GPU, faiss-cpu).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import faiss
import numpy as np
import pdqhash
import pytest

from server.index.base import MAX_LOCAL, pack_ids, unpack_ids
from server.index.faiss_index import BinaryIndex, VectorIndex
from server.models.pdq import pack_bits
from tests.conftest import add_remove_search_concurrently

RNG_SEED = 7


def normalised(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(index: VectorIndex | BinaryIndex, data: np.ndarray, sizes: list[int]) -> dict[int, np.ndarray]:
    """Add data in consecutive chunks, owner i (as 1000 + i) getting sizes[i] rows; returns owner -> rows."""
    by_owner, start = {}, 0
    for i, n in enumerate(sizes):
        by_owner[1000 + i] = data[start : start + n]
        index.add(1000 + i, data[start : start + n])
        start += n
    return by_owner


def flat(by_owner: dict[int, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    owners = np.concatenate([np.full(len(v), o) for o, v in by_owner.items()])
    locals_ = np.concatenate([np.arange(len(v)) for v in by_owner.values()])
    return np.concatenate(list(by_owner.values())), owners, locals_


def brute_force(by_owner: dict[int, np.ndarray], q: np.ndarray, k: int, metric: str):
    data, owners, locals_ = flat(by_owner)
    if metric == "ip":
        scores = q.astype(np.float64) @ data.T.astype(np.float64)
        order = np.argsort(-scores, axis=1)[:, :k]
    else:
        scores = np.linalg.norm(q[:, None, :].astype(np.float64) - data[None].astype(np.float64), axis=2)
        order = np.argsort(scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), owners[order], locals_[order]


def assert_exact(index: VectorIndex, by_owner: dict[int, np.ndarray], q: np.ndarray, k: int, metric: str) -> None:
    hits = index.search(q, k)
    scores, owners, locals_ = brute_force(by_owner, np.atleast_2d(q), k, metric)
    np.testing.assert_array_equal(hits.owners, owners)
    np.testing.assert_array_equal(hits.locals, locals_)
    np.testing.assert_allclose(hits.scores, scores, rtol=1e-4, atol=1e-4)


def flip_bits(code: np.ndarray, bits: np.ndarray) -> np.ndarray:
    unpacked = np.unpackbits(code)
    unpacked[bits] ^= 1
    return np.packbits(unpacked)


def hamming_matrix(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    return np.unpackbits(q[:, None, :] ^ db[None], axis=2).sum(axis=2)


# ----------------------------------------------------------------------------------------------------- ids


def test_pack_and_unpack_ids() -> None:
    ids = pack_ids(2**43 - 1, 3)
    owners, locals_ = unpack_ids(np.array([*ids, -1]))
    assert owners.tolist() == [2**43 - 1] * 3 + [-1]
    assert locals_.tolist() == [0, 1, 2, -1]
    assert (ids > 0).all()
    assert unpack_ids(pack_ids(5, MAX_LOCAL))[1][-1] == MAX_LOCAL - 1
    for bad in (-1, 2**43):
        with pytest.raises(ValueError):
            pack_ids(bad, 1)
    with pytest.raises(ValueError):
        pack_ids(1, MAX_LOCAL + 1)


# ------------------------------------------------------------------------------------------- VectorIndex


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_is_exact(metric: str) -> None:
    rng = np.random.default_rng(RNG_SEED)
    data = normalised(rng, 1500, 32) if metric == "ip" else rng.standard_normal((1500, 32)).astype(np.float32)
    index = VectorIndex(32, metric=metric)
    by_owner = fill(index, data, [1, 7, 300, 92, 600, 500])
    q = normalised(rng, 40, 32) if metric == "ip" else rng.standard_normal((40, 32)).astype(np.float32)
    assert_exact(index, by_owner, q, 10, metric)
    assert_exact(index, by_owner, q[0], 1, metric)  # one query as a 1-d vector
    assert len(index) == 1500 and index.owners() == set(by_owner)
    if metric == "l2":  # true Euclidean distances: a stored vector is at 0 from itself
        hits = index.search(data[:3] + 0.0, 1)
        np.testing.assert_allclose(hits.scores[:, 0], 0, atol=1e-3)


def test_k_beyond_size_pads_with_minus_one() -> None:
    index = VectorIndex(8, metric="l2")
    empty = index.search(np.zeros((2, 8), np.float32), 3)
    assert (empty.owners == -1).all() and np.isinf(empty.scores).all()
    index.add(3, np.eye(8, dtype=np.float32)[:2])
    hits = index.search(np.eye(8, dtype=np.float32)[:1], 5)
    assert hits.owners.tolist() == [[3, 3, -1, -1, -1]]
    assert hits.locals.tolist() == [[0, 1, -1, -1, -1]]
    assert hits.scores.dtype == np.float32 and np.isinf(hits.scores[0, 2:]).all()


def test_add_validation() -> None:
    index = VectorIndex(4)
    index.add(1, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError, match="already"):
        index.add(1, np.ones((2, 4), np.float32))
    with pytest.raises(ValueError):
        index.add(2, np.ones((2, 5), np.float32))
    with pytest.raises(ValueError):
        index.add(2, np.empty((0, 4), np.float32))
    with pytest.raises(ValueError):
        index.add(-3, np.ones((1, 4), np.float32))
    with pytest.raises(ValueError):
        VectorIndex(4, factory="IDMap2,Flat")
    with pytest.raises(ValueError, match="train"):
        VectorIndex(16, factory="IVF4,Flat").add(1, np.ones((1, 16), np.float32))
    with pytest.raises(ValueError, match="twice"):
        index.add_many([(5, np.ones((1, 4), np.float32)), (5, np.ones((1, 4), np.float32))])
    with pytest.raises(ValueError, match="already"):
        index.add_many([(6, np.ones((1, 4), np.float32)), (1, np.ones((1, 4), np.float32))])
    assert index.owners() == {1}  # a rejected add_many adds nothing
    index.add_many([(6, np.ones((1, 4), np.float32)), (7, np.ones((3, 4), np.float32))])
    assert len(index) == 6 and index.owners() == {1, 6, 7}


def test_remove_by_owner_flat() -> None:
    rng = np.random.default_rng(RNG_SEED)
    data = normalised(rng, 1000, 16)
    index = VectorIndex(16)
    by_owner = fill(index, data, [100] * 10)
    q = data[::37] + 0.01
    assert index.remove([1003]) == 100
    assert index.remove([1005, 1007, 424242]) == 200  # several owners at once (one IDSelectorBatch), unknown ignored
    assert index.remove([1003]) == 0
    for o in (1003, 1005, 1007):
        del by_owner[o]
    assert len(index) == 700 and index._index.ntotal == 700
    assert index.owners() == set(by_owner)
    hits = index.search(q, 20)
    assert not np.isin(hits.owners, [1003, 1005, 1007]).any()
    assert_exact(index, by_owner, q, 20, "ip")
    by_owner[1003] = normalised(rng, 5, 16)
    index.add(1003, by_owner[1003])  # a removed owner can be added again, with new rows
    assert_exact(index, by_owner, q, 20, "ip")


def test_tombstones_and_rebuild_hnsw() -> None:
    """HNSW has no remove_ids: removals are tombstones filtered at search time, rebuilt past 20 %."""
    rng = np.random.default_rng(RNG_SEED)
    data = rng.standard_normal((1000, 8)).astype(np.float32)
    index = VectorIndex(8, metric="l2", factory="HNSW32")
    faiss.ParameterSpace().set_index_parameter(index._index, "efSearch", 1024)  # exhaustive on 1000 points
    by_owner = fill(index, data, [50] * 20)
    q = rng.standard_normal((30, 8)).astype(np.float32)
    assert_exact(index, by_owner, q, 10, "l2")

    assert index.remove([1000, 1001, 1002]) == 150  # 15 %: tombstones only
    for o in (1000, 1001, 1002):
        del by_owner[o]
    assert index._tombs and index._index.ntotal == 1000 and len(index) == 850
    assert not np.isin(index.search(data[:150], 5).owners, [1000, 1001, 1002]).any()
    assert_exact(index, by_owner, q, 10, "l2")

    assert index.remove([1003, 1004]) == 100  # 25 % tombstoned: rebuilt from the kept raw vectors
    for o in (1003, 1004):
        del by_owner[o]
    assert not index._tombs and index._index.ntotal == 750 == len(index)
    faiss.ParameterSpace().set_index_parameter(index._index, "efSearch", 1024)
    assert_exact(index, by_owner, q, 10, "l2")

    index.remove([1005])  # a tombstoned owner added again: its stale rows must not come back
    index.add(1005, data[:3])
    by_owner[1005] = data[:3]
    assert_exact(index, by_owner, q, 10, "l2")


def clustered(rng: np.random.Generator, n: int, centers: np.ndarray, proj: np.ndarray) -> np.ndarray:
    """Normalised vectors with low intrinsic dimension around cluster centres, like real embeddings."""
    z = centers[rng.integers(0, len(centers), n)] + 0.5 * rng.standard_normal((n, centers.shape[1]))
    x = (z @ proj).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_ivfpq_trains_and_recalls() -> None:
    rng = np.random.default_rng(1)
    centers, proj = rng.standard_normal((100, 16)), rng.standard_normal((16, 64))
    data, q = clustered(rng, 10_000, centers, proj), clustered(rng, 200, centers, proj)
    index = VectorIndex(64, factory="IVF64,PQ32np", nprobe=16)  # np: skip polysemous training (slow, unused)
    assert index.needs_training
    index.train(data[:5000])
    assert not index.needs_training
    by_owner = {1000 + i: data[i * 1000 : (i + 1) * 1000] for i in range(10)}
    index.add_many(by_owner.items())  # one FAISS call: IVF pays its coarse quantizer per call
    hits = index.search(q, 10)
    _, owners, locals_ = brute_force(by_owner, q, 10, "ip")
    found = [len(set(zip(a, b, strict=True)) & set(zip(c, d, strict=True))) / 10
             for a, b, c, d in zip(hits.owners, hits.locals, owners, locals_, strict=True)]
    assert np.mean(found) > 0.8
    index.remove([1000])  # IVF removes natively: no tombstones, ids stay right
    assert index._index.ntotal == 9000 and not index._tombs
    assert not (index.search(q, 10).owners == 1000).any()


# ------------------------------------------------------------------------------------------- BinaryIndex


def test_binary_range_is_inclusive_at_31() -> None:
    rng = np.random.default_rng(RNG_SEED)
    base = rng.integers(0, 256, (1, 32), dtype=np.uint8)
    index = BinaryIndex()
    index.add(9, base)
    # The hardest case for MultiHash(16 x 16 bits, nflip 1): two flipped bits in 15 chunks, one in the last.
    bits31 = np.array([c * 16 + j for c in range(15) for j in (0, 7)] + [15 * 16])
    bits32 = np.array([c * 16 + j for c in range(16) for j in (0, 7)])  # two in every chunk
    q = np.stack([flip_bits(base[0], bits31), flip_bits(base[0], bits32)])
    assert hamming_matrix(q, base).ravel().tolist() == [31, 32]
    found = index.search(q, 31)
    assert found.query.tolist() == [0] and found.distances.tolist() == [31]
    assert found.owners.tolist() == [9] and found.locals.tolist() == [0]
    assert found.distances.dtype == np.int32
    assert len(index.search(q, 30).query) == 0
    with pytest.raises(ValueError):
        index.search(q, 32)  # beyond what MultiHash nflip=1 finds exactly


def planted(rng: np.random.Generator, n_db: int, n_q: int) -> tuple[np.ndarray, np.ndarray]:
    """Random codes plus queries planted at Hamming 0..40 from several stored codes each."""
    db = rng.integers(0, 256, (n_db, 32), dtype=np.uint8)
    q = np.empty((n_q, 32), np.uint8)
    for i in range(n_q):
        q[i] = flip_bits(db[rng.integers(n_db)], rng.choice(256, rng.integers(0, 41), replace=False))
        for j in rng.integers(0, n_db, 3):  # more codes near this query, at random distances
            db[j] = flip_bits(q[i], rng.choice(256, rng.integers(0, 41), replace=False))
    return db, q


def assert_binary_exact(index: BinaryIndex, by_owner: dict[int, np.ndarray], q: np.ndarray) -> None:
    data, owners, locals_ = flat(by_owner)
    dist = hamming_matrix(q, data)
    qi, rows = np.nonzero(dist <= 31)
    expected = sorted(zip(qi.tolist(), owners[rows].tolist(), locals_[rows].tolist(), dist[qi, rows].tolist(),
                          strict=True))
    got = index.search(q)
    assert sorted(zip(*(a.tolist() for a in got), strict=True)) == expected


def test_binary_exact_remove_and_rebuild() -> None:
    rng = np.random.default_rng(RNG_SEED)
    db, q = planted(rng, 3000, 100)
    index = BinaryIndex()
    by_owner = fill(index, db, [100] * 30)
    assert_binary_exact(index, by_owner, q)
    assert index.remove([1000, 1001, 1002, 1003]) == 400  # 13 %: tombstones
    for o in (1000, 1001, 1002, 1003):
        del by_owner[o]
    assert index._tombs and index._index.ntotal == 3000 and len(index) == 2600
    assert_binary_exact(index, by_owner, q)
    assert index.remove([1004, 1005, 1006]) == 300  # 23 % of 3000: rebuilt from the kept codes
    del by_owner[1004], by_owner[1005], by_owner[1006]
    assert not index._tombs and index._index.ntotal == 2300 == len(index)
    assert_binary_exact(index, by_owner, q)
    index.add_many([(1000, db[:10]), (1001, db[10:12])])
    by_owner[1000], by_owner[1001] = db[:10], db[10:12]
    assert_binary_exact(index, by_owner, q)


def test_dihedral_variants_find_mirrored_copy() -> None:
    """A reference stored under its 8 dihedral PDQ hashes is found from a mirrored or rotated copy."""
    rng = np.random.default_rng(RNG_SEED)
    # Detailed enough that the hash of a mirrored image lands within a few bits of the matching dihedral variant
    # (pdqhash's variants are computed from the original's DCT, not by re-hashing the mirrored pixels).
    image = cv2.resize(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), (640, 480), interpolation=cv2.INTER_CUBIC)
    variants, _ = pdqhash.compute_dihedral(image)
    index = BinaryIndex()
    index.add(77, np.stack([pack_bits(v) for v in variants]))
    index.add(78, rng.integers(0, 256, (8, 32), dtype=np.uint8))
    for copy, variant in ((np.fliplr(image), 5), (np.rot90(image), 1), (np.flipud(image), 4)):
        bits, _ = pdqhash.compute(np.ascontiguousarray(copy))
        found = index.search(pack_bits(bits))
        assert found.owners.tolist() == [77]  # random codes of owner 78 are ~128 bits away
        assert found.locals[0] == variant and found.distances[0] <= 16


# ------------------------------------------------------------------------------------------------ snapshots


def test_vector_snapshots_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    data = normalised(rng, 1200, 16)
    q = normalised(rng, 20, 16)
    for factory, metric in (("Flat", "ip"), ("HNSW16", "l2"), ("IVF16,Flat", "ip")):
        index = VectorIndex(16, metric=metric, factory=factory, nprobe=4)
        if index.needs_training:
            index.train(data)
        fill(index, data, [200] * 6)
        index.remove([1002])  # HNSW: a tombstone, compacted by save
        index.save(tmp_path / "v.idx")
        before = index.search(q, 7)
        loaded = VectorIndex.load(tmp_path / "v.idx")
        after = loaded.search(q, 7)
        for a, b in zip(before, after, strict=True):
            np.testing.assert_array_equal(a, b)
        assert loaded.owners() == index.owners() and len(loaded) == 1000
        assert (loaded.metric, loaded.factory, loaded.nprobe) == (metric, factory, 4)
        loaded.remove([1003])  # still mutable after loading (HNSW: from the saved raw vectors)
        loaded.add(1002, data[:2])
        assert len(loaded) == 802 and not (loaded.search(q, 7).owners == 1003).any()


def test_binary_snapshot_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(RNG_SEED)
    db, q = planted(rng, 1000, 50)
    index = BinaryIndex()
    fill(index, db, [100] * 10)
    index.remove([1001])
    before = index.search(q)
    index.save(tmp_path / "b.idx")
    loaded = BinaryIndex.load(tmp_path / "b.idx")
    after = loaded.search(q)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)
    assert loaded.owners() == index.owners() and len(loaded) == 900


def test_corrupt_snapshots_raise_value_error(tmp_path: Path) -> None:
    index = VectorIndex(8)
    index.add(1, np.eye(8, dtype=np.float32))
    path = tmp_path / "v.idx"
    index.save(path)
    good = path.read_bytes()
    cases = {
        "truncated": good[: len(good) // 2],
        "flipped": good[:100] + bytes([good[100] ^ 0xFF]) + good[101:],
        "garbage": b"not an index at all",
        "empty": b"",
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(ValueError):
            VectorIndex.load(tmp_path / name)
    with pytest.raises(ValueError, match="binary"):
        BinaryIndex.load(path)  # a vector snapshot is not a binary one
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic write left no temp file


# -------------------------------------------------------------------------------------------- concurrency


def test_concurrent_search_while_adding() -> None:
    rng = np.random.default_rng(RNG_SEED)
    data = normalised(rng, 4000, 32)
    codes = rng.integers(0, 256, (4000, 32), dtype=np.uint8)
    vectors, binary = VectorIndex(32), BinaryIndex()

    def add(owner: int) -> None:
        vectors.add(owner, data[owner : owner + 50])
        binary.add(owner, codes[owner : owner + 50])

    def remove(owner: int) -> None:
        vectors.remove([owner])
        binary.remove([owner])

    def search(i: int) -> None:
        assert vectors.search(data[i : i + 4], 5).owners.shape == (4, 5)
        binary.search(codes[i : i + 4])

    add_remove_search_concurrently(add, remove, search)
    assert len(vectors) == len(binary) == 80 * 50 - 10 * 50


# ------------------------------------------------------------------------------- trainable factories in a library


def test_train_from_a_flat_index_keeps_owners_and_rows() -> None:
    rng = np.random.default_rng(RNG_SEED)
    data = normalised(rng, 2000, 16)
    flat = VectorIndex(16)
    by_owner = fill(flat, data, [100] * 20)
    flat.remove([1003])
    del by_owner[1003]
    ivf = VectorIndex(16, factory="IVF8,Flat", nprobe=8)  # every list probed: exact, so results compare 1:1
    assert ivf.needs_training and ivf.min_training_vectors == 39 * 8
    assert VectorIndex(64, factory="IVF16,PQ8").min_training_vectors == 39 * 256  # PQ codebooks want more
    ivf.train_from(flat, 1000)
    assert not ivf.needs_training and ivf.min_training_vectors == 0
    assert ivf.owners() == flat.owners() and len(ivf) == len(flat) == 1900
    q = data[::41] + 0.01
    assert_exact(ivf, by_owner, q, 10, "ip")
    with pytest.raises(ValueError, match="too few"):
        VectorIndex(16, factory="IVF64,Flat").train_from(flat, 1000)
    with pytest.raises(ValueError, match="Flat"):
        VectorIndex(16, factory="IVF8,Flat").train_from(ivf, 1000)  # only an exact Flat hands its vectors over


def test_library_serves_flat_until_it_can_train_ivf(tmp_path: Path) -> None:
    """A trainable factory starts as an exact Flat stand-in, is trained once enough vectors are stored, and its
    snapshot reloads as the trained index; a snapshot of other settings is refused (rebuilt from the database)."""
    from server.config import IndexSettings, MatchSettings
    from server.matching.library import Library
    from server.signals import SIGNALS, SignalVectors

    settings = IndexSettings(device="cpu", embedding_factory="IVF16,Flat", nprobe=16)
    signals = {name: SIGNALS[name] for name in ("pdq", "embedding", "face")}
    library = Library("references", signals, settings)
    assert library.pending == {"embedding": "faiss IVF16,Flat ip 512"}
    assert library.indexes["embedding"].layout == "faiss Flat ip 512"
    assert library.indexes["face"].layout == "faiss Flat l2 128"  # faces stay exact Flat
    rng = np.random.default_rng(RNG_SEED)

    def rows(n: int) -> SignalVectors:
        return SignalVectors(normalised(rng, n, 512), np.arange(n, dtype=np.float32), np.zeros((n, 4), np.float32),
                             np.arange(n, dtype=np.int32))

    library.add_many((o, {"embedding": rows(10)}) for o in range(1, 51))  # 500 < 39 x 16
    library.save(tmp_path)  # a snapshot of the stand-in
    assert library.train_pending() == [] and library.pending
    library.add_many((o, {"embedding": rows(10)}) for o in range(51, 81))  # 800 vectors
    query = {"embedding": rows(3)}
    before = library.search(query, {"embedding": -1.0}, MatchSettings())["embedding"]
    changes = library.changes
    assert library.train_pending() == ["embedding"] and not library.pending and library.changes == changes + 1
    index = library.indexes["embedding"]
    assert index.layout == "faiss IVF16,Flat ip 512" and len(index) == 800 and index.owners() == set(range(1, 81))
    after = library.search(query, {"embedding": -1.0}, MatchSettings())["embedding"]
    for a, b in zip((before.query_rows, before.owners, before.locals), (after.query_rows, after.owners, after.locals),
                    strict=True):
        np.testing.assert_array_equal(a, b)  # nprobe = nlist: the IVF index is exact too

    stand_in = Library.load("references", tmp_path, signals, settings=settings)  # the older snapshot: still waiting
    assert stand_in is not None and stand_in.pending and len(stand_in.indexes["embedding"]) == 500
    library.save(tmp_path)
    loaded = Library.load("references", tmp_path, signals, settings=settings)
    assert loaded is not None and not loaded.pending and loaded.indexes["embedding"].layout == index.layout
    fewer = Library.load("references", tmp_path, signals,
                         IndexSettings(device="cpu", embedding_factory="IVF16,Flat", nprobe=4))
    assert fewer is not None and fewer.indexes["embedding"].nprobe == 4  # search-time: the configured one applies
    assert Library.load("references", tmp_path, signals, IndexSettings(device="cpu")) is None  # Flat wanted now
