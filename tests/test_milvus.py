"""The Milvus index backend against a real (embedded) Milvus: the same answers as the in-process indexes, frame
times, forgetting by owner, shared libraries that another process's writes reach, and clear failures."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest

from jiwoom.api.errors import IndexUnavailable
from server.config import IndexSettings, MatchSettings
from server.index import binary_index, vector_index
from server.index.faiss_index import BinaryIndex, VectorIndex
from server.index.milvus import MilvusBinaryIndex, MilvusVectorIndex, drop_collections
from server.matching.library import Library
from server.signals import SignalVectors, configured_signals
from tests.conftest import milvus_prefix

SIGNALS = "pdq,embedding,embedding_fast,face_sface"


@pytest.fixture
def settings(milvus_uri: str) -> Iterator[IndexSettings]:
    chosen = IndexSettings(backend="milvus", milvus_uri=milvus_uri, milvus_prefix=milvus_prefix(),
                           milvus_float_index="FLAT", milvus_staleness_s=0)
    yield chosen
    drop_collections(chosen, ("references", "sightings", "benign", "unit"))


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize(("metric", "index_type"), [("ip", "FLAT"), ("ip", "HNSW"), ("l2", "FLAT")])
def test_float_search_agrees_with_faiss(settings: IndexSettings, metric: str, index_type: str) -> None:
    rng = np.random.default_rng(1)
    chosen = dataclasses.replace(settings, milvus_float_index=index_type, collection=f"unit_{metric}_{index_type}")
    milvus = vector_index(64, metric, chosen)
    assert isinstance(milvus, MilvusVectorIndex)
    faiss = VectorIndex(64, metric=metric)  # type: ignore[arg-type]
    items = [(owner, unit(rng.normal(size=(int(rng.integers(1, 6)), 64)))) for owner in range(1, 60)]
    milvus.add_many(items)
    faiss.add_many(items)
    queries = unit(items[7][1][:1] + 0.05 * rng.normal(size=(1, 64)))
    queries = np.concatenate([queries, unit(rng.normal(size=(3, 64)))])
    got, want = milvus.search(queries, 5), faiss.search(queries, 5)
    assert got.owners.shape == (4, 5)
    assert got.owners[0, 0] == 8 and got.locals[0, 0] == 0  # the planted near copy first
    np.testing.assert_array_equal(got.owners, want.owners)
    np.testing.assert_array_equal(got.locals, want.locals)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-4)  # l2: distances, not Milvus's squares
    assert len(milvus) == sum(len(v) for _, v in items) and milvus.owners() == set(range(1, 60))


def test_forgetting_an_owner_removes_every_row_and_only_those(settings: IndexSettings) -> None:
    rng = np.random.default_rng(2)
    index = vector_index(32, "ip", dataclasses.replace(settings, collection="unit_forget"))
    rows = {owner: unit(rng.normal(size=(3, 32))) for owner in (5, 6, 7)}
    index.add_many(rows.items())
    assert index.remove([6, 999]) == 3
    hits = index.search(rows[6], 3)
    assert 6 not in hits.owners and set(hits.owners.ravel()) <= {5, 7}
    assert index.owners() == {5, 7} and len(index) == 6


def test_pdq_range_search_is_exact_to_the_radius(settings: IndexSettings) -> None:
    rng = np.random.default_rng(3)
    chosen = dataclasses.replace(settings, collection="unit_pdq")
    milvus = binary_index(chosen)
    assert isinstance(milvus, MilvusBinaryIndex)
    faiss = BinaryIndex(use_gpu=False)
    base = rng.integers(0, 256, size=(1, 32), dtype=np.uint8)
    bits = np.unpackbits(base, axis=1)
    items = []
    for owner, flips in enumerate([0, 1, 15, 31, 32, 33, 60], start=1):  # planted at these distances
        copy = bits.copy()
        copy[0, :flips] ^= 1
        items.append((owner, np.packbits(copy, axis=1)))
    items += [(100 + i, rng.integers(0, 256, size=(2, 32), dtype=np.uint8)) for i in range(40)]
    milvus.add_many(items)
    faiss.add_many(items)
    for radius in (0, 15, 31):
        got, want = milvus.search(base, radius), faiss.search(base, radius)
        np.testing.assert_array_equal(got.owners, want.owners)
        np.testing.assert_array_equal(got.distances, want.distances)
    assert milvus.search(base, 31).owners.tolist() == [1, 2, 3, 4]  # 32 bits away is outside, 31 inside


def shared_library(settings: IndexSettings) -> Library:
    return Library("references", configured_signals(MatchSettings(signals=SIGNALS)), settings)


def item(rng: np.random.Generator, frames: int = 2) -> dict[str, SignalVectors]:
    def rows(vectors: np.ndarray) -> SignalVectors:
        n = len(vectors)
        return SignalVectors(vectors, np.arange(n, dtype=np.float32) * 2.5, np.tile([0, 0, 1, 1], (n, 1))
                             .astype(np.float32), np.arange(n, dtype=np.int32))

    return {"pdq": rows(rng.integers(0, 256, size=(frames, 32), dtype=np.uint8)),
            "embedding": rows(unit(rng.normal(size=(frames, 512))))}


def test_a_shared_library_is_the_same_library_in_every_replica(settings: IndexSettings) -> None:
    """Two Library objects over one Milvus stand for two replicas: what one adds or forgets, the other sees
    (its owners, its searches, the frame times a video match needs); neither holds anything of its own."""
    rng = np.random.default_rng(4)
    writer, reader = shared_library(settings), shared_library(settings)
    added = {owner: item(rng) for owner in (11, 12, 13)}
    writer.add_many(added.items())
    writer.add(11, added[11])  # offered again (a replica reconciling): still one owner, rows not doubled
    assert reader.owners() == {11, 12, 13} and len(reader) == 3
    assert len(reader.indexes["embedding"]) == 6
    query = {"embedding": added[12]["embedding"]}
    hits = reader.search(query, {"embedding": 0.99}, MatchSettings())["embedding"]
    assert set(hits.owners.tolist()) == {12}
    times = reader.target_times("embedding", hits.owners, hits.locals)
    np.testing.assert_allclose(np.sort(times), [0.0, 2.5])
    # embedding rows without embedding_fast ones: the cascade cannot screen these out
    assert reader.unscreened("embedding", "embedding_fast") == 3
    assert reader.remove([12]) == 1
    assert reader.owners() == {11, 13}
    assert not len(writer.search(query, {"embedding": 0.99}, MatchSettings())["embedding"])
    stats = {s.signal: s for s in reader.stats()}
    assert stats["embedding"].vectors == 4 and stats["embedding"].owners == 2 and stats["pdq"].memory_bytes == 0


def test_a_collection_of_another_shape_is_refused(settings: IndexSettings) -> None:
    vector_index(64, "ip", dataclasses.replace(settings, collection="unit_shape"))
    with pytest.raises(ValueError, match="dimension 64"):
        vector_index(128, "ip", dataclasses.replace(settings, collection="unit_shape"))


def test_the_audio_signal_cannot_be_shared(settings: IndexSettings) -> None:
    with pytest.raises(ValueError, match="audio"):
        Library("references", configured_signals(MatchSettings(signals="pdq,audio")), settings)


def test_an_unreachable_milvus_is_index_unavailable() -> None:
    from tests.conftest import free_port

    settings = IndexSettings(backend="milvus", milvus_uri=f"http://127.0.0.1:{free_port()}", milvus_timeout_s=1,
                             collection="unit_gone")
    with pytest.raises(IndexUnavailable, match="milvus"):
        vector_index(8, "ip", settings)


def test_shared_cases_read_what_another_replica_wrote(database_url: str) -> None:
    """A replica's SharedCases answers for references, thresholds and bank entries that another replica wrote to
    PostgreSQL: a reference's case (and so its case's thresholds) on first sight, the thresholds once they are
    `refresh_s` old; a reference PostgreSQL no longer holds belongs to no case."""
    import psycopg

    from server.matching.decisions import Thresholds
    from server.service.cases import SharedCases
    from server.storage.db import migrate, open_pool
    from server.storage.store import Store

    migrate(database_url)
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("""insert into cases (id, thresholds, created_by) values ('case-b', '{"pdq": 12}', 'a')""")
        reference = conn.execute("insert into reference_media (case_id, kind, content_sha256, created_by)"
                                 " values ('case-b', 'hashes', 'x', 'a') returning id").fetchone()[0]
    defaults = Thresholds.defaults(MatchSettings())
    with open_pool(database_url, max_size=2) as pool:
        cases = SharedCases(defaults, Store(pool), refresh_s=0.0)
        cases.load(Store(pool))
        assert cases.thresholds_for_reference(reference).of("pdq") == 12  # its case's, on first sight
        assert cases.case_of_reference(reference) == "case-b" and cases.is_reference(reference)
        assert cases.thresholds_for_reference(reference + 1) == defaults and not cases.is_reference(reference + 1)
        assert cases.references_of_case("case-b") == {reference}
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("""update cases set thresholds = '{"pdq": 20}' where id = 'case-b'""")
            conn.execute("delete from reference_media where id = %s", (reference,))
        assert cases.thresholds_for_case("case-b").of("pdq") == 20  # read again (refresh_s 0)
        assert cases.references_of_case("case-b") == set()
