"""Render mode: a page whose posts only exist after its scripts run goes again through headless Chromium.

Every request the browser makes goes through the guard proxy (jiwoom/shared/guard_proxy.py: web.py's address
checks and the job's allow-list, per request), so a page's script cannot reach a private address. Selenium blocks,
so each render runs in a thread, at most `browsers` at once; browsers are reused and replaced when they die.

One render: load (page-load timeout), wait for the DOM to settle, then scroll for infinite lists (scroll to the
bottom, wait for new content or a short idle, stop when nothing new came or at `max_scrolls`), then take each
iframe's document (a player's <video>, its og:video) into the page where the iframe is, all within `total_s`; the
DOM taken is capped at `max_dom_bytes`. The result goes to extract_page like any fetched page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urljoin

import lxml.html
from lxml import etree
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.common.by import By

from jiwoom.shared.browser import BrowserError, launch, quit_driver
from jiwoom.shared.guard_proxy import GuardProxy
from jiwoom.shared.web import FetchPolicy

log = logging.getLogger(__name__)
RENDER_MODES = ("auto", "always", "never")
FRAME_ATTR = "data-jiwoom-frame"
_POLL_S = 0.1
# What changes when content arrives: the number of elements and the page's height.
_SIGNATURE_JS = "const r = document.scrollingElement || document.documentElement;" \
                " return [document.getElementsByTagName('*').length, r ? r.scrollHeight : 0];"
_SCROLL_JS = "const r = document.scrollingElement || document.documentElement; window.scrollTo(0, r.scrollHeight);"


@dataclass(frozen=True)
class RenderLimits:
    browsers: int = 2  # headless Chromiums at once
    page_load_timeout_s: float = 15.0
    total_s: float = 30.0  # one render: load, settling, scrolls, frames
    max_dom_bytes: int = 5 * 1024 * 1024  # of the serialised DOM taken (each frame's too)
    max_scrolls: int = 10
    idle_s: float = 0.6  # no DOM change for this long: the page has settled
    max_frames: int = 10


@dataclass(frozen=True)
class Rendered:
    url: str  # where the browser ended up
    html: str  # the DOM after scripts and scrolling, iframes' documents inlined
    scrolls: int  # scrolls that brought new content
    frames: int  # iframes taken in
    seconds: float


class RenderError(Exception):
    """The page could not be rendered (the browser failed); the plain fetch's result stands."""


class Renderer:
    """``async with Renderer(policy, limits) as r: rendered = await r.render(url)``; the proxy is ``r.proxy``."""

    def __init__(self, policy: FetchPolicy, limits: RenderLimits | None = None, user_agent: str = "") -> None:
        self.limits = limits or RenderLimits()
        self.proxy = GuardProxy(policy)
        self.user_agent = user_agent
        self._slots = asyncio.Semaphore(self.limits.browsers)
        self._idle: list[tuple[webdriver.Chrome, str]] = []
        self._all: list[tuple[webdriver.Chrome, str]] = []

    async def __aenter__(self) -> Renderer:
        await self.proxy.start()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        browsers, self._all, self._idle = self._all, [], []
        await asyncio.gather(*(asyncio.to_thread(quit_driver, d, p) for d, p in browsers), return_exceptions=True)
        await self.proxy.close()

    async def render(self, url: str) -> Rendered:
        """Render `url` (raises RenderError when the browser fails)."""
        async with self._slots:
            browser = self._idle.pop() if self._idle else None
            try:
                if browser is None:
                    browser = await asyncio.to_thread(launch, proxy_port=self.proxy.port, user_agent=self.user_agent)
                    self._all.append(browser)
                result = await asyncio.to_thread(_render, browser[0], url, self.limits)
            except (BrowserError, WebDriverException, OSError) as error:
                if browser is not None:  # a failed browser may be wedged: start a fresh one next time
                    self._all = [b for b in self._all if b is not browser]
                    await asyncio.to_thread(quit_driver, *browser)
                raise RenderError(f"render of {url} failed: {error}") from error
            except BaseException:
                if browser is not None:  # cancelled mid-render: the thread still drives it, so it is not reused
                    self._all = [b for b in self._all if b is not browser]
                    asyncio.get_running_loop().run_in_executor(None, quit_driver, *browser)
                raise
            self._idle.append(browser)
            return result


