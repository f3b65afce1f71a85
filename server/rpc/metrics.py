"""Prometheus metrics of one running service, in a registry of its own (one process may run several services: the
tests do): per-RPC counts by status code and latency (an interceptor), media work in flight, index sizes, readiness.

The RPC metrics keep the names of go-grpc-prometheus (`grpc_server_handled_total`, ...) so that its dashboards and
alerts work unchanged. Everything read from the service is read at scrape time, by callbacks: nothing to keep in step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jiwoom.api.proto_gen.jiwoom.v1 import matcher_pb2 as pb
from server.matching.library import IndexStat
from server.rpc.servicer import wrapped_handler
from server.service import MatchingService

log = logging.getLogger(__name__)

# Seconds: a GetStats takes milliseconds, a video Match tens of seconds, a MatchStream as long as its crawler
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
_KINDS = {(False, False): "unary", (True, False): "client_stream", (False, True): "server_stream",
          (True, True): "bidi_stream"}
_LABELS = ("grpc_service", "grpc_method", "grpc_type")


class RpcMetrics(grpc.ServerInterceptor):
    """Counts every RPC when it starts and when it ends (by status code) and times it. Put it first among the
    interceptors, so that it also sees the calls that a later one (the token check) refuses."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.started = Counter("grpc_server_started", "RPCs started on the server.", _LABELS, registry=registry)
        self.handled = Counter("grpc_server_handled", "RPCs completed on the server, by gRPC status code.",
                               (*_LABELS, "grpc_code"), registry=registry)
        self.latency = Histogram("grpc_server_handling_seconds", "Time from an RPC's start to its status.", _LABELS,
                                 buckets=LATENCY_BUCKETS, registry=registry)
        # A stream's failed items are answered in-band and the stream goes on: its status shows none of them
        self.stream_items = Counter("jiwoom_stream_items", "MatchStream items answered, by gRPC status code.",
                                    ("grpc_code",), registry=registry)

    def intercept_service(self, continuation: Callable, details: grpc.HandlerCallDetails
                          ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:  # no such method: gRPC answers UNIMPLEMENTED; a caller's made-up name is no label
            return None
        service, _, method = details.method.lstrip("/").rpartition("/")
        labels = (service, method, _KINDS[(handler.request_streaming, handler.response_streaming)])
        return wrapped_handler(handler, self._unary(labels), self._streaming(labels))

    def _finish(self, labels: tuple[str, str, str], code: grpc.StatusCode, started: float) -> None:
        self.handled.labels(*labels, code.name).inc()
        self.latency.labels(*labels).observe(time.perf_counter() - started)

    def _unary(self, labels: tuple[str, str, str]) -> Callable[[Callable], Callable]:
        def wrap(behaviour: Callable) -> Callable:
            def run(request: object, context: grpc.ServicerContext) -> object:
                self.started.labels(*labels).inc()
                started, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    response = behaviour(request, context)
                    code = context.code() or grpc.StatusCode.OK  # a handler may set a code and return
                    return response
                except Exception:
                    code = _raised(context)
                    raise
                finally:
                    self._finish(labels, code, started)

            return run

        return wrap

    def _streaming(self, labels: tuple[str, str, str]) -> Callable[[Callable], Callable]:
        items = labels[:2] == (pb.DESCRIPTOR.services_by_name["Matcher"].full_name, "MatchStream")

        def wrap(behaviour: Callable) -> Callable:
            def run(request: object, context: grpc.ServicerContext) -> Iterator[object]:
                self.started.labels(*labels).inc()
                started, code = time.perf_counter(), grpc.StatusCode.UNKNOWN
                try:
                    for response in behaviour(request, context):
                        if items and isinstance(response, pb.StreamResponse):
                            self.stream_items.labels(_CODE_NAMES.get(response.error_code, "UNKNOWN")).inc()
                        yield response
                    code = context.code() or grpc.StatusCode.OK
                except GeneratorExit:  # gRPC dropped the stream: the caller cancelled or went away
                    code = grpc.StatusCode.CANCELLED
                    raise
                except Exception:
                    code = _raised(context)
                    raise
                finally:
                    self._finish(labels, code, started)

            return run

        return wrap


def _raised(context: grpc.ServicerContext) -> grpc.StatusCode:
    """The status of a behaviour that raised: abort() sets its code, then raises; anything else leaves as UNKNOWN."""
    code = context.code()
    return grpc.StatusCode.UNKNOWN if code in (None, grpc.StatusCode.OK) else code


class IndexCollector(Collector):
    """Each collection's index sizes by signal, read when scraped. A failing read is logged and leaves them out:
    a scrape must not fail (nor the service) because one index cannot answer."""

    def __init__(self, stats: Callable[[], list[IndexStat]]) -> None:
        self.stats = stats

    def _families(self, rows: Iterable[IndexStat]) -> list[Metric]:
        labels = ["collection", "signal"]
        vectors = GaugeMetricFamily("jiwoom_index_vectors", "Vectors in a collection's index of a signal.",
                                    labels=labels)
        owners = GaugeMetricFamily("jiwoom_index_owners",
                                   "References, sightings or benign items with vectors in the index.", labels=labels)
        memory = GaugeMetricFamily("jiwoom_index_memory_bytes", "Memory the index holds, on its device.",
                                   labels=[*labels, "device"])
        for row in rows:
            vectors.add_metric([row.collection, row.signal], row.vectors)
            owners.add_metric([row.collection, row.signal], row.owners)
            memory.add_metric([row.collection, row.signal, row.device], row.memory_bytes)
        return [vectors, owners, memory]

    def describe(self) -> list[Metric]:
        return self._families(())  # the names, so the registry refuses a second collector of them

    def collect(self) -> list[Metric]:
        try:
            rows = self.stats()
        except Exception:
            log.warning("index sizes could not be read for the metrics", exc_info=True)
            rows = []
        return self._families(rows)


def service_registry(service: MatchingService, ready: Callable[[], bool]) -> tuple[CollectorRegistry, RpcMetrics]:
    """A registry of `service`'s metrics, and the interceptor that counts its RPCs into it."""
    registry = CollectorRegistry()
    rpc = RpcMetrics(registry)
    in_flight = Gauge("jiwoom_media_calls_in_flight",
                      "Media calls (Match, stream items, RegisterReference, MarkBenign) computing now.",
                      registry=registry)
    in_flight.set_function(lambda: service.slots.busy)
    workers = Gauge("jiwoom_media_workers", "Media calls that may compute at once (max_workers).",
                    registry=registry)
    workers.set(service.slots.size)
    ready_gauge = Gauge("jiwoom_ready", "1 while the replica is ready for calls (as /ready says), else 0.",
                        registry=registry)
    ready_gauge.set_function(lambda: float(ready()))
    registry.register(IndexCollector(service.index_stats))
    return registry, rpc
