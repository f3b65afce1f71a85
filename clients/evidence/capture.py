"""Evidence capture: full-page screenshots through one headless system Chromium, and WARC files of HTTP exchanges.

The browser is Debian's ``chromium`` started by :func:`jiwoom.shared.browser.launch` (explicit paths, so Selenium
Manager never runs). Every request it makes, the page and its scripts, XHR/fetch, images and iframes, goes through
its own :class:`jiwoom.shared.guard_proxy.GuardProxy` under the evidence fetch policy, so a captured page cannot
make the worker's host reach a private or cloud-metadata address.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import math
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from types import TracebackType

import urllib3
from selenium import webdriver
from selenium.common.exceptions import (
    InvalidSessionIdException,
    NoSuchWindowException,
    TimeoutException,
    WebDriverException,
)
from warcio.statusandheaders import StatusAndHeaders
from warcio.timeutils import datetime_to_iso_date
from warcio.warcwriter import WARCWriter
from yarl import URL

from jiwoom.shared.browser import BrowserError, launch, quit_driver
from jiwoom.shared.guard_proxy import GuardProxy
from jiwoom.shared.web import Fetched, FetchPolicy

__all__ = ["Browser", "BrowserError", "Screenshot", "build_warc"]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_WIDTH_PX = 4096  # wider pages are cut at the right edge (and reported truncated)
_SETTLE_S = 2.0  # at most this long scrolling for lazy images after the load
_PROXY_WAIT_S = 10.0  # starting or stopping the guard proxy on its loop
_DEAD_SESSION_MARKERS = ("chrome not reachable", "session deleted", "disconnected", "target crashed",
                         "tab crashed", "no such session", "not connected to devtools")

# Scroll down the page (lazy-loaded images only load when near the viewport), back to the top, then wait a little
# for images still loading. Bounded by arguments[0] ms; pages taller than arguments[1] px are not scrolled further.
_SETTLE_JS = """
const done = arguments[arguments.length - 1];
const budget = arguments[0], maxHeight = arguments[1];
const t0 = performance.now();
const step = Math.max(200, window.innerHeight);
let y = 0;
function waitImages() {
  const pending = Array.from(document.images).filter((img) => !img.complete).length;
  if (pending === 0 || performance.now() - t0 >= budget) { setTimeout(() => done(pending), 0); }
  else { setTimeout(waitImages, 50); }
}
function scrollStep() {
  const root = document.scrollingElement || document.documentElement;
  const height = Math.min(root ? root.scrollHeight : 0, maxHeight);
  if (y < height && performance.now() - t0 < budget / 2) {
    window.scrollTo(0, y); y += step; setTimeout(scrollStep, 30);
  } else { window.scrollTo(0, 0); waitImages(); }
}
scrollStep();
"""


# The page's visible text, one string per text node (script, style and the like left out), kept in page order for
# _BLUR_JS, which wraps the spans Python found in an element that hides them.
_TEXT_NODES_JS = """
const skip = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "TITLE", "HEAD"]);
const nodes = [];
const root = document.body || document.documentElement;
if (root) {
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT, {acceptNode(node) {
    const parent = node.parentElement;
    return parent && !skip.has(parent.tagName) && node.data.trim() ? NodeFilter.FILTER_ACCEPT
      : NodeFilter.FILTER_REJECT;
  }});
  for (let node = walker.nextNode(); node; node = walker.nextNode()) { nodes.push(node); }
}
window.__jiwoomTextNodes = nodes;
return nodes.map((node) => node.data);
"""
# arguments[0]: [node index, start, end] in UTF-16 units, each node's segments last first, so that wrapping one
# leaves the offsets of those before it in the same node as they were. A solid box under a strong blur: nothing of
# the glyphs is left to read or to sharpen back. Returns each box (page px) for the record and the tests.
_BLUR_JS = """
const nodes = window.__jiwoomTextNodes || [];
const boxes = [];
for (const [index, start, end] of arguments[0]) {
  const node = nodes[index];
  if (!node || !node.parentNode || end > node.data.length) { continue; }
  const range = document.createRange();
  range.setStart(node, start);
  range.setEnd(node, end);
  const box = document.createElement("span");
  box.setAttribute("data-jiwoom-blurred", "");
  box.style.cssText = "background:#000 !important;color:transparent !important;filter:blur(6px) !important;"
    + "text-shadow:none !important;box-shadow:0 0 0 4px #000 !important;border-radius:2px !important;";
  range.surroundContents(box);
  for (const r of box.getClientRects()) {
    boxes.push([r.left + window.scrollX, r.top + window.scrollY, r.width, r.height]);
  }
}
return boxes;
"""
Finder = Callable[[str], list[tuple[int, int]]]  # text -> spans (characters start..end) to blur


def _blur_segments(texts: list[str], find: Finder) -> list[tuple[int, int, int]]:
    """(node, start, end) of every span `find` finds in the text nodes, read together (a line break between two
    nodes), so an identifier split over elements ("010-<b>1234</b>-5678") is found too. Offsets are UTF-16 code
    units, as the DOM counts them; each node's segments come last first."""
    joined = "\n".join(texts)
    starts = []
    at = 0
    for text in texts:
        starts.append(at)
        at += len(text) + 1
    segments: set[tuple[int, int, int]] = set()
    for span_start, span_end in find(joined):
        for index, (node_start, text) in enumerate(zip(starts, texts, strict=True)):
            start, end = max(span_start, node_start), min(span_end, node_start + len(text))
            if start < end:
                local = text[:start - node_start], text[start - node_start:end - node_start]
                first = _utf16_len(local[0])
                segments.add((index, first, first + _utf16_len(local[1])))
    merged: list[tuple[int, int, int]] = []
    for index, start, end in sorted(segments):  # overlapping spans of one node would wrap half a box: merge them
        if merged and merged[-1][0] == index and start <= merged[-1][2]:
            merged[-1] = (index, merged[-1][1], max(end, merged[-1][2]))
        else:
            merged.append((index, start, end))
    return sorted(merged, key=lambda s: (s[0], -s[1]))


