"""The one guarded HTTP fetcher for everything that touches outside web pages (evidence capture, later the crawler).

Pages we fetch are chosen by strangers (a URL in a post, a redirect), so every fetch is treated as hostile:

* addresses are checked when the connection is made, not when the URL is parsed: the resolver drops private,
  loopback, link-local, multicast and reserved addresses, which defeats DNS rebinding; literal IP hosts (which
  aiohttp never passes to the resolver) are checked before every hop; and the socket factory refuses any such
  address at connect time whatever path it came by;
* redirects are followed by hand, so each hop gets the same checks and the count and loops are bounded;
* bodies are streamed and abandoned at ``max_bytes``; the whole fetch (all hops) has one deadline;
* the body is kept exactly as it came off the wire (no content decoding) so a WARC record of it is faithful, and a
  content-decoded copy, also capped, is kept beside it for parsers.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import brotli
from aiohappyeyeballs import AddrInfoType
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

__all__ = [
    "FetchError",
    "FetchPolicy",
    "FetchRefused",
    "Fetched",
    "Fetcher",
    "GuardedResolver",
    "address_allowed",
    "decode_content",
    "guarded_socket_factory",
    "resolve_allowed",
]

DEFAULT_USER_AGENT = "jiwoom-evidence/0.1 (+takedown evidence capture)"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_READ_CHUNK = 64 * 1024
# Only encodings we can decode (and cap) ourselves are advertised, so a server has no reason to send others.
_ACCEPT_ENCODING = "gzip, deflate, br"
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def site_of(url: str) -> str:
    """The site a URL belongs to: the host, with the port when one is given (another port is another service,
    often another operator). Notices, removal reports and the crawler's per-host limits group by it."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    return f"{host}:{parts.port}" if parts.port else host


@dataclass(frozen=True)
class FetchPolicy:
    """Limits for one fetch. ``allow_networks`` re-admits CIDRs that are otherwise refused (tests: 127.0.0.0/8)."""

    max_bytes: int = 64 * 2**20
    timeout_s: float = 30.0  # the whole fetch, every redirect hop included
    connect_timeout_s: float = 10.0
    max_redirects: int = 5
    allow_networks: tuple[str, ...] = ()
    user_agent: str = DEFAULT_USER_AGENT
    accept_language: str = "ko-KR,ko;q=0.9,en;q=0.5"
    _networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Parse once (and fail at construction on a typo, not on the first fetch).
        nets = tuple(ipaddress.ip_network(cidr, strict=False) for cidr in self.allow_networks)
        object.__setattr__(self, "_networks", nets)


class FetchError(Exception):
    """A fetch failed: the network, the server's HTTP, or an undecodable body."""


class FetchRefused(FetchError):
    """A fetch was stopped by policy: address, scheme, size, redirects or time."""


_REFUSAL_TAG = "[jiwoom address guard]"


class _AddressNotAllowed(OSError):
    # An OSError, so aiohttp wraps it like any resolver or connect failure (ClientConnectorError) and we unwrap it.
    def __init__(self, message: str) -> None:
        super().__init__(errno.EACCES, f"{message} {_REFUSAL_TAG}")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address behind a 6to4, Teredo or NAT64 address, if any."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    # is_global alone misses multicast (224/4 counts as global), so every category is refused by name as well.
    return ip.is_global and not (ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast
                                 or ip.is_reserved or ip.is_unspecified)


def address_allowed(ip: str, policy: FetchPolicy) -> bool:
    """Whether a connection to ``ip`` is allowed: public unicast, or inside ``policy.allow_networks``.

    IPv6 addresses that carry an IPv4 address (mapped, 6to4, Teredo, NAT64) must pass for both. Unparseable
    strings are refused.
    """
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            candidates = [addr.ipv4_mapped]  # ::ffff:a.b.c.d is that IPv4 host (Python calls ::ffff:0:0/96 reserved)
        elif (inner := _embedded_ipv4(addr)) is not None:
            candidates.append(inner)  # a relay prefix: both the relay address and the host behind it must pass
    nets = policy._networks
    if any(c in net for c in candidates for net in nets if c.version == net.version):
        return True
    return all(_public(c) for c in candidates)


