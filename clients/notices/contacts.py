"""Where a notice goes: the abuse contact from the site list, security.txt or the e-mail addresses on a page."""

from __future__ import annotations

import html
import re
from urllib.parse import unquote

from clients.notices.addresses import is_email, lower_domain, norm_host
from clients.notices.language import TAG_RE, visible_text
from clients.notices.sites import Site

__all__ = [
    "choose_contact",
    "contact_from_security_txt",
    "contacts_from_page",
]

_SEC_TXT_FIELD_RE = re.compile(r"^\s*([A-Za-z-]+)\s*:\s*(.*?)\s*$")


def _address_from_mailto(value: str) -> str | None:
    """mailto:a@b?subject=... -> a@b (first address; percent-decoding; None when it is not an address)."""
    value = value.strip()
    if value.lower().startswith("mailto:"):
        value = value[len("mailto:"):]
    value = unquote(value.split("?", 1)[0]).split(",", 1)[0].strip()
    return lower_domain(value) if is_email(value) else None


def contact_from_security_txt(text: str) -> str | None:
    """The e-mail address from an RFC 9116 security.txt, preferring `mailto:` Contact lines, or None.

    Handles comments and a PGP-cleartext-signed file. `https:` (web form) and `tel:` contacts are not returned: a
    notice is mailed, and a form is for an officer to fill in by hand.
    """
    in_signature = False
    bare: str | None = None  # "Contact: abuse@example.com" without the scheme: invalid per RFC but common
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("-----BEGIN PGP SIGNATURE"):
            in_signature = True
        elif line.startswith("-----END PGP SIGNATURE"):
            in_signature = False
        if in_signature or line.startswith("-----") or line.startswith("#"):
            continue
        line = line.removeprefix("- ")  # dash-escaping inside a signed message
        m = _SEC_TXT_FIELD_RE.match(line)
        if not m or m.group(1).lower() != "contact":
            continue
        value = m.group(2)
        if value.lower().startswith("mailto:"):
            address = _address_from_mailto(value)
            if address:
                return address
        elif bare is None and is_email(value):
            bare = lower_domain(value)
    return bare


_CF_EMAIL_RE = re.compile(r"data-cfemail\s*=\s*[\"']([0-9a-fA-F]+)[\"']|/cdn-cgi/l/email-protection#([0-9a-fA-F]+)")
_MAILTO_RE = re.compile(r"mailto:([^\"'<>\s]+)", re.I)
_LOCAL = r"[A-Za-z0-9][A-Za-z0-9._%+-]*"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_AT = r"(?P<at>\s*@\s*|\s*[\[({<]\s*(?:at|@|골뱅이)\s*[\])}>]\s*|\s+at\s+)"
_DOT = r"(?:\s*[\[({]\s*(?:dot|\.|점)\s*[\])}]\s*|\s+dot\s+|\.)"
_OBFUSCATED_EMAIL_RE = re.compile(
    rf"(?<![\w.+-])(?P<local>{_LOCAL}){_AT}(?P<domain>{_LABEL}(?:{_DOT}{_LABEL})*{_DOT}[A-Za-z]{{2,24}})(?![\w-])",
    re.I)
_DOT_RE = re.compile(_DOT, re.I)
# Prose like "contact us at help.example.com" reads as an address under the bare " at " form.
_AT_STOPWORDS = frozenset({"us", "me", "you", "we", "them", "him", "her", "it", "is", "are", "be", "or", "and",
                           "online", "here", "there", "available", "located", "found", "reach", "contact", "email",
                           "mail", "write", "visit", "look", "site", "page", "based", "hosted"})
_FILE_TLDS = frozenset({"png", "jpg", "jpeg", "gif", "webp", "svg", "css", "js", "ico", "bmp", "avif", "mp4"})
_ROLE_WORDS = ("report", "takedown", "dmca", "legal", "privacy", "help", "support", "safety", "trust", "copyright",
               "complaint", "cs", "admin", "webmaster")
_CONTEXT_WORDS = ("신고", "abuse", "report", "takedown", "불법", "권리침해", "게시중단", "삭제", "청소년보호", "dmca")
_NOREPLY_RE = re.compile(r"no-?reply|do-?not-?reply|mailer-daemon", re.I)