def _utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


@dataclass(frozen=True)
class Screenshot:
    """A full-page PNG and what the browser ended up showing."""

    png: bytes
    title: str
    final_url: str
    width: int  # pixels of the PNG (CSS px: device scale factor is 1)
    height: int
    truncated: bool  # the page was taller than max_height_px (or wider than MAX_WIDTH_PX) and was cut
    load_complete: bool  # False when the load timed out and was stopped; the PNG shows what had rendered
    blurred: tuple[tuple[float, float, float, float], ...] = ()  # boxes (x, y, width, height, page px) hidden


def _png_size(png: bytes) -> tuple[int, int]:
    if not png.startswith(PNG_SIGNATURE) or png[12:16] != b"IHDR":
        raise BrowserError("the browser returned something that is not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def _session_dead(exc: BaseException) -> bool:
    if isinstance(exc, InvalidSessionIdException | NoSuchWindowException | urllib3.exceptions.HTTPError
                  | ConnectionError):
        return True
    message = str(exc).lower()
    return any(marker in message for marker in _DEAD_SESSION_MARKERS)


class Browser:
    """One headless Chromium for full-page screenshots behind its own guard proxy;
    ``with Browser(policy=policy) as b: shot = b.screenshot(url)``.

    ``policy`` is the evidence fetch policy (its ``allow_networks`` too): every request of the browser is checked
    against it by ``proxy`` (``proxy.connected``/``proxy.refused`` say what it let through and turned away). The
    proxy is asyncio and the browser is driven from the caller's thread, so the proxy runs on an event loop of its
    own in a daemon thread: the Browser outlives the callers' loops (the worker runs one ``asyncio.run`` a pass).

    Not thread-safe: one screenshot at a time (call it through ``asyncio.to_thread`` from async code). A crashed
    browser or driver is replaced on the next call.
    """

    def __init__(self, *, policy: FetchPolicy, chromium: str | None = None, chromedriver: str | None = None,
                 window_width: int = 1280, window_height: int = 900, lang: str = "ko-KR") -> None:
        self.policy = policy
        self.proxy = GuardProxy(policy)
        self.chromium = chromium
        self.chromedriver = chromedriver
        self.window_width = window_width
        self.window_height = window_height
        self.lang = lang
        self._driver: webdriver.Chrome | None = None
        self._profile: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None

    # --- lifecycle --------------------------------------------------------------------------------------------

    def __enter__(self) -> Browser:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def start(self) -> None:
        """Start the guard proxy, then Chromium and chromedriver pointed at it (a no-op when already running)."""
        if self._driver is not None:
            return
        self._start_proxy()
        try:
            self._driver, self._profile = launch(
                chromium=self.chromium, chromedriver=self.chromedriver, window=(self.window_width, self.window_height),
                lang=self.lang, proxy_port=self.proxy.port)
        except BaseException:
            self._stop_proxy()
            raise

    def close(self) -> None:
        """Quit the browser and driver, remove the temporary profile, stop the proxy; safe to call twice."""
        driver, self._driver = self._driver, None
        profile, self._profile = self._profile, None
        quit_driver(driver, profile)
        self._stop_proxy()  # after the browser, so nothing it still sends finds the port closed or reused

    def _start_proxy(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="jiwoom-evidence-guard", daemon=True)
        thread.start()
        self._loop, self._loop_thread = loop, thread
        try:
            asyncio.run_coroutine_threadsafe(self.proxy.start(), loop).result(_PROXY_WAIT_S)
        except BaseException as error:
            self._stop_proxy()
            raise BrowserError(f"cannot start the guard proxy: {error}") from error

    def _stop_proxy(self) -> None:
        loop, thread = self._loop, self._loop_thread
        self._loop = self._loop_thread = None
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):  # a wedged close still ends with the loop below
            asyncio.run_coroutine_threadsafe(self.proxy.close(), loop).result(_PROXY_WAIT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_PROXY_WAIT_S)
        if not thread.is_alive():
            loop.close()

    def _alive(self) -> bool:
        driver = self._driver
        if driver is None or self._loop_thread is None or not self._loop_thread.is_alive():
            return False
        process = getattr(driver.service, "process", None)
        return process is None or process.poll() is None

    def restart(self) -> None:
        """Replace the browser (and its proxy) with a fresh one."""
        self.close()
        self.start()

    # --- capture ----------------------------------------------------------------------------------------------

    def screenshot(self, url: str, *, timeout_s: float = 30.0, max_height_px: int = 16384,
                   blur: Finder | None = None) -> Screenshot:
        """Load ``url`` and capture the whole page (up to ``max_height_px`` tall) as a PNG.

        ``blur``: finds the spans of the page's text to hide (a victim's personal information); they are covered
        in the DOM before the screenshot, so the PNG never holds them legibly.

        A page still loading after the page-load timeout is stopped (``window.stop()``) and captured as it
        rendered, with ``load_complete=False``. If the browser turns out to have died, it is restarted and the
        capture is tried once more.
        """
        if not self._alive():
            self.restart()
        try:
            return self._capture(url, timeout_s, max_height_px, blur)
        except WebDriverException as exc:
            if not _session_dead(exc):
                raise BrowserError(f"capture of {url} failed: {exc.msg or exc}") from exc
        except (urllib3.exceptions.HTTPError, ConnectionError):
            pass  # the driver process went away mid-call
        self.restart()
        try:
            return self._capture(url, timeout_s, max_height_px, blur)
        except (WebDriverException, urllib3.exceptions.HTTPError, ConnectionError) as exc:
            raise BrowserError(f"capture of {url} failed after restarting the browser: {exc}") from exc

    def _capture(self, url: str, timeout_s: float, max_height_px: int, blur: Finder | None) -> Screenshot:
        driver = self._driver
        assert driver is not None
        deadline = time.monotonic() + timeout_s
        # Keep part of the time for settling and capturing, so a hanging page still ends near timeout_s.
        reserve = min(_SETTLE_S + 1.0, timeout_s * 0.25)
        driver.set_page_load_timeout(max(0.5, timeout_s - reserve))
        driver.set_script_timeout(_SETTLE_S + 5.0)
        load_complete = True
        try:
            driver.get(url)
        except TimeoutException:
            load_complete = False
            driver.execute_script("window.stop();")
        settle_ms = min(_SETTLE_S, deadline - time.monotonic() - 0.5) * 1000
        if settle_ms > 0:
            # A page that blocks its event loop past the budget is captured as it is.
            with contextlib.suppress(TimeoutException):
                driver.execute_async_script(_SETTLE_JS, settle_ms, max_height_px)
        boxes: list[list[float]] = []
        if blur is not None:  # after settling, so text that lazy loading brought in is covered too
            texts = driver.execute_script(_TEXT_NODES_JS) or []
            segments = _blur_segments([str(t) for t in texts], blur)
            if segments:
                boxes = driver.execute_script(_BLUR_JS, [list(s) for s in segments]) or []
        png, truncated = self.capture_page(max_height_px)
        png_width, png_height = _png_size(png)
        return Screenshot(png=png, title=driver.title, final_url=driver.current_url, width=png_width,
                          height=png_height, truncated=truncated, load_complete=load_complete,
                          blurred=tuple((float(x), float(y), float(w), float(h)) for x, y, w, h in boxes))

    @property
    def driver(self) -> webdriver.Chrome:
        """The WebDriver (started on first use), for callers that drive pages themselves (the console tests)."""
        self.start()
        assert self._driver is not None
        return self._driver

    def capture_page(self, max_height_px: int = 16384) -> tuple[bytes, bool]:
        """The page now loaded, whole (up to `max_height_px` tall), as PNG; and whether it was cut."""
        driver = self.driver
        metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        content = metrics.get("cssContentSize") or metrics.get("contentSize") or {}
        viewport = metrics.get("cssLayoutViewport") or {}
        full_width = max(math.ceil(content.get("width", 0)), int(viewport.get("clientWidth", 0)), 1)
        full_height = max(math.ceil(content.get("height", 0)), int(viewport.get("clientHeight", 0)), 1)
        width, height = min(full_width, MAX_WIDTH_PX), min(full_height, max_height_px)
        result = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png",
            "captureBeyondViewport": True,
            "fromSurface": True,
            "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
        })
        return base64.b64decode(result["data"]), (width, height) != (full_width, full_height)