class GuardedResolver(AbstractResolver):
    """Wraps aiohttp's resolver and drops addresses the policy refuses, so the check is made at connect time."""

    def __init__(self, policy: FetchPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(self, host: str, port: int = 0,
                      family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        """Resolve ``host`` and keep only allowed addresses; raise (an OSError) when none is left."""
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if address_allowed(r["host"], self.policy)]
        if not allowed:
            refused = ", ".join(r["host"] for r in results) or "none"
            raise _AddressNotAllowed(f"{host} resolves only to addresses that are not allowed: {refused}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def guarded_socket_factory(policy: FetchPolicy) -> Callable[[AddrInfoType], socket.socket]:
    """An aiohttp ``socket_factory`` that refuses to create a socket for an address the policy refuses.

    aiohttp calls it with the exact address about to be connected, for every new connection, IP literals
    included, so this is the last word whatever path an address took to get there.
    """

    def factory(addr_info: AddrInfoType) -> socket.socket:
        family, type_, proto, _, sockaddr = addr_info
        if not address_allowed(str(sockaddr[0]), policy):
            raise _AddressNotAllowed(f"connection to {sockaddr[0]} not allowed")
        return socket.socket(family=family, type=type_, proto=proto)

    return factory


def _refusal(exc: BaseException) -> bool:
    # aiohappyeyeballs folds several connect failures into one plain OSError, so the tag is matched as well.
    return isinstance(exc, _AddressNotAllowed) or _REFUSAL_TAG in str(exc)


@dataclass(frozen=True)
class Fetched:
    """One HTTP exchange as it happened: raw headers and raw (still content-encoded) body, plus a decoded copy."""

    url: str  # as requested
    final_url: str  # after redirects: the URL whose response this is
    status: int
    reason: str
    headers: list[tuple[str, str]]  # raw response headers, in order, latin-1 decoded
    body: bytes  # as on the wire (transfer coding removed, content coding kept)
    decoded: bytes  # content-decoded body (same as body when there was no or an unknown Content-Encoding)
    request_headers: list[tuple[str, str]]
    http_version: str  # "HTTP/1.1"
    redirects: tuple[str, ...]  # URLs that redirected, in order, starting with url; empty when none
    fetched_at: datetime  # UTC, when the final response's headers arrived
    peer_ip: str | None = None  # the address the final response came from (WARC-IP-Address)

    def header(self, name: str) -> str | None:
        """The first response header called ``name`` (case-insensitive), or None."""
        lower = name.lower()
        return next((v for k, v in self.headers if k.lower() == lower), None)


def decode_content(body: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, br; several in order), refusing output over ``max_bytes``.

    A decompression bomb stops at the cap instead of filling memory. Unknown encodings leave the body as is.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
    data = body
    for coding in reversed(codings):  # the last coding listed was applied last
        if coding in ("identity", ""):
            continue
        if coding in ("gzip", "x-gzip"):
            data = _inflate(data, 16 + zlib.MAX_WBITS, max_bytes)
        elif coding == "deflate":
            try:
                data = _inflate(data, zlib.MAX_WBITS, max_bytes)
            except zlib.error:
                data = _inflate(data, -zlib.MAX_WBITS, max_bytes)  # servers that send raw deflate
        elif coding == "br":
            data = _unbrotli(data, max_bytes)
        else:
            return body
    return data


def _inflate(data: bytes, wbits: int, max_bytes: int) -> bytes:
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, max_bytes + 1)
    if len(out) > max_bytes:
        raise FetchRefused(f"decoded body larger than {max_bytes} bytes")
    return out + d.flush()


def _unbrotli(data: bytes, max_bytes: int) -> bytes:
    d = brotli.Decompressor()
    out = bytearray(d.process(data, output_buffer_limit=max_bytes + 1))
    while len(out) <= max_bytes and not d.can_accept_more_data():
        out += d.process(b"", output_buffer_limit=max_bytes + 1 - len(out))
    if len(out) > max_bytes:
        raise FetchRefused(f"decoded body larger than {max_bytes} bytes")
    return bytes(out)


def _check_url(url: URL, policy: FetchPolicy) -> None:
    if url.scheme not in ("http", "https"):
        raise FetchRefused(f"scheme not http/https: {url}")
    host = url.host
    if not host:
        raise FetchRefused(f"no host in {url}")
    # aiohttp does not pass IP literals to the resolver, so they are checked here, before each hop.
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return
    if not address_allowed(host, policy):
        raise FetchRefused(f"address not allowed: {host} ({url})")


async def resolve_allowed(host: str, port: int, policy: FetchPolicy) -> list[str]:
    """The addresses `host` resolves to, in resolver order, when every one is allowed; FetchRefused naming the
    refused ones otherwise (a name that also points inside is not trusted). For callers that connect themselves
    (the guard proxy): they connect to these addresses, never to a second resolution."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise FetchError(f"cannot resolve {host}: {exc}") from exc
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    refused = [a for a in addresses if not address_allowed(a, policy)]
    if refused or not addresses:
        raise FetchRefused(f"address not allowed: {host} resolves to {', '.join(refused) or 'nothing'}")
    return addresses


async def url_allowed(url: str, policy: FetchPolicy) -> bool:
    """Whether every address `url`'s host resolves to is allowed: a check before handing a URL to something that
    does its own networking (the evidence browser, whose requests the guard proxy then checks one by one)."""
    try:
        parsed = URL(url)
        _check_url(parsed, policy)
        await resolve_allowed(parsed.host or "", parsed.port or 80, policy)
    except (FetchError, ValueError, OSError):
        return False
    return True


class Fetcher:
    """Guarded fetches over one aiohttp session: ``async with Fetcher(policy) as f: page = await f.fetch(url)``."""

    def __init__(self, policy: FetchPolicy | None = None) -> None:
        self.policy = policy or FetchPolicy()
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Fetcher:
        p = self.policy
        # Three layers: the resolver filters names, _check_url() refuses literals before a hop, and the socket
        # factory refuses at connect time whatever reached it.
        connector = aiohttp.TCPConnector(resolver=GuardedResolver(p), socket_factory=guarded_socket_factory(p),
                                         limit=32, limit_per_host=4)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,  # keep the wire bytes for the WARC; decode_content() makes the copy
            trust_env=False,  # never route through an environment proxy, which would bypass the address checks
            timeout=aiohttp.ClientTimeout(total=None, connect=p.connect_timeout_s, sock_connect=p.connect_timeout_s,
                                          sock_read=p.timeout_s),
            headers={"User-Agent": p.user_agent, "Accept-Encoding": _ACCEPT_ENCODING,
                     "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,image/*,*/*;q=0.8",
                     "Accept-Language": p.accept_language},
        )
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the session (and its connections and resolver)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, headers: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url``, following up to ``max_redirects`` redirects, every hop checked.

        ``headers`` (an API's credentials) are added to the request, and to redirect hops only on the same origin,
        so they never reach another host; they show in ``request_headers``, so such exchanges are not archived.

        Non-2xx answers are returned, not raised (the removal monitor needs 404 and 410). Raises FetchRefused when
        policy stops the fetch (address, scheme, size, redirects, the ``timeout_s`` deadline) and FetchError when
        the network or the server fails.
        """
        if self._session is None:
            raise RuntimeError("Fetcher is not open: use 'async with Fetcher(...)'")
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._fetch(url, headers)
        except TimeoutError as exc:  # the deadline, or one of aiohttp's own socket timeouts
            raise FetchRefused(f"timed out after {self.policy.timeout_s:g} s: {url}") from exc
        except aiohttp.InvalidURL as exc:  # includes legacy numeric hosts such as 2130706433 or 127.1
            raise FetchRefused(f"URL not allowed: {exc}") from exc
        except aiohttp.ClientConnectorError as exc:
            if _refusal(exc.os_error):
                raise FetchRefused(f"address not allowed: {exc.os_error}") from exc
            raise FetchError(f"cannot connect for {url}: {exc}") from exc
        except (aiohttp.ClientError, OSError, ValueError, zlib.error, brotli.error) as exc:
            raise FetchError(f"fetch failed for {url}: {exc!r}") from exc

    async def _fetch(self, url: str, headers: Mapping[str, str] | None = None) -> Fetched:
        assert self._session is not None
        policy = self.policy
        current = URL(url).with_fragment(None)
        seen = {str(current)}
        redirects: list[str] = []
        while True:
            _check_url(current, policy)
            extra = headers if headers and current.origin() == URL(url).origin() else None
            async with self._session.get(current, allow_redirects=False, headers=extra) as resp:
                fetched_at = datetime.now(UTC)
                peer_ip = self._check_peer(resp)
                location = resp.headers.get("Location")
                if resp.status in REDIRECT_STATUSES and location:
                    # The redirect's body is never read: leaving the block closes or recycles the connection.
                    target = current.join(URL(location)).with_fragment(None)
                    redirects.append(str(current))
                    if str(target) in seen:
                        raise FetchRefused(f"redirect loop: {' -> '.join([*redirects, str(target)])}")
                    if len(redirects) > policy.max_redirects:
                        raise FetchRefused(f"too many redirects (more than {policy.max_redirects}) from {url}")
                    seen.add(str(target))
                    current = target
                    continue
                body = await self._read_capped(resp)
                return Fetched(
                    url=url,
                    final_url=str(resp.url),
                    status=resp.status,
                    reason=resp.reason or "",
                    headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.raw_headers],
                    body=body,
                    decoded=decode_content(body, resp.headers.get("Content-Encoding"), policy.max_bytes),
                    request_headers=list(resp.request_info.headers.items()),
                    http_version=f"HTTP/{resp.version.major}.{resp.version.minor}" if resp.version else "HTTP/1.1",
                    redirects=tuple(redirects),
                    fetched_at=fetched_at,
                    peer_ip=peer_ip,
                )

    def _check_peer(self, resp: aiohttp.ClientResponse) -> str | None:
        # Records the peer for the WARC (and checks it once more). A body that arrived with the headers has already
        # released the connection, so fall back on the protocol, which keeps its transport while pooled.
        conn = resp.connection
        transport = conn.transport if conn is not None else getattr(getattr(resp, "_protocol", None), "transport", None)
        peer: Any = transport.get_extra_info("peername") if transport is not None else None
        if not peer:
            return None
        ip = str(peer[0])
        if not address_allowed(ip, self.policy):
            raise FetchRefused(f"connected peer address not allowed: {ip} ({resp.url})")
        return ip

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes:
        limit = self.policy.max_bytes
        declared = resp.content_length
        if declared is not None and declared > limit:
            raise FetchRefused(f"body larger than {limit} bytes (Content-Length {declared}): {resp.url}")
        buf = bytearray()
        async for chunk in resp.content.iter_chunked(_READ_CHUNK):
            if len(buf) + len(chunk) > limit:
                raise FetchRefused(f"body larger than {limit} bytes: {resp.url}")
            buf += chunk
        return bytes(buf)
