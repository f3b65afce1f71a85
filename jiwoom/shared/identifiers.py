"""A victim's identifiers in text, found without ever holding them in the clear (issue 16, first part).

An officer records a case's identifiers (names in Hangul and romanised, phone numbers, SNS handles, emails,
school or workplace); only `IdentifierKey.digest` of each one's normal form is stored. A post's title, text or OCR
text is checked by normalising it the same way, cutting it into every candidate form, and looking up the digest
of each: a hit names the kind found, never the value. Normalising runs the uploaders' obfuscations backwards:
- spaces and punctuation inside a name ("김 지 영", "김.지.영");
- jamo typed apart ("ㄱㅣㅁ지영" → "김지영");
- digits written in Hangul or spaced out in a phone number ("공일공-1234-5678", "010 1234 5678").
Shared by the service (OCR text) and the crawler (titles and bodies), so it imports nothing else of ours.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterator

KINDS = ("name", "phone", "handle", "email", "place")

_CHOSEONG = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
_JUNGSEONG = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
_JONGSEONG = ["", "ㄱ", "ㄲ", "ㄳ", "ㄴ", "ㄵ", "ㄶ", "ㄷ", "ㄹ", "ㄺ", "ㄻ", "ㄼ", "ㄽ", "ㄾ", "ㄿ", "ㅀ", "ㅁ", "ㅂ",
              "ㅄ", "ㅅ", "ㅆ", "ㅇ", "ㅈ", "ㅊ", "ㅋ", "ㅌ", "ㅍ", "ㅎ"]
_HANGUL_DIGITS = {"공": "0", "영": "0", "빵": "0", "일": "1", "이": "2", "삼": "3", "사": "4", "오": "5", "육": "6",
                  "륙": "6", "칠": "7", "팔": "8", "구": "9"}
# what uploaders put between the letters of a name
_SEPARATORS = re.compile(r"[\s.\-_·~,/|()\[\]*+'\"]+")
_BETWEEN_JAMO = re.compile(r"(?<=[ㄱ-ㅣ])[\s.\-_·]+(?=[ㄱ-ㅣ])")
# a phone number: 10 to 12 digits, some in Hangul, with separators between
_DIGIT = "0-9" + "".join(_HANGUL_DIGITS)
_PHONE_RUN = re.compile(f"[{_DIGIT}][{_DIGIT}\\s.\\-)(]{{8,24}}[{_DIGIT}]")
# where names and places may be: runs of syllables, and Latin words for romanised ones
_HANGUL_RUN = re.compile(r"[가-힣]+")
_LATIN_TOKEN = re.compile(r"[a-z]+")
# handles and emails as written, lower-cased
_HANDLE = re.compile(r"@([a-z0-9_.]{2,30})")
_EMAIL = re.compile(r"[a-z0-9_.+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)+")
MAX_TEXT = 100_000  # characters checked of one text: titles, bodies and OCR text beyond this are cut


def compose_jamo(text: str) -> str:
    """Recombine compatibility jamo typed apart into syllables: "ㄱㅣㅁ지영" and "ㄱ ㅣ ㅁ" → "김지영", "김"."""
    text = _BETWEEN_JAMO.sub("", text)
    out: list[str] = []
    i = 0
    while i < len(text):
        lead, vowel = text[i], text[i + 1] if i + 1 < len(text) else ""
        if lead and lead in _CHOSEONG and vowel and vowel in _JUNGSEONG:
            tail = text[i + 2] if i + 2 < len(text) else ""
            after = text[i + 3] if i + 3 < len(text) else ""
            final = tail if tail in _JONGSEONG[1:] and not (after and after in _JUNGSEONG) else ""
            out.append(chr(0xAC00 + (_CHOSEONG.index(lead) * 21 + _JUNGSEONG.index(vowel)) * 28
                           + _JONGSEONG.index(final)))
            i += 3 if final else 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def normalised_text(text: str) -> str:
    """Jamo recombined, then NFKC (full-width digits and letters, composed Hangul) and lower case. Jamo go first:
    NFKC would turn a lone consonant into a leading one that never closes the syllable before it."""
    return unicodedata.normalize("NFKC", compose_jamo(text[:MAX_TEXT])).lower()


def normal_form(kind: str, value: str) -> str:
    """The form an identifier an officer records is stored under (its digest), or "" if it has none."""
    if kind not in KINDS:
        raise ValueError(f"unknown identifier kind {kind!r}; known: {KINDS}")
    text = normalised_text(value)
    if kind == "phone":
        digits = re.sub(r"\D", "", "".join(_HANGUL_DIGITS.get(c, c) for c in text))
        return _phone(digits)
    if kind == "handle":
        return text.strip().lstrip("@")
    if kind == "email":
        return text.strip()
    return _SEPARATORS.sub("", text)  # names, schools, workplaces: Hangul or romanised, without spaces


def _phone(digits: str) -> str:
    if digits.startswith("82") and len(digits) in (11, 12):  # +82 10 ...
        digits = "0" + digits[2:]
    return digits if re.fullmatch(r"01[016789]\d{7,8}", digits) else ""


def candidates(text: str) -> Iterator[tuple[str, str]]:
    """Every (kind, normal form) a text could hold: what `check` hashes and looks up."""
    text = normalised_text(text)
    for run in _PHONE_RUN.findall(text):
        digits = re.sub(r"\D", "", "".join(_HANGUL_DIGITS.get(c, c) for c in run))
        for width in (11, 10, 12):
            for start in range(0, max(0, len(digits) - width) + 1):
                if phone := _phone(digits[start:start + width]):
                    yield "phone", phone
    for handle in _HANDLE.findall(text):
        yield "handle", handle
    for email in _EMAIL.findall(text):
        yield "email", email
    squeezed = _SEPARATORS.sub("", text)
    for run in _HANGUL_RUN.findall(squeezed):  # a name or a place: 2 to 12 syllables anywhere in a run
        for width in range(2, min(12, len(run)) + 1):
            for start in range(len(run) - width + 1):
                yield "name", run[start:start + width]
    tokens = _LATIN_TOKEN.findall(text)  # romanised names: up to four words run together ("kim ji young")
    for start in range(len(tokens)):
        for width in range(1, 5):
            if start + width <= len(tokens):
                yield "name", "".join(tokens[start:start + width])


class IdentifierKey:
    """HMAC-SHA256 under a key kept outside the database (like the evidence key): the digests are stored, the
    key never is, so a database dump says nothing of the identifiers."""

    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("an identifier key needs at least 32 bytes")
        self._key = key

    def digest(self, kind: str, form: str) -> bytes:
        # names and places share one kind when stored: a post does not say which a run of syllables is
        stored_kind = "name" if kind == "place" else kind
        return hmac.new(self._key, f"{stored_kind}:{form}".encode(), hashlib.sha256).digest()

    def record(self, kind: str, value: str) -> bytes:
        """The digest an officer's identifier is stored as; ValueError if it normalises to nothing."""
        form = normal_form(kind, value)
        if len(form) < 2:
            raise ValueError(f"this {kind} normalises to nothing that can be searched for")
        return self.digest(kind, form)

    def check(self, text: str, recorded: dict[bytes, str]) -> set[str]:
        """The kinds of the recorded identifiers (digest → kind) that `text` holds in any obfuscated form."""
        found = set()
        for kind, form in candidates(text):
            hit = recorded.get(self.digest(kind, form))
            if hit is not None:
                found.add(hit)
        return found
