"""Takedown notices: which site, which language, which address, what the notice says, and sending it.

A notice is drafted per site for an officer to review; nothing here decides to send. The pieces are plain functions
over data the caller already has (site configuration, fetched pages, captured evidence), so the case system can show
every step to the officer: the language guessed and why, the contact found and where, the rendered text.

Notice wording lives in `templates/<language>.yaml` (Jinja2 strings), one file per language, so a centre can correct
or add a language without touching code.
"""

from __future__ import annotations

import contextlib
import html
import re
import smtplib
import ssl
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import jinja2
import yaml
from jinja2.sandbox import SandboxedEnvironment

from clients import KST

__all__ = [
    "LANGUAGES",
    "TEMPLATES_DIR",
    "MailError",
    "NoticeItem",
    "Sender",
    "Site",
    "SmtpSettings",
    "available_languages",
    "choose_contact",
    "contact_from_security_txt",
    "contacts_from_page",
    "guess_language",
    "jurisdiction",
    "load_sites",
    "new_message_id",
    "render_notice",
    "send_mail",
    "site_for",
]

LANGUAGES = ("ko", "en", "zh", "ja", "ru", "vi", "es")
KINDS = ("ncii", "youth")
TEMPLATES_DIR = Path(__file__).parent / "templates"



# --------------------------------------------------------------------------------------------------------------------
# Sites


@dataclass(frozen=True)
class Site:
    """What we know about a host. `jurisdiction` is "KR" for services under Korean law, "" when unknown."""

    host: str
    name: str = ""
    language: str | None = None
    abuse_contact: str | None = None
    jurisdiction: str = ""
    policy_url: str | None = None


