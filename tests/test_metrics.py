"""A replica's Prometheus metrics and probes (`metrics_listen`): a real service on loopback with real PostgreSQL,
scraped over HTTP. No call here computes media, so no model loads (in-process models load on first use)."""

from __future__ import annotations

import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from clients.metrics import WorkerQueues
from jiwoom.api.client import MatcherClient, open_channel
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.app import Running, running_service
from server.config import ServiceSettings, Settings
from server.rpc.probes import Readiness, host_port, probe_server
from server.storage.db import open_pool
from tests.conftest import fresh_database

MATCHER = "jiwoom.v1.Matcher"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@dataclass
class Replica:
    running: Running
    channel: grpc.Channel
    admin: MatcherClient

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.running.metrics_port}{path}", timeout=10) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def scrape(self) -> Samples:
        status, text = self.get("/metrics")
        assert status == 200
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}


def settings_for(data_dir: Path, **service: float) -> Settings:
    return Settings(service=replace(ServiceSettings(listen="127.0.0.1:0", data_dir=str(data_dir), max_workers=2,
                                                    metrics_listen="127.0.0.1:0"), **service))


@pytest.fixture(scope="module")
def replica(postgres_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replica]:
    settings = settings_for(tmp_path_factory.mktemp("metrics"))
    with fresh_database(postgres_server) as url, running_service(settings, url) as running:
        channel = open_channel(f"127.0.0.1:{running.port}")
        try:
            yield Replica(running, channel, MatcherClient(channel, running.store.create_token("test-admin", "admin")))
        finally:
            channel.close()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def handled(samples: Samples, method: str, code: str) -> float:
    return value(samples, "grpc_server_handled_total", grpc_service=MATCHER, grpc_method=method, grpc_type="unary",
                 grpc_code=code)


def test_rpcs_are_counted_by_method_and_status_code_and_timed(replica: Replica) -> None:
    before = replica.scrape()
    for _ in range(2):
        replica.admin.stats()
    with pytest.raises(grpc.RpcError) as missing:
        replica.admin.forget_reference(987654321)
    assert missing.value.code() is grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as refused:  # refused by the token check, a later interceptor: counted too
        MatcherClient(replica.channel, "not-a-token").stats()
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
    after = replica.scrape()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    stats = {"grpc_service": MATCHER, "grpc_method": "GetStats", "grpc_type": "unary"}
    forget = {"grpc_service": MATCHER, "grpc_method": "ForgetReference", "grpc_type": "unary"}
    assert delta("grpc_server_started_total", **stats) == 3
    assert delta("grpc_server_started_total", **forget) == 1
    assert handled(after, "GetStats", "OK") - handled(before, "GetStats", "OK") == 2
    assert handled(after, "GetStats", "UNAUTHENTICATED") - handled(before, "GetStats", "UNAUTHENTICATED") == 1
    assert handled(after, "ForgetReference", "NOT_FOUND") - handled(before, "ForgetReference", "NOT_FOUND") == 1
    assert handled(after, "ForgetReference", "OK") == 0
    assert delta("grpc_server_handling_seconds_count", **stats) == 3
    assert delta("grpc_server_handling_seconds_bucket", **stats, le="+Inf") == 3
    assert delta("grpc_server_handling_seconds_sum", **stats) > 0


def test_stream_items_are_counted_by_their_in_band_code(replica: Replica) -> None:
    before = replica.scrape()
    requests = [pb.StreamRequest(item_id="a", end=pb.StreamEnd()), pb.StreamRequest(item_id="b")]
    replies = list(replica.admin.match_stream(iter(requests)))
    assert [r.error_code for r in replies] == [grpc.StatusCode.INVALID_ARGUMENT.value[0]] * 2
    after = replica.scrape()
    stream = {"grpc_service": MATCHER, "grpc_method": "MatchStream", "grpc_type": "bidi_stream"}
    code = {"grpc_code": "INVALID_ARGUMENT"}
    assert value(after, "jiwoom_stream_items_total", **code) - value(before, "jiwoom_stream_items_total", **code) == 2
    # the stream itself ends OK: its items failed, not it
    ok = {**stream, "grpc_code": "OK"}
    assert value(after, "grpc_server_handled_total", **ok) - value(before, "grpc_server_handled_total", **ok) == 1


def test_index_sizes_and_media_work_in_flight_are_read_when_scraped(replica: Replica) -> None:
    pdq = {"collection": "references", "signal": "pdq"}
    before = value(replica.scrape(), "jiwoom_index_vectors", **pdq)
    hashes = [f"{random.Random(seed).getrandbits(256):064x}" for seed in (1, 2)]
    reply = replica.admin.register_reference("case-metrics", pdq_hashes=hashes)
    samples = replica.scrape()
    assert value(samples, "jiwoom_index_vectors", **pdq) == before + 2
    assert value(samples, "jiwoom_index_owners", **pdq) >= 1
    assert ("jiwoom_index_memory_bytes", frozenset({**pdq, "device": "cpu"}.items())) in samples
    assert value(samples, "jiwoom_media_workers") == 2
    assert value(samples, "jiwoom_media_calls_in_flight") == 0
    with replica.running.service.slots.hold(None):  # a media call computing
        assert value(replica.scrape(), "jiwoom_media_calls_in_flight") == 1
    assert value(replica.scrape(), "jiwoom_media_calls_in_flight") == 0
    replica.admin.forget_reference(reply.reference_id)
    assert value(replica.scrape(), "jiwoom_index_vectors", **pdq) == before


def test_live_and_ready_once_started_and_grpc_health_serving(replica: Replica) -> None:
    assert replica.get("/live") == (200, "live\n")
    assert replica.get("/ready") == (200, "ready\n")
    assert value(replica.scrape(), "jiwoom_ready") == 1
    health = health_pb2_grpc.HealthStub(replica.channel)
    assert health.Check(health_pb2.HealthCheckRequest(service=MATCHER)).status == \
        health_pb2.HealthCheckResponse.SERVING


