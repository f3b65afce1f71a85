"""Assembles the running service: PostgreSQL (given or embedded), migrations, pool, inference, indexes, gRPC."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
from prometheus_client import CollectorRegistry

from server.config import Settings
from server.index import one_search_thread
from server.inference import make_inference
from server.rpc.metrics import service_registry
from server.rpc.probes import Readiness, probe_server
from server.rpc.servicer import build_server
from server.service import MatchingService
from server.storage.db import local_postgres, migrate, open_pool
from server.storage.store import Store

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Running:
    service: MatchingService
    server: grpc.Server
    port: int
    store: Store
    database_url: str
    metrics: CollectorRegistry | None = None  # with `metrics_listen`: add collectors of what runs beside (the worker)
    metrics_port: int = 0


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
def running_service(settings: Settings, database_url: str | None = None) -> Iterator[Running]:
    """The service, started and serving; stopped in reverse order (not ready, gRPC, snapshots, metrics port,
    models, pool, database)."""
    one_search_thread()
    if settings.index.backend == "torch":
        import torch

        from server.torch_device import resolve_device

        if resolve_device(settings.index.device).type == "cpu":  # the same for the exact index on CPU
            torch.set_num_threads(1)  # process-wide: models run by torch on CPU get one thread too
    with contextlib.ExitStack() as stack:
        url = stack.enter_context(database(settings, database_url))
        pool = open_pool(url, max_size=settings.service.max_workers + 2)
        stack.callback(pool.close)
        store = Store(pool, settings.models)
        inference = stack.enter_context(make_inference(settings))
        snapshots = data_dir(settings) / "index"
        snapshots.mkdir(parents=True, exist_ok=True)
        service = MatchingService(settings, inference, store, snapshots)
        readiness = Readiness(service.index_stats)
        registry: CollectorRegistry | None = None
        interceptors: list[grpc.ServerInterceptor] = []
        metrics_port = 0
        if settings.service.metrics_listen:  # up before the indexes load (minutes, when large): live, not ready
            registry, rpc_metrics = service_registry(service, readiness.ready)
            interceptors = [rpc_metrics]
            metrics_port = stack.enter_context(probe_server(settings.service.metrics_listen, registry, readiness))
        service.start()
        stack.callback(service.stop)
        serving = build_server(service, settings, interceptors)
        stack.callback(serving.stop, settings.service.shutdown_notice_s, settings.service.shutdown_grace_s)
        readiness.mark_serving()
        stack.callback(readiness.mark_stopping)  # first thing on the way out, as health turns NOT_SERVING
        yield Running(service, serving.server, serving.port, store, url, registry, metrics_port)
