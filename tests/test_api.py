"""The API's edges: the generated code matches proto/, TLS is one setting away, and a restart reconciles index
snapshots with the database."""

from __future__ import annotations

import contextlib
import filecmp
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server.config import ServiceSettings, Settings
from server.inference.features import FrameFeatures, MediaFeatures, Region
from server.rpc.servicer import Serving, build_server
from server.service import MatchingService
from server.signals import SIGNALS
from server.storage.db import migrate, open_pool
from server.storage.store import MediaSummary, Principal, Store
from tests.conftest import fresh_database

ROOT = Path(__file__).resolve().parents[1]
ADMIN = Principal("test", "admin")


def test_generated_code_is_current(tmp_path: Path) -> None:
    subprocess.run([str(ROOT / "scripts" / "gen-proto"), str(tmp_path)], check=True, cwd=ROOT)
    committed = ROOT / "jiwoom" / "api" / "proto_gen" / "jiwoom" / "v1"
    fresh = tmp_path / "jiwoom" / "v1"
    names = sorted(p.name for p in fresh.glob("*.py*"))
    _, mismatch, errors = filecmp.cmpfiles(committed, fresh, names, shallow=False)
    assert not mismatch and not errors, f"run scripts/gen-proto: {mismatch or errors} differ from proto/"


class NoInference:
    """These tests never compute features; a call would mean the test is wrong."""

    def media_features(self, *_: object) -> None:
        raise AssertionError("no inference expected")

    def close(self) -> None:
        pass


def stored_vectors(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=512).astype(np.float32)
    embedding /= np.linalg.norm(embedding)
    frame = FrameFeatures(0, 0.0, pdq_hash=rng.integers(0, 256, 32, dtype=np.uint8).tobytes(), pdq_quality=100,
                          regions=[Region((0.0, 0.0, 1.0, 1.0), embedding)])
    features = MediaFeatures((100, 100), 0.0, [frame])
    return {n: s.reference_vectors(features, Settings().match) for n, s in SIGNALS.items()}


def test_restart_reconciles_the_snapshot_with_the_database(postgres_server: str, tmp_path: Path) -> None:
    with fresh_database(postgres_server) as url:
        migrate(url)
        with open_pool(url, max_size=2) as pool:
            store = Store(pool)

            def started() -> MatchingService:
                service = MatchingService(Settings(), NoInference(), store, tmp_path)  # type: ignore[arg-type]
                service.start()
                return service

            service = started()
            ids = [service.store.add_reference(ADMIN, "case", MediaSummary("image", bytes([i]) * 32),
                                               stored_vectors(i))[0] for i in range(4)]
            for i in ids:
                service.libraries["references"].add(i, stored_vectors(ids.index(i)))
            service.snapshot()
            service.stop()
            # After the snapshot: one reference forgotten, one added, both straight in the database
            store.forget_references(ADMIN, reference_id=ids[0])
            added, _ = store.add_reference(ADMIN, "case", MediaSummary("image", b"\x09" * 32), stored_vectors(9))
            service = started()
            assert service.libraries["references"].owners() == {*ids[1:], added}
            assert service.cases.case_of_reference(added) == "case"
            service.stop()


@contextlib.contextmanager
def bare_server(postgres_server: str, settings: Settings) -> Iterator[Serving]:
    """The gRPC server over a started service with no models, on a fresh database."""
    with fresh_database(postgres_server) as url:
        migrate(url)
        with open_pool(url, max_size=2) as pool:
            service = MatchingService(settings, NoInference(), Store(pool), None)  # type: ignore[arg-type]
            service.start()
            serving = build_server(service, settings)
            try:
                yield serving
            finally:
                serving.stop(0, 0)
                service.stop()


def test_tls_is_one_setting_away(postgres_server: str, tmp_path: Path) -> None:
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    settings = Settings(service=ServiceSettings(listen="127.0.0.1:0", tls_cert=str(cert), tls_key=str(key)))
    with bare_server(postgres_server, settings) as serving:
        credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        options = [("grpc.ssl_target_name_override", "localhost")]
        with grpc.secure_channel(f"127.0.0.1:{serving.port}", credentials, options=options) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(f"127.0.0.1:{serving.port}") as plain, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=3)

def test_health_goes_not_serving_before_shutdown_refuses_calls(postgres_server: str) -> None:
    with bare_server(postgres_server, Settings(service=ServiceSettings(listen="127.0.0.1:0"))) as serving, \
            grpc.insecure_channel(f"127.0.0.1:{serving.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="jiwoom.v1.Matcher")
        watch = health.Watch(request, timeout=30)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        stopping = threading.Thread(target=serving.stop, args=(1.0, 0.5))  # the open Watch is cut at the grace
        stopping.start()
        assert next(watch).status == health_pb2.HealthCheckResponse.NOT_SERVING
        # Still answering during the notice: a load balancer's check sees NOT_SERVING, not an error.
        assert health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.NOT_SERVING
        stopping.join(timeout=30)
        with pytest.raises(grpc.RpcError):
            health.Check(request, timeout=3)
