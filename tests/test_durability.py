"""Durability: SIGKILL the service while references are being registered; after a restart every acknowledged
reference matches, and nothing half-written is visible."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import grpc
import psycopg

from bench.serve_process import serve
from jiwoom.api.client import MatcherClient, open_channel
from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.storage.db import migrate, open_pool
from server.storage.store import Store
from tests.conftest import free_port, fresh_database

ROOT = Path(__file__).resolve().parents[1]
IMAGES = [f"img_{i:04d}.jpg" for i in range(1, 200, 9)]  # 23 distinct photos
SNAPSHOTS_OFTEN = {"JIWOOM_SERVICE_SNAPSHOT_INTERVAL_S": "1"}  # snapshots happen while registering


def test_sigkill_during_registration_loses_no_acknowledged_reference(postgres_server: str, corpus: Path,
                                                                     tmp_path: Path) -> None:
    with fresh_database(postgres_server) as url:
        migrate(url)
        with open_pool(url, max_size=1) as pool:
            token = Store(pool).create_token("durability-test", "case_system")
        port, log = free_port(), tmp_path / "serve.log"
        acknowledged: dict[str, int] = {}
        lock = threading.Lock()

        def register(names: list[str], client: MatcherClient) -> None:
            for name in names:
                try:
                    reply = client.register_reference("case-durable", (corpus / "images" / name).read_bytes())
                except grpc.RpcError:
                    return  # the server died under us: this one was never acknowledged
                with lock:
                    acknowledged[name] = reply.reference_id

        with serve(url, tmp_path / "data", port, log, SNAPSHOTS_OFTEN) as process:
            channel = open_channel(f"127.0.0.1:{port}")
            client = MatcherClient(channel, token, timeout_s=60)
            workers = [threading.Thread(target=register, args=(IMAGES[i::2], client)) for i in range(2)]
            for worker in workers:
                worker.start()
            while len(acknowledged) < 8:
                time.sleep(0.05)
            time.sleep(0.3)  # a snapshot has happened and more registrations are in flight
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
            for worker in workers:
                worker.join(timeout=60)
            channel.close()
        assert 8 <= len(acknowledged) < len(IMAGES), "the kill should land in the middle of the registrations"

        with psycopg.connect(url) as conn:
            rows = conn.execute("select r.id, array_agg(v.signal order by v.signal) from reference_media r"
                                " left join reference_vectors v on v.reference_id = r.id group by r.id").fetchall()
        stored = {reference_id: signals for reference_id, signals in rows}
        assert set(acknowledged.values()) <= set(stored)
        for reference_id, signals in stored.items():  # committed means complete
            assert {"embedding", "pdq"} <= set(signals), (reference_id, signals)

        with serve(url, tmp_path / "data", port, log, SNAPSHOTS_OFTEN):
            channel = open_channel(f"127.0.0.1:{port}")
            client = MatcherClient(channel, token, timeout_s=60)
            assert client.stats().references == len(stored)
            for name, reference_id in acknowledged.items():
                response = client.match((corpus / "images" / name).read_bytes())
                assert reference_id in {m.reference_id for m in response.matches
                                        if m.target == pb.TARGET_REFERENCE}, name
            channel.close()
        assert "owners (snapshot)" in log.read_text()  # the restart started from a snapshot, then caught up
