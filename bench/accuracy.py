"""Recall and precision of the matcher on the dev corpus, run exactly as the service runs it (no gRPC, no DB).

    .venv/bin/python -m bench.accuracy [--limit N] [--transforms a,b] [--seed S] [--out report.md]
    .venv/bin/python -m bench.accuracy --filler dev,1000,5000,all [--refit]   # precision at scale: bench.precision

References are corpus images (their original bytes); queries are each reference under each transform of
`bench.transforms.TRANSFORMS`, re-encoded as JPEG q90 like an upload. Both go through `media_features` with the
service's feature families and `SIGNALS[...].reference_vectors / query_vectors`; matches come from
`server.matching.match_library` with the default thresholds. Beside the matcher, every (query, reference) pair
is also scored by brute force over the same vectors: that gives the score distributions behind the thresholds
and a check that the FAISS search found every pair within the threshold.

Prints a Markdown report (progress goes to stderr). The full corpus takes about 0.4 s per image on a 2-core CPU:
266 references plus 266 x 9 queries is about 18 minutes.
"""

from __future__ import annotations

import argparse
import datetime
import inspect
import json
import os
import random
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from bench.record import machine, publish
from bench.transforms import CORPUS, TRANSFORMS, encode, load
from server.config import MatchSettings, Settings
from server.inference.inprocess import InProcessInference
from server.matching.cascade import Cascade, FullPlan
from server.matching.decisions import Thresholds, match_library
from server.matching.library import Library
from server.service import match_families, reference_families
from server.signals import SignalVectors, configured_signals

# The signals a service on the default settings stores and searches with (not every registered one)
SIGNALS = configured_signals(MatchSettings())

SIGNAL_NAMES = tuple(SIGNALS)
POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.uint8)


# -- corpus and near-duplicate groups ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    index: int  # position in manifest.json's images; also the owner id in the library
    file: str  # images/img_NNNN.jpg
    orig: str  # path in the source package
    source: str
    group: str  # near-duplicate group key (source:normalised name)

    @property
    def label(self) -> str:
        return f"{PurePosixPath(self.file).stem} ({self.short_orig})"

    @property
    def short_orig(self) -> str:
        parts = PurePosixPath(self.orig).parts
        if "contents" in parts:  # KDE wallpapers: the name is the directory, the file only a resolution
            at = parts.index("contents")
            return "/".join(parts[at - 1:at] + parts[at + 1:])
        return parts[-1]


# Pairs a person looked at after a full-corpus run flagged them: one picture is the other with something added,
# so they are the same picture (a true match), not a false positive. Name rules cannot see these.
LOOKED_AT_SAME_PICTURE = {
    "maldives.jpg": "background.jpg",  # a login screen: background.jpg with a login box on top
    "ela_modified.jpg": "ela_original.jpg",  # the error-level-analysis sample: the original with Tux pasted in
}


def near_duplicate_key(orig: str, source: str) -> str:
    """Same key = same picture or the same scene, by name: other resolutions and aspect ratios of a wallpaper
    (Elephants, Elephants_3840x2160; KDE's <name>/contents/images{,_dark}/<WxH>), stereo and calibration pairs
    (motorcycle_left/right, aloeL/R, left11/right11), numbered frames or shots (basketball1/2, pic1..6)."""
    path = PurePosixPath(orig)
    if path.name in LOOKED_AT_SAME_PICTURE:
        path = path.with_name(LOOKED_AT_SAME_PICTURE[path.name])
    stem = path.stem
    if "contents" in path.parts:
        stem = path.parts[path.parts.index("contents") - 1]
    stem = re.sub(r"[_-]?\d{3,5}x\d{3,5}$", "", stem)  # resolution suffix
    stem = re.sub(r"(?i)(^|[_-])(left|right)(?=\d*$|[_-])", "", stem)  # stereo / calibration side
    stem = re.sub(r"(?<=[a-z])[A-Z]$", "", stem)  # aloeL/aloeR, leuvenA/leuvenB
    stem = re.sub(r"[-_][a-z]$", "", stem)  # basketball-court1-a / -b
    stem = re.sub(r"[\d_\-\s]+$", "", stem)  # trailing numbers: room1, room2
    return f"{source}:{stem.lower() or '(' + str(path.parent.name) + ' left/right)'}"


