"""The cascade returns the matches the full path returns, on the dev transforms, and screens out what matches
nothing (server.matching.cascade)."""

from __future__ import annotations

import dataclasses

from bench.accuracy import corpus_entries, true_query, unrelated_query
from bench.transforms import CORPUS, TRANSFORMS
from server.config import MatchSettings, Settings
from server.inference import Inference
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
