"""A guarding HTTP proxy on loopback for a headless browser: every request the browser makes (the page, its
scripts, XHR/fetch, images, iframes, WebSockets) goes through it and gets web.py's address checks.

The browser is started with ``--proxy-server`` pointing here and ``--proxy-bypass-list=<-loopback>`` (so loopback
goes through it too); see :func:`browser_args`. For each request the proxy resolves the host once
(:func:`jiwoom.shared.web.resolve_allowed`: the same rules and allow-list as the fetcher), connects to one of the
checked addresses (never a second resolution, so DNS rebinding gets nothing), and relays under a byte cap and a
deadline. Only CONNECT (https, wss) and absolute-URI plain http are served; anything else, and every refused
address, gets 403 and one line on the ``jiwoom.guard`` logger naming the host and the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType
from urllib.parse import urlsplit

from jiwoom.shared.web import FetchError, FetchPolicy, FetchRefused, resolve_allowed

__all__ = ["GuardProxy", "browser_args"]

log = logging.getLogger("jiwoom.guard")
MAX_HEAD_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# Hop-by-hop headers are the proxy's business; forwarding them would let a client keep the upstream connection.
_HOP_HEADERS = frozenset({"connection", "keep-alive", "proxy-connection", "proxy-authorization", "proxy-authenticate",
                          "te", "trailer", "upgrade"})


def browser_args(port: int) -> list[str]:
    """Chromium flags that route all of its traffic through the proxy on ``port``: loopback included, no QUIC
    (UDP would bypass an HTTP proxy), and WebRTC only over the proxy."""
    return [f"--proxy-server=http://127.0.0.1:{port}", "--proxy-bypass-list=<-loopback>", "--disable-quic",
            "--force-webrtc-ip-handling-policy=disable_non_proxied_udp", "--dns-prefetch-disable"]


class _Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


class GuardProxy:
    """``async with GuardProxy(policy) as proxy:`` then start the browser with ``browser_args(proxy.port)``.

    ``policy.max_bytes`` caps what one connection brings back from upstream and ``policy.timeout_s`` is its
    deadline (a CONNECT tunnel counts as one). ``connected`` lists every upstream (address, port) a connection was
    attempted to, ``refused`` every (host, reason) turned away: for statistics and the tests.
    """

    def __init__(self, policy: FetchPolicy) -> None:
        self.policy = policy
        self.port = 0
        self.connected: list[tuple[str, int]] = []
        self.refused: list[tuple[str, str]] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> GuardProxy:
        await self.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0, limit=MAX_HEAD_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if server is not None:
            with contextlib.suppress(Exception):
                await server.wait_closed()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                await self._serve(reader, writer)
        except _Refused as refusal:
            with contextlib.suppress(OSError):
                writer.write(f"HTTP/1.1 {refusal.status} Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n"
                             f"X-Jiwoom-Guard: {str(refusal)[:200]}\r\n\r\n".encode("latin-1", "replace"))
                await writer.drain()
        except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # a slow, oversized or broken exchange just ends; the browser sees a closed connection
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _refuse(self, status: int, host: str, reason: str) -> _Refused:
        self.refused.append((host, reason))
        log.warning("refused %s: %s", host, reason)
        return _Refused(status, reason)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target, _ = [*lines[0].split(" ", 2), "", ""][:3]
        if method.upper() == "CONNECT":
            try:
                host, port = _host_port(target)
            except ValueError as error:
                raise self._refuse(400, target[:200], str(error)) from None
            upstream_reader, upstream_writer = await self._connect(host, port, f"CONNECT {target}")
            try:
                writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                await writer.drain()
                await self._tunnel(reader, writer, upstream_reader, upstream_writer)
            finally:
                upstream_writer.close()
            return
        try:
            parts = urlsplit(target)
            host, port = parts.hostname or "", parts.port or 80
        except ValueError:
            raise self._refuse(400, target[:200], "unparseable request target") from None
        if parts.scheme.lower() != "http" or not host:
            raise self._refuse(403, target[:200], f"scheme not served: {parts.scheme or target[:40]!r}")
        upstream_reader, upstream_writer = await self._connect(host, port, f"{method} {target[:200]}")
        try:
            await self._plain(method, parts.path or "/", parts.query, lines[1:], reader, writer, upstream_reader,
                              upstream_writer)
        finally:
            upstream_writer.close()

    async def _connect(self, host: str, port: int, what: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            addresses = await resolve_allowed(host, port, self.policy)
        except FetchRefused as refusal:
            raise self._refuse(403, host, f"{what}: {refusal}") from None
        except FetchError as error:
            raise _Refused(502, str(error)) from None
        last: OSError | None = None
        for address in addresses:  # the checked addresses themselves: no second resolution
            self.connected.append((address, port))
            try:
                async with asyncio.timeout(self.policy.connect_timeout_s):
                    return await asyncio.open_connection(address, port, limit=MAX_HEAD_BYTES)
            except (OSError, TimeoutError) as error:
                last = OSError(str(error))
        raise _Refused(502, f"cannot connect to {host}: {last}")

    async def _plain(self, method: str, path: str, query: str, header_lines: list[str],
                     reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     upstream_reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter) -> None:
        headers = [line for line in header_lines if line and line.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
        names = {line.split(":", 1)[0].strip().lower(): line.split(":", 1)[-1].strip() for line in headers}
        if "chunked" in names.get("transfer-encoding", "").lower():
            raise _Refused(411, "chunked request bodies are not relayed")
        length = int(names.get("content-length", "0") or 0)
        if length < 0 or length > self.policy.max_bytes:
            raise _Refused(413, "request body too large")
        # One request per connection, both ways: a kept-alive client connection could carry a request for another
        # host into this upstream, and a kept-alive upstream one would outlive its check.
        target = path + (f"?{query}" if query else "")
        upstream_writer.write(f"{method} {target} HTTP/1.1\r\n".encode("latin-1")
                              + "".join(f"{h}\r\n" for h in headers).encode("latin-1") + b"Connection: close\r\n\r\n")
        if length:
            upstream_writer.write(await reader.readexactly(length))
        await upstream_writer.drain()
        response = (await upstream_reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status_line, response_headers = response[0], [h for h in response[1:] if h]
        kept = [h for h in response_headers if h.split(":", 1)[0].strip().lower() not in _HOP_HEADERS]
        writer.write((status_line + "\r\n" + "".join(f"{h}\r\n" for h in kept)
                      + "Connection: close\r\nProxy-Connection: close\r\n\r\n").encode("latin-1"))
        declared = next((h.split(":", 1)[1].strip() for h in kept if h.split(":", 1)[0].strip().lower()
                         == "content-length"), None)
        fields = status_line.split(" ", 2)
        status = int(fields[1]) if len(fields) > 1 and fields[1].isdigit() else 0
        if method.upper() == "HEAD" or status in (204, 304) or 100 <= status < 200:
            return await writer.drain()
        await self._copy(upstream_reader, writer, int(declared) if declared and declared.isdigit() else None)

    async def _copy(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, length: int | None) -> None:
        """Relay until EOF (or `length` bytes), stopping at the byte cap."""
        left = self.policy.max_bytes if length is None else min(length, self.policy.max_bytes + 1)
        relayed = 0
        while left > 0:
            chunk = await source.read(min(_CHUNK, left))
            if not chunk:
                break
            relayed += len(chunk)
            if relayed > self.policy.max_bytes:
                raise ValueError("over the byte cap")  # the connection is cut: the browser sees a truncated body
            left -= len(chunk)
            sink.write(chunk)
            await sink.drain()

    async def _tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      upstream_reader: asyncio.StreamReader, upstream_writer: asyncio.StreamWriter) -> None:
        async def up() -> None:
            # The client's side is not capped by max_bytes (uploads are small); the deadline bounds it.
            while chunk := await reader.read(_CHUNK):
                upstream_writer.write(chunk)
                await upstream_writer.drain()
            with contextlib.suppress(OSError):
                upstream_writer.write_eof()

        uploading = asyncio.create_task(up())
        try:
            await self._copy(upstream_reader, writer, None)
        finally:
            uploading.cancel()
            await asyncio.gather(uploading, return_exceptions=True)


def _host_port(target: str) -> tuple[str, int]:
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"CONNECT target without a port: {target[:100]}")
    return host.strip("[]"), int(port)