def corpus_entries(limit: int | None, seed: int) -> list[Entry]:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    entries = [Entry(i, e["file"], e["orig"], e["source"], near_duplicate_key(e["orig"], e["source"]))
               for i, e in enumerate(manifest["images"])]
    if limit is not None and limit < len(entries):
        picked = sorted(random.Random(seed).sample(range(len(entries)), limit))  # deterministic subset
        entries = [entries[i] for i in picked]
    return entries


def transformed(name: str, image: Image.Image, seed: int) -> Image.Image:
    """The transform, with a per-image seed where it takes one (crop position, caption, paste position)."""
    function = TRANSFORMS[name]
    if "seed" in inspect.signature(function).parameters:
        return function(image, seed=seed)  # type: ignore[call-arg]
    return function(image)


def true_query(entry: Entry, transform: str, seed: int) -> bytes:
    """A copy of a reference as an uploader would post it: the transform, then JPEG q90."""
    return encode(transformed(transform, load(CORPUS / entry.file), seed * 1_000_003 + entry.index), "JPEG", 90)


def unrelated_query(path: Path, position: int, seed: int) -> tuple[str, bytes]:
    """An image that copies no reference, under one uploader transform picked by its position (crawled pictures
    are re-encoded, cropped and captioned whether or not they are anyone's)."""
    name = sorted(TRANSFORMS)[random.Random(f"unrelated-{seed}-{position}").randrange(len(TRANSFORMS))]
    return name, encode(transformed(name, load(path), seed * 1_000_003 + 500_000 + position), "JPEG", 90)


# -- brute-force scores -----------------------------------------------------------------------------------------


@dataclass
class RowBank:
    """All references' rows of one signal, stacked, to score every (query, reference) pair exactly."""

    vectors: np.ndarray
    positions: np.ndarray  # row -> position of its reference in the entry list

    @classmethod
    def of(cls, rows: list[SignalVectors], dim: int, dtype: type) -> RowBank:
        kept = [(i, r.vectors) for i, r in enumerate(rows) if len(r)]
        if not kept:
            return cls(np.zeros((0, dim), dtype), np.zeros(0, np.int64))
        return cls(np.concatenate([v for _, v in kept]).astype(dtype),
                   np.concatenate([np.full(len(v), i, np.int64) for i, v in kept]))


def best_per_reference(bank: RowBank, query: SignalVectors, n_refs: int, signal: str,
                       offsets: np.ndarray | None = None) -> np.ndarray:
    """The closest score between any query row and any row of each reference (NaN where either has none);
    `offsets` (embeddings) are subtracted per query row first, as score normalisation does."""
    out = np.full(n_refs, np.nan, np.float32)
    if not len(query) or not len(bank.vectors):
        return out
    if SIGNALS[signal].binary:  # PDQ: Hamming distance between 256-bit codes
        pair = POPCOUNT[np.bitwise_xor(query.vectors[:, None, :], bank.vectors[None, :, :])].sum(axis=2)
        per_row = pair.min(axis=0).astype(np.float32)
        reduce: Callable[..., object] = np.fmin
    elif not SIGNALS[signal].lower_is_closer:  # embeddings: cosine (rows are L2-normalised)
        similarity = query.vectors @ bank.vectors.T
        per_row = (similarity - offsets[:, None] if offsets is not None else similarity).max(axis=0)
        reduce = np.fmax
    else:  # face descriptors: Euclidean distance
        diff = query.vectors[:, None, :] - bank.vectors[None, :, :]
        per_row = np.sqrt((diff * diff).sum(axis=2)).min(axis=0)
        reduce = np.fmin
    reduce.at(out, bank.positions, per_row)  # type: ignore[attr-defined]
    return out


