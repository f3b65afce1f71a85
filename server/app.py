"""Assembles the running service: PostgreSQL (given or embedded), migrations, pool, inference, indexes, gRPC."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import faiss
import grpc

from server.config import Settings
from server.db import local_postgres, migrate, open_pool
from server.grpc_service import build_server
from server.inference import make_inference
from server.service import MatchingService
from server.store import Principal, Store

log = logging.getLogger(__name__)
STOP_GRACE_S = 10.0  # in-flight calls get this long to finish on shutdown


@dataclass(frozen=True)
class Running:
    service: MatchingService
    server: grpc.Server
    port: int
    store: Store
    database_url: str


def data_dir(settings: Settings) -> Path:
    return Path(settings.service.data_dir).expanduser()


@contextlib.contextmanager
def database(settings: Settings, database_url: str | None = None) -> Iterator[str]:
    """`database_url`, else $DATABASE_URL, else an embedded PostgreSQL in the data directory; migrated."""
    url = database_url or os.environ.get("DATABASE_URL")
    with contextlib.ExitStack() as stack:
        if not url:
            url = stack.enter_context(local_postgres(data_dir(settings) / "postgres"))
        applied = migrate(url)
        if applied:
            log.info("database migrations applied: %s", ", ".join(applied))
        yield url


@contextlib.contextmanager
def running_service(settings: Settings, database_url: str | None = None, *, worker: bool = False
                    ) -> Iterator[Running]:
    """The service, started and serving; stopped in reverse order (gRPC, snapshots, models, pool, database).
    With `worker`, the action worker (evidence, notices, removal checks: clients/worker.py) runs beside it."""
    # One OpenMP thread per search: requests already run in parallel on the gRPC workers, and FAISS's threads
    # on top of them oversubscribe the cores (measured: single queries several times slower; bench/RESULTS.md).
    faiss.omp_set_num_threads(1)
    if settings.index.backend == "torch":
        import torch

        from server.torch_device import resolve_device

        if resolve_device(settings.index.device).type == "cpu":  # the same for the exact index on CPU
            torch.set_num_threads(1)  # process-wide: models run by torch on CPU get one thread too
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(database(settings, database_url))
        pool = open_pool(url, max_size=settings.service.max_workers + 2)
        stack.callback(pool.close)
        store = Store(pool)
        inference = stack.enter_context(make_inference(settings))
        snapshots = data_dir(settings) / "index"
        snapshots.mkdir(parents=True, exist_ok=True)
        service = MatchingService(settings, inference, store, snapshots)
        service.start()
        stack.callback(service.stop)
        server, port = build_server(service, settings)
        stack.callback(lambda: server.stop(STOP_GRACE_S).wait())
        if worker:
            from clients.worker import Worker, worker_thread

            monitor = Principal("removal-monitor", "officer")

            def match_references(data: bytes) -> set[int]:
                return {m.reference_id for m in service.match(monitor, data).matches if m.reference_id}

            worker_pool = open_pool(url, max_size=2)
            stack.callback(worker_pool.close)
            stack.enter_context(worker_thread(Worker(settings, worker_pool, match_references)))
        yield Running(service, server, port, store, url)
