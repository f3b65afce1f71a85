"""A victim's identifiers in text, found without ever holding them in the clear (issue 16, first part).

An officer records a case's identifiers (names in Hangul and romanised, phone numbers, SNS handles, emails,
school or workplace); only `IdentifierKey.digest` of each one's normal form is stored. A post's title, text or OCR
text is checked by normalising it the same way, cutting it into every candidate form, and looking up the digest
of each: a hit names the kind found, never the value. Normalising runs the uploaders' obfuscations backwards:
- spaces and punctuation inside a name ("김 지 영", "김.지.영");
- jamo typed apart ("ㄱㅣㅁ지영" → "김지영");
- digits written in Hangul or spaced out in a phone number ("공일공-1234-5678", "010 1234 5678").
A name spaced out must stand as whole words ("김 지 영", "김 지영이"), so that "김지 영화" is not "김지영".
Pure code: the service checks crawled posts and OCR text with it; the evidence writer finds what to blur.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

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
# what may follow a name inside its word: particles and forms of address ("김 지영이", "김 지 영 씨")
_AFTER_NAME = frozenset({"이", "가", "은", "는", "을", "를", "의", "도", "만", "와", "과", "랑", "이랑", "에게", "한테",
                         "께", "씨", "님", "양", "군", "아", "야", "이가", "이는", "이의", "이를", "이도"})
T = TypeVar("T")
MAX_TEXT = 100_000  # characters checked of one text: titles, bodies and OCR text beyond this are cut


@dataclass(frozen=True)
class Located:
    """Text normalised for matching, with where each of its characters came from in the text as written."""

    text: str
    starts: tuple[int, ...]
    ends: tuple[int, ...]

    def span(self, first: int, last: int) -> tuple[int, int]:
        """The written text's span of normalised characters first..last (inclusive)."""
        return self.starts[first], self.ends[last]

    def without(self, pattern: re.Pattern[str]) -> Located:
        """The same with every match of `pattern` removed (positions kept for what is left)."""
        keep = [True] * len(self.text)
        for m in pattern.finditer(self.text):
            keep[m.start():m.end()] = [False] * (m.end() - m.start())
        chosen = [i for i, k in enumerate(keep) if k]
        return Located("".join(self.text[i] for i in chosen), tuple(self.starts[i] for i in chosen),
                       tuple(self.ends[i] for i in chosen))


def _composed(text: str) -> list[tuple[str, int, int]]:
    """Compatibility jamo typed apart recombined into syllables, each with its span in `text`."""
    dropped = [False] * len(text)
    for m in _BETWEEN_JAMO.finditer(text):
        dropped[m.start():m.end()] = [True] * (m.end() - m.start())
    chars = [(c, i) for i, c in enumerate(text) if not dropped[i]]
    out: list[tuple[str, int, int]] = []
    i = 0
    while i < len(chars):
        lead, vowel = chars[i][0], chars[i + 1][0] if i + 1 < len(chars) else ""
        if lead in _CHOSEONG and vowel and vowel in _JUNGSEONG:
            tail = chars[i + 2][0] if i + 2 < len(chars) else ""
            after = chars[i + 3][0] if i + 3 < len(chars) else ""
            final = tail if tail in _JONGSEONG[1:] and not (after and after in _JUNGSEONG) else ""
            used = 3 if final else 2
            out.append((chr(0xAC00 + (_CHOSEONG.index(lead) * 21 + _JUNGSEONG.index(vowel)) * 28
                            + _JONGSEONG.index(final)), chars[i][1], chars[i + used - 1][1] + 1))
            i += used
        else:
            out.append((chars[i][0], chars[i][1], chars[i][1] + 1))
            i += 1
    return out


def compose_jamo(text: str) -> str:
    """Recombine compatibility jamo typed apart into syllables: "ㄱㅣㅁ지영" and "ㄱ ㅣ ㅁ" → "김지영", "김"."""
    return "".join(c for c, _, _ in _composed(text))


def located(text: str) -> Located:
    """`normalised_text` of `text`, with each character's origin. Jamo go first: NFKC would turn a lone
    consonant into a leading one that never closes the syllable before it."""
    chars: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    for c, start, end in _composed(text[:MAX_TEXT]):
        for normal in unicodedata.normalize("NFKC", c).lower():  # per character, so positions stay known
            chars.append(normal)
            starts.append(start)
            ends.append(end)
    return Located("".join(chars), tuple(starts), tuple(ends))


def normalised_text(text: str) -> str:
    """Jamo recombined, then NFKC (full-width digits and letters, composed Hangul) and lower case."""
    return located(text).text


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


Span = tuple[int, int]  # characters start..end of the text as written


def _phones(text: Located) -> Iterator[tuple[str, Span]]:
    for run in _PHONE_RUN.finditer(text.text):
        where = [run.start() + i for i, c in enumerate(run.group()) if c.isdigit() or c in _HANGUL_DIGITS]
        digits = "".join(_HANGUL_DIGITS.get(text.text[i], text.text[i]) for i in where)
        for width in (11, 10, 12):
            for start in range(len(digits) - width + 1):
                if phone := _phone(digits[start:start + width]):
                    yield phone, text.span(where[start], where[start + width - 1])


