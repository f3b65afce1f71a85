"""Posts, media and links from one crawled page, for Korean boards (gnuboard, XE/Rhymix) and English forums
(phpBB, Discourse, XenForo) without per-site code.

Generic heuristics come first; a site whose markup defeats them gets `SiteSelectors` in the crawl config. Pages are
hostile input: the parsed bytes, media and link counts are capped, and garbage gives an empty Page, never an error.
"""

import codecs
import json
import logging
import posixpath
import re
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from datetime import datetime, tzinfo
from functools import lru_cache
from urllib.parse import parse_qsl, urldefrag, urljoin, urlsplit

import lxml.html
from lxml import etree

from ingest.times import parse_post_time
from jiwoom.shared.times import KST

log = logging.getLogger(__name__)

MAX_BYTES = 5 * 1024 * 1024  # a board page is well under this; more is a trap or a dump not worth parsing
MAX_MEDIA = 200  # per list per post: a post with more is spam or a gallery dump, the first ones suffice
MAX_LINKS = 2000  # per list per page
MAX_POSTS = 500
MAX_TEXT = 100_000  # characters of post text kept
MAX_SHORT = 300  # title, author and time strings longer than this are not what we are after
MAX_URL = 2048
MAX_MEDIA_ELEMENTS = 20 * MAX_MEDIA  # media-bearing elements looked at per post: a post with more is a dump
MEDIA_TAGS = frozenset({"img", "source", "video", "a", "area", "embed", "object", "iframe"})

VIDEO_EXTENSIONS = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp"})
FILE_EXTENSIONS = frozenset({".zip", ".rar", ".7z", ".alz", ".egg"})  # .alz/.egg: Korean archivers (ALZip, Bandizip)
MEDIA_EXTENSIONS = VIDEO_EXTENSIONS | IMAGE_EXTENSIONS | FILE_EXTENSIONS
SCRIPT_EXTENSIONS = frozenset({"", ".php", ".asp", ".aspx", ".jsp", ".do", ".cgi"})  # downloads named only in text

# Page chrome, not content: matching it wastes the matcher's time on every page of a site. An image is skipped when
# its width or height attribute (or inline style) is at most UI_IMAGE_MAX_PX (icons, emoticons, 1x1 trackers), its
# URL path contains one of UI_IMAGE_PATH_MARKERS (skin/theme assets, emoticon sets, avatars repeated on every forum
# post), or its class contains one of UI_IMAGE_CLASS_MARKERS (phpBB "smilies", Discourse "emoji").
UI_IMAGE_MAX_PX = 32
UI_IMAGE_PATH_MARKERS = (
    "/icon", "/emoticon", "/emoji", "/emot/", "/smilies/", "/smiley", "/skin/", "/theme/", "sprite", "/avatar",
    "spacer.gif", "blank.gif", "pixel.gif", "/btn_", "/bullet", "/no_profile", "/member_image/", "/profile_image",
)  # fmt: skip
UI_IMAGE_CLASS_MARKERS = ("icon", "emoticon", "emoji", "smilies", "smiley", "sprite", "avatar")

# Tried in order; the first that matches wins. CSS as in SiteSelectors (see _css_to_xpath for the subset).
CONTENT_SELECTORS = (
    "[itemprop=articleBody]", "#bo_v_con", ".xe_content", ".rd_body", ".post-content", ".message-body",
    ".post-body", ".entry-content", ".article-content", ".view_content", ".view-content", "#article_body",
)  # fmt: skip
GENERIC_CONTENT_SELECTORS = ("article",)  # used only when the element doesn't hold a list of posts
BODY_SELECTORS = (  # a body inside one post of a thread
    "[itemprop=text]", "[itemprop=articleBody]", ".bbWrapper", ".message-body", ".cooked", ".content",
    ".post-content", ".post-body", ".post-text", ".postbody", ".entry-content", ".message-content",
)  # fmt: skip
TITLE_SELECTORS = (
    "[itemprop=headline]", ".bo_v_tit", "#bo_v_title", ".entry-title", ".post-title", ".topic-title",
    ".thread-title", ".p-title-value", ".rd_hd h1",
)  # fmt: skip
AUTHOR_SELECTORS = (
    "[itemprop=author]", "[rel~=author]", ".sv_member", ".username", ".username-coloured", ".nickname", ".nick",
    "[class*=member_]", ".writer", ".post-author", ".author", ".member", ".poster", ".name", ".user",
)  # fmt: skip
TIME_SELECTORS = (  # tried together: the first match in document order wins
    "time", "[itemprop=datePublished]", "[data-time]", "[data-timestamp]", "[class*=date]", "[class*=time]",
)  # fmt: skip
AUTHOR_OR_TIME = ", ".join(AUTHOR_SELECTORS + TIME_SELECTORS)
POST_CLASSES = frozenset({"post", "message", "crawler-post", "topic-post", "forum-post", "forumpost"})
POST_ID_RE = re.compile(r"(?:p|post|post[-_]|js-post-|postid|msg|message[-_]?|entry[-_]?)\d+", re.I)

# Links to single posts on common engines; the query and path are matched lowercased.
POST_URL_RE = re.compile(
    r"""[?&](?:wr_id|document_srl|no|idx|num|seq|article_?id|nid|post_?id|topic_?id|thread_?id|tid|t)=\d+
      | /(?:board|boards|bbs|forum|forums|community|cafe|gallery)/(?:[^/?]+/)*\d+(?:$|[/?.])
      | /(?:thread|threads|t|topic|topics|post|posts|article|articles|view|read|discussion|d)/[^?]*\d
      | /(?:viewtopic|showthread|showtopic)\.\w+\?
      | ^/[\w.-]+/\d{3,}/?(?:$|\?)""",
    re.X,
)
# Links that act on a post (write, edit, reply, vote, download) or leave through a redirector (gnuboard link.php,
# /out/123), or lead to members and tags: not posts, whatever their ids look like.
ACTION_URL_RE = re.compile(
    r"/(?:write|delete|password|login|logout|register|posting|report|scrap|good|nogood|member|download|link)\w*\.php"
    r"|[?&](?:w|mode|act)="
    r"|^/(?:out|go|redirect|link|jump|click|ads?|banners?|members?|users?|u|profiles?|tags?|category)/"
)
PAGE_PARAMS = ("page", "pg", "cpage", "pageno", "page_no", "pagenum", "paged", "start")
PAGE_PATH_RE = re.compile(r"(?:^|/)page[-/]?(\d+)(?:/|$|\.)")
# Class, id or aria-label fragments of pagination blocks (gnuboard pg_wrap, Rhymix bd_pg, XenForo pageNav, ...).
PAGINATION_MARKERS = ("paginat", "paging", "pager", "pagenav", "page-nav", "page_nav", "pg_", "bd_pg", "pagelist")
PAGINATION_XPATH = "//*[@class or @id or @aria-label][{}]".format(" or ".join(
    f"contains(translate(concat(@class, ' ', @id, ' ', @aria-label), 'ABCDEFGHIJKLMNOPQRSTUVWXYZ',"
    f" 'abcdefghijklmnopqrstuvwxyz'), '{marker}')" for marker in PAGINATION_MARKERS
))
MAX_ANCHORS = 10 * MAX_LINKS  # URLs resolved per page (pagination aside): a page with more is a link farm
NEXT_TEXTS = frozenset({
    "다음", "다음 페이지", "다음페이지", "next", "next page", "next ›", "next »", "›", "»", ">", ">>"
})
NEXT_LABELS = frozenset({"next", "next page", "다음", "다음 페이지"})  # aria-label of icon-only next links

