"""Typo/obfuscation normaliser: crawled text to a compact comparison form, and keywords to obfuscated spellings.

The rules are data (ingest/data/obfuscation.yaml); this module only knows Unicode. `Normaliser.normalise` runs
them backwards on crawled text, `Normaliser.obfuscations` forwards on a keyword, and every forward spelling is
checked to normalise back to the keyword's own form, so search terms and matching can never disagree.

The comparison form is for matching, not display: spaces, punctuation and symbols are gone and look-alikes are
folded ("leaked" compares as "ieaked", since "1" may stand for i or l). Digits are folded only inside a Latin
word between two letters ("p0rn"), so numbers in ordinary text ("2026년 11월", "mp4", "4k") survive.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

DEFAULT_RULES = Path(__file__).parent / "data" / "obfuscation.yaml"

# --- Hangul jamo arithmetic --------------------------------------------------------------------------------------
# A modern syllable is 0xAC00 + (L * 21 + V) * 28 + T over 19 initials, 21 vowels and 27 finals (T = 0: none).
# The compatibility jamo people type (ㄱ, ㅏ) are matched to the conjoining ones (U+1100 block) by Unicode name.

_SBASE, _LCOUNT, _VCOUNT, _TCOUNT = 0xAC00, 19, 21, 28
_LBASE, _VBASE, _TBASE = 0x1100, 0x1161, 0x11A7


def _compat_of(conjoining: str) -> str | None:
    """The compatibility jamo (U+3131 block) with the same letter name as a conjoining jamo, if any."""
    name = unicodedata.name(conjoining, "")
    for role in ("CHOSEONG", "JUNGSEONG", "JONGSEONG"):
        if name.startswith(f"HANGUL {role} "):
            try:
                return unicodedata.lookup("HANGUL LETTER " + name.removeprefix(f"HANGUL {role} "))
            except KeyError:
                return None
    return None


@cache
def _jamo_tables() -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, str], dict[tuple[str, str], str]]:
    """Initial, vowel and final indexes of compatibility jamo; other jamo forms -> compatibility; compound finals."""
    initials = {c: i for i in range(_LCOUNT) if (c := _compat_of(chr(_LBASE + i)))}
    vowels = {c: i for i in range(_VCOUNT) if (c := _compat_of(chr(_VBASE + i)))}
    finals = {c: i for i in range(1, _TCOUNT) if (c := _compat_of(chr(_TBASE + i)))}
    to_compat: dict[str, str] = {}
    for cp in [*range(0x1100, 0x1200), *range(0xA960, 0xA980), *range(0xD7B0, 0xD800)]:
        if compat := _compat_of(chr(cp)):
            to_compat[chr(cp)] = compat
    for cp in range(0xFFA0, 0xFFDD):  # halfwidth jamo: NFKC gives the conjoining form
        ch = chr(cp)
        nf = unicodedata.normalize("NFKC", ch)
        if nf in to_compat:
            to_compat[ch] = to_compat[nf]
        elif 0x3131 <= ord(nf) <= 0x318E:
            to_compat[ch] = nf
    # compound finals by name: "HANGUL LETTER RIEUL-KIYEOK" is ㄹ + ㄱ
    compound: dict[tuple[str, str], str] = {}
    for c in finals:
        parts = unicodedata.name(c).removeprefix("HANGUL LETTER ").split("-")
        if len(parts) == 2:
            try:
                a, b = (unicodedata.lookup(f"HANGUL LETTER {p}") for p in parts)
            except KeyError:
                continue
            compound[(a, b)] = c
    return initials, vowels, finals, to_compat, compound


# Compound vowels have no component names in Unicode; the seven modern ones.
_COMPOUND_VOWELS = {("ㅗ", "ㅏ"): "ㅘ", ("ㅗ", "ㅐ"): "ㅙ", ("ㅗ", "ㅣ"): "ㅚ", ("ㅜ", "ㅓ"): "ㅝ",
                    ("ㅜ", "ㅔ"): "ㅞ", ("ㅜ", "ㅣ"): "ㅟ", ("ㅡ", "ㅣ"): "ㅢ"}


def is_compat_jamo(ch: str) -> bool:
    return 0x3131 <= ord(ch) <= 0x318E


def is_vowel_jamo(ch: str) -> bool:
    return ch in _jamo_tables()[1]


def is_consonant_jamo(ch: str) -> bool:
    initials, _, finals, _, _ = _jamo_tables()
    return ch in initials or ch in finals


def is_syllable(ch: str) -> bool:
    return _SBASE <= ord(ch) < _SBASE + _LCOUNT * _VCOUNT * _TCOUNT


def split_syllable(ch: str) -> str:
    """A Hangul syllable as the compatibility jamo someone would type: 동 -> ㄷㅗㅇ, 닭 -> ㄷㅏㄺ."""
    if not is_syllable(ch):
        return ch
    initials, vowels, finals, _, _ = _jamo_tables()
    s = ord(ch) - _SBASE
    l_idx, v_idx, t_idx = s // (_VCOUNT * _TCOUNT), (s % (_VCOUNT * _TCOUNT)) // _TCOUNT, s % _TCOUNT
    inv_l = {i: c for c, i in initials.items()}
    inv_v = {i: c for c, i in vowels.items()}
    inv_t = {i: c for c, i in finals.items()}
    return inv_l[l_idx] + inv_v[v_idx] + (inv_t[t_idx] if t_idx else "")


def compose_jamo(text: str) -> str:
    """Compose runs of compatibility jamo into syllables: ㅇㅑ동 -> 야동, ㅇㅑㄷㅗㅇ -> 야동, ㄷㅏㄹㄱㅇㅣ -> 닭이.

    An initial needs a vowel after it; a consonant after the vowel is a final unless a vowel follows it (then it
    starts the next syllable). Jamo never attach to an already composed syllable, so "하ㅋㅋ" stays as it is.
    """
    initials, vowels, finals, _, compound_finals = _jamo_tables()
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch not in initials or i + 1 >= n or text[i + 1] not in vowels:
            out.append(ch)
            i += 1
            continue
        vowel, j = text[i + 1], i + 2
        if j < n and (vowel, text[j]) in _COMPOUND_VOWELS:
            vowel, j = _COMPOUND_VOWELS[(vowel, text[j])], j + 1
        final = ""
        if j < n and text[j] in finals and not (j + 1 < n and text[j + 1] in vowels):
            final, j = text[j], j + 1
            pair = (final, text[j]) if j < n else None
            if pair in compound_finals and not (j + 1 < n and text[j + 1] in vowels):
                final, j = compound_finals[pair], j + 1
        code = _SBASE + (initials[ch] * _VCOUNT + vowels[vowel]) * _TCOUNT + (finals[final] if final else 0)
        out.append(chr(code))
        i = j
    return "".join(out)


# --- rules -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerateRules:
    """Which forward obfuscations to generate (the `generate` section of the rules file)."""

    max_per_term: int = 8
    spaced: tuple[str, ...] = (" ",)
    spaced_max_chars: int = 6
    symbols: tuple[str, ...] = ("*", ".")
    symbols_max_chars: int = 6
    symbols_once_when_longer: bool = True
    jamo_split: tuple[str, ...] = ("first", "last", "all")
    jamo_all_max_chars: int = 4
    hangul_lookalike: bool = True
    latin_lookalike: tuple[str, ...] = ("digits_all", "digit_one", "symbol_one")
    latin_letters: frozenset[str] = frozenset("aeios")


@dataclass(frozen=True)
class Rules:
    fillers: frozenset[str]
    latin: Mapping[str, str]  # look-alike digit/symbol -> letter
    folds: Mapping[str, str]  # letter -> canonical letter
    script: Mapping[str, str]  # Cyrillic/Greek look-alike -> Latin letter
    hangul_consonants: Mapping[str, str]  # look-alike -> consonant jamo
    hangul_vowels: Mapping[str, str]  # look-alike -> vowel jamo
    compose_jamo: bool = True
    generate: GenerateRules = field(default_factory=GenerateRules)

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> Rules:
        def invert(section: Mapping[str, Iterable[str]] | None) -> dict[str, str]:
            out: dict[str, str] = {}
            for target, sources in (section or {}).items():
                for src in sources or ():
                    out.setdefault(str(src).casefold(), str(target))
            return out

        gen = data.get("generate") or {}
        spaced = gen.get("spaced") or {}
        symbols = gen.get("symbols") or {}
        hangul = data.get("hangul_lookalikes") or {}
        latin_gen = gen.get("latin_lookalike") or {}
        jamo_gen = gen.get("jamo_split") or {}
        return cls(
            fillers=frozenset(str(c) for c in data.get("fillers") or ()),
            latin=invert(data.get("latin_lookalikes")),
            folds=invert(data.get("letter_folds")),
            script=invert(data.get("script_lookalikes")),
            hangul_consonants=invert(hangul.get("consonants")),
            hangul_vowels=invert(hangul.get("vowels")),
            compose_jamo=bool(data.get("compose_jamo", True)),
            generate=GenerateRules(
                max_per_term=int(gen.get("max_per_term", 8)),
                spaced=tuple(spaced.get("separators") or ()),
                spaced_max_chars=int(spaced.get("max_chars", 6)),
                symbols=tuple(symbols.get("separators") or ()),
                symbols_max_chars=int(symbols.get("max_chars", 6)),
                symbols_once_when_longer=bool(symbols.get("once_when_longer", False)),
                jamo_split=tuple(jamo_gen.get("modes") or ()),
                jamo_all_max_chars=int(jamo_gen.get("all_max_chars", 4)),
                hangul_lookalike=bool(gen.get("hangul_lookalike", False)),
                latin_lookalike=tuple(latin_gen.get("modes") or ()),
                latin_letters=frozenset(str(c).casefold() for c in latin_gen.get("letters") or ()),
            ),
        )


def _is_latin_letter(ch: str) -> bool:
    return "a" <= ch <= "z"


def _droppable(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PSCZ"


class Normaliser:
    """Obfuscation rules loaded from data; `normalise` for matching, `obfuscations` for searching."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules
        # look-alike characters must survive filler removal until their context is known ("p.0.r.n", "^")
        self._protected = frozenset(rules.latin) | frozenset(rules.hangul_consonants) | frozenset(rules.hangul_vowels)
        self._run_chars = frozenset(rules.latin) | frozenset(rules.script)
        # forward maps: letter -> what may stand for it (first listed first)
        self._letter_digits: dict[str, list[str]] = {}
        self._letter_symbols: dict[str, list[str]] = {}
        for src, letter in rules.latin.items():
            bucket = self._letter_digits if src.isdigit() else self._letter_symbols
            bucket.setdefault(letter, []).append(src)
        self._consonant_lookalikes: dict[str, list[str]] = {}
        for src, jamo in rules.hangul_consonants.items():
            self._consonant_lookalikes.setdefault(jamo, []).append(src)
        self.fingerprint = hashlib.sha256(
            json.dumps([sorted(rules.fillers), sorted(rules.latin.items()), sorted(rules.folds.items()),
                        sorted(rules.script.items()), sorted(rules.hangul_consonants.items()),
                        sorted(rules.hangul_vowels.items()), rules.compose_jamo], ensure_ascii=False).encode()
        ).hexdigest()[:16]

    @classmethod
    def load(cls, path: str | Path | None = None) -> Normaliser:
        with open(path or DEFAULT_RULES, encoding="utf-8") as f:
            return cls(Rules.from_mapping(yaml.safe_load(f) or {}))

    # --- backwards: text -> comparison form ----------------------------------------------------------------------

    def normalise(self, text: str) -> str:
        """Compact comparison form: "야 동", "야*동", "ㅇㅑ동", "oㅑ동" -> "야동"; "p 0 r n", "ｐ０ｒｎ" -> "porn"."""
        joined = "".join(self._tokens(text))
        # again across word gaps: "ㅇ ㅑ동" splits one syllable over two words
        return compose_jamo(joined) if self.rules.compose_jamo else joined

    def normalise_spaced(self, text: str, *, fold: bool = True) -> str:
        """The same form with one space between words, for matching that needs word edges ("teen", "고1").

        fold=False leaves look-alikes alone ("old" stays "old", not "oid"): the form lexicon patterns are written in.
        """
        return " ".join(self._tokens(text, fold=fold))

    def _tokens(self, text: str, *, fold: bool = True) -> list[str]:
        text = self._unify(text)
        tokens = self._split(text)
        out = []
        for tok in tokens:
            if fold:
                tok = self._hangul_lookalikes(tok)
            if self.rules.compose_jamo:
                tok = compose_jamo(tok)
            if fold:
                tok = self._latin_runs(tok)
            tok = "".join(ch for ch in tok if ch not in self.rules.fillers and not _droppable(ch))
            if tok:
                out.append(tok)
        return out

    def _unify(self, text: str) -> str:
        """NFC (fixes decomposed Korean), every jamo form as compatibility jamo, NFKC elsewhere, casefold.

        NFKC is kept off compatibility jamo: it would turn ㅇㅑㄷㅗㅇ into 야 plus loose conjoining letters, losing
        which consonant is a final.
        """
        to_compat = _jamo_tables()[3]
        text = unicodedata.normalize("NFC", text)
        parts: list[str] = []
        plain: list[str] = []
        for ch in text:
            jamo = to_compat.get(ch, ch if is_compat_jamo(ch) else None)
            if jamo is None:
                plain.append(ch)
                continue
            if plain:
                parts.append(unicodedata.normalize("NFKC", "".join(plain)).casefold())
                plain = []
            parts.append(jamo)
        if plain:
            parts.append(unicodedata.normalize("NFKC", "".join(plain)).casefold())
        return "".join(parts)

    def _split(self, text: str) -> list[str]:
        """Drop fillers, then split into words, gluing spaced-out letters ("야 동", "p o r n") back together."""
        kept = []
        for ch in text:
            if ch.isspace() or unicodedata.category(ch).startswith("Z"):
                kept.append(" ")
            elif ch in self._protected or not (ch in self.rules.fillers or _droppable(ch)):
                kept.append(ch)
        words = "".join(kept).split()
        out: list[str] = []
        prev_single = False
        for w in words:
            single = len(w) == 1
            if out and prev_single and single:
                out[-1] += w
            else:
                out.append(w)
            prev_single = single
        return out

    def _hangul_lookalikes(self, tok: str) -> str:
        """'o' before a vowel jamo is ㅇ ("oㅑ동"); 'l' after a consonant jamo is ㅣ."""
        if not any(is_compat_jamo(c) for c in tok):
            return tok
        chars = list(tok)
        for i, ch in enumerate(chars):
            if ch in self.rules.hangul_consonants and i + 1 < len(chars) and is_vowel_jamo(chars[i + 1]):
                chars[i] = self.rules.hangul_consonants[ch]
            elif ch in self.rules.hangul_vowels and i > 0 and is_consonant_jamo(chars[i - 1]):
                chars[i] = self.rules.hangul_vowels[ch]
        return "".join(chars)

    def _latin_runs(self, tok: str) -> str:
        """Fold look-alikes inside Latin words: Cyrillic/Greek letters, i/l, and digits/symbols between letters."""
        out: list[str] = []
        i, n = 0, len(tok)
        while i < n:
            j = i
            while j < n and (_is_latin_letter(tok[j]) or tok[j] in self._run_chars or tok[j].isdigit()):
                j += 1
            if j == i:
                out.append(tok[i])
                i += 1
                continue
            out.append(self._fold_run(tok[i:j]))
            i = j
        return "".join(out)

    def _fold_run(self, run: str) -> str:
        if not any(_is_latin_letter(c) for c in run):
            return run  # digits alone, or an all-Cyrillic word: not ours to touch
        rules = self.rules
        chars = [rules.script.get(c, c) if not _is_latin_letter(c) and not c.isdigit() else c for c in run]
        chars = [rules.folds.get(c, c) for c in chars]
        i, n = 0, len(chars)
        while i < n:
            if _is_latin_letter(chars[i]):
                i += 1
                continue
            j = i
            while j < n and not _is_latin_letter(chars[j]):
                j += 1
            # only a run with a letter on both sides: "p0rn" yes, "mp4" / "4k" no
            if i > 0 and j < n and all(c in rules.latin for c in chars[i:j]):
                for k in range(i, j):
                    letter = rules.latin[chars[k]]
                    chars[k] = rules.folds.get(letter, letter)
            i = j
        return "".join(chars)

    # --- forwards: keyword -> obfuscated spellings ---------------------------------------------------------------

    def obfuscations(self, term: str) -> list[str]:
        """Spellings uploaders use for `term`, each checked to normalise back to normalise(term)."""
        target = self.normalise(term)
        if len(target) < 2:
            return []
        gen = self.rules.generate
        kinds = [self._spaced(term, gen.spaced, gen.spaced_max_chars),
                 self._spaced(term, gen.symbols, gen.symbols_max_chars, once_when_longer=gen.symbols_once_when_longer),
                 self._jamo_splits(term, gen.jamo_split, gen.jamo_all_max_chars),
                 self._hangul_lookalike(term) if gen.hangul_lookalike else [],
                 self._latin_lookalikes(term, gen.latin_lookalike)]
        out: list[str] = []
        seen = {term}
        # round robin over the kinds, so a short list still shows every trick
        for rank in range(max(map(len, kinds), default=0)):
            for variants in kinds:
                if rank >= len(variants) or len(out) >= gen.max_per_term:
                    continue
                v = variants[rank]
                if v not in seen and self.normalise(v) == target:
                    seen.add(v)
                    out.append(v)
        return out

    @staticmethod
    def _spaced(term: str, separators: Iterable[str], max_chars: int, *, once_when_longer: bool = False) -> list[str]:
        chars = [c for c in term if not c.isspace()]
        if len(chars) < 2:
            return []
        if len(chars) <= max_chars:
            return [sep.join(chars) for sep in separators]
        if once_when_longer and not term[1].isspace():
            return [term[0] + sep + term[1:] for sep in separators]
        return []

    @staticmethod
    def _jamo_splits(term: str, modes: Iterable[str], all_max_chars: int) -> list[str]:
        positions = [i for i, c in enumerate(term) if is_syllable(c)]
        if not positions:
            return []
        out = []
        for mode in modes:
            if mode == "all" and len(positions) > all_max_chars:
                continue
            chosen = {"first": positions[:1], "last": positions[-1:], "all": positions}.get(mode, [])
            out.append("".join(split_syllable(c) if i in chosen else c for i, c in enumerate(term)))
        return out

    def _hangul_lookalike(self, term: str) -> list[str]:
        for i, c in enumerate(term):
            if not is_syllable(c):
                continue
            jamo = split_syllable(c)
            ascii_like = [s for s in self._consonant_lookalikes.get(jamo[0], ()) if s.isascii() and s.isalpha()]
            if ascii_like:
                return [term[:i] + ascii_like[0] + jamo[1:] + term[i + 1:]]
        return []

    def _latin_lookalikes(self, term: str, modes: Iterable[str]) -> list[str]:
        if not any(_is_latin_letter(c) for c in term.casefold()):
            return []
        base = term.casefold()
        # interior letters of each Latin word: the normaliser only folds a digit or symbol between two letters
        interior = [i for i, c in enumerate(base)
                    if c in self.rules.generate.latin_letters and 0 < i < len(base) - 1
                    and _is_latin_letter(base[i - 1]) and _is_latin_letter(base[i + 1])]

        def lookalikes(letter: str, table: Mapping[str, list[str]]) -> list[str]:
            return table.get(letter) or []

        out = []
        for mode in modes:
            chars = list(base)
            table = self._letter_symbols if mode == "symbol_one" else self._letter_digits
            changed = 0
            for i in interior:
                subs = lookalikes(base[i], table)
                if subs:
                    chars[i] = subs[0]
                    changed += 1
                    if mode != "digits_all":
                        break
            if changed:
                out.append("".join(chars))
        return out
