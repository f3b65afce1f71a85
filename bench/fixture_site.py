"""A loopback web site for tests: a threaded HTTP/1.1 server over a route table that tests change while it runs.

The evidence, notice and crawler tests all use it. Several instances can run at once (each on its own port) to stand
for different hosts. Nothing here touches the network beyond 127.0.0.1.
"""

from __future__ import annotations

import html
import sys
import threading
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from urllib.parse import parse_qsl, urlencode, urlsplit

_CHUNK = 64 * 1024
_ZEROS = bytes(_CHUNK)


@dataclass
class _Route:
    status: int = 200
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    # Streamed routes produce the body lazily, so a 200 MB page costs no memory.
    stream: Callable[[threading.Event], Iterator[bytes]] | None = None
    content_length: int | None = None  # for streamed routes; None means chunked transfer coding


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # handler threads (a hanging page) never block shutdown
    site: FixtureSite

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that hang up (size limits, timeouts, refused peers) are normal here: no traceback on stderr.
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _serve(self, *, head: bool) -> None:
        site = self.server.site
        target = urlsplit(self.path)
        route = site._hit(target.path, target.query, self.path)
        if route is None:
            route = _Route(status=404, headers=[("Content-Type", "text/html; charset=utf-8")],
                           body=b"<html><body><h1>404 Not Found</h1></body></html>")
        try:
            self.send_response(route.status)
            for name, value in route.headers:
                self.send_header(name, value)
            if route.stream is None:
                self.send_header("Content-Length", str(len(route.body)))
                self.end_headers()
                if not head:
                    self.wfile.write(route.body)
                return
            if route.content_length is not None:
                self.send_header("Content-Length", str(route.content_length))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if head:
                return
            self.wfile.flush()
            for piece in route.stream(site._stopping):
                if route.content_length is None:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
                self.wfile.flush()
            if route.content_length is None:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a size limit or a timeout): that is what those tests want.
            self.close_connection = True


class FixtureSite:
    """A loopback HTTP/1.1 site with a mutable route table; use as ``with FixtureSite() as site:``."""

    def __init__(self) -> None:
        self._routes: dict[str, _Route] = {}
        self._hits: Counter[str] = Counter()
        self._requests: list[str] = []  # request targets (path?query) in arrival order
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    def start(self) -> FixtureSite:
        """Bind 127.0.0.1 on a free port and serve from a daemon thread."""
        server = _Server(("127.0.0.1", 0), _Handler)
        server.site = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"fixture-site-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; wakes hanging handlers so their threads end."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> FixtureSite:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "site not started"
        return self._server.server_address[1]

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str) -> bytes:
        """The body served at `path`, downloaded as a crawler would (counts as a hit)."""
        with urllib.request.urlopen(self.url(path), timeout=10) as response:
            return response.read()

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on this site."""
        return self.origin + (path if path.startswith("/") else "/" + path)

    def hits(self, path: str) -> int:
        """How many requests for ``path`` (query string ignored) the site has seen."""
        with self._lock:
            return self._hits[urlsplit(path).path]

    def requests(self) -> list[str]:
        """Every request target (path and query, as sent) the site has seen, oldest first."""
        with self._lock:
            return list(self._requests)

    # --- routes -----------------------------------------------------------------------------------------------

    def put(self, path: str, body: bytes, content_type: str = "text/html; charset=utf-8", status: int = 200,
            headers: dict[str, str] | None = None) -> None:
        """Serve ``body`` at ``path`` (replacing what was there); ``headers`` are sent as given.

        Every route method takes a path with a query too (``/bbs/board.php?bo_table=free&wr_id=7``): that route
        answers requests with the same parameters in any order; a route without a query answers any query.
        """
        self._set(path, _Route(status=status, headers=[("Content-Type", content_type), *(headers or {}).items()],
                               body=body))

    def remove(self, path: str) -> None:
        """Take ``path`` down: it answers 404 afterwards."""
        with self._lock:
            self._routes.pop(_route_key(path), None)

    def redirect(self, path: str, to: str, status: int = 302) -> None:
        """Answer ``path`` with a redirect to ``to`` (relative or absolute)."""
        self._set(path, _Route(status=status, headers=[("Location", to), ("Content-Type", "text/plain")],
                               body=b"redirecting"))

    def hang(self, path: str, prefix: bytes = b"", content_type: str = "text/html; charset=utf-8") -> None:
        """A page that sends its headers (and ``prefix``) and then never finishes, until the site stops."""

        def never_ends(stopping: threading.Event) -> Iterator[bytes]:
            if prefix:
                yield prefix
            stopping.wait()

        self._set(path, _Route(headers=[("Content-Type", content_type)], stream=never_ends))

    def put_large(self, path: str, n_bytes: int, *, declare_length: bool = True,
                  content_type: str = "application/octet-stream") -> None:
        """Serve ``n_bytes`` zero bytes generated lazily (chunked when ``declare_length`` is False)."""

        def zeros(stopping: threading.Event) -> Iterator[bytes]:
            left = n_bytes
            while left > 0 and not stopping.is_set():
                piece = _ZEROS if left >= _CHUNK else _ZEROS[:left]
                left -= len(piece)
                yield piece

        self._set(path, _Route(headers=[("Content-Type", content_type)], stream=zeros,
                               content_length=n_bytes if declare_length else None))

    def _set(self, path: str, route: _Route) -> None:
        with self._lock:
            self._routes[_route_key(path)] = route

    def _hit(self, path: str, query: str = "", target: str = "") -> _Route | None:
        with self._lock:
            self._hits[path] += 1
            self._requests.append(target or path)
            route = self._routes.get(_route_key(f"{path}?{query}")) if query else None
            return route or self._routes.get(path)


def _route_key(path: str) -> str:
    """The route table's key: the path as given, or with a query its parameters sorted (order does not matter)."""
    base, mark, query = path.partition("?")
    if not mark:
        return path
    return f"{base}?{urlencode(sorted(parse_qsl(query, keep_blank_values=True)))}"