CHROME_TAGS = frozenset({"header", "nav", "footer", "aside"})
CHROME_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary"})
CHROME_IDS = frozenset({"hd", "ft", "header", "footer", "gnb", "lnb", "snb", "nav", "sidebar", "aside"})
# Inside a post but not its content: signatures repeat on every post, profiles carry avatars.
POST_CHROME_MARKERS = ("signature", "postprofile", "message-user", "avatar", "pf_img", "profile_img", "profile-img")
DROPPED_TAGS = ("script", "style", "noscript", "template", "svg")
HIDDEN_CLASSES = frozenset({"sound_only", "sr-only", "screen-reader-text", "visually-hidden", "blind"})
BLOCK_TAGS = frozenset({
    "p", "div", "br", "li", "tr", "td", "th", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "pre", "section",
    "article", "table", "ul", "ol", "dl", "dt", "dd", "hr", "figure", "figcaption",
})  # fmt: skip
LAZY_SRC_ATTRS = ("data-src", "data-original", "data-lazy-src", "data-lazy", "data-url", "data-echo")
SRCSET_ATTRS = ("srcset", "data-srcset", "data-lazy-srcset")

# Control characters (newline and tab aside), bidi overrides and zero-width characters: they hide or reorder text.
_DROP_CHARS = {c: None for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), *range(0x7F, 0xA0)]}
_DROP_CHARS.update({c: None for c in [0x061C, 0x200B, 0x200E, 0x200F, 0x2060, 0xFEFF, *range(0x202A, 0x202F)]})
_DROP_CHARS.update({c: None for c in range(0x2066, 0x206A)})
_DROP_CHARS.update({0x09: " ", 0x0D: "\n"})
_CHARSET_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([\w.:-]{1,40})""", re.I)
_CSS_URL_RE = re.compile(r"""url\(\s*(['"]?)([^'")\s]{1,2048})\1\s*\)""")
_DATEISH_RE = re.compile(
    r"\d{2,4}\s*[./-]\s*\d{1,2}\s*[./-]\s*\d{1,2}|\d{1,2}:\d{2}|전|ago|어제|오늘|그제|yesterday|today|방금|just now"
    r"|\d{1,2}\s*월\s*\d{1,2}\s*일|[a-z]{3,9}\.? \d{1,2},? \d{4}",
    re.I,
)
# A label before the name ("작성자 : 홍길동", "by alice"); a name that merely is such a word stays.
_AUTHOR_PREFIX_RE = re.compile(r"^(?:posted by|by|작성자|글쓴이|닉네임|writer|author)(?:\s*[:：]\s*|\s+)(?=\S)", re.I)
_TITLE_SEPARATORS = (" | ", " :: ", " - ", " – ", " — ", " > ", " : ")


@dataclass
class Post:
    url: str
    title: str = ""
    author: str = ""
    posted_at: datetime | None = None  # aware UTC
    posted_text: str = ""  # the string posted_at was read from: evidence keeps what the page said
    text: str = ""
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    extra: dict[str, str] = field(default_factory=dict)  # platform metadata (views, channel title): sent as is


@dataclass
class Page:
    url: str
    posts: list[Post] = field(default_factory=list)
    post_links: list[str] = field(default_factory=list)
    next_pages: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)  # every same-site page link, for discovery
    title: str = ""


@dataclass(frozen=True)
class SiteSelectors:
    """Per-site selectors from the crawl config, each overriding one heuristic when set.

    A selector is CSS (tags, #id, .class, [attr], [attr=v] with ~= ^= $= *= |=, descendant, >, + and ~
    combinators, commas; no pseudo-classes, since cssselect isn't installed) or, starting with "/", "./" or "(",
    XPath. `post` matches each post of a thread; title, author, time and content are then looked up inside each.
    An invalid selector raises ValueError here, when the config is loaded, not in the middle of a crawl.
    """

    post_link: str | None = None
    next_page: str | None = None
    title: str | None = None
    author: str | None = None
    time: str | None = None
    content: str | None = None
    post: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                _compile(value)


def extract_page(
    html: bytes | str,
    url: str,
    now: datetime,
    selectors: SiteSelectors | None = None,
    *,
    max_bytes: int = MAX_BYTES,
    tz: tzinfo = KST,
) -> Page:
    """Posts (title, author, time, text, media), post links, next pages and same-site links of one page.

    `now` anchors relative times ("3시간 전"); `tz` is the zone of the page's wall-clock times (KST for Korean
    boards). Bytes are decoded by BOM, <meta charset>, UTF-8, then CP949; callers knowing the HTTP charset should
    pass str. Never raises: garbage gives an empty Page.
    """
    page_url = urldefrag(url.strip())[0]
    try:
        return _extract(html, page_url, now, selectors or SiteSelectors(), max_bytes, tz)
    except Exception:  # a hostile page must end its own branch of the crawl, not the crawler
        log.warning("extraction failed for %s", page_url, exc_info=True)
        return Page(url=page_url)


@dataclass
class _Ctx:
    url: str
    base: str
    site: str
    now: datetime
    tz: tzinfo
    selectors: SiteSelectors
    meta: dict[str, list[str]]
    ld: "_LinkedData" = field(default_factory=lambda: _LinkedData())


def _extract(html: bytes | str, url: str, now: datetime, selectors: SiteSelectors, max_bytes: int, tz: tzinfo) -> Page:
    text = _decode(html[:max_bytes]) if isinstance(html, bytes) else html[:max_bytes]
    doc = _parse(text)
    if doc is None:
        return Page(url=url)
    title_el = doc.find(".//title")
    page_title = _clean(title_el.text_content()) if title_el is not None else ""
    meta = _meta(doc)
    base_el = doc.find(".//base[@href]")
    base = url
    if base_el is not None and (absolute := _absolute(url, base_el.get("href", ""))):
        base = absolute
    ld = _linked_data(doc, base)  # before _prune, which drops every <script>
    _prune(doc)
    ctx = _Ctx(url=url, base=base, site=_site(url), now=now, tz=tz, selectors=selectors, meta=meta, ld=ld)
    body = doc.find("body")
    root = body if body is not None else doc
    post_links, next_pages, links = _links(doc, ctx)  # doc, not body: <link rel=next> lives in <head>
    posts = _posts(root, ctx)
    return Page(
        url=url,
        posts=posts[:MAX_POSTS],
        post_links=post_links,
        next_pages=next_pages,
        links=links,
        title=page_title or _first(meta.get("og:title", [])),
    )


# --- decoding and parsing ---------------------------------------------------------------------------------------


def _decode(data: bytes) -> str:
    for bom, encoding in ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"),
                          (codecs.BOM_UTF16_BE, "utf-16-be")):  # fmt: skip
        if data.startswith(bom):
            return data[len(bom) :].decode(encoding, "replace")
    declared = None
    if m := _CHARSET_RE.search(data[:4096]):
        declared = _codec(m[1].decode("ascii", "replace"))
    # Old Korean boards declare EUC-KR and send CP949, or declare UTF-8 and send CP949: try strictly, in order.
    for encoding in dict.fromkeys(e for e in (declared, "utf-8", "cp949") if e):
        if (decoded := _decode_strict(data, encoding)) is not None:
            return decoded
    return data.decode(declared or "utf-8", "replace")