# -- the run ----------------------------------------------------------------------------------------------------


@dataclass
class Query:
    transform: str
    position: int  # of the source reference in the entry list
    matched: dict[str, dict[int, float]]  # signal -> {reference position: best score} from the matcher
    scores: dict[str, np.ndarray]  # signal -> brute-force best score per reference position
    seconds: float
    cascade_matched: set[int] = field(default_factory=set)  # reference positions the service's cascade matches
    screened_out: bool = False  # the cascade did not compute this query's full embedding
    full_regions: int | None = None  # regions the cascade embedded in full (None: every region, or none)
    query_regions: int = 0  # regions the full path embeds


@dataclass
class Run:
    entries: list[Entry]
    transforms: list[str]
    thresholds: Thresholds
    settings: Settings
    queries: list[Query] = field(default_factory=list)
    reference_rows: dict[str, list[int]] = field(default_factory=dict)  # signal -> rows per reference
    reference_seconds: float = 0.0
    wall_seconds: float = 0.0


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(entries: list[Entry], transforms: list[str], seed: int) -> Run:
    settings = Settings()
    match: MatchSettings = settings.match
    thresholds = Thresholds.defaults(match)
    radius = {n: thresholds.of(n) for n in SIGNALS}
    out = Run(entries, transforms, thresholds, settings)
    started = time.perf_counter()
    owner_position = {e.index: p for p, e in enumerate(entries)}
    cascade = Cascade.of(match, SIGNALS)  # the service's two stages, decided on the same features
    with InProcessInference(settings) as inference:
        library = Library("references")
        rows: dict[str, list[SignalVectors]] = {n: [] for n in SIGNALS}
        for position, entry in enumerate(entries):
            features = inference.media_features((CORPUS / entry.file).read_bytes(), reference_families())
            vectors = {n: s.reference_vectors(features, match) for n, s in SIGNALS.items()}
            library.add(entry.index, vectors)
            for name, v in vectors.items():
                rows[name].append(v)
            if position % 25 == 0:
                progress(f"references {position + 1}/{len(entries)}")
        out.reference_seconds = time.perf_counter() - started
        out.reference_rows = {n: [len(v) for v in r] for n, r in rows.items()}
        banks = {n: RowBank.of(r, SIGNALS[n].dim, np.uint8 if SIGNALS[n].binary else np.float32)
                 for n, r in rows.items()}
        total = len(entries) * len(transforms)
        done = 0
        for transform in transforms:
            for position, entry in enumerate(entries):
                item_started = time.perf_counter()
                features = inference.media_features(true_query(entry, transform, seed), match_families())
                queries = {n: s.query_vectors(features, match) for n, s in SIGNALS.items()}
                results = match_library(library, queries, radius, lambda _owner: thresholds, features, match)
                matched: dict[str, dict[int, float]] = {n: {} for n in SIGNALS}
                for result in results:  # several segments per owner are possible for video; keep the best
                    at = owner_position[result.owner]
                    previous = matched[result.signal].get(at)
                    closer = SIGNALS[result.signal].lower_is_closer
                    if previous is None or (result.score < previous if closer else result.score > previous):
                        matched[result.signal][at] = result.score
                scores = {n: best_per_reference(banks[n], queries[n], len(entries), n) for n in SIGNALS}
                query = Query(transform, position, matched, scores, time.perf_counter() - item_started)
                if cascade is not None:
                    plan = cascade.plan([library], queries, radius, match)
                    query.screened_out = not plan.needed
                    seen = {n: v for n, v in queries.items() if not (query.screened_out and n == cascade.screened)}
                    if plan.needed and not plan.everything:
                        seen[cascade.screened] = planned_rows(queries[cascade.screened], plan)
                        query.full_regions = len(plan.frames)
                        query.query_regions = len(queries[cascade.screened])
                    chosen = cascade.without_screen_duplicates(
                        match_library(library, seen, radius, lambda _owner: thresholds, features, match))
                    query.cascade_matched = {owner_position[r.owner] for r in chosen}
                out.queries.append(query)
                done += 1
                if done % 25 == 0 or done == total:
                    elapsed = time.perf_counter() - started - out.reference_seconds
                    eta = elapsed / done * (total - done) / 60
                    progress(f"queries {done}/{total} ({transform}), eta {eta:.1f} min")
    out.wall_seconds = time.perf_counter() - started
    return out