_SITE_FIELDS = ("name", "language", "abuse_contact", "jurisdiction", "policy_url")
# Deliberately simple: catches typos and pasted URLs, not every RFC 5322 corner (quoted local parts are not used
# by abuse desks). The domain may be an IDN in Unicode.
_EMAIL_RE = re.compile(r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@(?:[^\s@.<>()\[\],;:\"]+\.)+"
                       r"(?:xn--[A-Za-z0-9-]+|[^\s@.<>()\[\],;:\"\d]{2,})$")
_LANG_CODE_RE = re.compile(r"^[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*$")


def _is_email(value: str) -> bool:
    return bool(_EMAIL_RE.match(value)) and ".." not in value


def _norm_host(host: str) -> str:
    """Lower-case, no trailing dot, IDN labels in Unicode (so "xn--3e0b707e" and "한국" compare equal)."""
    host = host.strip().rstrip(".").lower()
    labels = []
    for label in host.split("."):
        if label.startswith("xn--"):
            with contextlib.suppress(UnicodeError):  # keep a malformed label as given rather than fail
                label = label.encode("ascii").decode("idna")
        labels.append(label)
    return ".".join(labels)


def load_sites(path: str | Path) -> dict[str, Site]:
    """Read a YAML mapping host -> fields (see sites.example.yaml) into Sites keyed by normalised host.

    Raises ValueError naming the file, the host and the field for anything that would later send a notice in the
    wrong language or to a malformed address.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping of host -> site fields, got {type(data).__name__}")
    languages = set(LANGUAGES) | set(available_languages())
    sites: dict[str, Site] = {}
    for raw_host, fields in data.items():
        where = f"{path}: site {raw_host!r}"
        if not isinstance(raw_host, str) or not raw_host.strip() or re.search(r"[/:@\s]", raw_host.strip()):
            raise ValueError(f"{where}: the key must be a bare host name such as example.com (no scheme, port, path)")
        host = _norm_host(raw_host)
        fields = {} if fields is None else fields
        if not isinstance(fields, Mapping):
            raise ValueError(f"{where}: expected a mapping of fields, got {type(fields).__name__}")
        unknown = sorted(set(fields) - set(_SITE_FIELDS))
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(map(str, unknown))}; "
                             f"known: {', '.join(_SITE_FIELDS)}")
        values: dict[str, Any] = {}
        for name in _SITE_FIELDS:
            value = fields.get(name)
            if value is None:
                continue
            if not isinstance(value, str):
                raise ValueError(f"{where}, field {name!r}: expected a string, got {value!r}")
            values[name] = value.strip()
        if "language" in values and values["language"] not in languages:
            raise ValueError(f"{where}, field 'language': {values['language']!r} is not one of "
                             f"{', '.join(sorted(languages))}")
        if "abuse_contact" in values:
            address = values["abuse_contact"].removeprefix("mailto:")
            if not _is_email(address):
                raise ValueError(f"{where}, field 'abuse_contact': {values['abuse_contact']!r} "
                                 "is not an e-mail address")
            values["abuse_contact"] = _lower_domain(address)
        if "jurisdiction" in values:
            values["jurisdiction"] = values["jurisdiction"].upper()
            if values["jurisdiction"] and not re.fullmatch(r"[A-Z]{2}", values["jurisdiction"]):
                raise ValueError(f"{where}, field 'jurisdiction': expected a two-letter country code such as KR")
        if "policy_url" in values and not re.match(r"^https?://\S+$", values["policy_url"]):
            raise ValueError(f"{where}, field 'policy_url': {values['policy_url']!r} is not an http(s) URL")
        if host in sites:
            raise ValueError(f"{where}: duplicate host (after normalisation: {host})")
        sites[host] = Site(host=host, **values)
    return sites


def _url_host(url: str) -> str:
    parts = urlsplit(url.strip())
    if not parts.netloc:  # "www.example.com/path" without a scheme
        parts = urlsplit("//" + url.strip())
    return _norm_host(parts.hostname or "")


def site_for(url: str, sites: Mapping[str, Site]) -> Site:
    """The configured Site for a URL's host, or for its nearest configured parent domain; else a bare Site(host)."""
    host = _url_host(url)
    labels = host.split(".")
    # Stop before the bare TLD: an entry for "kr" would be a configuration mistake, not a site.
    for i in range(max(len(labels) - 1, 1)):
        site = sites.get(".".join(labels[i:]))
        if site is not None:
            return site
    return Site(host=host)


# --------------------------------------------------------------------------------------------------------------------
# Jurisdiction and language

_KR_TLDS = ("kr", "한국")
# Korean operators print these in the page footer (e-commerce and value-added telecom registration), even on .com.
_KR_OPERATOR_MARKERS = ("사업자등록번호", "부가통신사업", "통신판매업신고", "통신판매업 신고")


def jurisdiction(site: Site, page_html: str | None) -> str:
    """"KR" when the site is configured so, under .kr/.한국, or shows a Korean business registration; else the
    configured code or "" (unknown: the notice then cites the host's own policies)."""
    if site.jurisdiction:
        return site.jurisdiction.upper()
    host = _norm_host(site.host)
    if host.rsplit(".", 1)[-1] in _KR_TLDS:
        return "KR"
    if page_html and any(marker in page_html for marker in _KR_OPERATOR_MARKERS):
        return "KR"
    return ""


# Primary language subtags (and common mistakes seen in the wild: lang="kr", "jp", "cn", "vn") -> our codes.
_LANG_ALIASES = {"ko": "ko", "kr": "ko", "kor": "ko", "en": "en", "eng": "en", "zh": "zh", "cn": "zh", "cmn": "zh",
                 "yue": "zh", "zho": "zh", "ja": "ja", "jp": "ja", "jpn": "ja", "ru": "ru", "rus": "ru", "vi": "vi",
                 "vn": "vi", "vie": "vi", "es": "es", "spa": "es"}
_TLD_LANGUAGES = {"kr": "ko", "한국": "ko", "jp": "ja", "cn": "zh", "tw": "zh", "hk": "zh", "中国": "zh", "台灣": "zh",
                  "ru": "ru", "рф": "ru", "su": "ru", "vn": "vi", "es": "es", "mx": "es", "ar": "es", "cl": "es",
                  "pe": "es", "uy": "es", "ve": "es", "ec": "es", "bo": "es", "py": "es"}

_HTML_LANG_RE = re.compile(r"<html\b[^>]*?\s(?:xml:)?lang\s*=\s*[\"']?\s*([A-Za-z_-]+)", re.I)
_META_LANG_RE = re.compile(
    r"<meta\b(?=[^>]*http-equiv\s*=\s*[\"']?content-language)[^>]*content\s*=\s*[\"']?\s*([A-Za-z_-]+)", re.I)
_INVISIBLE_RE = re.compile(r"<(script|style|noscript|template|svg)\b.*?</\1\s*>|<!--.*?-->", re.I | re.S)
_TAG_RE = re.compile(r"<[^>]*>")
_HANGUL_RE = re.compile(r"[\uac00-\ud7a3\u1100-\u11ff\u3130-\u318f]")
_KANA_RE = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f]")
_HAN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_CYRILLIC_RE = re.compile(r"[\u0400-\u04ff]")
_LATIN_RE = re.compile(r"[A-Za-z\u00c0-\u024f\u1e00-\u1eff]")
# Letters Vietnamese has and the other Latin-script languages here do not (ơ ư đ ă and the stacked diacritics).
_VIETNAMESE_RE = re.compile(r"[ơưđăƠƯĐĂ\u1ea0-\u1ef9]")
_SPANISH_MARK_RE = re.compile(r"[ñÑ¿¡]")
_WORD_RE = re.compile(r"[^\W\d_]+")
# Words frequent in Spanish and rare in English, French, Portuguese and Italian; and their English counterparts.
_SPANISH_WORDS = frozenset({"el", "los", "las", "del", "y", "está", "están", "también", "muy", "usted", "aquí",
                            "pero", "según", "año", "años", "nuestro", "nuestra", "nuestros", "cómo", "qué", "más",
                            "contenido", "términos", "política", "privacidad", "denunciar", "derechos", "hola"})
_ENGLISH_WORDS = frozenset({"the", "and", "of", "to", "is", "in", "for", "with", "this", "that", "you", "your",
                            "are", "on", "by", "we", "our", "it", "be", "or"})
_MAX_TEXT_CHARS = 200_000  # enough to tell a language; keeps pathological pages cheap


def _declared_language(page_html: str) -> str | None:
    for pattern in (_HTML_LANG_RE, _META_LANG_RE):
        m = pattern.search(page_html)
        if m:
            primary = m.group(1).replace("_", "-").split("-")[0].lower()
            if primary in _LANG_ALIASES:
                return _LANG_ALIASES[primary]
    return None


def _visible_text(page_html: str) -> str:
    text = _INVISIBLE_RE.sub(" ", page_html)
    return unicodedata.normalize("NFC", html.unescape(_TAG_RE.sub(" ", text)))


def _language_from_text(text: str) -> tuple[str | None, bool]:
    """(language, by_script): by_script is True when a non-Latin script decided it (a strong signal)."""
    latin = len(_LATIN_RE.findall(text))
    hangul, kana, han = len(_HANGUL_RE.findall(text)), len(_KANA_RE.findall(text)), len(_HAN_RE.findall(text))
    cyrillic = len(_CYRILLIC_RE.findall(text))
    scripts = {"ko": hangul, "cjk": han + kana, "ru": cyrillic}
    best = max(scripts, key=lambda k: scripts[k])
    # A few non-Latin letters in a Latin page (a name, a logo) do not make it that language.
    if scripts[best] >= 2 and scripts[best] >= 0.1 * latin:
        if best == "cjk":
            return ("ja" if kana >= 2 and kana >= 0.1 * (han + kana) else "zh"), True
        return best, True
    if latin == 0:
        return None, False
    viet = len(_VIETNAMESE_RE.findall(text))
    if viet >= 2 and viet >= 0.01 * latin:
        return "vi", False
    words = [w.lower() for w in _WORD_RE.findall(text)]
    es = sum(w in _SPANISH_WORDS for w in words) + 3 * len(_SPANISH_MARK_RE.findall(text))
    en = sum(w in _ENGLISH_WORDS for w in words)
    if es >= 3 and es > en:
        return "es", False
    if en >= 3 and en > es:
        return "en", False
    return None, False


def guess_language(page_html: str | None, host: str) -> str:
    """The notice language for a page: declared <html lang>/content-language, else the script and words of the
    visible text, else the host's country-code TLD, else "en". Always one of LANGUAGES.

    The site's configured language, when there is one, wins over all of this; the caller checks it first.
    """
    if page_html:
        declared = _declared_language(page_html)
        text_language, by_script = _language_from_text(_visible_text(page_html)[:_MAX_TEXT_CHARS])
        # Templates ship with lang="en" whatever the content: a Korean board in a stock theme says "en".
        if declared == "en" and by_script:
            return text_language or "en"
        if declared:
            return declared
        if text_language:
            return text_language
    tld = _norm_host(host).rsplit(".", 1)[-1]
    return _TLD_LANGUAGES.get(tld, "en")


# --------------------------------------------------------------------------------------------------------------------
# Abuse contact

_SEC_TXT_FIELD_RE = re.compile(r"^\s*([A-Za-z-]+)\s*:\s*(.*?)\s*$")


def _lower_domain(address: str) -> str:
    local, _, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}"