def _codec(label: str) -> str | None:
    label = label.strip().lower()
    if label in ("euc-kr", "euckr", "ks_c_5601-1987", "ks_c_5601", "x-windows-949", "windows-949", "uhc"):
        return "cp949"  # the superset browsers actually use for these labels
    if label in ("iso-8859-1", "latin1", "latin-1", "us-ascii", "ascii"):
        return "cp1252"  # likewise, per the WHATWG encoding standard
    try:
        return codecs.lookup(label).name
    except LookupError:
        return None


def _decode_strict(data: bytes, encoding: str) -> str | None:
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        # The cap at max_bytes can cut a multibyte character in two: that is truncation, not a wrong encoding.
        if error.start >= len(data) - 4:
            return data[: error.start].decode(encoding, "replace")
        return None
    except LookupError:
        return None


def _parse(text: str) -> lxml.html.HtmlElement | None:
    text = text.translate(_DROP_CHARS)
    if not text.strip():
        return None
    # Parse UTF-8 bytes with the encoding fixed, so a <meta charset> or <?xml encoding?> in the text can't override it.
    parser = lxml.html.HTMLParser(encoding="utf-8", remove_comments=True, remove_pis=True, no_network=True)
    try:
        doc = lxml.html.document_fromstring(text.encode("utf-8", "replace"), parser=parser)
    except (etree.ParserError, etree.XMLSyntaxError, ValueError):
        return None
    return doc if isinstance(doc, lxml.html.HtmlElement) else None


def _prune(doc: lxml.html.HtmlElement) -> None:
    doomed = [el for el in doc.iter(*DROPPED_TAGS)]
    doomed += [el for el in doc.iter(etree.Element) if HIDDEN_CLASSES.intersection(_classes(el))]
    for el in doomed:
        if el.getparent() is not None:
            el.drop_tree()


def _meta(doc: lxml.html.HtmlElement) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for el in doc.iter("meta"):
        key = (el.get("property") or el.get("name") or el.get("itemprop") or "").strip().lower()
        content = el.get("content")
        if key and content:
            found.setdefault(key, []).append(content.strip())
    return found


# --- selectors -------------------------------------------------------------------------------------------------

_CSS_PART_RE = re.compile(
    r"""(?P<comb>\s*[>+~]\s*|\s+)
      | (?P<tag>\*|[a-zA-Z][\w-]*)
      | \#(?P<id>[\w-]+)
      | \.(?P<cls>[\w-]+)
      | \[\s*(?P<attr>[\w:.-]+)\s*(?:(?P<op>[~^$*|]?=)\s*(?P<val>"[^"]*"|'[^']*'|[^\]\s"']+)\s*)?\]""",
    re.X,
)
_AXES = {"": "/descendant::", ">": "/", "+": "/following-sibling::*[1]/self::", "~": "/following-sibling::"}


@lru_cache(maxsize=1024)
def _compile(selector: str) -> etree.XPath:
    selector = selector.strip()
    if not selector:
        raise ValueError("empty selector")
    expression = selector if selector.startswith(("/", "./", "(")) else _css_to_xpath(selector)
    try:
        return etree.XPath(expression)
    except etree.XPathError as error:
        raise ValueError(f"invalid selector {selector!r}: {error}") from error


def _css_to_xpath(css: str) -> str:
    """The CSS subset in SiteSelectors' docstring as XPath, matching the context node and its descendants."""
    groups = []
    for group in re.split(r",(?![^\[]*\])", css):
        group = group.strip()
        if not group:
            raise ValueError(f"empty group in selector {css!r}")
        path, axis, tag, predicates, pos = "", "descendant-or-self::", None, [], 0
        while pos < len(group):
            m = _CSS_PART_RE.match(group, pos)
            if m is None:
                raise ValueError(f"unsupported CSS in selector {css!r} at {group[pos:]!r}")
            pos = m.end()
            if m["comb"] is not None:
                if tag is None and not predicates:
                    raise ValueError(f"dangling combinator in selector {css!r}")
                path += axis + (tag or "*") + "".join(predicates)
                axis, tag, predicates = _AXES[m["comb"].strip()], None, []
            elif m["tag"] is not None:
                if tag is not None or predicates:
                    raise ValueError(f"misplaced tag in selector {css!r}")
                tag = m["tag"].lower()
            elif m["id"] is not None:
                predicates.append(f"[@id={_literal(m['id'])}]")
            elif m["cls"] is not None:
                padded = _literal(f" {m['cls']} ")
                # [@class] first: libxml2 then skips the string building on the many elements without a class.
                predicates.append(f"[@class][contains(concat(' ', normalize-space(@class), ' '), {padded})]")
            else:
                predicates.append(_attribute_predicate(m["attr"], m["op"], m["val"]))
        if tag is None and not predicates:
            raise ValueError(f"dangling combinator in selector {css!r}")
        groups.append(path + axis + (tag or "*") + "".join(predicates))
    return " | ".join(groups)