def planned_rows(rows: SignalVectors, plan: FullPlan) -> SignalVectors:
    """The rows of the regions `plan` names: what the service's second stage embeds (the same crops give the same
    vectors, so they are taken from the full embedding computed here for the full path)."""
    keep = np.zeros(len(rows), bool)
    for box, frame in zip(plan.boxes, plan.frames, strict=True):
        keep |= (rows.frames == frame) & np.all(np.abs(rows.boxes - box) < 1e-4, axis=1)
    return SignalVectors(rows.vectors[keep], rows.timestamps[keep], rows.boxes[keep], rows.frames[keep])


# -- the report -------------------------------------------------------------------------------------------------


@dataclass
class Tally:
    queries: int = 0
    found: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # signal or "any" -> queries
    eligible: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # reference has rows of signal
    false_pairs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    near_dup_pairs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    queries_with_false: int = 0
    negative_pairs: int = 0  # (query, reference) pairs of different, non-near-duplicate sources


def load_average() -> str:
    """Other work on the machine slows the run (not the results); say how busy it was."""
    return " / ".join(f"{v:.2f}" for v in os.getloadavg())


def pct(part: int, whole: int) -> str:
    return f"{part / whole:.3f}" if whole else "n/a"


def quantile(values: list[float] | np.ndarray, q: float) -> float:
    values = np.asarray(values, np.float64)
    values = values[~np.isnan(values)]
    return float(np.quantile(values, q)) if len(values) else float("nan")


def fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def report(result: Run, args: argparse.Namespace) -> str:
    entries, thresholds = result.entries, result.thresholds
    groups = [e.group for e in entries]
    same_group = np.array([[a == b for b in groups] for a in groups])
    lines: list[str] = []
    add = lines.append
    n_queries = len(result.queries)
    add("# Matcher accuracy on the dev corpus (`python -m bench.accuracy`)\n")
    add(f"- Date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    add(f"- Machine: {machine()}; load average (1/5/15 min) at the start {args.load_at_start}, "
        f"at the end {load_average()}")
    add(f"- Command: `python -m bench.accuracy{' ' + ' '.join(sys.argv[1:]) if sys.argv[1:] else ''}`")
    add(f"- References: {len(entries)} corpus images"
        + (f" (seeded subset, --limit {args.limit} --seed {args.seed})" if args.limit else " (all)")
        + f"; queries: {n_queries} ({len(result.transforms)} transforms, JPEG q90)")
    add("- Thresholds (MatchSettings defaults, search radius = thresholds): "
        + ", ".join(f"{n} {'<=' if SIGNALS[n].lower_is_closer else '>='} {thresholds.of(n):g}" for n in SIGNAL_NAMES)
        + f"; pdq_min_quality {result.settings.match.pdq_min_quality}, embedding_k {result.settings.match.embedding_k},"
        f" face_k {result.settings.match.face_k}; region_grid {result.settings.models.region_grid}")
    rows = result.reference_rows
    add("- Reference rows: " + ", ".join(
        f"{n} {sum(rows[n])} (references with none: {sum(1 for r in rows[n] if not r)})" for n in SIGNAL_NAMES))
    query_seconds = [q.seconds for q in result.queries]
    add(f"- Wall time: {result.wall_seconds / 60:.1f} min (references {result.reference_seconds:.0f} s, "
        f"{result.reference_seconds / max(1, len(entries)):.2f} s each; queries median "
        f"{quantile(query_seconds, 0.5):.2f} s each)\n")

    # Near-duplicate groups actually present in this run
    present: dict[str, list[Entry]] = defaultdict(list)
    for e in entries:
        present[e.group].append(e)
    multi = {g: m for g, m in present.items() if len(m) > 1}
    add("## Near-duplicate groups (from manifest 'orig' names; matches inside a group count neither way)\n")
    if multi:
        for group, members in sorted(multi.items()):
            add(f"- `{group}`: " + ", ".join(m.label for m in members))
    else:
        add("- none in this subset")
    add("")

    # Per-transform recall and false matches
    tallies: dict[str, Tally] = defaultdict(Tally)
    false_pairs: list[tuple[str, Entry, Entry, str, float]] = []
    near_dup_hits: list[tuple[str, Entry, Entry, str, float]] = []
    misses: list[Query] = []
    has_rows = {n: np.array([r > 0 for r in rows[n]]) for n in SIGNAL_NAMES}
    for q in result.queries:
        tally = tallies[q.transform]
        tally.queries += 1
        tally.negative_pairs += int((~same_group[q.position]).sum())
        any_found = False
        any_false = False
        for name in SIGNAL_NAMES:
            matched = q.matched.get(name, {})
            if has_rows[name][q.position]:
                tally.eligible[name] += 1
            if q.position in matched:
                tally.found[name] += 1
                any_found = True
            for at, score in matched.items():
                if at == q.position:
                    continue
                if same_group[q.position, at]:
                    tally.near_dup_pairs[name] += 1
                    near_dup_hits.append((q.transform, entries[q.position], entries[at], name, score))
                else:
                    tally.false_pairs[name] += 1
                    false_pairs.append((q.transform, entries[q.position], entries[at], name, score))
                    any_false = True
        wrong_any = {at for name in SIGNAL_NAMES for at in q.matched.get(name, {})
                     if at != q.position and not same_group[q.position, at]}
        near_any = {at for name in SIGNAL_NAMES for at in q.matched.get(name, {})
                    if at != q.position and same_group[q.position, at]}
        tally.false_pairs["any"] += len(wrong_any)
        tally.near_dup_pairs["any"] += len(near_any)
        tally.found["any"] += int(any_found)
        tally.queries_with_false += int(any_false)
        if not any_found:
            misses.append(q)

    add("## Recall per transform (the right reference among the matches)\n")
    add("Goal: >= 0.95 on every transform, >= 0.85 on paste_25. Face recall is over queries whose reference has a "
        "face row. False pairs: (query, other reference) matches outside the query's near-duplicate group.\n")
    add("| transform | queries | recall (any signal) | goal | " + " | ".join(SIGNAL_NAMES)
        + " | false pairs | queries with a false match | near-dup pairs |")
    add("|---|---|---|---|" + "---|" * len(SIGNAL_NAMES) + "---|---|---|")
    for transform in result.transforms:
        t = tallies[transform]
        goal = 0.85 if transform == "paste_25" else 0.95
        recall = t.found["any"] / t.queries if t.queries else float("nan")
        mark = "ok" if recall >= goal else "**below**"
        per_signal = " | ".join(  # faces: over the queries whose reference has one
            pct(t.found[n], t.queries) if SIGNALS[n].verifiable else f"{t.found[n]}/{t.eligible[n]}"
            for n in SIGNAL_NAMES)
        add(f"| {transform} | {t.queries} | {fmt(recall)} | {goal} {mark} | {per_signal} | "
            f"{t.false_pairs['any']} | {t.queries_with_false} | {t.near_dup_pairs['any']} |")
    add("")

    # Precision, overall and per signal
    add("## Precision over all (query, reference) pairs\n")
    add("TP: the query matched its own reference. FP: it matched a reference of another source outside its "
        "near-duplicate group. FP rate: FP over all such (query, other reference) pairs. Goal: precision >= 0.99.\n")
    add("| signal | TP | FP | precision | FP pairs / negative pairs | FP rate per pair |")
    add("|---|---|---|---|---|---|")
    negatives = sum(t.negative_pairs for t in tallies.values())
    for name in ("any", *SIGNAL_NAMES):
        tp = sum(t.found[name] for t in tallies.values())
        fp = sum(t.false_pairs[name] for t in tallies.values())
        add(f"| {name} | {tp} | {fp} | {pct(tp, tp + fp)} | {fp}/{negatives} | "
            f"{fp / negatives if negatives else float('nan'):.2e} |")
    add("")

    add("## Every false-positive pair (for a person to look at)\n")
    if false_pairs:
        add("| transform | query made from | matched reference | signal | score |")
        add("|---|---|---|---|---|")
        for transform, query, target, name, score in sorted(false_pairs, key=lambda p: (p[3], p[1].index,
                                                                                         p[2].index, p[0])):
            add(f"| {transform} | {query.label} | {target.label} | {name} | {score:.3f} |")
    else:
        add("- none")
    add("")
    add("## Matches inside near-duplicate groups (not counted)\n")
    if near_dup_hits:
        pairs: dict[tuple[int, int, str], list[tuple[str, float]]] = defaultdict(list)
        for transform, query, target, name, score in near_dup_hits:
            pairs[(query.index, target.index, name)].append((transform, score))
        by_index = {e.index: e for e in entries}
        for (qi, ti, name), hits in sorted(pairs.items()):
            best = min(s for _, s in hits) if SIGNALS[name].lower_is_closer else max(s for _, s in hits)
            add(f"- {by_index[qi].label} -> {by_index[ti].label}: {name}, {len(hits)} transforms, best {best:.3f}")
    else:
        add("- none")
    add("")

    add("## Missed queries (no signal found the right reference)\n")
    if misses:
        add("| transform | reference | best embedding cosine to it | pdq distance to it | best wrong embedding |")
        add("|---|---|---|---|---|")
        for q in sorted(misses, key=lambda q: (q.transform, q.position)):
            wrong = q.scores["embedding"].copy()
            wrong[same_group[q.position]] = np.nan
            add(f"| {q.transform} | {entries[q.position].label} | {fmt(float(q.scores['embedding'][q.position]))} |"
                f" {fmt(float(q.scores['pdq'][q.position]), 0)} | {fmt(quantile(wrong, 1.0))} |")
    else:
        add("- none")
    add("")

    add(score_section(result, same_group))
    add(index_check(result, same_group))
    add(cascade_section(result, same_group))
    return "\n".join(lines)