def _address_from_mailto(value: str) -> str | None:
    """mailto:a@b?subject=... -> a@b (first address; percent-decoding; None when it is not an address)."""
    value = value.strip()
    if value.lower().startswith("mailto:"):
        value = value[len("mailto:"):]
    value = unquote(value.split("?", 1)[0]).split(",", 1)[0].strip()
    return _lower_domain(value) if _is_email(value) else None


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
        elif bare is None and _is_email(value):
            bare = _lower_domain(value)
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
        return _TAG_RE.sub(" ", markup[max(0, end - 400):end])[-80:]

    raw = html.unescape(html_text)  # &#64; and friends
    for m in _CF_EMAIL_RE.finditer(html_text):
        decoded = _decode_cfemail(m.group(1) or m.group(2))
        if decoded and _is_email(decoded):
            found.append((_lower_domain(decoded), text_before(html_text, m.start())))
    for m in _MAILTO_RE.finditer(raw):
        address = _address_from_mailto(m.group(1))
        if address:
            found.append((address, text_before(raw, m.start())))
    text = _visible_text(html_text)
    for m in _OBFUSCATED_EMAIL_RE.finditer(text):
        local, at = m.group("local"), m.group("at")
        if at.strip().lower() == "at" and local.lower() in _AT_STOPWORDS:
            continue
        domain = _DOT_RE.sub(".", m.group("domain")).lower()
        if domain.rsplit(".", 1)[-1] in _FILE_TLDS:
            continue  # "logo@2x.png"
        address = f"{local}@{domain}"
        if _is_email(address):
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
    labels = _norm_host(host).split(".")
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