def _attribute_predicate(name: str, op: str | None, raw: str | None) -> str:
    attr = f"@{name}"
    if op is None or raw is None:
        return f"[{attr}]"
    value = raw[1:-1] if raw[:1] in "\"'" else raw
    v = _literal(value)
    return f"[{attr}]" + {
        "=": f"[{attr}={v}]",
        "~=": f"[contains(concat(' ', normalize-space({attr}), ' '), {_literal(f' {value} ')})]",
        "^=": f"[starts-with({attr}, {v})]",
        "$=": f"[substring({attr}, string-length({attr}) - string-length({v}) + 1) = {v}]",
        "*=": f"[contains({attr}, {v})]",
        "|=": f"[{attr}={v} or starts-with({attr}, {_literal(value + '-')})]",
    }[op]


def _literal(value: str) -> str:
    if "'" not in value:
        return f"'{value}'"
    if '"' not in value:
        return f'"{value}"'
    return "concat(" + ', "\'", '.join(f"'{part}'" for part in value.split("'")) + ")"


def _select(selector: str, root: etree._Element) -> list[etree._Element | str]:
    """Elements (and strings, for XPath ending in @attr or text()) the selector finds under root, in order."""
    result = _compile(selector)(root)
    if isinstance(result, str):
        return [result]
    if not isinstance(result, list):
        return []
    return [r for r in result if isinstance(r, str) or (isinstance(r, etree._Element) and isinstance(r.tag, str))]


def _elements(selector: str, root: etree._Element) -> list[etree._Element]:
    return [r for r in _select(selector, root) if not isinstance(r, str)]


def _first_of(
    selectors: Iterable[str], root: etree._Element, accept: Callable[[etree._Element], bool]
) -> Iterator[etree._Element]:
    """Elements matching the selectors under root, selector by selector (priority order), those accept takes."""
    for selector in selectors:
        for el in _elements(selector, root):
            if accept(el):
                yield el


# --- URLs ------------------------------------------------------------------------------------------------------


def _absolute(base: str, href: str | None) -> str | None:
    """href resolved against base, without fragment; None unless http(s) with a host."""
    if not href:
        return None
    href = href.strip().translate({9: None, 10: None, 13: None})  # browsers ignore these inside URLs
    if not href or len(href) > MAX_URL:
        return None
    try:
        absolute = urldefrag(urljoin(base, href))[0]
        parts = urlsplit(absolute)
    except ValueError:  # "http://[::1" and other unparseable hosts
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return absolute.replace(" ", "%20")


def _site(url: str) -> str:
    try:
        host = (urlsplit(url).hostname or "").lower()
    except ValueError:
        return ""
    for prefix in ("www.", "m."):  # the desktop and mobile versions of a Korean board are one site
        if host.startswith(prefix):
            host = host[len(prefix) :]
    return host


def _extension(url: str) -> str:
    return posixpath.splitext(urlsplit(url).path.lower())[1]


def _looks_like_post(url: str) -> bool:
    parts = urlsplit(url)
    target = parts.path.lower() + ("?" + parts.query.lower() if parts.query else "")
    return bool(POST_URL_RE.search(target)) and not ACTION_URL_RE.search(target)


def _page_number(url: str) -> int | None:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    for name in PAGE_PARAMS:
        if (value := query.get(name, "")).isdigit():
            return int(value)
    if m := PAGE_PATH_RE.search(parts.path.lower()):
        return int(m[1])
    return None


# --- links -----------------------------------------------------------------------------------------------------


def _links(root: etree._Element, ctx: _Ctx) -> tuple[list[str], list[str], list[str]]:
    links: dict[str, None] = {}
    post_links: dict[str, None] = {}
    next_pages: dict[str, None] = {}
    current = _page_number(ctx.url) or 1
    paginated = {a for container in _elements(PAGINATION_XPATH, root) for a in container.iter("a")}
    resolved = 0
    for el in root.iter("a", "area", "link"):
        rel = (el.get("rel") or "").lower().split()
        text = "" if el.tag == "link" else _clean(el.text_content()[:100]).lower()
        maybe_next = not ctx.selectors.next_page and (
            "next" in rel or el in paginated or text in NEXT_TEXTS or _aria(el) in NEXT_LABELS
        )
        full = resolved >= MAX_ANCHORS or (len(links) >= MAX_LINKS and len(post_links) >= MAX_LINKS)
        if full and not maybe_next:
            continue  # only pagination is still worth resolving a URL for
        resolved += 1
        href = _absolute(ctx.base, el.get("href"))
        if href is None or _site(href) != ctx.site or href == ctx.url:
            continue
        if el.tag != "link":
            if _extension(href) not in MEDIA_EXTENSIONS and len(links) < MAX_LINKS:
                links[href] = None
            if not ctx.selectors.post_link and _looks_like_post(href) and len(post_links) < MAX_LINKS:
                post_links[href] = None
        if maybe_next and len(next_pages) < MAX_LINKS and _is_next(el, href, rel, text, el in paginated, current):
            next_pages[href] = None
    if ctx.selectors.post_link:
        post_links = dict.fromkeys(_selected_urls(ctx.selectors.post_link, root, ctx))
    if ctx.selectors.next_page:
        next_pages = dict.fromkeys(_selected_urls(ctx.selectors.next_page, root, ctx))
    return list(post_links)[:MAX_LINKS], list(next_pages)[:MAX_LINKS], list(links)


def _is_next(el: etree._Element, href: str, rel: list[str], text: str, paginated: bool, current: int) -> bool:
    if "next" in rel or text in NEXT_TEXTS or _aria(el) in NEXT_LABELS:
        return True
    if not paginated:
        return False
    number = _page_number(href)
    if number is None and text.isdigit() and not _looks_like_post(href):
        number = int(text)
    return (number is not None and number > current) or any("next" in c for c in _classes(el))


def _aria(el: etree._Element) -> str:
    return (el.get("aria-label") or "").strip().lower()