def korean_post_page(title: str, author: str, posted: str, body_text: str, image_paths: list[str],
                     extra_html: str = "") -> bytes:
    """A Korean community-board post page (UTF-8 HTML): header, title, author, time, body, images, comments.

    ``posted`` is the board's time text, e.g. "2026.11.21 14:03"; ``extra_html`` goes after the images.
    """
    esc = html.escape
    paragraphs = "\n".join(f"      <p>{esc(line)}</p>" for line in body_text.splitlines() if line.strip())
    images = "\n".join(f'      <p><img src="{esc(src)}" alt="" style="max-width:100%"></p>' for src in image_paths)
    page = f"""<!DOCTYPE html>
<html lang="ko">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>{esc(title)} - 자유게시판</title>
  <style>
    body {{ font-family: "NanumGothic", "Nanum Gothic", sans-serif; margin: 0; color: #222; }}
    .gnb {{ background: #2b4c7e; color: #fff; padding: 12px 24px; font-weight: bold; }}
    .wrap {{ max-width: 960px; margin: 0 auto; padding: 16px 24px; }}
    h1.title {{ font-size: 22px; margin: 8px 0; }}
    .info {{ color: #777; font-size: 13px; border-bottom: 1px solid #ddd; padding-bottom: 8px; }}
    .info span {{ margin-right: 12px; }}
    .content {{ line-height: 1.7; padding: 16px 0; }}
    .comments {{ border-top: 1px solid #ddd; font-size: 14px; }}
  </style>
</head>
<body>
  <div class="gnb">커뮤니티 · 자유게시판</div>
  <div class="wrap">
    <article class="post">
      <h1 class="title">{esc(title)}</h1>
      <div class="info">
        <span class="author">{esc(author)}</span>
        <span class="date">{esc(posted)}</span>
        <span class="views">조회 1,024</span>
        <span class="likes">추천 3</span>
      </div>
      <div class="content">
{paragraphs}
{images}
      </div>
{extra_html}
    </article>
    <section class="comments">
      <h2>댓글 2</h2>
      <ul>
        <li><b>익명</b> 잘 보고 갑니다</li>
        <li><b>ㅇㅇ</b> 출처가 어디인가요?</li>
      </ul>
    </section>
  </div>
</body>
</html>
"""
    return page.encode("utf-8")