# --------------------------------------------------------------------------------------------------------------------
# Notices


@dataclass(frozen=True)
class Sender:
    """Who signs and answers the notice."""

    organisation: str  # e.g. "디지털성범죄피해자지원센터 (Digital Sex Crime Victim Support Center)"
    name: str
    email: str
    phone: str = ""


@dataclass(frozen=True)
class NoticeItem:
    """One piece of content to take down, with the evidence captured for it. Datetimes must be timezone-aware."""

    page_url: str
    media_url: str
    title: str
    posted_at: datetime | None
    captured_at: datetime
    hashes: dict[str, str]  # artefact kind ("screenshot", "warc", "media") -> sha256 hex


_TEMPLATE_KEYS = ("subject", "body", "legal_kr_ncii", "legal_kr_youth", "legal_abroad_ncii", "legal_abroad_youth",
                  "labels")
_LABEL_KEYS = ("page_url", "media_url", "title", "posted", "captured", "hashes", "hash_screenshot", "hash_warc",
               "hash_media", "hash_other", "untitled", "unknown", "datetime_format")
_HASH_ORDER = ("screenshot", "warc", "media")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Sandboxed: the templates are data files that officers edit, not code.
_ENV = SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=False, trim_blocks=True,
                            lstrip_blocks=True, keep_trailing_newline=False)