def _selected_urls(selector: str, root: etree._Element, ctx: _Ctx) -> Iterator[str]:
    count = 0
    for found in _select(selector, root):
        if isinstance(found, str):
            candidates = [found]
        elif found.get("href") is not None:
            candidates = [found.get("href")]
        else:
            candidates = [a.get("href") for a in found.iter("a")]
        for candidate in candidates:
            if (href := _absolute(ctx.base, candidate)) and href != ctx.url:
                count += 1
                if count > MAX_LINKS:
                    return
                yield href


# --- posts -----------------------------------------------------------------------------------------------------


def _posts(root: etree._Element, ctx: _Ctx) -> list[Post]:
    sel = ctx.selectors
    if sel.post and (containers := _elements(sel.post, root)[:MAX_POSTS]):
        title = _title_element(root, None, ctx)[1]
        return [_thread_post(el, i, title, ctx) for i, el in enumerate(containers, 1)]
    content = _content(root, ctx)
    thread = _thread_containers(root)
    if len(thread) >= 2:
        title = _title_element(root, None, ctx)[1]
        posts = [_thread_post(el, i, title, ctx) for i, el in enumerate(thread, 1)]
        if content is not None and not any(_contains(el, content) for el in thread):
            # A post page whose comments are marked up like posts: the post, then its comments.
            posts.insert(0, _single_post(root, content, ctx))
        return posts
    if content is not None:
        return [_single_post(root, content, ctx)]
    # A page that describes one post or video in JSON-LD or og:video is a post page whatever its markup.
    described = ctx.ld.posting or ctx.ld.images or ctx.ld.videos or any(
        ctx.meta.get(k) for k in ("og:video", "og:video:url", "og:video:secure_url"))
    if _looks_like_post(ctx.url) or "article" in ctx.meta.get("og:type", []) or described:
        guess = _largest_block(root)
        if guess is None and described:
            guess = root
        return [] if guess is None else [_single_post(root, guess, ctx, guessed=True)]
    return []


def _content(root: etree._Element, ctx: _Ctx) -> etree._Element | None:
    if ctx.selectors.content:
        return next(iter(_elements(ctx.selectors.content, root)), None)
    for el in _first_of(CONTENT_SELECTORS, root, lambda el: not _in_chrome(el)):
        return el
    for el in _first_of(GENERIC_CONTENT_SELECTORS, root, lambda el: not _in_chrome(el)):
        # An <article> around a list of posts is a list page, not a post.
        post_links = sum(1 for a in el.iter("a") if (h := _absolute(ctx.base, a.get("href"))) and _looks_like_post(h))
        return el if post_links < 5 else None
    return None


def _thread_containers(root: etree._Element) -> list[etree._Element]:
    candidates = [
        el
        for el in root.iter(etree.Element)
        if el.tag == "article"
        or POST_CLASSES.intersection(_classes(el))
        or POST_ID_RE.fullmatch(el.get("id") or "")
        or "DiscussionForumPosting" in (el.get("itemtype") or "")
    ]
    chosen = set(candidates)
    outermost = [el for el in candidates if not any(a in chosen for a in el.iterancestors())][: MAX_POSTS * 2]
    # A thread's posts are siblings, each with an author or a time; a sidebar's "recent posts" rarely have them.
    groups: dict[etree._Element, list[etree._Element]] = {}
    for el in outermost:
        if _in_chrome(el):
            continue
        if el.get("data-author") or _elements(AUTHOR_OR_TIME, el):
            groups.setdefault(el.getparent(), []).append(el)
    best = max(groups.values(), key=len, default=[])
    return best[:MAX_POSTS] if len(best) >= 2 else []


def _thread_post(container: etree._Element, index: int, title: str, ctx: _Ctx) -> Post:
    body = None
    if ctx.selectors.content:
        body = next(iter(_elements(ctx.selectors.content, container)), None)
    if body is None:
        body = next(_first_of(BODY_SELECTORS, container, lambda el: el is not container), None)
    own_title = _selected_text(ctx.selectors.title, container) if ctx.selectors.title else ""
    posted_at, posted_text = _time(container, ctx)
    if posted_at is None and not ctx.selectors.time:  # phpBB without <time>: "by alice » Sat Nov 21, 2026 2:03 am"
        posted_at, posted_text = _time_near(container, container, body, ctx, inside=True)
    element_id = (container.get("id") or "").strip()
    # The element's own id is the anchor a browser jumps to; without one, the position keeps post URLs distinct.
    anchor = element_id if element_id and re.fullmatch(r"[\w:.-]{1,100}", element_id) else f"post-{index}"
    images, videos, files = _media(container, ctx, _is_post_chrome)
    return Post(
        url=f"{ctx.url}#{anchor}",
        title=own_title or title,
        author=_author(container, ctx),
        posted_at=posted_at,
        posted_text=posted_text,
        text=_block_text(body if body is not None else container),
        images=images,
        videos=videos,
        files=files,
    )


def _single_post(root: etree._Element, content: etree._Element, ctx: _Ctx, *, guessed: bool = False) -> Post:
    post_root = _post_root(content, ctx)
    scope = post_root if post_root is not None else root
    title_el, title = _title_element(root, post_root, ctx)
    if ctx.ld.title and title_el is None and not ctx.selectors.title:  # a headline beats the <title> fallback
        title = ctx.ld.title
    author = _author(scope, ctx, skip_chrome=post_root is None)
    posted_at, posted_text = _time(scope, ctx, skip_chrome=post_root is None)
    if posted_at is None:
        for value in [*ctx.meta.get("article:published_time", []), *ctx.meta.get("datepublished", []),
                      *ctx.ld.published[:1]]:
            if (parsed := parse_post_time(value, ctx.now, ctx.tz)) is not None:
                posted_at, posted_text = parsed, value
                break
    if posted_at is None and title_el is not None:
        posted_at, posted_text = _time_near(root, title_el, content, ctx, inside=False)
    if posted_at is None and (parent := content.getparent()) is not None:
        posted_at, posted_text = _time_near(parent, parent, content, ctx, inside=True)
    if not author:
        author = _clean_author(_first(ctx.meta.get("author", []))) or ctx.ld.author
    # Media from the post (content plus attachments beside it) when we know where it is, else the page sans chrome.
    if post_root is not None:
        images, videos, files = _media(post_root, ctx, _is_post_chrome)
    elif not guessed and content.tag != "body":
        images, videos, files = _media(content, ctx, _is_post_chrome)
    else:
        images, videos, files = _media(root, ctx, lambda el: _is_chrome(el) or _is_post_chrome(el))
    og_images = [u for k in ("og:image", "og:image:url", "og:image:secure_url", "twitter:image", "twitter:image:src")
                 for v in ctx.meta.get(k, []) if (u := _absolute(ctx.base, v)) and not _ui_path(u)]  # fmt: skip
    og_videos = [u for k in ("og:video", "og:video:url", "og:video:secure_url", "twitter:player:stream")
                 for v in ctx.meta.get(k, []) if (u := _absolute(ctx.base, v))]  # fmt: skip
    return Post(
        url=ctx.url,
        title=title,
        author=author,
        posted_at=posted_at,
        posted_text=posted_text,
        text=_block_text(content),
        images=_unique(images + og_images + ctx.ld.images),
        videos=_unique(videos + og_videos + ctx.ld.videos),
        files=files,
    )


