"""Which language a notice goes out in: guessed from a page's declared language, its visible text and its host."""

from __future__ import annotations

import html
import re
import unicodedata

from clients.notices.addresses import norm_host

__all__ = [
    "TAG_RE",
    "guess_language",
    "visible_text",
]

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
TAG_RE = re.compile(r"<[^>]*>")
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


def visible_text(page_html: str) -> str:
    text = _INVISIBLE_RE.sub(" ", page_html)
    return unicodedata.normalize("NFC", html.unescape(TAG_RE.sub(" ", text)))


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
        text_language, by_script = _language_from_text(visible_text(page_html)[:_MAX_TEXT_CHARS])
        # Templates ship with lang="en" whatever the content: a Korean board in a stock theme says "en".
        if declared == "en" and by_script:
            return text_language or "en"
        if declared:
            return declared
        if text_language:
            return text_language
    tld = norm_host(host).rsplit(".", 1)[-1]
    return _TLD_LANGUAGES.get(tld, "en")