def available_languages(templates_dir: Path | None = None) -> list[str]:
    """Language codes that have a notice template file (templates/<code>.yaml)."""
    directory = templates_dir or TEMPLATES_DIR
    return sorted(p.stem for p in directory.glob("*.yaml") if _LANG_CODE_RE.match(p.stem))


def _load_template(language: str, templates_dir: Path | None) -> dict[str, Any]:
    directory = templates_dir or TEMPLATES_DIR
    path = directory / f"{language}.yaml"
    if not _LANG_CODE_RE.match(language) or not path.is_file():
        raise ValueError(f"no notice template for language {language!r} in {directory}; "
                         f"available: {', '.join(available_languages(directory)) or 'none'}")
    with path.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: expected a mapping with keys {', '.join(_TEMPLATE_KEYS)}")
    missing = [k for k in _TEMPLATE_KEYS if k not in data]
    labels = data.get("labels")
    if not isinstance(labels, Mapping):
        missing.append("labels (a mapping)")
    else:
        missing += [f"labels.{k}" for k in _LABEL_KEYS if k not in labels]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    month_names = labels.get("month_names")
    if month_names is not None and (not isinstance(month_names, list) or len(month_names) != 12):
        raise ValueError(f"{path}: labels.month_names must list 12 month names")
    return dict(data)


def _render(source: str, context: Mapping[str, Any], where: str) -> str:
    try:
        return _ENV.from_string(source).render(context)
    except jinja2.TemplateError as e:  # name the file and key: the officer editing it needs to know where
        raise ValueError(f"notice template {where}: {e}") from e


def _one_line(value: str, limit: int | None = 500) -> str:
    """User-supplied text on a single line: a title with newlines must not fake lines of the notice."""
    value = " ".join("".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in value).split())
    return value if limit is None or len(value) <= limit else value[: limit - 1] + "…"


def _aware(value: datetime | None, what: str) -> datetime:
    if not isinstance(value, datetime):
        raise ValueError(f"{what} must be a datetime, got {value!r}")
    if value.tzinfo is None or value.utcoffset() is None:
        # A naive time from a Korean board is KST, from elsewhere anything: guessing would falsify evidence.
        raise ValueError(f"{what} must be timezone-aware, got {value.isoformat()}")
    return value


def _format_time(value: datetime, labels: Mapping[str, Any], where: str) -> str:
    """'<KST> KST (<UTC> UTC)' with each half in the language's date format."""
    names = labels.get("month_names")

    def one(moment: datetime) -> str:
        context = {"year": moment.year, "month": moment.month, "day": moment.day,
                   "month_name": names[moment.month - 1] if names else str(moment.month),
                   "time": moment.strftime("%H:%M:%S")}
        return _render(labels["datetime_format"], context, f"{where} labels.datetime_format")

    return f"{one(value.astimezone(KST))} KST ({one(value.astimezone(UTC))} UTC)"