def _post_root(content: etree._Element, ctx: _Ctx) -> etree._Element | None:
    """The smallest ancestor of the content that also holds its author or time: the post, header included."""
    for depth, el in enumerate(content.iterancestors()):
        if depth >= 6 or el.tag in ("body", "html"):
            return None
        if _author(el, ctx) or _time(el, ctx)[0] is not None:
            return el
    return None


def _title_element(
    root: etree._Element, post_root: etree._Element | None, ctx: _Ctx
) -> tuple[etree._Element | None, str]:
    if ctx.selectors.title:
        for found in _select(ctx.selectors.title, root):
            if text := _short(found):
                return (None if isinstance(found, str) else found), text
    for el in _first_of(TITLE_SELECTORS, root, lambda el: not _in_chrome(el)):
        if text := _short(el):
            return el, text
    if og := _strip_site(_first(ctx.meta.get("og:title", [])), ctx):
        heading = next((h for h in root.iter("h1", "h2") if _short(h) and _short(h) in og), None)
        return heading, og
    for scope in (post_root, root):
        if scope is None:
            continue
        for el in scope.iter("h1", "h2"):
            if not _in_chrome(el) and (text := _short(el)):
                return el, text
    title_el = root.getroottree().find(".//title")
    return None, _strip_site(_clean(title_el.text_content()) if title_el is not None else "", ctx)


def _strip_site(title: str, ctx: _Ctx) -> str:
    """'Post - Board | Site' → 'Post': drops short trailing segments (site and board names) after separators."""
    for site_name in ctx.meta.get("og:site_name", []):
        for sep in _TITLE_SEPARATORS:
            if title.endswith(sep + site_name) and len(title) > len(sep + site_name):
                title = title[: -len(sep + site_name)]
    for sep in _TITLE_SEPARATORS:
        if sep in title:
            head, tail = title.rsplit(sep, 1)
            if head.strip() and len(tail) <= 30:
                title = head
    return title.strip()


def _author(scope: etree._Element, ctx: _Ctx, *, skip_chrome: bool = False) -> str:
    if ctx.selectors.author:
        for found in _select(ctx.selectors.author, scope):
            if text := _clean_author(found if isinstance(found, str) else found.get("content") or _short(found)):
                return text
        return ""
    if text := _clean_author(scope.get("data-author") or ""):  # XenForo
        return text
    accept = (lambda el: not _in_chrome(el)) if skip_chrome else (lambda el: True)
    for el in _first_of(AUTHOR_SELECTORS, scope, accept):
        value = el.get("content") or _short(el)
        if (text := _clean_author(value)) and len(text) <= 60:
            return text
    return ""


def _clean_author(value: str) -> str:
    text = _clean(value)
    text = _AUTHOR_PREFIX_RE.sub("", text).strip()
    return text if len(text) <= 60 else ""


def _time(scope: etree._Element, ctx: _Ctx, *, skip_chrome: bool = False) -> tuple[datetime | None, str]:
    if ctx.selectors.time:
        for found in _select(ctx.selectors.time, scope):
            if isinstance(found, str):
                if (parsed := parse_post_time(found, ctx.now, ctx.tz)) is not None:
                    return parsed, _clean(found)
            elif (result := _element_time(found, ctx))[0] is not None:
                return result
        return None, ""

    def accept(el: etree._Element) -> bool:
        classes = " ".join(_classes(el))
        edited = any(word in classes for word in ("update", "edit", "modif"))  # the edit time isn't the post time
        return not edited and not (skip_chrome and _in_chrome(el))

    # In document order across all the selectors (one XPath union): a post's own date comes before its comments'.
    for el in _elements(", ".join(TIME_SELECTORS), scope):
        if accept(el) and (result := _element_time(el, ctx))[0] is not None:
            return result
    return None, ""


def _element_time(el: etree._Element, ctx: _Ctx) -> tuple[datetime | None, str]:
    # Attributes first: boards print "3시간 전" and keep the exact time in datetime= or title=.
    for attr in ("datetime", "content", "data-time", "data-timestamp", "title"):
        value = _clean(el.get(attr) or "")
        if value and (parsed := parse_post_time(value, ctx.now, ctx.tz)) is not None:
            return parsed, value
    text = _short(el)
    if text and len(text) <= 100 and (parsed := parse_post_time(text, ctx.now, ctx.tz)) is not None:
        return parsed, text
    return None, ""


def _time_near(
    root: etree._Element, start: etree._Element, stop: etree._Element | None, ctx: _Ctx, *, inside: bool
) -> tuple[datetime | None, str]:
    """A date-like string in the few elements from start (after it, or from inside it) up to the post's content:
    boards without date markup print it between the title and the text. Never from the text itself, where a date
    is anything but the post's."""
    seen = -1
    for el in root.iter(etree.Element):
        if el is stop:
            break
        if el is start:
            seen = 0
            if not inside:
                continue
        if seen < 0 or (not inside and _contains(start, el)):
            continue
        seen += 1
        if seen > 40:
            break
        for raw in (el.text, el.tail):
            text = _clean(raw or "")
            short_dateish = 0 < len(text) <= 60 and _DATEISH_RE.search(text)
            if short_dateish and (parsed := parse_post_time(text, ctx.now, ctx.tz)) is not None:
                return parsed, text
    return None, ""


def _selected_text(selector: str, scope: etree._Element) -> str:
    for found in _select(selector, scope):
        if text := _short(found):
            return text
    return ""


