"""The signal plug-in interface: a toy signal registered in one place is stored, matched, thresholded per case
and forgotten by the real service over gRPC, with no edit anywhere else (server/signals/__init__.py) than its
name in MatchSettings.signals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import psycopg
import pytest

from bench import transforms
from jiwoom.api.errors import InvalidInput
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.calibration import Tail
from server.config import IndexSettings, MatchSettings, ModelSettings
from server.index import VectorSearch, vector_index
from server.inference.features import MediaFeatures
from server.signals import SIGNALS, Hits, SignalVectors, register, unregister
from server.signals.float_vectors import knn_hits
from tests.conftest import ASTRONAUT, Served, serving

TOY_DIM = 16


class ToySignal:
    """The first 16 dimensions of each whole-frame embedding, renormalised: a weak signal of its own, with an
    index, a threshold and bounds, and a null tail, that the API has no enum value or typed threshold for."""

    name = "toy"
    family = "embedding"
    dim = TOY_DIM
    binary = False
    lower_is_closer = False
    proto_value = 0
    proto_threshold_field = ""
    in_negative_bank = False
    verifiable = False
    evidence = "face"
    prior_tail = Tail(intercept=-12.0, slope=0.0, start=0.0, lower_is_closer=False)  # P = 1e-12 at any score

    def model_id(self, models: ModelSettings) -> str:
        return f"toy16:{models.embed_model}"  # a view of the full embedding: its model is the toy's

    def reference_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        rows = []
        for frame in features.frames:
            if frame.regions:
                head = np.asarray(frame.regions[0].embedding[:TOY_DIM], np.float32)
                rows.append((head / max(float(np.linalg.norm(head)), 1e-9), frame.timestamp, (0.0, 0.0, 1.0, 1.0),
                             frame.index))
        return SignalVectors.stack(rows, self.dim)

    def query_vectors(self, features: MediaFeatures, settings: MatchSettings) -> SignalVectors:
        return self.reference_vectors(features, settings)

    def default_threshold(self, settings: MatchSettings) -> float:
        return 0.9

    def make_index(self, settings: IndexSettings, snapshot: Path | None = None) -> VectorSearch:
        return vector_index(self.dim, "ip", settings, "Flat", snapshot)

    def search(self, index: object, queries: SignalVectors, threshold: float, settings: MatchSettings) -> Hits:
        return knn_hits(index, queries, 4, lambda s: s >= threshold)

    def passes(self, score: float, threshold: float) -> bool:
        return score >= threshold

    def check_threshold(self, value: float) -> None:
        if not 0.5 <= value <= 1.0:
            raise InvalidInput("toy threshold must be 0.5..1")

    def benign_rows(self, vectors: SignalVectors) -> SignalVectors:
        return vectors

    def benign_threshold(self, settings: MatchSettings) -> float:
        return 1.0


@pytest.fixture(scope="module")
def toy_served(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    register(ToySignal())
    try:
        with serving(postgres_server, tmp_path_factory.mktemp("toy"),
                     MatchSettings(signals="pdq,embedding,face,toy")) as running:
            yield running
    finally:
        unregister("toy")


def toy_matches(response: pb.MatchResponse, reference_id: int) -> list[pb.Match]:
    return [m for m in response.matches if m.signal_name == "toy" and m.reference_id == reference_id]


def test_the_registry_refuses_a_second_signal_of_the_same_name() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register(SIGNALS["pdq"])


def test_a_registered_toy_signal_is_matched_thresholded_per_case_and_forgotten(toy_served: Served,
                                                                                corpus: Path) -> None:
    client = toy_served.client
    reference = (corpus / "images" / ASTRONAUT).read_bytes()
    reference_id = client.register_reference("toy-case", reference).reference_id
    query = transforms.encode(transforms.resize(transforms.load(corpus / "images" / ASTRONAUT)), "JPEG", 90)

    found = toy_matches(client.match(query), reference_id)
    assert found, "the toy signal did not match a resized copy"
    match = found[0]
    assert match.signal == pb.SIGNAL_UNSPECIFIED and match.threshold == pytest.approx(0.9)
    assert 0.9 <= match.score <= 1.0 + 1e-5
    assert match.confidence.expected_false_matches < 1e-9  # from the toy's own null tail

    stricter = min(1.0, match.score + 1e-4)
    case = client.configure_case("toy-case", pb.Thresholds(by_signal={"toy": stricter}))
    assert case.thresholds.by_signal["toy"] == pytest.approx(stricter)
    assert case.thresholds.pdq_max_distance == 31  # the built-in signals keep their typed fields
    stricter_response = client.match(query)
    assert not toy_matches(stricter_response, reference_id), "the case's toy threshold was not applied"
    assert stricter_response.matches, "the other signals still match under their own thresholds"

    for bad, message in (({"toy": 2.0}, "toy threshold"), ({"nope": 0.5}, "unknown signals")):
        with pytest.raises(grpc.RpcError) as refused:
            client.configure_case("toy-case", pb.Thresholds(by_signal=bad))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and message in refused.value.details()

    stats = client.stats()
    assert any(i.signal_name == "toy" and i.collection == "references" and i.vectors for i in stats.indexes)

    client.forget_reference(reference_id, reason="test")
    assert not [m for m in client.match(query).matches if m.reference_id == reference_id]
    with psycopg.connect(toy_served.database_url) as conn:
        left = conn.execute("select count(*) from reference_vectors where signal = 'toy'").fetchone()
    assert left == (0,)