def render_notice(language: str, site: Site, items: list[NoticeItem], *, kind: str, sender: Sender,
                  reference: str, jurisdiction: str, templates_dir: Path | None = None) -> tuple[str, str]:
    """(subject, body) of a plain-text takedown notice for `items` on `site`, in `language`.

    kind is "ncii" (intimate imagery shared without consent) or "youth" (content that appears to depict a minor);
    jurisdiction "KR" cites Korean law, anything else the host's own policies. Raises ValueError on an unknown
    language or kind, a malformed hash, a naive datetime, or a template error.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not items:
        raise ValueError("a notice needs at least one item")
    reference = _one_line(reference, 200)
    if not reference:
        raise ValueError("a notice needs a reference number")
    template = _load_template(language, templates_dir)
    where = f"{language}.yaml"
    labels = template["labels"]
    prepared = []
    for number, item in enumerate(items, start=1):
        hashes = []
        kinds = sorted(item.hashes, key=lambda k: (_HASH_ORDER.index(k) if k in _HASH_ORDER else len(_HASH_ORDER), k))
        for hash_kind in kinds:
            value = item.hashes[hash_kind].strip().lower()
            if not _SHA256_RE.match(value):
                raise ValueError(f"item {number}: {hash_kind} hash is not a SHA-256 hex digest: {value!r}")
            label = labels.get(f"hash_{hash_kind}") or _render(labels["hash_other"], {"kind": hash_kind},
                                                               f"{where} labels.hash_other")
            hashes.append({"kind": hash_kind, "label": label, "value": value})
        posted = item.posted_at
        prepared.append({
            "number": number,
            "page_url": _one_line(item.page_url, None),  # never cut a URL
            "media_url": _one_line(item.media_url, None),
            "title": _one_line(item.title) or labels["untitled"],
            "posted": _format_time(_aware(posted, f"item {number} posted_at"), labels, where) if posted
            else labels["unknown"],
            "captured": _format_time(_aware(item.captured_at, f"item {number} captured_at"), labels, where),
            "hashes": hashes,
        })
    context: dict[str, Any] = {
        "kind": kind,
        "jurisdiction": jurisdiction.upper(),
        "site": site,
        "site_name": site.name or site.host,
        "policy_url": site.policy_url or "",
        "sender": sender,
        "reference": reference,
        "items": prepared,
        "count": len(prepared),
        "L": labels,
    }
    legal_key = f"legal_{'kr' if context['jurisdiction'] == 'KR' else 'abroad'}_{kind}"
    context["legal"] = _render(template[legal_key], context, f"{where} {legal_key}").strip()
    subject = _one_line(_render(template["subject"], context, f"{where} subject"), 900)
    body = _render(template["body"], context, f"{where} body").strip() + "\n"
    return subject, body


# --------------------------------------------------------------------------------------------------------------------
# Mail


@dataclass(frozen=True)
class SmtpSettings:
    """The centre's outgoing mail server. `ssl` is implicit TLS (port 465), `starttls` upgrades a plain session."""

    host: str
    port: int = 25
    starttls: bool = False
    ssl: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in logs
    timeout_s: float = 30.0


class MailError(RuntimeError):
    """A notice could not be handed to the mail server; the message says which notice, where and why."""


def new_message_id(domain: str) -> str:
    """A fresh Message-ID (<...@domain>) to store with the notice before sending, so replies can be matched."""
    return make_msgid(idstring="jiwoom", domain=domain)


def send_mail(smtp: SmtpSettings, *, sender: Sender, recipient: str, subject: str, body: str, message_id: str,
              cc: tuple[str, ...] = ()) -> None:
    """Send one plain-text UTF-8 e-mail. Raises ValueError on bad addresses, MailError when the server fails or
    refuses any recipient (the caller then keeps the notice as unsent)."""
    for role, address in (("sender", sender.email), ("recipient", recipient), *(("cc", a) for a in cc)):
        if not _is_email(address):
            raise ValueError(f"{role} address {address!r} is not an e-mail address")
    if not re.fullmatch(r"<[^<>\s@]+@[^<>\s@]+>", message_id):
        raise ValueError(f"message_id must look like <id@domain>, got {message_id!r}")
    if smtp.ssl and smtp.starttls:
        raise ValueError("SmtpSettings: choose ssl (implicit TLS) or starttls, not both")
    local, _, domain = sender.email.rpartition("@")
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = Address(display_name=sender.organisation, username=local, domain=domain)
    message["To"] = recipient
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Reply-To"] = sender.email
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message.set_content(body, charset="utf-8")
    recipients = [recipient, *cc]
    where = f"notice {message_id} to {', '.join(recipients)} via {smtp.host}:{smtp.port}"
    try:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if smtp.ssl:
            client = smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=smtp.timeout_s, context=context)
        else:
            client = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_s)
        with client:
            if smtp.starttls:
                client.starttls(context=context)
            if smtp.username:
                client.login(smtp.username, smtp.password or "")
            refused = client.send_message(message, from_addr=sender.email, to_addrs=recipients)
    except smtplib.SMTPRecipientsRefused as e:
        raise MailError(f"{where}: every recipient refused: {e.recipients}") from e
    except (smtplib.SMTPException, OSError) as e:
        raise MailError(f"{where} failed: {e}") from e
    if refused:  # some recipients accepted, some not: the notice did not reach everyone it should
        raise MailError(f"{where}: refused {refused}")