# --- WARC -------------------------------------------------------------------------------------------------------


class _RawStatusAndHeaders(StatusAndHeaders):
    # warcio percent-encodes non-ASCII header values; latin-1 gives back the exact bytes that were received.
    def to_ascii_bytes(self, filter_func: object = None) -> bytes:
        text = self.to_str(filter_func)
        try:
            return text.encode("latin-1") + b"\r\n"
        except UnicodeEncodeError:
            return text.encode("utf-8") + b"\r\n"


def _warc_date(fetched: Fetched) -> str:
    return datetime_to_iso_date(fetched.fetched_at.astimezone(UTC).replace(tzinfo=None), use_micros=True)


def _wire_payload(fetched: Fetched) -> bytes:
    # aiohttp removes chunked framing; re-frame as one chunk so the recorded headers stay exactly as received and
    # readers that honour Transfer-Encoding still parse the record (chunk boundaries are not preserved).
    encodings = [v.lower() for k, v in fetched.headers if k.lower() == "transfer-encoding"]
    if any("chunked" in e for e in encodings):
        body = fetched.body
        return (b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)) if body else b"0\r\n\r\n"
    return fetched.body


def build_warc(exchanges: list[Fetched], *, warcinfo: dict[str, str], filename: str | None = None) -> bytes:
    """A gzipped WARC 1.1 file: a warcinfo record, then a request and a response record per exchange.

    Response records hold the status line, the raw headers and the raw body (still content-encoded) of the final
    hop, with WARC-Target-URI = ``final_url``, WARC-Date = ``fetched_at`` and WARC-IP-Address where known; each
    request record names its response in WARC-Concurrent-To. warcio adds the block and payload digests.
    """
    out = io.BytesIO()
    writer = WARCWriter(out, gzip=True, warc_version="1.1")
    writer.write_record(writer.create_warcinfo_record(filename, warcinfo))
    for fetched in exchanges:
        date = _warc_date(fetched)
        resp_headers = {"WARC-Date": date}
        if fetched.peer_ip:
            resp_headers["WARC-IP-Address"] = fetched.peer_ip
        payload = _wire_payload(fetched)
        response = writer.create_warc_record(
            fetched.final_url, "response", payload=io.BytesIO(payload), length=len(payload),
            warc_headers_dict=resp_headers,
            http_headers=_RawStatusAndHeaders(f"{fetched.status} {fetched.reason}", list(fetched.headers),
                                              protocol=fetched.http_version))
        target = URL(fetched.final_url).raw_path_qs or "/"
        request = writer.create_warc_record(
            fetched.final_url, "request", warc_headers_dict={"WARC-Date": date},
            http_headers=_RawStatusAndHeaders(f"GET {target} {fetched.http_version}", list(fetched.request_headers),
                                              is_http_request=True))
        request.rec_headers.add_header("WARC-Concurrent-To", response.rec_headers.get_header("WARC-Record-ID"))
        writer.write_record(request)
        writer.write_record(response)
    return out.getvalue()