def _render(driver: webdriver.Chrome, url: str, limits: RenderLimits) -> Rendered:
    started = time.monotonic()
    deadline = started + limits.total_s
    driver.set_page_load_timeout(max(0.5, min(limits.page_load_timeout_s, limits.total_s * 0.8)))
    driver.set_script_timeout(5.0)
    try:
        driver.get(url)
    except TimeoutException:
        driver.execute_script("window.stop();")  # take what has rendered
    signature = _settle(driver, limits.idle_s, deadline)
    scrolls = 0
    while scrolls < limits.max_scrolls and time.monotonic() < deadline:
        driver.execute_script(_SCROLL_JS)
        after = _settle(driver, limits.idle_s, deadline)
        if after == signature:
            break  # the scroll brought nothing new: the end of the list
        signature = after
        scrolls += 1
    frames: dict[str, tuple[str, str]] = {}
    for index, element in enumerate(driver.find_elements(By.CSS_SELECTOR, "iframe, frame")[:limits.max_frames]):
        if time.monotonic() >= deadline:
            break
        try:
            driver.execute_script("arguments[0].setAttribute(arguments[1], arguments[2]);", element, FRAME_ATTR,
                                  str(index))
            driver.switch_to.frame(element)
            frames[str(index)] = (str(driver.execute_script("return document.URL;")),
                                  driver.page_source[:limits.max_dom_bytes])
        except WebDriverException as error:  # a frame gone or cross-process trouble: the page still counts
            log.info("frame %d of %s not taken: %s", index, url, error.msg or error)
        finally:
            driver.switch_to.default_content()
    html = driver.page_source[:limits.max_dom_bytes]
    final_url = driver.current_url
    driver.get("about:blank")  # the next render starts clean (timers and sockets of this page end)
    return Rendered(url=final_url, html=inline_frames(html, frames, limits.max_dom_bytes) if frames else html,
                    scrolls=scrolls, frames=len(frames), seconds=time.monotonic() - started)


def _settle(driver: webdriver.Chrome, idle_s: float, deadline: float) -> list[int]:
    """Wait until the DOM has not changed for idle_s (or the deadline); its signature then."""
    signature = driver.execute_script(_SIGNATURE_JS)
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < idle_s and time.monotonic() < deadline:
        time.sleep(_POLL_S)
        now = driver.execute_script(_SIGNATURE_JS)
        if now != signature:
            signature, quiet_since = now, time.monotonic()
    return list(signature or [])


def inline_frames(html: str, frames: dict[str, tuple[str, str]], max_bytes: int) -> str:
    """The page with each marked iframe's document (links made absolute against the frame's URL) inserted after
    the iframe, and the frame's og:video/og:image as <video>/<img>, so a player's media are the post's media."""
    parser = lxml.html.HTMLParser(remove_comments=True, no_network=True)
    try:
        doc = lxml.html.document_fromstring(html, parser=parser)
    except (etree.ParserError, ValueError):
        return html
    for element in doc.iter("iframe", "frame"):
        taken = frames.get(element.get(FRAME_ATTR) or "")
        if taken is None or element.getparent() is None:
            continue
        frame_url, frame_html = taken
        try:
            frame_doc = lxml.html.document_fromstring(frame_html, parser=parser)
        except (etree.ParserError, ValueError):
            continue
        frame_doc.make_links_absolute(frame_url, resolve_base_href=True, handle_failures="discard")
        holder = lxml.html.Element("div", {"data-jiwoom-frame-src": frame_url})
        for meta in frame_doc.iter("meta"):
            key = (meta.get("property") or meta.get("name") or "").strip().lower()
            content = urljoin(frame_url, (meta.get("content") or "").strip())
            if key in ("og:video", "og:video:url", "og:video:secure_url") and meta.get("content"):
                holder.append(lxml.html.Element("video", {"src": content}))
            elif key in ("og:image", "og:image:url") and meta.get("content"):
                holder.append(lxml.html.Element("img", {"src": content}))
        body = frame_doc.find("body")
        for child in list(body if body is not None else []):
            holder.append(child)
        element.addnext(holder)
    out = lxml.html.tostring(doc, encoding="unicode")
    return out[:max_bytes]