def _largest_block(root: etree._Element) -> etree._Element | None:
    """The element with the most text of its own (its text, its inline children's, less link text): readability's
    idea in one pass, enough for boards without content markup."""
    inline = {"p", "span", "font", "b", "strong", "i", "em", "u", "br", "a", "h1", "h2", "h3", "h4", "blockquote"}
    best, best_score = None, 0
    for el in root.iter("div", "td", "section", "article", "main"):
        if _in_chrome(el):
            continue
        score = len((el.text or "").strip())
        for child in el:
            if not isinstance(child.tag, str):
                continue
            score += len((child.tail or "").strip())
            if child.tag in inline:
                length = len(child.text_content().strip())
                score += -length if child.tag == "a" else length
        if score > best_score:
            best, best_score = el, score
    return best if best_score >= 20 else None


# --- JSON-LD ---------------------------------------------------------------------------------------------------

LD_POSTING_TYPES = frozenset({"SocialMediaPosting", "BlogPosting", "Article", "NewsArticle", "Posting",
                              "DiscussionForumPosting", "VideoObject"})
LD_MAX_SCRIPTS = 20
LD_MAX_BYTES = 512 * 1024  # per script: a post's metadata is far smaller
LD_MAX_NODES = 2000


@dataclass
class _LinkedData:
    """What a page's JSON-LD says about its post: the first posting's headline, author and date, every
    VideoObject's and ImageObject's media (contentUrl; embedUrl only when it is a media file; thumbnailUrl)."""

    posting: bool = False
    title: str = ""
    author: str = ""
    published: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)
    videos: list[str] = field(default_factory=list)


def _linked_data(doc: etree._Element, base: str) -> _LinkedData:
    found = _LinkedData()
    scripts = [el for el in doc.iter("script") if (el.get("type") or "").strip().lower() == "application/ld+json"]
    nodes: list[dict[str, object]] = []
    for script in scripts[:LD_MAX_SCRIPTS]:
        raw = (script.text or "")[:LD_MAX_BYTES]
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            continue  # broken JSON-LD is common; the page's markup still counts
        stack = [data]
        while stack and len(nodes) < LD_MAX_NODES:
            item = stack.pop()
            if isinstance(item, list):
                stack.extend(reversed(item[:LD_MAX_NODES]))
            elif isinstance(item, dict):
                nodes.append(item)
                stack.extend(reversed([v for v in item.values() if isinstance(v, dict | list)]))

    def urls(value: object) -> list[str]:
        values = value if isinstance(value, list) else [value]
        out = [v if isinstance(v, str) else v.get("url") or v.get("contentUrl") for v in values[:MAX_MEDIA]
               if isinstance(v, str | dict)]
        return [u for v in out if isinstance(v, str) and (u := _absolute(base, v))]

    for node in nodes:
        kinds = node.get("@type")
        types = {t for t in (kinds if isinstance(kinds, list) else [kinds]) if isinstance(t, str)}
        if "VideoObject" in types:
            found.videos += urls(node.get("contentUrl"))
            found.videos += [u for u in urls(node.get("embedUrl")) if _extension(u) in VIDEO_EXTENSIONS]
            found.images += urls(node.get("thumbnailUrl"))
        if "ImageObject" in types:
            found.images += urls(node.get("contentUrl") or node.get("url")) + urls(node.get("thumbnailUrl"))
        if types & LD_POSTING_TYPES:
            found.posting = True
            if not found.title and isinstance(title := node.get("headline") or node.get("name"), str):
                found.title = _clean(title)[:MAX_SHORT]
            author = node.get("author")
            author = author[0] if isinstance(author, list) and author else author
            if isinstance(author, dict):
                author = author.get("name")
            if not found.author and isinstance(author, str):
                found.author = _clean_author(author)
            if isinstance(published := node.get("datePublished") or node.get("uploadDate"), str):
                found.published.append(published.strip()[:MAX_SHORT])
            found.images += [u for u in urls(node.get("image")) if _extension(u) not in VIDEO_EXTENSIONS]
    found.images, found.videos = _unique(found.images), _unique(found.videos)
    return found


# --- media -----------------------------------------------------------------------------------------------------


def _media(
    scope: etree._Element, ctx: _Ctx, skip: Callable[[etree._Element], bool]
) -> tuple[list[str], list[str], list[str]]:
    images: dict[str, None] = {}
    videos: dict[str, None] = {}
    files: dict[str, None] = {}

    def add(bucket: dict[str, None], url: str | None) -> None:
        if url and len(bucket) < MAX_MEDIA:
            bucket[url] = None

    examined = 0
    for el in _walk(scope, skip):
        tag = el.tag
        if tag in MEDIA_TAGS or "url(" in (el.get("style") or ""):  # editors style every span: count only url()s
            examined += 1
            if examined > MAX_MEDIA_ELEMENTS or min(len(images), len(videos), len(files)) >= MAX_MEDIA:
                break
        if tag == "img":
            if len(images) >= MAX_MEDIA:
                continue
            url = _img_url(el, ctx)
            if url and not _ui_image(el, url):
                add(images, url)
        elif tag == "source":
            # libxml2 doesn't know <source> is void: a second <source> nests in the first, hence the ancestor walk.
            owner = next(el.iterancestors("video", "audio", "picture"), None)
            if owner is not None and owner.tag in ("video", "audio"):
                if owner.tag == "video":
                    add(videos, _absolute(ctx.base, el.get("src") or el.get("data-src")))
            elif (url := _srcset_url(el, ctx)) and not _ui_path(url):
                add(images, url)
        elif tag == "video":
            add(videos, _absolute(ctx.base, el.get("src") or el.get("data-src")))
            if (poster := _absolute(ctx.base, el.get("poster"))) and not _ui_path(poster):
                add(images, poster)
        elif tag in ("a", "area", "embed", "object", "iframe"):
            url = _absolute(ctx.base, el.get("href") or el.get("src") or el.get("data"))
            if url:
                kind = _link_kind(url, el)
                if kind == "video":
                    add(videos, url)
                elif kind == "image" and not _ui_path(url):
                    add(images, url)
                elif kind == "file":
                    add(files, url)
        style = el.get("style")
        if style and "url(" in style and "background" in style.lower():
            for m in _CSS_URL_RE.finditer(style):
                if (url := _absolute(ctx.base, m[2])) and not _ui_path(url) and not _tiny(el):
                    add(images, url)
    return list(images), list(videos), list(files)