def cascade_section(result: Run, same_group: np.ndarray) -> str:
    """Recall and false matches of the service's cascade against the full path above, on the same queries."""
    if not any(q.cascade_matched or q.screened_out for q in result.queries):
        return ""
    lines = ["## The cascade (server.matching.cascade) on the same queries\n",
             f"Full path: every query's full SSCD (the tables above, signals {', '.join(SIGNAL_NAMES)}). Cascade: the "
             "service's two stages, the full SSCD only where PDQ or the distilled SSCD at "
             f"{result.settings.match.screen_min_similarity:g} found a candidate; every signal it matches on "
             "counts (the distilled one too).\n",
             "| transform | queries | recall, full path | recall, cascade | screened out | false pairs, full | "
             "false pairs, cascade |", "|---|---|---|---|---|---|---|"]
    for transform in result.transforms:
        queries = [q for q in result.queries if q.transform == transform]
        full = sum(any(q.position in q.matched.get(n, {}) for n in SIGNAL_NAMES) for q in queries)
        cascade = sum(q.position in q.cascade_matched for q in queries)
        full_false = sum(len({at for n in SIGNAL_NAMES for at in q.matched.get(n, {})
                              if at != q.position and not same_group[q.position, at]}) for q in queries)
        cascade_false = sum(len({at for at in q.cascade_matched if at != q.position
                                 and not same_group[q.position, at]}) for q in queries)
        lines.append(f"| {transform} | {len(queries)} | {pct(full, len(queries))} | {pct(cascade, len(queries))} | "
                     f"{sum(q.screened_out for q in queries)} | {full_false} | {cascade_false} |")
    partial = [q for q in result.queries if q.full_regions is not None]
    if partial:
        lines.append(f"\nCandidates embedded in full on their flagged regions only: {len(partial)}, "
                     f"{np.mean([q.full_regions for q in partial]):.1f} regions each (of "
                     f"{np.mean([q.query_regions for q in partial]):.1f}).")
    lost = [q for q in result.queries if q.position not in q.cascade_matched
            and any(q.position in q.matched.get(n, {}) for n in SIGNAL_NAMES)]
    lines.append(f"\nCopies the full path finds and the cascade does not: {len(lost)}"
                 + "".join(f"\n- {q.transform}: {result.entries[q.position].label}" for q in lost[:20]))
    return "\n".join(lines) + "\n"