def located_candidates(text: str, normal: Located | None = None) -> Iterator[tuple[str, str, Span]]:
    """Every (kind, normal form, span in `text`) a text could hold: what `IdentifierKey.find` looks up.
    `normal`: `located(text)`, when the caller has it already."""
    normal = located(text) if normal is None else normal
    for phone, span in _phones(normal):
        yield "phone", phone, span
    for m in _HANDLE.finditer(normal.text):
        yield "handle", m.group(1), normal.span(m.start(), m.end() - 1)
    for m in _EMAIL.finditer(normal.text):
        yield "email", m.group(), normal.span(m.start(), m.end() - 1)
    squeezed = normal.without(_SEPARATORS)
    for run in _HANGUL_RUN.finditer(squeezed.text):  # a name or a place: 2 to 12 syllables anywhere in a run
        syllables = run.group()
        for width in range(2, min(12, len(syllables)) + 1):
            for start in range(len(syllables) - width + 1):
                first = run.start() + start
                span = squeezed.span(first, first + width - 1)
                if _whole_words(text, span):
                    yield "name", syllables[start:start + width], span
    tokens = list(_LATIN_TOKEN.finditer(normal.text))  # romanised names: up to four words run together
    for start in range(len(tokens)):
        for width in range(1, 5):
            if start + width <= len(tokens):
                chosen = tokens[start:start + width]
                yield "name", "".join(t.group() for t in chosen), normal.span(chosen[0].start(), chosen[-1].end() - 1)


def _whole_words(text: str, span: Span) -> bool:
    """A name read across separators must start a word and end one (or be followed by a particle); one written
    without separators may stand anywhere, as Korean runs words together."""
    start, end = span
    if not _SEPARATORS.search(text, start, end):
        return True
    if start > 0 and not _SEPARATORS.fullmatch(text[start - 1]):
        return False
    rest = end
    while rest < len(text) and not _SEPARATORS.fullmatch(text[rest]):
        rest += 1
    return rest == end or text[end:rest] in _AFTER_NAME


def candidates(text: str) -> Iterator[tuple[str, str]]:
    """Every (kind, normal form) a text could hold."""
    for kind, form, _ in located_candidates(text):
        yield kind, form


# Generic patterns, checked on suspected posts whatever the cases hold: anyone's personal information.
# a resident registration number: birth date, a separator or none, then a digit for sex and century, six more
_RRN = re.compile(r"(?<!\d)(\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\d|3[01])[\s\-–.]?([1-8])\d{6}(?!\d)")
# a messenger ID named as one: KakaoTalk, LINE, Telegram, WeChat, Discord, or an open-chat link
_MESSENGER = re.compile(
    r"(?:(?:카톡|카카오톡|카카오|ㅋㅌ|kakao(?:talk)?|katalk|ktalk|라인|line|텔레그램|텔레|telegram|tg|위챗|wechat|"
    r"디코|디스코드|discord)\s*(?:id|아이디|아디)?\s*[:：=]?\s*@?([a-z0-9][a-z0-9_.\-]{2,29}))"
    r"|(open\.kakao\.com/o/[a-z0-9]+|t\.me/[a-z0-9_]{4,32})")


def generic_found(text: str, normal: Located | None = None) -> list[tuple[str, Span]]:
    """(kind, span) of every generic pattern in `text`: Korean mobile numbers, resident registration numbers,
    emails and messenger IDs, in any of the obfuscated forms `located` undoes."""
    normal = located(text) if normal is None else normal
    found: list[tuple[str, Span]] = [("phone", span) for _, span in _phones(normal)]
    found += [("rrn", normal.span(m.start(), m.end() - 1)) for m in _RRN.finditer(normal.text)]
    found += [("email", normal.span(m.start(), m.end() - 1)) for m in _EMAIL.finditer(normal.text)]
    for m in _MESSENGER.finditer(normal.text):
        group = 1 if m.group(1) else 2
        found.append(("messenger", normal.span(m.start(group), m.end(group) - 1)))
    # a number's shorter readings inside a longer one (a phone inside a registration number): the longer only
    return [(kind, span) for kind, span in found
            if not any(o != span and o[0] <= span[0] and span[1] <= o[1] for _, o in found)]


def redacted(text: str, found: Iterable[tuple[str, Span]]) -> str:
    """`text` with every found span replaced by its kind in brackets ("[phone]"); overlapping spans merge."""
    spans = sorted((start, end, kind) for kind, (start, end) in found)
    out: list[str] = []
    done = 0
    for start, end, kind in spans:
        if start < done:  # overlaps the last one: that one reaches this one's end too
            done = max(done, end)
            continue
        out.append(text[done:start])
        out.append(f"[{kind}]")
        done = end
    out.append(text[done:])
    return "".join(out)


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

    def find(self, text: str, recorded: Mapping[bytes, T], normal: Located | None = None) -> list[tuple[T, Span]]:
        """Each recorded identifier (digest → what the caller keeps of it) that `text` holds in any obfuscated
        form, with its span in `text`."""
        found = []
        for kind, form, span in located_candidates(text, normal):
            hit = recorded.get(self.digest(kind, form))
            if hit is not None:
                found.append((hit, span))
        return found

    def check(self, text: str, recorded: Mapping[bytes, str]) -> set[str]:
        """The kinds of the recorded identifiers (digest → kind) that `text` holds in any obfuscated form."""
        return {kind for kind, _ in self.find(text, recorded)}
