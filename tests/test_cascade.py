"""The cascade returns the matches the full path returns, on the dev transforms, and screens out what matches
nothing (server.matching.cascade)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from bench.accuracy import corpus_entries, true_query, unrelated_query
from bench.transforms import CORPUS, TRANSFORMS
from jiwoom.api.errors import InvalidInput
from server.config import MatchSettings, Settings
from server.inference import Inference
from server.inference.features import assemble, with_regions
from server.service import MatchingService
from server.storage.db import migrate, open_pool
from server.storage.store import Principal, Store
from tests.conftest import fresh_database

OFFICER = Principal("cascade-test", "admin")
REFERENCES = 3
UNRELATED = 6


def matched(service: MatchingService, query: bytes) -> set[tuple[int, str]]:
    """(reference, signal) of every match, less the screen's own (the full path has no screen to match on)."""
    return {(m.reference_id, m.result.signal) for m in service.match(OFFICER, query).matches
            if m.result.signal != "embedding_fast"}


def test_the_cascade_finds_what_the_full_path_finds(postgres_server: str, inference: Inference) -> None:
    entries = corpus_entries(REFERENCES + UNRELATED, seed=7)
    references, others = entries[:REFERENCES], entries[REFERENCES:]
    cascading = Settings()
    assert cascading.match.screen_signal == "embedding_fast"
    full = dataclasses.replace(cascading, match=MatchSettings(screen_signal=""))
    with fresh_database(postgres_server) as url:
        migrate(url)
        with open_pool(url, max_size=8) as pool:
            cascade = MatchingService(cascading, inference, Store(pool, cascading.models), None)
            cascade.start()
            ids = {e.index: cascade.register_reference(OFFICER, "case", (CORPUS / e.file).read_bytes(),
                                                       retro_hunt=False).reference_id for e in references}
            everything = MatchingService(full, inference, Store(pool, full.models), None)
            everything.start()  # reads what the first registered
            services = [cascade, everything]
            assert cascade.cascade is not None and everything.cascade is None

            missed, found = [], 0
            for transform in TRANSFORMS:
                for entry in references:
                    query = true_query(entry, transform, seed=0)
                    expected, got = matched(everything, query), matched(cascade, query)
                    found += any(reference == ids[entry.index] for reference, _ in expected)
                    if got != expected:
                        missed.append((transform, entry.file, sorted(expected - got), sorted(got - expected)))
            unrelated = [unrelated_query(CORPUS / e.file, i, seed=0)[1] for i, e in enumerate(others)]
            screened_before = cascade.cascade_counts["screened_out"]
            for query in unrelated:
                assert matched(cascade, query) == matched(everything, query)
            for service in services:
                service.stop()
    assert not missed, f"the cascade changed these matches (transform, file, lost, added): {missed}"
    assert found >= 0.9 * len(TRANSFORMS) * REFERENCES, "the full path itself found too few copies to compare"
    assert cascade.cascade_counts["screened_out"] - screened_before >= UNRELATED // 2, \
        f"the screen ruled out too few unrelated queries: {cascade.cascade_counts}"
    # the copies got the full embedding on their flagged regions only, and still matched as the full path did
    assert 0 < cascade.cascade_counts["regions"] < 8 * cascade.cascade_counts["full"], cascade.cascade_counts


def test_regions_embedded_alone_give_the_full_paths_vectors(inference: Inference) -> None:
    """image_embed given boxes embeds those crops only, to the vectors the full path gives the same regions."""
    entry = corpus_entries(1, seed=3)[0]
    sampled = inference.sample((CORPUS / entry.file).read_bytes())
    full = inference.sampled_features(sampled, frozenset({"embedding"}))
    regions = full.frames[0].regions
    assert len(regions) >= 4
    chosen = [0, 2, len(regions) - 1]
    boxes = np.array([regions[i].box for i in chosen], np.float32)
    alone = with_regions(full, inference.embed_regions(sampled["frames"], boxes, np.zeros(len(chosen), np.int32)))
    assert [r.box for r in alone.frames[0].regions] == [regions[i].box for i in chosen]
    for region, i in zip(alone.frames[0].regions, chosen, strict=True):
        assert float(region.embedding @ regions[i].embedding) > 0.999
    none = with_regions(full, inference.embed_regions(sampled["frames"], np.zeros((0, 4)), np.zeros(0)))
    assert none.frames[0].regions == [] and assemble({}).frames == []
    for bad_boxes, bad_frames in ((boxes * 3, np.zeros(3)), (boxes, np.ones(3)), (boxes, np.zeros(2))):
        with pytest.raises(InvalidInput):
            inference.embed_regions(sampled["frames"], bad_boxes, bad_frames)
    with pytest.raises(InvalidInput, match="no inputs"):
        inference.infer("image_embed", {"frames": sampled["frames"], "nonsense": np.zeros(1, np.int32)},
                        ["embeddings"])