def score_section(result: Run, same_group: np.ndarray) -> str:
    """The distributions that justify the thresholds: true copies per transform against all wrong pairs."""
    entries = result.entries
    lines = ["## Score distributions (brute force over the same vectors the index holds)\n"]
    add = lines.append
    wrong: dict[str, list[np.ndarray]] = defaultdict(list)
    true: dict[tuple[str, str], list[float]] = defaultdict(list)
    worst_wrong: dict[str, list[tuple[float, str, int, int]]] = defaultdict(list)
    for q in result.queries:
        mask = ~same_group[q.position]
        for name in SIGNAL_NAMES:
            scores = q.scores[name]
            own = float(scores[q.position])
            if own == own:
                true[(name, q.transform)].append(own)
            wrong[name].append(scores[mask])
            others = np.where(mask, scores, np.nan)
            if np.isnan(others).all():
                continue
            at = int(np.nanargmin(others) if SIGNALS[name].lower_is_closer else np.nanargmax(others))
            worst_wrong[name].append((float(others[at]), q.transform, q.position, at))
    pooled = {n: (np.concatenate(v) if v else np.zeros(0)) for n, v in wrong.items()}
    pooled = {n: v[~np.isnan(v)] for n, v in pooled.items()}

    for name in SIGNAL_NAMES:
        add(signal_distribution(name, result, true, pooled.get(name, np.zeros(0))))
    add("### Closest wrong pairs per signal (the margin to the threshold)\n")
    for name in SIGNAL_NAMES:
        closest = sorted(worst_wrong[name], key=lambda p: p[0] if SIGNALS[name].lower_is_closer else -p[0])[:5]
        for score, transform, qp, tp in closest:
            add(f"- {name} {score:.3f}: {transform} of {entries[qp].label} vs {entries[tp].label}")
    add("")
    return "\n".join(lines)