def test_the_worker_queues_are_read_from_the_database(replica: Replica) -> None:
    registry = replica.running.metrics
    assert registry is not None
    queues = WorkerQueues(replica.running.store.pool, max_send_attempts=3)
    registry.register(queues)  # as `jiwoom serve` does
    try:
        depths = {q: value(replica.scrape(), "jiwoom_worker_queue_items", queue=q)
                  for q in ("capture", "approval", "send", "removal_check")}
        with psycopg.connect(replica.running.database_url, autocommit=True) as conn:
            for reference, state, attempts in (("JW-T-1", "draft", 0), ("JW-T-2", "approved", 0),
                                               ("JW-T-3", "failed", 1), ("JW-T-4", "failed", 3)):
                conn.execute("insert into notices (reference, kind, site, language, priority, state, attempts)"
                             " values (%s, 'ncii', 'board.example', 'ko', 0, %s, %s)", (reference, state, attempts))
            # pending; pending but rejected by an officer; notified with its check due; notified, check not yet due
            for review, capture, removal, due in (("new", "pending", "open", None),
                                                  ("rejected", "pending", "open", None),
                                                  ("new", "captured", "notified", "-1 hour"),
                                                  ("new", "captured", "still_up", "1 hour")):
                sighting = conn.execute("insert into sightings (url, kind, seen_by) values"
                                        " ('https://board.example/m.jpg', 'image', 'test-metrics') returning id"
                                        ).fetchone()[0]  # type: ignore[index]
                conn.execute("insert into evidence_items (sighting_id, reason, under_19, site, priority, wrapped_key,"
                             " review_state, capture_state, removal_state, next_check_at) values"
                             " (%s, 'under_19', true, 'board.example', 0, '\\x00', %s, %s, %s, now() + %s::interval)",
                             (sighting, review, capture, removal, due))
        samples = replica.scrape()
        assert value(samples, "jiwoom_worker_queue_items", queue="capture") == depths["capture"] + 1
        assert value(samples, "jiwoom_worker_queue_items", queue="approval") == depths["approval"] + 1
        # approved, and failed with attempts left; not the one that used its three
        assert value(samples, "jiwoom_worker_queue_items", queue="send") == depths["send"] + 2
        assert value(samples, "jiwoom_worker_queue_items", queue="removal_check") == depths["removal_check"] + 1
    finally:
        registry.unregister(queues)
        with psycopg.connect(replica.running.database_url, autocommit=True) as conn:
            conn.execute("delete from notices where reference like 'JW-T-%'")
            conn.execute("delete from sightings where seen_by = 'test-metrics'")  # and their items
    # a collector whose database is gone leaves its gauge empty; the scrape still answers
    pool = open_pool(replica.running.database_url, max_size=1)
    pool.close()
    registry.register(broken := WorkerQueues(pool, max_send_attempts=3))
    try:
        assert not any(name == "jiwoom_worker_queue_items" for name, _ in replica.scrape())
    finally:
        registry.unregister(broken)


def test_the_probe_port_refuses_what_it_does_not_serve_and_survives_junk(replica: Replica) -> None:
    assert replica.get("/nothing")[0] == 404
    request = urllib.request.Request(f"http://127.0.0.1:{replica.running.metrics_port}/metrics", data=b"x",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 405
    for junk in (b"\x00\xff garbage\r\n\r\n", b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n", b"GET"):
        with socket.create_connection(("127.0.0.1", replica.running.metrics_port), timeout=10) as raw:
            raw.sendall(junk)
            raw.shutdown(socket.SHUT_WR)
            raw.recv(4096)
    assert replica.get("/live")[0] == 200
    replica.admin.stats()


def test_ready_only_between_start_and_stop() -> None:
    calls: list[object] = []
    readiness = Readiness(lambda: calls.append(1))
    registry = CollectorRegistry()
    with probe_server("127.0.0.1:0", registry, readiness) as port:
        def get(path: str) -> int:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
                    return reply.status
            except urllib.error.HTTPError as error:
                return error.code

        assert (get("/live"), get("/ready")) == (200, 503)  # loading: alive, not ready
        readiness.mark_serving()
        assert get("/ready") == 200 and calls
        readiness.mark_stopping()
        assert (get("/live"), get("/ready")) == (200, 503)
    with pytest.raises(ValueError, match="host:port"):
        host_port(":9464")  # no host: it would bind every address
    with pytest.raises(ValueError, match="host:port"):
        host_port("127.0.0.1:http")
    assert host_port("[::1]:9464") == ("::1", 9464)


def test_a_failing_index_read_makes_the_replica_unready() -> None:
    def unreachable() -> None:
        raise ConnectionError("index server down")

    readiness = Readiness(unreachable)
    readiness.mark_serving()
    assert not readiness.ready()


def test_stopping_replica_is_unready_during_its_shutdown_notice(postgres_server: str, tmp_path: Path) -> None:
    settings = settings_for(tmp_path, shutdown_notice_s=1.5, shutdown_grace_s=0.0)
    seen: list[int] = []
    with fresh_database(postgres_server) as url:
        with running_service(settings, url) as running:
            port = running.metrics_port

            def probe() -> None:
                time.sleep(0.5)  # inside the notice: gRPC still open, health NOT_SERVING
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)
                    seen.append(200)
                except urllib.error.HTTPError as error:
                    seen.append(error.code)

            probing = threading.Thread(target=probe)
            probing.start()
        probing.join()
    assert seen == [503]
    with pytest.raises(ConnectionRefusedError):  # the port closed with the service
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