def _decode_cfemail(hex_string: str) -> str | None:
    """Cloudflare's e-mail obfuscation: the first byte is an XOR key for the rest."""
    try:
        data = bytes.fromhex(hex_string)
        return bytes(b ^ data[0] for b in data[1:]).decode("utf-8") if len(data) > 1 else None
    except (ValueError, UnicodeDecodeError):
        return None


def _rank(address: str, context: str) -> int:
    local = address.rpartition("@")[0].lower()
    if local.startswith("abuse"):
        return 0
    if any(word in local for word in _ROLE_WORDS):
        return 1
    if any(word in context.lower() for word in _CONTEXT_WORDS):
        return 2
    if _NOREPLY_RE.search(local):
        return 4  # they do not read replies; still better than nothing for an officer to see
    return 3


def contacts_from_page(html_text: str) -> list[str]:
    """E-mail addresses on a page (a site's contact, terms or footer page), best abuse contact first.

    Finds mailto: links, Cloudflare-protected addresses and addresses in the visible text, including the usual
    obfuscations ("abuse [at] example [dot] com", "abuse at example.com", "abuse @ example.com"). Ranked: abuse@,
    then role addresses (report, takedown, dmca, legal, privacy, help, support, ...), then addresses written next to
    신고/report wording, then the rest; no-reply addresses last. De-duplicated, domain lower-cased.
    """
    found: list[tuple[str, str]] = []  # (address, the ~80 characters of text before it)

    def text_before(markup: str, end: int) -> str:
        return TAG_RE.sub(" ", markup[max(0, end - 400):end])[-80:]

    raw = html.unescape(html_text)  # &#64; and friends
    for m in _CF_EMAIL_RE.finditer(html_text):
        decoded = _decode_cfemail(m.group(1) or m.group(2))
        if decoded and is_email(decoded):
            found.append((lower_domain(decoded), text_before(html_text, m.start())))
    for m in _MAILTO_RE.finditer(raw):
        address = _address_from_mailto(m.group(1))
        if address:
            found.append((address, text_before(raw, m.start())))
    text = visible_text(html_text)
    for m in _OBFUSCATED_EMAIL_RE.finditer(text):
        local, at = m.group("local"), m.group("at")
        if at.strip().lower() == "at" and local.lower() in _AT_STOPWORDS:
            continue
        domain = _DOT_RE.sub(".", m.group("domain")).lower()
        if domain.rsplit(".", 1)[-1] in _FILE_TLDS:
            continue  # "logo@2x.png"
        address = f"{local}@{domain}"
        if is_email(address):
            found.append((address, text[max(0, m.start() - 80):m.start()]))
    best: dict[str, tuple[int, int, str]] = {}  # lower-cased address -> (best rank, first position, first form)
    for position, (address, context) in enumerate(found):
        key, rank = address.lower(), _rank(address, context)
        if key in best:
            best[key] = (min(rank, best[key][0]), *best[key][1:])
        else:
            best[key] = (rank, position, address)
    return [address for _, _, address in sorted(best.values())]


_SECOND_LEVEL = frozenset({"co", "or", "go", "ne", "re", "pe", "ac", "com", "net", "org", "gov", "edu"})


def _registrable(host: str) -> str:
    """example.co.kr from www.example.co.kr; a cheap stand-in for the Public Suffix List, enough to tell whether a
    contact address belongs to the site."""
    labels = norm_host(host).split(".")
    n = 3 if len(labels) >= 3 and len(labels[-1]) == 2 and labels[-2] in _SECOND_LEVEL else 2
    return ".".join(labels[-n:])


def choose_contact(site: Site, security_txt: str | None, page_html: str | None) -> tuple[str | None, str]:
    """(address, how) for a notice: the configured abuse contact ("site config"), else security.txt
    ("security.txt"), else the best address on the page ("page"), else (None, "none").

    On a page, any address at the site's own domain beats every address elsewhere (then contacts_from_page's ranking
    applies), so a notice goes to the operator rather than to an address someone wrote in a post. Pass the site's
    contact or terms page, not the offending post.
    """
    if site.abuse_contact:
        return site.abuse_contact, "site config"
    if security_txt:
        address = contact_from_security_txt(security_txt)
        if address:
            return address, "security.txt"
    if page_html:
        own = _registrable(site.host)
        candidates = contacts_from_page(page_html)
        if candidates:
            ranked = sorted(enumerate(candidates),
                            key=lambda c: (_registrable(c[1].rpartition("@")[2]) != own, c[0]))
            return ranked[0][1], "page"
    return None, "none"