def signal_distribution(name: str, result: Run, true: dict[tuple[str, str], list[float]], wrong: np.ndarray
                        ) -> str:
    """One signal's true-copy scores per transform against its wrong pairs, and how many cross the threshold."""
    threshold = result.thresholds.of(name)
    lower = SIGNALS[name].lower_is_closer
    beyond = (lambda v: v > threshold) if lower else (lambda v: v < threshold)
    lines = [f"### {name} (threshold {'<=' if lower else '>='} {threshold:g}; {'lower' if lower else 'higher'} is "
             "closer)\n", "| transform | true copies with rows | worst | p5 (worst side) | median | beyond threshold |",
             "|---|---|---|---|---|---|"]
    for transform in result.transforms:
        v = true[(name, transform)]
        worst, p5 = (quantile(v, 1), quantile(v, 0.95)) if lower else (quantile(v, 0), quantile(v, 0.05))
        lines.append(f"| {transform} | {len(v)} | {fmt(worst)} | {fmt(p5)} | {fmt(quantile(v, 0.5))} | "
                     f"{sum(1 for x in v if beyond(x))} |")
    closest, p999, p99 = ((quantile(wrong, 0), quantile(wrong, 0.001), quantile(wrong, 0.01)) if lower else
                          (quantile(wrong, 1), quantile(wrong, 0.999), quantile(wrong, 0.99)))
    within = int(((wrong <= threshold) if lower else (wrong >= threshold)).sum())
    lines.append(f"\nWrong pairs (query vs references of other sources, near-duplicate groups left out): "
                 f"{len(wrong)}; closest {fmt(closest)}, 0.1 % {fmt(p999)}, 1 % {fmt(p99)}, median "
                 f"{fmt(quantile(wrong, 0.5))}; within threshold: {within}\n")
    return "\n".join(lines)


def index_check(result: Run, same_group: np.ndarray) -> str:
    """Pairs the brute force puts within the threshold but the matcher did not report, and the reverse. Should
    be zero: PDQ search is exact to 31 bits, embedding and face keep the k nearest rows per query row."""
    missing: dict[str, int] = defaultdict(int)
    extra: dict[str, int] = defaultdict(int)
    for q in result.queries:
        for name in SIGNAL_NAMES:
            signal = SIGNALS[name]
            scores = q.scores[name]
            passing = {int(i) for i in np.nonzero(~np.isnan(scores))[0]
                       if signal.passes(float(scores[i]), result.thresholds.of(name))}
            reported = set(q.matched.get(name, {}))
            missing[name] += len(passing - reported)
            extra[name] += len(reported - passing)
    return ("## Index check (matcher vs brute force over the same vectors)\n\n"
            + "\n".join(f"- {n}: {missing[n]} pairs within threshold not reported, {extra[n]} reported but not "
                        f"within threshold by brute force" for n in SIGNAL_NAMES) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="a seeded subset of N references (default: all)")
    parser.add_argument("--transforms", default=",".join(TRANSFORMS), help="comma-separated names")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="also write the report to this file")
    parser.add_argument("--filler", default=None, metavar="SIZES",
                        help="precision as references grow (bench.precision): comma-separated filler counts, "
                             "'dev' for none and 'all' for the whole precision set, e.g. dev,1000,5000,all")
    parser.add_argument("--refit", action="store_true",
                        help="with --filler: fit the calibration again first (server/data/calibration_sscd.npz)")
    parser.add_argument("--workers", type=int, default=2, help="with --filler: feature extraction processes")
    parser.add_argument("--modes", default=None,
                        help="with --filler: only these matchers (before, previous, unzoomed, after), to split a run "
                             "over processes")
    parser.add_argument("--previous-calibration", default="", metavar="FILE",
                        help="with --filler: also run the matcher on this calibration file without the closer look "
                             "at small boxes (mode 'previous': an earlier version, in the same run)")
    args = parser.parse_args()
    if args.filler:
        from bench.precision import main as precision_main

        precision_main(args.filler, args.seed, args.workers, args.out, args.refit, args.modes,
                       args.previous_calibration)
        return
    transforms = [t.strip() for t in args.transforms.split(",") if t.strip()]
    unknown = set(transforms) - set(TRANSFORMS)
    if unknown:
        parser.error(f"unknown transforms {sorted(unknown)}; known: {', '.join(TRANSFORMS)}")
    args.load_at_start = load_average()
    entries = corpus_entries(args.limit, args.seed)
    text = report(run(entries, transforms, args.seed), args)
    publish(text, args.out)


if __name__ == "__main__":
    main()
