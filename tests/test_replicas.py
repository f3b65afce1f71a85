"""Stateless replicas: two `jiwoom serve` processes over one PostgreSQL and one (embedded, real) Milvus. What one
registers the other matches within a second, what one forgets is gone from the other, a client spreads its calls
over both, and a replica killed mid-registration loses nothing the other one acknowledged."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import psycopg
import pytest

from bench.fixture_site import FixtureSite
from bench.serve_process import ROOT, kill_hard, start_serve, stop_serve, wait_serving
from jiwoom.api.client import MatcherClient, open_channel
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.config import IndexSettings, MatchSettings
from server.index.milvus import drop_collections
from server.matching.library import Library
from server.signals import SignalVectors, configured_signals
from server.storage.db import migrate, open_pool
from server.storage.store import Store
from tests.conftest import free_port, fresh_database, milvus_prefix, publish_post

IMAGES = [f"img_{i:04d}.jpg" for i in range(3, 200, 11)]  # 18 distinct photos
VISIBLE_WITHIN_S = 1.0  # the target: acknowledged on one replica, matchable on every one
STALENESS_S = 0.5  # the searches' guarantee (IndexSettings.milvus_staleness_s, the default)
REFRESH_S = 1.0  # ServiceSettings.shared_refresh_s, the default


@dataclass
class Replica:
    port: int
    metrics_port: int
    log: Path
    data_dir: Path
    process: object = None

    def client(self, token: str) -> MatcherClient:
        return MatcherClient(open_channel(f"127.0.0.1:{self.port}"), token, timeout_s=60)

    def handled(self, method: str) -> float:
        """grpc_server_handled_total of `method` (code OK) on this replica's /metrics."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        pattern = (r'grpc_server_handled_total\{[^}]*grpc_code="OK"[^}]*grpc_method="' + method
                   + r'"[^}]*\} ([0-9.e+]+)')
        return sum(float(v) for v in re.findall(pattern, text))