def _walk(root: etree._Element, skip: Callable[[etree._Element], bool]) -> Iterator[etree._Element]:
    """Elements under root in document order, without the subtrees skip rejects."""
    stack = [root]
    while stack:
        el = stack.pop()
        if el is not root and skip(el):
            continue
        yield el
        stack.extend(child for child in reversed(el) if isinstance(child.tag, str))


def _img_url(el: etree._Element, ctx: _Ctx) -> str | None:
    # The largest srcset candidate is the best copy to match; lazy-loading attributes hold the real image and src
    # only a placeholder.
    if url := _srcset_url(el, ctx):
        return url
    for attr in (*LAZY_SRC_ATTRS, "src"):
        if url := _absolute(ctx.base, el.get(attr)):
            return url
    return None


def _srcset_url(el: etree._Element, ctx: _Ctx) -> str | None:
    for attr in SRCSET_ATTRS:
        candidates = _parse_srcset(el.get(attr) or "")
        candidates = [(size, url) for size, raw in candidates if (url := _absolute(ctx.base, raw))]
        if candidates:
            return max(candidates, key=lambda c: c[0])[1]
    return None


def _parse_srcset(value: str) -> list[tuple[tuple[float, float], str]]:
    """(size, url) pairs of a srcset, size ordering w descriptors before x descriptors. URLs may contain commas
    (image CDNs' "w_100,h_100"): as in the HTML spec, a URL runs to whitespace, a trailing comma ends it."""
    found: list[tuple[tuple[float, float], str]] = []
    pos, n = 0, len(value)
    while pos < n and len(found) < 50:
        while pos < n and (value[pos].isspace() or value[pos] == ","):
            pos += 1
        start = pos
        while pos < n and not value[pos].isspace():
            pos += 1
        url = value[start:pos]
        descriptor = ""
        if url.endswith(","):
            url = url.rstrip(",")
        else:
            end = value.find(",", pos)
            end = n if end < 0 else end
            descriptor, pos = value[pos:end].strip().lower(), end + 1
        if not url:
            continue
        width, density = 0.0, 1.0
        for token in descriptor.split():
            try:
                if token.endswith("w"):
                    width = float(token[:-1])
                elif token.endswith("x"):
                    density = float(token[:-1])
            except ValueError:
                pass
        found.append(((width, density), url))
    return found


def _link_kind(url: str, el: etree._Element) -> str | None:
    ext = _extension(url)
    if ext in SCRIPT_EXTENSIONS:
        # Board attachments are download.php?...&no=0 with the file name only in the link text or download=.
        name = _clean(el.get("download") or (el.text_content()[:MAX_SHORT] if el.tag == "a" else ""))
        if m := re.search(r"\.(\w{2,4})\b", name.lower()):
            ext = f".{m[1]}"
    if ext in VIDEO_EXTENSIONS:
        return "video"
    if ext in IMAGE_EXTENSIONS:
        return "image"
    if ext in FILE_EXTENSIONS:
        return "file"
    return None


def _ui_image(el: etree._Element, url: str) -> bool:
    if _tiny(el) or _ui_path(url):
        return True
    classes = " ".join(_classes(el))
    return any(marker in classes for marker in UI_IMAGE_CLASS_MARKERS)


def _tiny(el: etree._Element) -> bool:
    sizes = [el.get("width"), el.get("height")]
    style = (el.get("style") or "").lower()
    sizes += re.findall(r"(?:^|[;\s])(?:width|height)\s*:\s*(\d+)px", style)
    for size in sizes:
        if size and (m := re.fullmatch(r"\s*(\d{1,6})(?:px)?\s*", size)) and int(m[1]) <= UI_IMAGE_MAX_PX:
            return True
    return False


def _ui_path(url: str) -> bool:
    path = urlsplit(url).path.lower()
    return any(marker in path for marker in UI_IMAGE_PATH_MARKERS)


# --- element helpers -------------------------------------------------------------------------------------------


def _classes(el: etree._Element) -> list[str]:
    return (el.get("class") or "").lower().split()


def _is_chrome(el: etree._Element) -> bool:
    return (
        el.tag in CHROME_TAGS
        or (el.get("role") or "").lower() in CHROME_ROLES
        or (el.get("id") or "").lower() in CHROME_IDS
    )


def _in_chrome(el: etree._Element) -> bool:
    chain = [el, *el.iterancestors()]
    for i, node in enumerate(chain):
        if _is_chrome(node):
            # An <article>'s own <header> holds its title, writer and date: page chrome only outside articles.
            if node.tag in ("header", "footer") and any(a.tag == "article" for a in chain[i + 1 :]):
                continue
            return True
    return False


def _is_post_chrome(el: etree._Element) -> bool:
    tokens = [*_classes(el), (el.get("id") or "").lower()]
    return any(marker in token for token in tokens for marker in POST_CHROME_MARKERS)


def _contains(ancestor: etree._Element, el: etree._Element) -> bool:
    return el is ancestor or any(a is ancestor for a in el.iterancestors())


def _short(found: etree._Element | str) -> str:
    """An element's (or string's) text, cleaned, or "" when too long to be a title, name or time."""
    text = _clean(found if isinstance(found, str) else found.text_content()[: MAX_SHORT * 4])
    return text if len(text) <= MAX_SHORT else ""


def _block_text(el: etree._Element) -> str:
    """Text with a line break per block element, so paragraphs stay apart after whitespace is collapsed."""
    parts: list[str] = []
    size = 0
    for event, node in etree.iterwalk(el, events=("start", "end")):
        if not isinstance(node.tag, str):
            continue
        block = node.tag in BLOCK_TAGS
        if event == "start":
            parts.append("\n" if block else "")
            parts.append(node.text or "")
        else:
            parts.append("\n" if block else "")
            if node is not el:
                parts.append(node.tail or "")
        size += len(parts[-1])
        if size > MAX_TEXT * 2:
            break
    return _clean("".join(parts), multiline=True)[:MAX_TEXT]


def _clean(text: str, *, multiline: bool = False) -> str:
    text = unicodedata.normalize("NFC", text).translate(_DROP_CHARS)
    if not multiline:
        return " ".join(text.split())
    return "\n".join(line for raw in text.split("\n") if (line := " ".join(raw.split())))


def _first(values: list[str]) -> str:
    return _clean(values[0]) if values else ""


def _unique(urls: list[str]) -> list[str]:
    return list(dict.fromkeys(urls))[:MAX_MEDIA]
