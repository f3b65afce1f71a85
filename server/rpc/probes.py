"""The replica's plain-HTTP side port (`metrics_listen`): Prometheus's /metrics, and the probes /live and /ready.

Liveness and readiness differ: a replica loading its indexes, or stopping, is alive (do not restart it) but not
ready (send it no calls). It is served by waitress (bounded threads, a strict HTTP parser), like the console.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, make_wsgi_app
from waitress import create_server

log = logging.getLogger(__name__)

StartResponse = Callable[..., Any]


class Readiness:
    """Ready from `mark_serving` (indexes loaded, gRPC started) until `mark_stopping`, while `probe` (a read of
    the indexes) answers without raising."""

    def __init__(self, probe: Callable[[], object]) -> None:
        self._probe = probe
        self._serving = threading.Event()
        self._stopping = threading.Event()

    def mark_serving(self) -> None:
        self._serving.set()

    def mark_stopping(self) -> None:
        self._stopping.set()

    def ready(self) -> bool:
        if not self._serving.is_set() or self._stopping.is_set():
            return False
        try:
            self._probe()
        except Exception:
            log.warning("readiness: the indexes did not answer", exc_info=True)
            return False
        return True


def probe_app(registry: CollectorRegistry, readiness: Readiness) -> Callable[[dict[str, Any], StartResponse],
                                                                             Iterable[bytes]]:
    metrics = make_wsgi_app(registry)

    def text(start_response: StartResponse, status: str, body: bytes, *headers: tuple[str, str]) -> list[bytes]:
        start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                                ("Content-Length", str(len(body))), *headers])
        return [body]

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return text(start_response, "405 Method Not Allowed", b"GET only\n", ("Allow", "GET, HEAD"))
        if path == "/metrics":
            return metrics(environ, start_response)  # type: ignore[no-any-return]
        if path == "/live":
            return text(start_response, "200 OK", b"live\n")
        if path == "/ready":
            if readiness.ready():
                return text(start_response, "200 OK", b"ready\n")
            return text(start_response, "503 Service Unavailable", b"not ready\n")
        return text(start_response, "404 Not Found", b"/metrics, /live or /ready\n")

    return app


def host_port(listen: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) of a setting; a host is required, so that it binds only where told."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"metrics_listen must be host:port, not {listen!r}")
    return host, int(port)


@contextlib.contextmanager
def probe_server(listen: str, registry: CollectorRegistry, readiness: Readiness) -> Iterator[int]:
    """/metrics, /live and /ready on `listen` in a background thread for the block; yields the bound port."""
    host, port = host_port(listen)
    server = create_server(probe_app(registry, readiness), host=host, port=port, threads=2, ident="jiwoom-metrics",
                           clear_untrusted_proxy_headers=True)
    # a host naming several addresses (localhost: IPv4 and IPv6) gets a socket each
    bound = int(server.effective_port) if hasattr(server, "effective_port") else int(server.effective_listen[0][1])
    thread = threading.Thread(target=server.run, name="jiwoom-metrics", daemon=True)
    thread.start()
    log.info("metrics and probes on http://%s:%d (/metrics, /live, /ready)", f"[{host}]" if ":" in host else host,
             bound)
    try:
        yield bound
    finally:
        server.close()
        thread.join(timeout=10)