@dataclass
class Cluster:
    url: str
    token: str
    env: dict[str, str]
    a: Replica
    b: Replica

    def start(self, *replicas: Replica) -> None:
        for replica in replicas:  # started together: the model loads overlap
            replica.process = start_serve(self.url, replica.data_dir, replica.port, replica.log,
                                          {**self.env, "JIWOOM_SERVICE_METRICS_LISTEN":
                                           f"127.0.0.1:{replica.metrics_port}"})
        for replica in replicas:
            wait_serving(replica.process, replica.port, replica.log)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def cluster(postgres_server: str, milvus_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    prefix = milvus_prefix()
    root = tmp_path_factory.mktemp("replicas")
    # the identifiers' key is one file every replica reads (here a path both share; in production a secret)
    env = {"JIWOOM_INDEX_BACKEND": "milvus", "JIWOOM_INDEX_MILVUS_URI": milvus_uri,
           "JIWOOM_INDEX_MILVUS_PREFIX": prefix, "JIWOOM_MATCH_SIGNALS": "pdq,embedding,embedding_fast,face_sface",
           "JIWOOM_SERVICE_IDENTIFIER_KEY_FILE": str(root / "identifier.key"),
           # each replica runs its action worker; they share the evidence key and may capture loopback pages
           "JIWOOM_EVIDENCE_KEY_FILE": str(root / "evidence.key"), "JIWOOM_EVIDENCE_ALLOW_NETWORKS": "127.0.0.0/8",
           "JIWOOM_EVIDENCE_POLL_INTERVAL_S": "1"}
    with fresh_database(postgres_server) as url:
        migrate(url)
        with open_pool(url, max_size=1) as pool:
            token = Store(pool).create_token("replica-test", "case_system")
        replicas = [Replica(free_port(), free_port(), root / f"{name}.log", root / name) for name in "ab"]
        cluster = Cluster(url, token, env, *replicas)
        try:
            cluster.start(*replicas)
            yield cluster
        finally:  # a replica that failed to start is stopped too: no process outlives the tests
            for replica in replicas:
                if replica.process is not None:
                    stop_serve(replica.process)  # type: ignore[arg-type]
            drop_collections(IndexSettings(backend="milvus", milvus_uri=milvus_uri, milvus_prefix=prefix),
                             ("references", "sightings", "benign"))


def found(response: pb.MatchResponse, reference_id: int) -> bool:
    return reference_id in {m.reference_id for m in response.matches if m.target == pb.TARGET_REFERENCE}


def test_registered_on_one_replica_matched_on_the_other_within_a_second(cluster: Cluster, corpus: Path) -> None:
    a, b = cluster.a.client(cluster.token), cluster.b.client(cluster.token)
    image = (corpus / "images" / IMAGES[0]).read_bytes()
    reference_id = a.register_reference("case-replicas", image, skip_retro_hunt=True).reference_id
    acknowledged = time.monotonic()
    time.sleep(STALENESS_S + 0.1)  # a search issued now must see it (the guarantee), with time to spare
    started = time.monotonic()
    response = b.match(image)
    assert started - acknowledged < VISIBLE_WITHIN_S
    assert found(response, reference_id)
    assert b.stats().references == a.stats().references == 1


def test_forgotten_on_one_replica_gone_from_the_other(cluster: Cluster, corpus: Path) -> None:
    a, b = cluster.a.client(cluster.token), cluster.b.client(cluster.token)
    image = (corpus / "images" / IMAGES[1]).read_bytes()
    reference_id = a.register_reference("case-forget", image, skip_retro_hunt=True).reference_id
    time.sleep(STALENESS_S + 0.1)
    assert found(a.match(image), reference_id)
    b.forget_reference(reference_id)
    time.sleep(STALENESS_S + 0.1)
    assert not found(a.match(image), reference_id)
    assert not found(b.match(image), reference_id)


def test_identifiers_recorded_on_one_replica_are_looked_for_on_the_other(cluster: Cluster, corpus: Path) -> None:
    a, b = cluster.a.client(cluster.token), cluster.b.client(cluster.token)
    a.record_identifiers("case-named", [("name", "박서준")])
    time.sleep(REFRESH_S + 0.5)
    url = "http://board.example/post/7"
    response = b.match((corpus / "images" / IMAGES[5]).read_bytes(),
                       pb.Source(url=url, page_url=url, site="board.example", title="박서준 유출 영상"))
    assert {(e.case_id, e.kind, e.field) for e in response.exposures} == {("case-named", "name", "title")}
    assert "박서준" not in response.redacted_title


def test_the_workers_beside_both_replicas_capture_a_match_once(cluster: Cluster, corpus: Path) -> None:
    """Both replicas' action workers see the same match in the shared database: one queues it, one captures it."""
    image = (corpus / "images" / IMAGES[6]).read_bytes()
    with FixtureSite() as site:
        publish_post(site, "/board/1", "/img/1.jpg", image)
        a, b = cluster.a.client(cluster.token), cluster.b.client(cluster.token)
        reference_id = a.register_reference("case-captured", image, skip_retro_hunt=True).reference_id
        time.sleep(STALENESS_S + 0.1)
        source = pb.Source(url=site.url("/img/1.jpg"), page_url=site.url("/board/1"), site=site.origin,
                           title="[유출] 테스트 게시물 (benign fixture)")
        assert found(b.match(image, source), reference_id)
        deadline = time.monotonic() + 90
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            while True:
                items = conn.execute("select id, capture_state from evidence_items where reference_id = %s",
                                     (reference_id,)).fetchall()
                if (items and all(state != "pending" for _, state in items)) or time.monotonic() > deadline:
                    break
                time.sleep(0.5)
            time.sleep(3)  # a second worker's pass, had it taken the item too
            captures = conn.execute("select count(*) from evidence_log where event = 'capture' and item_id = any(%s)",
                                    ([i for i, _ in items],)).fetchone()[0]
        assert [state for _, state in items] == ["captured"], items
        assert captures == 1
        assert site.hits("/board/1") == 2  # one capture: Chromium's load and the WARC fetch


def test_a_client_of_both_replicas_spreads_its_calls(cluster: Cluster) -> None:
    before = (cluster.a.handled("GetStats"), cluster.b.handled("GetStats"))
    channel = open_channel(f"127.0.0.1:{cluster.a.port},127.0.0.1:{cluster.b.port}")
    client = MatcherClient(channel, cluster.token)
    for _ in range(20):
        client.stats()
    channel.close()
    after = (cluster.a.handled("GetStats"), cluster.b.handled("GetStats"))
    spread = [later - earlier for earlier, later in zip(before, after, strict=True)]
    assert sum(spread) == 20 and min(spread) >= 5, spread  # round_robin: about half each


def test_a_replica_killed_mid_registration_loses_nothing_acknowledged(cluster: Cluster, corpus: Path) -> None:
    a = cluster.a.client(cluster.token)
    acknowledged: dict[str, int] = {}
    lock = threading.Lock()

    def register(names: list[str]) -> None:
        for name in names:
            try:
                reply = a.register_reference("case-killed", (corpus / "images" / name).read_bytes())
            except grpc.RpcError:
                return  # the replica died under us: never acknowledged
            with lock:
                acknowledged[name] = reply.reference_id

    names = IMAGES[2:]
    workers = [threading.Thread(target=register, args=(names[i::2],)) for i in range(2)]
    for worker in workers:
        worker.start()
    while len(acknowledged) < 5:
        time.sleep(0.05)
    kill_hard(cluster.a.process)  # type: ignore[arg-type]
    for worker in workers:
        worker.join(timeout=60)
    assert 5 <= len(acknowledged) < len(names), "the kill should land in the middle of the registrations"

    b = cluster.b.client(cluster.token)
    time.sleep(STALENESS_S + 0.1)
    for name, reference_id in acknowledged.items():
        assert found(b.match((corpus / "images" / name).read_bytes()), reference_id), name

    # A replica that starts again brings Milvus in step with PostgreSQL (the truth): a reference committed there
    # by the killed one but never written to Milvus is added, and one Milvus holds but the database does not (its
    # forget killed between the two deletes) is removed. Both are made so here, in case the kill left neither.
    library = Library("references", configured_signals(MatchSettings(signals=cluster.env["JIWOOM_MATCH_SIGNALS"])),
                      IndexSettings(backend="milvus", milvus_uri=cluster.env["JIWOOM_INDEX_MILVUS_URI"],
                                    milvus_prefix=cluster.env["JIWOOM_INDEX_MILVUS_PREFIX"]))
    half_written = max(acknowledged.values())
    assert library.remove([half_written]) == 1
    orphan = half_written + 1000
    library.add(orphan, {"pdq": SignalVectors(np.zeros((1, 32), np.uint8), np.zeros(1, np.float32),
                                              np.array([[0, 0, 1, 1]], np.float32), np.zeros(1, np.int32))})
    cluster.start(cluster.a)
    assert half_written in library.owners() and orphan not in library.owners()
    with psycopg.connect(cluster.url) as conn:
        stored = {r[0] for r in conn.execute("select id from reference_media where case_id = 'case-killed'")}
    assert set(acknowledged.values()) <= stored
    time.sleep(STALENESS_S + 0.1)
    assert b.stats().references == cluster.a.client(cluster.token).stats().references
    stats = {(s.collection, s.signal_name): s for s in b.stats().indexes}
    with psycopg.connect(cluster.url) as conn:
        in_database = conn.execute("select count(*) from reference_media").fetchone()[0]
    assert stats[("references", "embedding")].owners == in_database


def test_the_collections_are_rebuilt_from_postgresql(cluster: Cluster, corpus: Path) -> None:
    """`jiwoom index rebuild` drops this install's collections and writes them again from the database; the
    replicas that kept running match from the rebuilt ones."""
    with psycopg.connect(cluster.url) as conn:
        total = conn.execute("select count(*) from reference_media").fetchone()[0]
        first = conn.execute("select id from reference_media where case_id = 'case-replicas'").fetchone()[0]
    done = subprocess.run([sys.executable, "-m", "jiwoom.cli", "index", "rebuild", "--database-url", cluster.url],
                          cwd=ROOT, env={**os.environ, **cluster.env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "mvccTs" not in line)[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1])["references"] == total
    time.sleep(STALENESS_S + 0.1)
    b = cluster.b.client(cluster.token)
    stats = {(s.collection, s.signal_name): s for s in b.stats().indexes}
    assert stats[("references", "pdq")].owners == total
    assert found(b.match((corpus / "images" / IMAGES[0]).read_bytes()), first)
